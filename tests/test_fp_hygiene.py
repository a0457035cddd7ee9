"""Floating-point hygiene: gpugrad's own arithmetic never trips the user's
``np.errstate(all="raise")`` or ``warnings.simplefilter("error")`` (gpugrad.fpstate).

An op still reports what its NumPy namesake reports for the same input (the user's flags
apply to the user's computation); the steps inside stable formulas, gradients' underflow and
optimizer updates never report.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn

from helpers import host
from op_cases import CASES, params


@contextlib.contextmanager
def strict_fp():
    """What a careful user runs under: every NumPy flag raises, every warning is an error."""
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            yield
    assert np.geterr() == before  # gpugrad restored whatever it changed


def _inputs(case, rng, bk, shapes=None):
    hosts = case.hosts(rng, bk, shapes)
    return [gg.Variable(h) if h.dtype.kind in "fc" and case.differentiable else gg.asarray(h)
            for h in hosts]


@pytest.mark.parametrize("case", params(CASES))
def test_every_op_case_runs_under_raising_errstate(case, bk, rng):
    """Forward and backward of every op case, on its ordinary inputs and its special shapes
    ((), (0,), (1, 0, 3): the mean of no elements used to warn "Mean of empty slice")."""
    for shapes in [case.shapes] + [(s,) * len(case.gens) for s in case.special]:
        args = _inputs(case, rng, bk, shapes)
        with strict_fp():
            out = case.fn(*args)
            if out.requires_grad:  # a complex output (fft): the loss is its real part
                gg.sum(gg.real(out)).backward()


def test_mean_of_nothing_is_nan_without_a_warning(bk):
    x = gg.Variable(np.zeros((2, 0), bk.float_dtype))
    with strict_fp():
        m = gg.mean(x)
        rows = gg.mean(x, axis=1)
        cols = gg.mean(x, axis=0)
        gg.sum(rows * 0.0).backward()
    assert np.isnan(host(m)) and np.isnan(host(rows)).all() and host(cols).shape == (0,)
    assert host(x.grad).shape == (2, 0)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_sigmoid_saturates_quietly(dt, bk):
    """The known case: sigmoid(-88.8) underflowed inside exp (FloatingPointError)."""
    if dt == "float64" and not bk.float64:
        pytest.skip("no float64 on this device")
    values = np.array([-1000.0, -800.0, -104.0, -88.8, 0.0, 88.8, 800.0, 1000.0], dt)
    # the whole vector (NumPy fast path), then each value 0-d (the portable rule)
    for v in [values, *values]:
        x = gg.Variable(np.asarray(v, dt))
        with strict_fp():
            s = gg.sigmoid(x)
            gg.sum(s).backward()
        ref = np.exp(-np.logaddexp(0.0, -np.asarray(v, np.float64)))
        np.testing.assert_allclose(host(s), ref, rtol=1e-6,
                                   atol=float(np.finfo(dt).smallest_subnormal))
        assert np.all(host(x.grad) >= 0.0) and np.all(np.isfinite(host(x.grad)))
    assert host(gg.sigmoid(gg.asarray(np.array([-88.8], dt))))[0] > 0.0  # subnormal kept


def test_stable_composites_with_huge_spreads_and_masks(bk):
    """Shifted exponentials far below the max underflow by design; -inf entries are masks."""
    dt = bk.float_dtype
    logits = np.array([[0.0, -np.inf, 2.0, -1000.0], [1.0, 1.0, -np.inf, 900.0]], dt)
    x = gg.Variable(logits)
    targets = gg.asarray(np.array([2, 3]))
    with strict_fp():
        outs = [gg.logsumexp(x, axis=-1), gg.softmax(x, axis=-1), gg.log_softmax(x, axis=-1),
                nn.cross_entropy(x, targets), gg.logsumexp(x)]
        finite = [gg.sum(gg.where(gg.array_api.isfinite(o), o, 0.0)) for o in outs]
        gg.sum(gg.stack(finite)).backward()
        pair = gg.logaddexp(gg.asarray(np.array([-1000.0, 0.0], dt)), 0.0)
        bce = nn.binary_cross_entropy_with_logits(
            gg.Variable(np.array([-1000.0, 1000.0, 0.0], dt)), gg.asarray(np.ones(3, dt)))
    assert np.isfinite(host(x.grad)).all()
    assert host(outs[0])[1] == pytest.approx(900.0)
    np.testing.assert_allclose(host(pair), [0.0, np.log(2.0)], rtol=1e-6)
    assert np.isfinite(host(bce))


def test_gradient_steps_do_not_overflow_where_the_gradient_is_finite(bk64):
    """d(a/b)/db = -a/b**2 was computed with b*b, which overflows for |b| > 1e154; asinh' and
    acosh' squared x the same way. The gradients there are tiny, not infinite."""
    b = gg.Variable(np.array([1e300, -1e200]))
    x = gg.Variable(np.array([1e300, 1e160]))
    with strict_fp():
        gg.sum(gg.divide(2.0, b)).backward()
        gg.sum(gg.asinh(x) + gg.acosh(x)).backward()
    np.testing.assert_allclose(host(b.grad), [0.0, -2e-400], atol=1e-320)
    np.testing.assert_allclose(host(x.grad), 2.0 / np.array([1e300, 1e160]), rtol=1e-12)
    # atan' = 1/(1 + x**2), atan2 and hypot divide by x**2 + y**2: all finite at 1e160
    y = gg.Variable(np.array([1e160, -3e160]))
    w = gg.Variable(np.array([2e160, 4e160]))
    with strict_fp():
        gg.sum(gg.atan(y) + gg.atan2(y, w) + gg.array_api.hypot(y, w)).backward()
    yh, wh = np.array([1.0, -3.0]), np.array([2.0, 4.0])  # in units of 1e160
    r = np.hypot(yh, wh)
    np.testing.assert_allclose(host(w.grad), wh / r - (yh / r / r) * 1e-160, rtol=1e-12)
    np.testing.assert_allclose(host(y.grad), yh / r + (wh / r / r + 1.0 / yh ** 2 * 1e-160)
                               * 1e-160, rtol=1e-12)


