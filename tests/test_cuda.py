"""CuPy: fused kernels against their portable rules, no host round trip in the training loop,
and, on every machine, that the CuPy fast paths stay out of the way where CuPy is absent.

Tests marked ``gpu`` run only where CuPy sees a CUDA GPU (``ci/gpu-check`` runs them)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.ops import cuda


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAS_GPU = _has_gpu()


# --- every machine ---------------------------------------------------------------------------

def test_importing_gpugrad_does_not_import_cupy():
    code = "import sys, gpugrad as gg; gg.sigmoid(gg.asarray([0.0])); print('cupy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_cupy_fast_paths_are_registered_but_never_chosen_off_cupy(bk, monkeypatch):
    op = gg.registry["sigmoid"]
    assert "cupy" in op.fast_forward and "cupy" in op.fast_vjp
    assert op.fast_forward["cupy"].__self__.gen == cuda.generated(op)  # from its formulas

    def boom(*args, **kwargs):
        raise AssertionError("a CuPy kernel ran on a CPU backend")

    monkeypatch.setattr(cuda, "kernel", boom)
    monkeypatch.setitem(op.fast_forward, "cupy", boom)
    monkeypatch.setitem(op.fast_vjp, "cupy", boom)
    x = gg.Variable(np.array([-3.0, 0.0, 2.0], dtype=bk.float_dtype))
    gg.sum(gg.sigmoid(x)).backward()
    s = 1.0 / (1.0 + np.exp(-np.array([-3.0, 0.0, 2.0])))
    np.testing.assert_allclose(gg.to_numpy(x.grad), s * (1 - s), rtol=1e-6)
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)):
        opt = make([x])
        opt.step()  # the portable update runs; the kernels would raise
    assert not cuda.is_cupy_array(x.data)


# --- GPU only --------------------------------------------------------------------------------

@pytest.fixture
def cp():
    import cupy

    with gg.use_backend("cupy"):
        yield cupy


GENERATED = sorted(op.name for op in gg.registry.values() if cuda.generated(op) is not None)
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-30, -1e-30, 1e30, -1e30, 80.0, -80.0, 90.0,
         -90.0, 720.0, -720.0, 1e5, -1e5, np.inf, -np.inf, np.nan]


def _host_points(n: int) -> list:
    rng = np.random.default_rng(n)
    if n == 1:
        return [np.concatenate([EDGES, np.linspace(-120, 120, 4001)])]
    a, b = np.array([(x, y) for x in EDGES for y in EDGES]).T
    c, d = rng.standard_normal((2, 400)) * 4
    d[:50] = c[:50]  # ties
    return [np.concatenate([a, c]), np.concatenate([b, d])]


def _close(fast, slow, dtype, what):
    """Equal but for a few ulps of the formulas' order (the generated kernel) against the
    rule's, and for results below the smallest normal number (sigmoid's formula gives 0 where
    exp(-x) overflows; the stable rule a subnormal)."""
    info = np.finfo(dtype)
    np.testing.assert_allclose(fast, slow, rtol=8 * float(info.eps), atol=float(info.tiny),
                               equal_nan=True, err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_generated_kernels_match_portable_rules(cp, name, dtype):
    import array_api_compat.cupy as xp

    op = gg.registry[name]
    n = len(cuda.generated(op).inputs)
    arrays = [cp.asarray(h.astype(dtype)) for h in _host_points(n)]
    fast = op.fast_forward["cupy"]
    fout, fres = fast(xp, *arrays)  # (the first use learns what the rule saves)
    assert fast.__self__.layout not in (None, False)
    sout, sres = op.forward(xp, *arrays)
    _close(cp.asnumpy(fout), cp.asnumpy(sout), dtype, f"{name} forward")
    g = cp.asarray(np.random.default_rng(0).standard_normal(sout.shape).astype(dtype))
    for k in range(n):
        if op.vjps is not None:
            gf, gs = op.fast_vjps["cupy"][k](xp, g, fres), op.vjps[k](xp, g, sres)
        else:
            gf, gs = op.fast_vjp["cupy"](xp, g, fres)[k], op.vjp(xp, g, sres)[k]
        _close(cp.asnumpy(cp.broadcast_to(gf, gs.shape)), cp.asnumpy(gs), dtype,
               f"{name} vjp {k}")
    assert cuda.kernel.cache_info().currsize >= 1  # a generated kernel ran


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_generated_paths_in_an_eager_model_match_numpy(cp):
    rng = np.random.default_rng(0)
    host = [rng.standard_normal((16, 8)), rng.standard_normal((8, 8)), rng.standard_normal(8)]
    grads = []
    for to in (np.asarray, cp.asarray):
        x, w, b = (gg.Variable(to(h)) for h in host)
        h = gg.silu(x @ w) * gg.sigmoid(b) + gg.tanh(gg.maximum(x, b) - gg.relu(b))
        loss = gg.sum(gg.log1p(gg.exp(-gg.abs(h))) / (gg.square(h) + 1.0))
        loss.backward()
        grads.append([gg.to_numpy(t.grad) for t in (x, w, b)])
    for fast, slow in zip(grads[1], grads[0]):
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-300)


def _two_runs(cp, make_opt, steps=4):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((33, 17)).astype(np.float32)
    x = cp.asarray(rng.standard_normal((8, 33)).astype(np.float32))
    finals = []
    for fused in (True, False):
        w = gg.Variable(cp.asarray(w0))
        opt = make_opt([w])
        opt.fused = fused
        for _ in range(steps):
            opt.zero_grad()
            gg.sum(gg.sigmoid(gg.asarray(x) @ w) ** 2).backward()
            opt.step()
        finals.append(cp.asnumpy(w.data))
    return finals


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: optim.AdamW(ps, lr=0.01),
], ids=["sgd", "sgd-wd", "momentum", "nesterov-wd", "adam", "adam-l2", "adamw"])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_fused_optimizer_updates_match_portable_updates(cp, make_opt):
    fused, portable = _two_runs(cp, make_opt)
    np.testing.assert_allclose(fused, portable, rtol=2e-5, atol=1e-6)


def _mlp_step_fns(cp, opt_name):
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((256, 784)).astype(np.float32))
    y = cp.asarray(rng.integers(0, 10, 256))
    fns = {}
    for style in ("eager", "graph"):
        model = nn.MLP([784, 512, 512, 10], seed=0)
        opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd"
               else optim.Adam(model.parameters(), lr=1e-3))
        if style == "eager":
            def step(model=model, opt=opt):
                loss = nn.cross_entropy(model(gg.asarray(x)), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                return loss.data
        else:
            xs = gg.Placeholder((None, 784), name="x")
            ys = gg.Placeholder((None,), y.dtype, name="y")
            loss = nn.cross_entropy(model(xs), ys)

            def step(loss=loss, opt=opt, xs=xs, ys=ys):
                return opt.minimize(loss, feed={xs: x, ys: y})
        fns[style] = step
    return fns


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_training_loop_never_waits_for_the_host(cp, opt_name):
    import cupyx

    pool = cp.get_default_memory_pool()
    for style, step in _mlp_step_fns(cp, opt_name).items():
        for _ in range(3):
            step()
        cp.cuda.Device().synchronize()
        total = pool.total_bytes()
        used = pool.used_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with cupyx.allow_synchronize(False):
                for _ in range(20):
                    value = step()
                with pytest.raises(Exception):  # the control: reading the loss must sync
                    float(value)
        cp.cuda.Device().synchronize()
        del value
        assert pool.total_bytes() == total, f"{style}: the pool grew after warm-up"
        assert pool.used_bytes() == used, f"{style}: a step left memory behind"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_train_command_on_cupy():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "gpugrad", "train", "--backend", "cupy",
                           "--epochs", "3", "--quiet"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "backend cupy" in proc.stdout
