"""The eager dispatcher's short path (one or two Tensors of one backend, device and dtype, or
Tensors and Python scalars the rule takes as they are) against the general path it skips,
and the calls that must still leave it: mixed dtypes, raw arrays, scalars a rule needs as
arrays, anomaly mode, no_grad. Gradients are checked by finite differences in float64."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import eager
from gpugrad.ops import arithmetic, elementwise
from gpugrad.testing import check_grad


def _host(t):
    return np.asarray(gg.to_numpy(t))


@pytest.mark.parametrize("case", ["t*t", "t*s", "s*t", "t-s", "s-t", "s/t", "t/t", "u(t)"])
def test_short_path_equals_general_path(bk, case, rng):
    dt = bk.float_dtype
    a = gg.Variable(rng.uniform(0.5, 2.0, (3, 4)).astype(dt))
    b = gg.Variable(rng.uniform(0.5, 2.0, (3, 4)).astype(dt))
    op, args = {
        "t*t": (arithmetic.multiply, (a, b)), "t*s": (arithmetic.multiply, (a, 0.5)),
        "s*t": (arithmetic.multiply, (3.0, a)), "t-s": (arithmetic.subtract, (a, 2)),
        "s-t": (arithmetic.subtract, (1.5, b)), "s/t": (arithmetic.divide, (2.0, b)),
        "t/t": (arithmetic.divide, (a, b)), "u(t)": (elementwise.sigmoid, (a,)),
    }[case]
    short = eager.apply(op, args, {})
    general = eager._apply_general(op, args, {})
    assert short.dtype == general.dtype and short.requires_grad and general.requires_grad
    np.testing.assert_array_equal(_host(short), _host(general))
    gg.sum(short * short).backward()
    first = [None if t.grad is None else _host(t.grad) for t in (a, b)]
    a.grad = b.grad = None
    gg.sum(general * general).backward()
    for g, t in zip(first, (a, b)):
        if g is None:
            assert t.grad is None
        else:
            np.testing.assert_array_equal(g, _host(t.grad))


def test_short_path_gradients_by_finite_differences(bk64, rng):
    x = rng.uniform(-2.0, 2.0, (4,))
    w = rng.uniform(-1.0, 1.0, (4,))

    def chain(x, w):  # the benchmark's chain: binary ops with scalars on both sides
        y = x
        for _ in range(3):
            y = gg.sigmoid(y * w + 0.1)
            y = 1.0 - (2.0 / (y + 1.0)) * 0.5
        return gg.sum(y)

    check_grad(chain, x, w)
    check_grad(lambda x, w: gg.sum((x - w) / (w * w + 1.0)), x, w)


def test_broadcast_and_constants_on_the_short_path(bk64, rng):
    x = rng.standard_normal((3, 4))
    b = rng.standard_normal((4,))
    c = gg.asarray(rng.standard_normal((3, 1)))  # a constant: it gets no gradient
    check_grad(lambda x, b: gg.sum(gg.sigmoid(x * c + b) * x), x, b)


def test_calls_that_leave_the_short_path_still_behave(numpy_backend):
    x32 = gg.Variable(np.array([1.0, 2.0], np.float32))
    x64 = gg.asarray(np.array([1.0, 2.0]))
    with pytest.raises(gg.DtypeError):
        x32 * x64  # float32 meets float64: refused, as before
    raw = np.array([3.0, 4.0], np.float32)
    y = x32 * raw  # a raw host array: the general path fingerprints it
    gg.sum(y).backward()
    np.testing.assert_array_equal(_host(x32.grad), raw)
    ints = gg.asarray(np.array([1, 2]))
    z = ints * 2  # no floating result: nothing recorded
    assert not z.requires_grad and _host(z).tolist() == [2, 4]
    with pytest.raises(TypeError, match="multiply"):
        x32 * "2"


def test_no_grad_and_anomaly_mode_on_the_short_path(numpy_backend):
    w = gg.Variable(np.array([0.5, -1.0]))
    with gg.no_grad():
        y = w * w + 1.0
    assert not y.requires_grad and y._node is None
    big = gg.Variable(np.array([1e300, 1.0]))
    with gg.detect_anomaly(), np.errstate(over="ignore"):
        assert _host(big * 2.0).tolist() == [2e300, 2.0]
        with pytest.raises(gg.AnomalyError, match="multiply"):
            big * big  # inf from finite inputs: anomaly mode names the op


def test_backward_runs_only_the_needed_per_input_rules(numpy_backend):
    calls = []

    @gg.ops.defop("test_two_rules")
    def two(xp, a, b):
        "a * b, with a rule per input that records its calls"
        return a * b, (a, b)

    def da(xp, g, res):
        calls.append("a")
        return g * res[1]

    def db(xp, g, res):
        calls.append("b")
        return g * res[0]

    two.defvjp(da, db)
    try:
        w = gg.Variable(np.array([2.0, 3.0]))
        c = gg.asarray(np.array([5.0, 7.0]))
        gg.sum(two(c, w)).backward()
        assert calls == ["b"]
        np.testing.assert_array_equal(_host(w.grad), [5.0, 7.0])
    finally:
        gg.ops.unregister("test_two_rules")


def test_seed_of_ones_is_a_fresh_writable_array(numpy_backend):
    from gpugrad.shaping import seed_gradient

    for out in (np.array(2.5, np.float32), np.ones((1, 1))):
        seed = seed_gradient(out, np, None, "backward")
        assert seed.shape == out.shape and seed.dtype == out.dtype
        assert seed.flags.writeable and float(seed.reshape(())) == 1.0
        seed[...] = 0.0  # writable and owned: nothing else changes