def test_tiny_gradients_underflow_quietly(bk):
    """Products of small values underflow in backward; that is not an error."""
    dt = bk.float_dtype
    tiny = 1e-30 if dt == "float32" else 1e-200
    a = gg.Variable(np.full(3, tiny, dt))
    b = gg.Variable(np.full(3, tiny, dt))
    with np.errstate(under="ignore"):
        out = gg.sum(gg.tanh(a) * gg.sin(b) * tiny)
    with strict_fp():
        out.backward()
    assert np.all(host(a.grad) >= 0.0)


@pytest.mark.parametrize("make", [
    lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4),
    lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: gg.optim.Adam(ps, lr=0.01),
    lambda ps: gg.optim.AdamW(ps, lr=0.01, weight_decay=0.01),
], ids=["sgd_momentum", "nesterov", "adam", "adamw"])
def test_optimizers_with_tiny_gradients(make, bk):
    """Adam squares the gradient (1e-30**2 underflows float32); momentum buffers decay."""
    dt = bk.float_dtype
    w = gg.Variable(np.array([1.0, -2.0, 1e-30], dt))
    opt = make([w])
    for scale in (1e-30, 1e-38, 0.0):
        opt.zero_grad()
        w.grad = gg.asarray(np.full(3, scale, dt)).data
        with strict_fp():
            opt.step()
    assert np.isfinite(host(w)).all()


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_training_loop_eager_and_graph(activation, bk):
    """A few steps of an MLP with cross-entropy (eager: loss.backward + Adam; graph front
    end: Placeholders and minimize) on inputs that saturate the activations."""
    dt = bk.float_dtype
    rng = np.random.default_rng(0)
    # float32: pre-activations below about -87 make a subnormal sigmoid, and np.matmul of
    # subnormals reports underflow with OpenBLAS's SandyBridge kernel (not SkylakeX's or
    # Haswell's): the user's own op, reporting as its NumPy namesake does. Keep them normal.
    scale = 60.0 if dt == "float64" else 20.0
    xs = (rng.standard_normal((16, 4)) * scale).astype(dt)
    ys = rng.integers(0, 3, 16)
    model = nn.MLP([4, 8, 3], activation=activation, seed=0, dtype=dt)
    opt = gg.optim.Adam(model.parameters(), lr=0.05)
    with strict_fp():
        for _ in range(3):
            opt.zero_grad()
            loss = nn.cross_entropy(model(gg.asarray(xs)), gg.asarray(ys))
            loss.backward()
            opt.step()
        x = gg.Placeholder((None, 4), dt, name="x")
        t = gg.Placeholder((None,), "int64", name="t")
        graph_loss = nn.cross_entropy(model(x), t)
        for _ in range(3):  # the first run is the checked one, then the generated code
            value = opt.minimize(graph_loss, feed={x: xs, t: ys})
    assert np.isfinite(host(value))


