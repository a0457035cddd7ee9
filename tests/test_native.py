"""The native tier (gpugrad.compiler.fuse, native): fusion groups compiled by numba.

Every op case and random programs give the same value and gradients through the native
program as through the planned NumPy program (float64: 1e-12 relative; float32 models: a
few ulps), and so do models, optimizer steps, batch sizes and the kernels' own exp and tanh.
When a program goes native, and the disk cache: tests/test_native_tier.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import assert_orders_agree, assert_ulp_close
from native_helpers import TOL, agree, both_tiers, programs_of, sigmoid_problem
from op_cases import CASES

import gpugrad as gg
from gpugrad import nn, optim

pytest.importorskip("numba")


@pytest.mark.parametrize("case", [c for c in CASES if c.differentiable], ids=lambda c: c.id)
def test_every_op_native_equals_planned(case, native, monkeypatch):
    """For every differentiable op case, ``sum(out * out)`` and its gradients: the native
    program's equal the planned NumPy program's to 1e-12 (float64)."""
    rng = np.random.default_rng(1234)
    hosts = case.hosts(rng, None, float_dtype="float64")
    phs = [gg.Placeholder(h.shape, "float64" if h.dtype.kind == "f" else h.dtype)
           for h in hosts]
    try:
        out = case.fn(*phs)
        loss = gg.sum(out * out)
    except (TypeError, AttributeError, ValueError):
        pytest.skip("the case's call needs concrete inputs")
    feed = dict(zip(phs, hosts))
    floats = [p for p, h in zip(phs, hosts) if h.dtype.kind == "f"]
    if not floats:
        pytest.skip("no float input")

    def run():
        return gg.value_and_gradients(loss, floats, feed=feed)
    try:
        (v0, g0), (v1, g1) = both_tiers(monkeypatch, run, loss)
    except (TypeError, AttributeError, ValueError, gg.errors.GradientError) as exc:
        pytest.skip(f"the graph front end does not run this case: {exc}")
    assert_orders_agree(np.asarray(v1), np.asarray(v0), **TOL)
    for a, b in zip(g1, g0):
        assert_orders_agree(np.asarray(a), np.asarray(b), **TOL)


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "exp", "log", "multiply"])
def test_the_op_cases_make_kernels(op, native):
    """An elementwise op's case, squared and summed, runs as fused kernels natively (the
    forward with the square, the backward with the sum of the two products)."""
    (case,) = [c for c in CASES if c.id == op]
    hosts = case.hosts(np.random.default_rng(0), None, float_dtype="float64")
    phs = [gg.Placeholder(h.shape, "float64") for h in hosts]
    out = case.fn(*phs)
    loss = gg.sum(out * out)
    for _ in range(2):
        gg.value_and_gradients(loss, phs, feed=dict(zip(phs, hosts)))
    progs = programs_of(loss)
    assert progs and all(p.tier == "native" for p in progs)
    assert sum(len(p.kernels) for p in progs) >= 2


def _fuzz_test():
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, assume, given, note, settings
    from test_fuzz import _loss, programs

    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(case=programs())
    def test(case, native, monkeypatch):
        prog, outputs, weights = case
        note(repr(prog))
        hosts = prog.values[:prog.n_inputs]
        phs = [gg.Placeholder(h.shape, "float64") for h in hosts]
        try:
            loss = _loss(prog, outputs, weights)(*phs)
        except (TypeError, AttributeError, ValueError, IndexError):
            assume(False)
        feed = dict(zip(phs, hosts))
        try:
            (v0, g0), (v1, g1) = both_tiers(
                monkeypatch, lambda: gg.value_and_gradients(loss, phs, feed=feed), loss)
        except (TypeError, AttributeError, ValueError, IndexError):
            assume(False)
        assert_orders_agree(np.asarray(v1), np.asarray(v0), **TOL)
        for a, b in zip(g1, g0):
            assert_orders_agree(np.asarray(a), np.asarray(b), **TOL)
    return test


test_random_graphs_native_equal_planned = _fuzz_test()


def _model(activation, loss_name, dtype, seed=0):
    model = nn.MLP([12, 16, 16, 5], activation=activation, seed=seed, dtype=dtype)
    xs = gg.Placeholder((None, 12), dtype, name="x")
    if loss_name == "cross_entropy":
        ys = gg.Placeholder((None,), "int64", name="y")
        loss = nn.cross_entropy(model(xs), ys)
    else:
        ys = gg.Placeholder((None, 5), dtype, name="y")
        loss = nn.mse_loss(model(xs), ys) if loss_name == "mse" else \
            nn.binary_cross_entropy_with_logits(model(xs), ys)
    return model, loss, xs, ys


def _batch(loss_name, dtype, n=9, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12)).astype(dtype)
    if loss_name == "cross_entropy":
        return X, rng.integers(0, 5, n)
    Y = rng.standard_normal((n, 5)) if loss_name == "mse" else rng.integers(0, 2, (n, 5))
    return X, Y.astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "softplus", "silu", "gelu"])
def test_models_train_the_same_natively(activation, loss_name, dtype, native, monkeypatch):
    """Three SGD-with-momentum steps of an MLP, graph front end: the native program's
    parameters equal the NumPy tier's (float64 1e-12; float32 4 ulps of each array's
    magnitude), and the native program did run kernels."""
    runs = {}
    for mode in ("0", "now"):
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        model, loss, xs, ys = _model(activation, loss_name, dtype)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            X, Y = _batch(loss_name, dtype, seed=step)
            opt.minimize(loss, feed={xs: X, ys: Y})
        runs[mode] = [np.array(p.data) for p in model.parameters()]
        if mode == "now":
            progs = programs_of(loss)
            assert progs and all(p.tier == "native" for p in progs)
            assert sum(len(p.kernels) for p in progs) >= 1
    for a, b in zip(runs["now"], runs["0"]):
        agree(a, b, dtype)


def test_gg_compile_goes_native(native):
    """gg.compile's training step runs the same native program, with the same numbers."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    results = []
    for mode in ("0", "now"):
        os.environ["GPUGRAD_JIT"] = mode
        model = nn.MLP([6, 8, 3], activation="tanh", seed=1, dtype="float64")
        opt = optim.Adam(model.parameters(), lr=0.01)

        step = gg.compile(lambda x, y: nn.cross_entropy(model(x), y))
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss = step(gg.asarray(X), gg.asarray(Y))
            loss.backward()
            opt.step()
            losses.append(float(loss))
        results.append((losses, [np.array(p.data) for p in model.parameters()]))
    os.environ["GPUGRAD_JIT"] = "now"
    assert_orders_agree(np.array(results[1][0]), np.array(results[0][0]), **TOL)
    for a, b in zip(results[1][1], results[0][1]):
        assert_orders_agree(a, b, **TOL)


