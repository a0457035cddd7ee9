"""The workloads of other shapes (benchmarks/models.py): each floor, derived by hand, agrees
with gpugrad's gradients, and every row takes the same steps. Nothing here times anything."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from benchmarks import floor_models, models, own_process, sizes, workloads

QUICK = sizes.QUICK


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gg.use_backend("numpy"):
        yield


def _floor_needs(name):
    """The gelu floor's erf is SciPy's: skip where it is not installed."""
    if QUICK.get(name, {}).get("act") == "gelu":
        pytest.importorskip("scipy")


@pytest.mark.parametrize("name", models.MODELS)
def test_floor_gradients_match_gpugrad(name):
    from benchmarks import gpugrad_models

    _floor_needs(name)
    cfg = QUICK[name]
    params, x, _, target = models.data(cfg)
    want_loss, want = floor_models.grads(np, cfg, params, x, target)
    forward, ps, x, y = gpugrad_models.net(cfg)
    loss = gpugrad_models.loss_fn(cfg)(forward(gg.asarray(x)), gg.asarray(y))
    loss.backward()
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    assert len(ps) == len(want)
    for p, g in zip(ps, want):
        assert gg.to_numpy(p.grad).shape == g.shape
        np.testing.assert_allclose(gg.to_numpy(p.grad), g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", models.MODELS)
def test_every_row_takes_the_floors_steps(name):
    """Three steps of the update (SGD, momentum, Adam, AdamW or RMSprop) leave the same
    parameters in every row."""
    _floor_needs(name)
    cfg = QUICK[name]
    steps = {impl: workloads.make(name, impl, "numpy", cfg)
             for impl in ("floor", "eager", "graph", "compile")}
    start = [p.copy() for p in steps["floor"].params()]
    for step in steps.values():
        for _ in range(3):
            step()
    want = steps["floor"].params()
    assert any(not np.allclose(a, b) for a, b in zip(start, want))
    for impl, step in steps.items():
        for got, ref in zip(step.params(), want):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6, err_msg=impl)


def test_rnn_floor_matches_finite_differences():
    """The RNN's hand-derived backward through time, checked in float64 on one weight."""
    cfg = QUICK["rnn"]
    params, xs, _, target = models.data(cfg)
    params = [p.astype(np.float64) for p in params]
    xs = xs.astype(np.float64)
    _, grads = floor_models.grads(np, cfg, params, xs, target)
    h, (i, j) = 1e-6, (1, 2)
    for k in range(len(params)):
        idx = (i, j) if params[k].ndim == 2 else (i,)
        bumped = [p.copy() for p in params]
        bumped[k][idx] += h
        up = floor_models.grads(np, cfg, bumped, xs, target)[0]
        bumped[k][idx] -= 2 * h
        down = floor_models.grads(np, cfg, bumped, xs, target)[0]
        assert abs((up - down) / (2 * h) - grads[k][idx]) < 1e-6, k


def _digits_reference(cfg):
    """One epoch of the digits model through floor_models: (parameters, last loss)."""
    sizes_, params, batches = workloads.digits_data(cfg)
    model = {"model": "mlp", "act": "sigmoid", "loss": "xent", "opt": "adam", "lr": cfg["lr"]}
    update = floor_models.Update(np, "adam", cfg["lr"], params)
    eye = np.eye(sizes_[-1], dtype=np.float32)
    for xb, yb in batches:
        loss, grads = floor_models.grads(np, model, params, xb, eye[yb])
        update(np, params, grads)
    return params, loss


@pytest.mark.parametrize("impl", ["floor", "eager", "graph", "compile"])
def test_digits_rows_take_the_generic_floors_epoch(impl):
    """The digits floor (and gpugrad's rows) end an epoch where floor_models' Adam does."""
    cfg = QUICK["digits"]
    want, _ = _digits_reference(cfg)
    epoch = workloads.make("digits", impl, "numpy", cfg)
    epoch()
    for got, ref in zip(epoch.params(), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("peer", ["jax", "torch"])
@pytest.mark.parametrize("name", [*models.MODELS, "digits"])
def test_peer_rows_agree_with_the_floor(peer, name):
    """Where JAX or torch is installed (never in CI), its rows reach the floor's loss."""
    pytest.importorskip(peer)
    _floor_needs(name)
    cfg = QUICK[name]
    theirs = workloads.make(name, peer, "numpy", cfg)
    if name == "digits":
        want = _digits_reference(cfg)[1]
        got = theirs()
    else:
        floor = workloads.make(name, "floor", "numpy", cfg)
        for _ in range(2):
            want, got = floor(), theirs()
    np.testing.assert_allclose(float(got), float(want), rtol=1e-4)


def test_a_peer_runs_in_its_own_process(monkeypatch):
    """The child process runs the floor and the peer; a peer it cannot import comes back as
    a skipped row, and one not importable here never starts a child."""
    import argparse

    args = argparse.Namespace(workloads=["small", "rnn"], threads=1, backend="numpy",
                              quick=True)
    assert own_process.run_peer("mygrad", args, 2) == {
        wl: {"skipped": "mygrad not installed"} for wl in args.workloads}
    monkeypatch.setattr(own_process.importlib.util, "find_spec", lambda name: object())
    rows = own_process.run_peer("mygrad", args, 2)
    assert rows["small"] == {"skipped": "mygrad not installed"}
    assert rows["rnn"] == {"skipped": "mygrad is not run on rnn"}