@contextlib.contextmanager
def _warnings_are_errors():
    """NumPy's default error state, with any warning that escapes turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("state", [_warnings_are_errors, strict_fp],
                         ids=["default-errstate", "all-raise"])
def test_compiled_sigmoid_under_raising_errstate_keeps_overflow_guard(state):
    """Compiled NumPy schedules run sigmoid without a per-call overflow guard inside one
    errstate(over="raise"), and rerun the step-by-step rules on overflow: results, gradients
    and dtypes are those of the eager front end, and nothing leaks out, under NumPy's default
    error state or the user's all="raise"."""
    with gg.use_backend("numpy"):
        x = gg.Placeholder((None,), "float32", name="x")
        w = gg.Variable(np.ones(3, np.float32), name="w")
        y = gg.sum(gg.sigmoid(x * w))
        sched, _ = y._schedule((w,))
        assert sched._forward_guarded is not None
        # exp(100) and exp(88.8) overflow float32
        for feed in ([-3.0, 0.5, 80.0], [-100.0, 0.5, 80.0], [-88.8, 1000.0, 0.0]):
            fx = np.array(feed, np.float32)
            for _ in range(2):  # checked first run, then the generated code
                with state():
                    value, (dw,) = sched.run({x: fx}, True)
            ref = np.exp(-np.logaddexp(0.0, -fx.astype(np.float64)))
            np.testing.assert_allclose(value, ref.sum(), rtol=1e-6)
            np.testing.assert_allclose(dw, ref * (1 - ref) * fx, rtol=1e-5, atol=1e-30)
            assert value.dtype == np.float32 and dw.dtype == np.float32


def test_users_own_operations_still_report(bk):
    """The flags still apply to what the user computes: gg.exp underflows like np.exp, and
    gg.log(0) divides by zero like np.log(0)."""
    dt = bk.float_dtype
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError, match="underflow"):
            gg.exp(gg.asarray(np.array([-1000.0], dt)))
        with pytest.raises(FloatingPointError, match="divide"):
            gg.log(gg.asarray(np.array([0.0], dt)))
    with np.errstate(all="ignore"):
        assert host(gg.log(gg.asarray(np.array([0.0], dt))))[0] == -np.inf


def test_cheap_error_states_match_np_errstate():
    """fpstate.state_with/enter/leave set exactly what np.errstate sets, nest, restore the
    surrounding state, and work out each state once per surrounding state."""
    from gpugrad import fpstate

    before = np.geterr()
    with np.errstate(divide="raise"):
        around = np.geterr()
        token = fpstate.enter(fpstate.state_with(fpstate.OVER_RAISED))
        try:
            assert np.geterr() == {**around, "over": "raise"}
            inner = fpstate.enter(fpstate.state_with(fpstate.UNDER_IGNORED))
            assert np.geterr() == {**around, "over": "raise", "under": "ignore"}
            fpstate.leave(inner)
            assert np.geterr() == {**around, "over": "raise"}
        finally:
            fpstate.leave(token)
        assert np.geterr() == around
        assert fpstate.state_with(fpstate.OVER_RAISED) is fpstate.state_with(fpstate.OVER_RAISED)
    assert np.geterr() == before