def test_overflow_in_a_native_forward_falls_back(native, monkeypatch):
    """exp overflowing in a kernel of the forward sweep makes the run fall back to the
    exact rules, as the NumPy tier's overflow does: the same values, no warning."""
    x = gg.Placeholder((None, 3), "float64", name="x")
    W = gg.Variable(np.eye(3), name="W")
    loss = gg.sum(gg.sigmoid(x @ W - 1.0) * 3.0)
    X = np.array([[-800.0, 0.0, 1.0], [2.0, -3.0, 900.0]])
    (v0, g0), (v1, g1) = both_tiers(monkeypatch, lambda: gg.value_and_gradients(
        loss, [W], feed={x: X}), loss)
    assert np.isfinite(v1) and float(v1) == float(v0)
    assert_orders_agree(np.asarray(g1[0]), np.asarray(g0[0]), **TOL)
    assert any(p.kernels for p in programs_of(loss))


def test_one_native_program_serves_every_batch_size(native, monkeypatch):
    """The native program is planned once for the batch (gpugrad.compiler.batch): its
    kernels read sizes from their arrays, so every batch size runs them, with the NumPy
    tier's numbers."""
    sizes = (1, 2, 7, 32, 33)
    want = {}
    for mode in ("0", "now"):
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        model, loss, xs, ys = _model("sigmoid", "cross_entropy", "float64")
        opt = optim.SGD(model.parameters(), lr=0.1)
        for n in sizes:
            X, Y = _batch("cross_entropy", "float64", n=n, seed=n)
            value = float(opt.minimize(loss, feed={xs: X, ys: Y}))
            params = [np.array(p.data) for p in model.parameters()]
            if mode == "0":
                want[n] = (value, params)
            else:
                assert value == pytest.approx(want[n][0], rel=1e-12)
                for a, b in zip(params, want[n][1]):
                    assert_orders_agree(a, b, **TOL)
        if mode == "now":
            (sched,) = loss._schedules.values()
            assert sched.builds == 1
            (prog,) = sched.programs.values()
            assert prog.tier == "native" and prog.kernels


def test_a_bad_label_in_a_native_step_names_the_op(native, monkeypatch):
    """The cross-entropy's own kernel checks each label: a label out of range gives the
    error the NumPy tier gives (the step by step run names the op)."""
    errors = []
    for mode in ("0", "now"):
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        model, loss, xs, ys = _model("sigmoid", "cross_entropy", "float64")
        opt = optim.SGD(model.parameters(), lr=0.1)
        X, Y = _batch("cross_entropy", "float64")
        for _ in range(2):
            opt.minimize(loss, feed={xs: X, ys: Y})
        if mode == "now":
            (prog,) = programs_of(loss)
            assert any(n.startswith("NX") for n, _ in prog.kernels)
        Y = Y.copy()
        Y[3] = 7
        with pytest.raises(Exception) as info:
            opt.minimize(loss, feed={xs: X, ys: Y})
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert "softmax_cross_entropy" in errors[1][1] or "cross_entropy" in errors[1][1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_a_native_optimizer_step_equals_the_numpy_step(name, dtype, native, monkeypatch):
    """``opt.step()`` once its plan runs natively (one kernel for every parameter, from
    the optimizer's form): the parameters after six eager steps equal the NumPy steps'
    (float64 1e-12, float32 4 ulps), and the kernel did run."""
    runs = {}
    for mode in ("0", "now"):
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        model = nn.MLP([5, 7, 3], activation="tanh", seed=2, dtype=dtype)
        opt = optim.OPTIMIZERS[name](model.parameters())
        rng = np.random.default_rng(4)
        for _ in range(6):
            X, Y = rng.standard_normal((6, 5)).astype(dtype), rng.integers(0, 3, 6)
            opt.zero_grad()
            nn.cross_entropy(model(gg.asarray(X)), Y).backward()
            opt.step()
        runs[mode] = [np.array(p.data) for p in model.parameters()]
        if mode == "now":
            assert opt._scratch.native, "the planned step did not go native"
    for a, b in zip(runs["now"], runs["0"]):
        agree(a, b, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["exp", "tanh", "log1p"])
def test_the_kernels_own_exp_and_tanh_are_within_a_few_ulps_of_numpys(fn, dtype, native_cache,
                                                                     monkeypatch):
    """The kernels' own exp, tanh and log1p (written out so that their loops use SIMD
    lanes), over their whole range, subnormal results, overflow, -0.0, -inf, inf and NaN
    included (log1p: -1, below it, and up to the dtype's largest number)."""
    from gpugrad.compiler import native
    from gpugrad.compiler.fuse import Group

    monkeypatch.setenv("GPUGRAD_CACHE_DIR", native_cache)
    top = 88.7 if dtype == "float32" else 709.7
    low = -103.9 if dtype == "float32" else -745.0
    if fn == "tanh":
        top, low = 25.0, -25.0
    extra = []
    if fn == "log1p":
        top, low = 50.0, -1.0
        big = float(np.finfo(dtype).max)
        extra = [np.geomspace(1.0, big / 2, 2001), -np.geomspace(1e-30, 1.0, 1001), [-2.0, big]]
    x = np.concatenate([np.linspace(low, top, 200_001), np.geomspace(1e-30, 1.0, 1001), *extra,
                        [low - 1, top + 1, -np.inf, np.inf, np.nan, 0.0, -0.0]]).astype(dtype)
    g = Group([("y", (fn, ("name", "x")))], x.shape, np.dtype(dtype), [("x", x.shape)],
              ["y"])
    module = native.load(native.module_source([("K", g)]))
    y = np.empty_like(x)
    over = module.K(x, y)
    with np.errstate(all="ignore"):
        want = getattr(np, fn)(x)
    assert over == (fn == "exp")  # exp(top + 1) overflowed from a finite argument
    finite = np.isfinite(want) & (want != 0)
    ulps = np.abs(y[finite].astype(np.float64) - want[finite]) / np.spacing(
        np.abs(want[finite]))
    assert ulps.max() <= 3.0, ulps.max()
    rest = ~finite
    assert np.array_equal(y[rest], want[rest], equal_nan=True)
    assert np.array_equal(np.signbit(y[rest]), np.signbit(want[rest]))


def test_read_only_feeds_run_natively(native, monkeypatch):
    """A read-only feed (a memory map, np.broadcast_to) is read by the kernels as it is."""
    x, W, loss, X = sigmoid_problem()
    want = np.array(gg.gradients(loss, [W], feed={x: X})[0])
    frozen = X.copy()
    frozen.flags.writeable = False
    for _ in range(3):
        got = gg.gradients(loss, [W], feed={x: frozen})[0]
        assert_orders_agree(np.asarray(got), want, **TOL)
    assert all(p.tier == "native" and p.kernels for p in programs_of(loss))


def test_source_lists_every_kernel_of_a_native_program(native):
    """``loss.source(...)`` of a native training step: the program, then the source of each
    kernel it calls (fusion groups, the cross-entropy's own, the optimizer's update)."""
    model, loss, xs, ys = _model("sigmoid", "cross_entropy", "float32")
    opt = optim.SGD(model.parameters(), lr=0.1)
    X, Y = _batch("cross_entropy", "float32")
    for _ in range(2):
        opt.minimize(loss, feed={xs: X, ys: Y})
    text = loss.source({xs: X, ys: Y}, opt=opt)
    (prog,) = programs_of(loss)
    assert prog.tier == "native"
    for name, _ in prog.kernels:
        assert f"\ndef {name}(" in text and f"{name}(" in text.split("\n\n# ")[0]
    assert "elementwise steps" in text and "optimizer's update" in text \
        and "an op's own kernel" in text


def test_a_wide_cross_entropy_agrees_in_float32(native, monkeypatch):
    """The cross-entropy's own kernel over 1000 classes in float32: the loss and gradient
    within a few ulps of the NumPy tier's (its row sums add in float64)."""
    rng = np.random.default_rng(5)
    Z = (rng.standard_normal((16, 1000)) * 3).astype("float32")
    Y = rng.integers(0, 1000, 16)
    runs = {}
    for mode in ("0", "now"):
        monkeypatch.setenv("GPUGRAD_JIT", mode)
        z = gg.Placeholder((None, 1000), "float32", name="z")
        y = gg.Placeholder((None,), "int64", name="y")
        loss = nn.cross_entropy(z, y)
        for _ in range(2):
            v, (g,) = gg.value_and_gradients(loss, [z], feed={z: Z, y: Y})
        runs[mode] = (np.asarray(v), np.asarray(g))
        if mode == "now":
            assert any(n.startswith("NX") for p in programs_of(loss) for n, _ in p.kernels)
    assert_ulp_close(runs["now"][0], runs["0"][0], ulps=4)
    assert_ulp_close(runs["now"][1], runs["0"][1], ulps=4)


def test_gradients_handed_back_by_one_kernel_share_one_block(native, monkeypatch):
    """The gradients one kernel hands back are the rows of one new block per run: equal to
    the NumPy tier's, and never overwritten by a later run."""
    rng = np.random.default_rng(3)
    ws = [gg.Variable(rng.uniform(0.5, 1.5, 8)) for _ in range(6)]
    y0 = gg.Placeholder((8,), "float64", name="y0")
    y = y0
    for w in ws:
        y = gg.sigmoid(y * w + 0.1)
    loss = gg.sum(y)
    feeds = [rng.standard_normal(8) for _ in range(2)]

    def run(feed=feeds[0]):
        return [np.array(g) for g in gg.gradients(loss, ws, feed={y0: feed})]

    want, got = both_tiers(monkeypatch, run, loss)
    for a, b in zip(got, want):
        assert_orders_agree(a, b, **TOL)
    (prog,) = programs_of(loss)
    assert prog.tier == "native" and "_all, D_N" in prog.source
    first = gg.gradients(loss, ws, feed={y0: feeds[0]})
    assert len({id(g.base) for g in first}) < len(first)  # rows of shared blocks
    kept = [np.array(g) for g in first]
    second = gg.gradients(loss, ws, feed={y0: feeds[1]})
    for g, k in zip(first, kept):
        assert np.array_equal(g, k)  # the next run wrote new blocks
    assert not np.allclose(np.asarray(second[0]), kept[0])