def test_cheap_error_states_fall_back_to_np_errstate(monkeypatch):
    """Without NumPy's context variable (another NumPy), the same calls go through
    np.errstate itself, with the same flags."""
    from gpugrad import fpstate

    monkeypatch.setattr(fpstate, "_STATE", None)
    before = np.geterr()
    token = fpstate.enter(fpstate.state_with(fpstate.OVER_RAISED))
    try:
        assert np.geterr()["over"] == "raise"
    finally:
        fpstate.leave(token)
    assert np.geterr() == before
    assert fpstate.quiet_unless_ignored() is None  # NumPy's default ignores underflow
    with np.errstate(under="raise"):
        loud = fpstate.quiet_unless_ignored()
        with loud:  # (np.errstate itself, in the fallback)
            assert np.geterr()["under"] == "ignore"


@pytest.mark.parametrize("overflow", [False, True])
def test_a_planned_run_leaves_the_callers_error_state(overflow, numpy_backend):
    """A planned program sets its own flags and restores the caller's, also when its
    forward overflows and the exact rules run instead."""
    x = gg.Placeholder((3,), "float64", name="x")
    w = gg.Variable(np.ones(3))
    loss = gg.sum(gg.sigmoid(x * w))
    feed = np.array([-1000.0 if overflow else -1.0, 0.5, 2.0])
    for _ in range(3):  # the first run is checked; the later ones run the planned program
        with np.errstate(divide="raise", invalid="ignore"):
            state = np.geterr()
            gg.value_and_gradients(loss, [w], feed={x: feed})
            assert np.geterr() == state


@pytest.mark.parametrize("state", [_warnings_are_errors, strict_fp],
                         ids=["default-errstate", "all-raise"])
def test_an_empty_batch_is_quiet_in_graphs_and_compiled_code(state, bk):
    """A batch of no rows: the mean losses are NaN, the gradients zeros, and nothing reports,
    in a Placeholder graph (value, value and gradients, minimize: the checked first run, then
    the planned program) and under gg.compile, as in eager. The fused softmax cross-entropy
    divided by the row count, 0."""
    dt = bk.float_dtype
    x = gg.Placeholder((None, 4), dt, name="x")
    t = gg.Placeholder((None,), "int64", name="t")
    y = gg.Placeholder((None, 3), dt, name="y")
    model = nn.MLP([4, 8, 3], activation="sigmoid", seed=0, dtype=dt)
    out = model(x)
    losses = [nn.cross_entropy(out, t), nn.mse_loss(out, y), gg.mean(gg.sigmoid(out)),
              gg.mean(gg.logsumexp(out, axis=-1)) + gg.sum(gg.mean(out, axis=0))]
    feed = {x: np.zeros((0, 4), dt), t: np.zeros(0, "int64"), y: np.zeros((0, 3), dt)}
    for loss in losses:
        opt = gg.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(3):
            with state():
                value = loss.eval(feed)
                both, grads = gg.value_and_gradients(loss, model.parameters(), feed=feed)
                opt.minimize(loss, feed=feed)
            assert np.isnan(host(value)) and np.isnan(host(both))
            assert all(not np.any(host(g)) for g in grads)  # a sum over no rows
    compiled = gg.compile(lambda xb, tb: nn.cross_entropy(model(xb), tb))
    opt = gg.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):  # traced, then the compiled program
        with state():
            loss = compiled(gg.asarray(feed[x]), gg.asarray(feed[t]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert np.isnan(host(loss))
        assert all(not np.any(host(p.grad)) for p in model.parameters())
    assert compiled.cache_info().traces == 1
