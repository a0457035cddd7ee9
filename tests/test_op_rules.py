"""Op rules beyond the generic table checks: kink values (hand-derived gradients), scatter-add
for repeated indices, the NumPy fast paths against their portable rules, and the numerics of
sigmoid and the softmax family at large and infinite inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import backend as B

from op_cases import GETITEM_KEYS, TAKE_ARGS, dtype


# --- kinks (hand-derived gradients) ---------------------------------------------------------

def grads_of(bk, fn, *values):
    """Gradients of sum(fn(*Variables)) on the backend, as host arrays."""
    xs = [gg.Variable(np.asarray(v, dtype=bk.float_dtype)) for v in values]
    out = fn(*xs)
    gg.sum(out).backward()
    for x in xs:
        assert x.grad.dtype == x.dtype
    return [gg.to_numpy(x.grad) for x in xs]


def test_kink_relu_at_zero(bk):
    (g,) = grads_of(bk, gg.relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


def test_kink_abs_at_zero(bk):
    (g,) = grads_of(bk, gg.abs, [-1.5, 0.0, 2.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("name,winner_a", [("maximum", [0.5, 1.0, 0.5, 0.0]),
                                           ("minimum", [0.5, 0.0, 0.5, 1.0])])
def test_kink_maximum_minimum_ties_split(name, winner_a, bk):
    op = gg.registry[name]
    ga, gb = grads_of(bk, op, [1.0, 2.0, -3.0, 0.0], [1.0, 0.0, -3.0, 4.0])
    np.testing.assert_array_equal(ga, winner_a)
    np.testing.assert_array_equal(gb, 1.0 - np.asarray(winner_a))
    (g,) = grads_of(bk, lambda a: op(a, a), [1.0, -2.0])  # both halves reach the same input
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_kink_max_min_full_reduction_ties_split_evenly(bk):
    x = [[3.0, -1.0], [3.0, -1.0], [0.0, 3.0]]
    (g,) = grads_of(bk, gg.max, x)
    np.testing.assert_allclose(g, [[1 / 3, 0], [1 / 3, 0], [0, 1 / 3]], rtol=1e-6)
    assert abs(g.sum() - 1.0) < 1e-6
    (g,) = grads_of(bk, gg.min, x)
    np.testing.assert_array_equal(g, [[0, 0.5], [0, 0.5], [0, 0]])
    (g,) = grads_of(bk, lambda t: gg.max(t, axis=1), [[2.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(g, [[0.5, 0.5], [1.0, 0.0]])


@pytest.mark.parametrize("bounds,expect", [
    ({"min": -1.0, "max": 1.0}, [0, 1, 1, 1, 0]),
    ({"min": -1.0}, [0, 1, 1, 1, 1]),
    ({"max": 1.0}, [1, 1, 1, 1, 0]),
], ids=["both", "min", "max"])
def test_kink_clip_passes_gradient_on_closed_interval(bounds, expect, bk):
    (g,) = grads_of(bk, lambda x: gg.clip(x, **bounds), [-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(g, expect)


def test_kink_sqrt_at_zero_is_inf(bk):
    with np.errstate(divide="ignore"):  # 1/(2*sqrt(0)) is a true division by zero
        (g,) = grads_of(bk, gg.sqrt, [0.0, 4.0])
    np.testing.assert_array_equal(g, [np.inf, 0.25])


@pytest.mark.parametrize("exponent", [0.0, 0], ids=["float", "int"])
def test_kink_pow_scalar_exponent_zero(exponent, bk):
    x = [-2.0, 0.0, 3.0]
    out = gg.pow(gg.asarray(np.asarray(x, dtype=bk.float_dtype)), exponent)
    np.testing.assert_array_equal(gg.to_numpy(out), [1.0, 1.0, 1.0])
    (g,) = grads_of(bk, lambda t: gg.pow(t, exponent), x)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_kink_pow_array_exponent_zero(bk):
    ga, gb = grads_of(bk, gg.pow, [0.0, 2.0, -1.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ga, [0.0, 0.0, 0.0])
    # d/db a**b = a**b log(a): log 2 at a = 2; 0 by convention where a <= 0
    np.testing.assert_allclose(gb, [0.0, math.log(2.0), 0.0], rtol=1e-6)


def test_kink_pow_at_zero_base(bk):
    (g,) = grads_of(bk, lambda t: gg.pow(t, 2.0), [0.0, 1.5])
    np.testing.assert_array_equal(g, [0.0, 3.0])
    (g,) = grads_of(bk, lambda t: gg.pow(t, 1.0), [0.0, 1.5])
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_astype_gradient_keeps_input_dtype(bk64):
    x = gg.Variable(np.array([0.5, -1.25], dtype=np.float32))
    y = gg.astype(x, dtype=dtype("float64"))
    assert B.dtype_name(y.dtype) == "float64"
    gg.sum(y * y).backward()
    assert x.grad.dtype == x.dtype
    np.testing.assert_array_equal(gg.to_numpy(x.grad), np.array([1.0, -2.5], np.float32))


# --- indexing: scatter-add and the NumPy fast paths -----------------------------------------

def test_take_repeated_and_negative_indices_accumulate(bk):
    idx = gg.asarray(np.array([1, 1, 3, -1, 1], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take(x, idx, axis=0), [10.0, 11.0, 12.0, 13.0, 14.0])
    np.testing.assert_array_equal(g, [0.0, 3.0, 0.0, 1.0, 1.0])
    idx2 = gg.asarray(np.array([[0, 0], [-1, 0]], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take(x, idx2, axis=1), np.ones((2, 3)))
    np.testing.assert_array_equal(g, [[3.0, 0.0, 1.0], [3.0, 0.0, 1.0]])


def test_take_along_axis_repeated_and_negative_indices_accumulate(bk):
    idx = gg.asarray(np.array([[0, 0, 2], [-1, 2, 0]], dtype=np.int64))
    (g,) = grads_of(bk, lambda x: gg.take_along_axis(x, idx, axis=1), np.ones((2, 3)))
    np.testing.assert_array_equal(g, [[2.0, 0.0, 1.0], [1.0, 0.0, 2.0]])


def scatter_add_loop(in_shape, idx, axis, g):
    """Hand-written backward of take: each gathered slice of g added back at its index."""
    base = (math.prod(in_shape),) if axis is None else in_shape
    ax = 0 if axis is None else axis % len(in_shape)
    out = np.zeros(base)
    lead = (slice(None),) * ax
    g = g.reshape(base[:ax] + idx.shape + base[ax + 1:])
    for j in np.ndindex(*idx.shape):
        out[lead + (int(idx[j]) % base[ax],)] += g[lead + j]
    return out.reshape(in_shape)


@pytest.mark.parametrize("variant,shape,idx,axis", TAKE_ARGS, ids=[t[0] for t in TAKE_ARGS])
def test_take_fast_path_matches_portable_rule(variant, shape, idx, axis, rng):
    op = gg.registry["take"]
    x = rng.standard_normal(shape)
    idx = np.asarray(idx, dtype=np.int64)
    out, res = op.forward(np, x, idx, axis=axis)
    g = rng.standard_normal(out.shape)
    g_before = g.copy()
    portable = op.grads(np, g, res, (True, False), {"axis": axis})
    fast = op.fast_vjp["numpy"](np, g, res, axis=axis)
    assert portable[1] is None and fast[1] is None
    expect = scatter_add_loop(shape, idx, axis, g)
    np.testing.assert_allclose(portable[0], expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast[0], expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("variant,shape,key", GETITEM_KEYS, ids=[k[0] for k in GETITEM_KEYS])
def test_getitem_fast_path_matches_portable_rule(variant, shape, key, rng):
    op = gg.registry["getitem"]
    x = rng.standard_normal(shape)
    out, res = op.forward(np, x, key=key)
    g = rng.standard_normal(np.shape(out))
    (portable,) = op.grads(np, g, res, (True,), {"key": key})
    (fast,) = op.fast_vjp["numpy"](np, g, res, key=key)
    # hand-derived: d sum(g * x[key]) / dx puts g at the selected positions, 0 elsewhere
    marker = np.arange(x.size, dtype=np.float64).reshape(shape)
    expect = np.zeros(x.size)
    np.put(expect, np.asarray(marker[key], dtype=np.int64).ravel(), np.ravel(g))
    expect = expect.reshape(shape)
    np.testing.assert_array_equal(portable, expect)
    np.testing.assert_array_equal(fast, expect)


# --- numerics: sigmoid and the softmax family -----------------------------------------------

def test_sigmoid_float32_accurate_without_warnings(bk):
    x = np.linspace(-100, 100, 20001).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = gg.Variable(x)
        s = gg.sigmoid(v)
        gg.sum(s).backward()
    got = gg.to_numpy(s)
    assert got.dtype == np.float32
    x64 = x.astype(np.float64)
    e = np.exp(-np.abs(x64))  # float64 reference in the overflow-free form
    ref = np.where(x64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    is_normal = ref >= np.finfo(np.float32).tiny
    assert is_normal.sum() > 18000 and (~is_normal).sum() > 1000  # both regimes are exercised
    rel = np.abs(got[is_normal].astype(np.float64) - ref[is_normal]) / ref[is_normal]
    assert rel.max() <= 1e-6, f"relative error {rel.max():.3g} at x={x[is_normal][rel.argmax()]}"
    sub_err = np.abs(got[~is_normal].astype(np.float64) - ref[~is_normal])
    assert sub_err.max() <= 4 * np.finfo(np.float32).smallest_subnormal
    grad = gg.to_numpy(v.grad)
    assert grad.dtype == np.float32
    assert np.all(np.isfinite(grad)) and np.all((grad >= 0) & (grad <= 0.25))


LARGE = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0]])
LOG2, LOG3 = math.log(2.0), math.log(3.0)


def exp_minus_out_rtol(bk):
    """Gradients computed as exp(x - out) inherit out's rounding: in float32, out = 1000 + log 2
    is off by up to half an ulp of 1000 (3e-5), and so is the gradient."""
    return 1e-6 if bk.float64 else 1e-4


def test_logsumexp_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.logsumexp(x, axis=-1)
        gg.sum(out).backward()
    np.testing.assert_allclose(gg.to_numpy(out), [1000.0 + LOG2, 0.0, -1000.0 + LOG3], rtol=1e-6)
    np.testing.assert_allclose(gg.to_numpy(x.grad),
                               [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
                               rtol=exp_minus_out_rtol(bk), atol=1e-7)


def test_softmax_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    w = gg.asarray(np.array([[1.0, -2.0, 3.0]] * 3, dtype=bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = gg.softmax(x, axis=-1)
        gg.sum(s * w).backward()
    np.testing.assert_allclose(gg.to_numpy(s),
                               [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
                               rtol=1e-6, atol=1e-7)
    # d/dx sum(w * s) = s * (w - sum(w * s)); hand-evaluated per row
    expect = [[0.5 * (1 + 0.5), 0.5 * (-2 + 0.5), 0.0], [0.0, 0.0, 0.0],
              [(1 - 2 / 3) / 3, (-2 - 2 / 3) / 3, (3 - 2 / 3) / 3]]
    np.testing.assert_allclose(gg.to_numpy(x.grad), expect, rtol=1e-5, atol=1e-6)


def test_log_softmax_large_and_infinite_inputs(bk):
    x = gg.Variable(LARGE.astype(bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.log_softmax(x, axis=-1)
        gg.sum(out[:, 0]).backward()
    got = gg.to_numpy(out)
    np.testing.assert_allclose(got[0, :2], [-LOG2, -LOG2], rtol=1e-6)
    assert got[0, 2] == -np.inf and got[1, 0] == -np.inf
    np.testing.assert_allclose(got[1, 1:], [0.0, -1000.0], atol=1e-6)
    np.testing.assert_allclose(got[2], [-LOG3] * 3, rtol=1e-6)
    # d out[i, 0] / dx[i, :] = onehot(0) - softmax(x[i])
    grad = gg.to_numpy(x.grad)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [1.0, -1.0, 0.0],
                                      [2 / 3, -1 / 3, -1 / 3]], rtol=1e-5, atol=1e-6)


def test_logaddexp_large_and_infinite_inputs(bk):
    a = gg.Variable(np.array([1000.0, -1000.0, -np.inf, 3.0, -np.inf], dtype=bk.float_dtype))
    b = gg.Variable(np.array([1000.0, -1000.0, 0.0, 3.0, -np.inf], dtype=bk.float_dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gg.logaddexp(a, b)
        gg.sum(out).backward()
    np.testing.assert_allclose(gg.to_numpy(out)[:4], [1000 + LOG2, -1000 + LOG2, 0.0, 3 + LOG2],
                               rtol=1e-6)
    assert gg.to_numpy(out)[4] == -np.inf
    # d/da = exp(a - out): ties split evenly; -inf gets nothing; both -inf: 0, not nan
    rtol = exp_minus_out_rtol(bk)
    np.testing.assert_allclose(gg.to_numpy(a.grad), [0.5, 0.5, 0.0, 0.5, 0.0], rtol=rtol)
    np.testing.assert_allclose(gg.to_numpy(b.grad), [0.5, 0.5, 1.0, 0.5, 0.0], rtol=rtol)


def test_logsumexp_all_minus_inf_is_minus_inf(bk):
    x = gg.asarray(np.full((2,), -np.inf, dtype=bk.float_dtype))
    with np.errstate(divide="ignore"):  # log(0) is exact here
        out = gg.logsumexp(x)
    assert gg.to_numpy(out) == -np.inf


# --- elementwise NumPy fast paths against their portable rules ---------------------------

_EXTREMES = np.array([-1000.0, -100.0, -88.8, -20.0, -1e-8, 0.0, 1e-8, 3.0, 20.0, 100.0,
                      1000.0, np.inf, -np.inf])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(), (13,), (4, 13)])
def test_sigmoid_fast_path_matches_portable_rule(dtype, shape, rng):
    op = gg.registry["sigmoid"]
    x = np.broadcast_to(_EXTREMES, (4, 13)).astype(dtype) if shape == (4, 13) else (
        _EXTREMES.astype(dtype) if shape == (13,) else np.asarray(-30.0, dtype))
    before = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, fres = op.fast_forward["numpy"](np, x)
        slow, sres = op.forward(np, x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(fast, slow, rtol=2e-7 if dtype == "float32" else 1e-15, atol=0)
    assert fast.dtype == slow.dtype == x.dtype
    for g in (rng.standard_normal(x.shape).astype(dtype),
              np.broadcast_to(np.asarray(1.0, dtype), x.shape),
              np.broadcast_to(np.asarray(-2.5, dtype), x.shape)):
        g_before = np.array(g)
        (gf,) = op.fast_vjp["numpy"](np, g, fres)
        (gs,) = op.vjp(np, g, sres)
        np.testing.assert_allclose(gf, gs, rtol=1e-6 if dtype == "float32" else 1e-14,
                                   atol=0)
        np.testing.assert_array_equal(g, g_before)
        assert np.asarray(gf).dtype == x.dtype


def test_relu_fast_path_matches_portable_rule(rng):
    op = gg.registry["relu"]
    x = np.concatenate([rng.standard_normal(20), [0.0, -0.0, 1e-300, -1e-300]])
    g = rng.standard_normal(x.shape)
    (gf,) = op.fast_vjp["numpy"](np, g, x)
    (gs,) = op.vjp(np, g, x)
    np.testing.assert_array_equal(gf, gs)
    assert gf[20] == 0.0 and gf[21] == 0.0  # relu'(0) = 0 on both paths


def test_sigmoid_fast_path_float32_accuracy_where_it_runs():
    """The fast path itself (not its exact fallback) keeps float32 relative error <= 1e-6."""
    op = gg.registry["sigmoid"]
    x = np.linspace(-88.0, 100.0, 40001, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = op.fast_forward["numpy"](np, x)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    normal = ref >= np.finfo(np.float32).tiny
    rel = np.abs(out[normal].astype(np.float64) - ref[normal]) / ref[normal]
    assert rel.max() <= 1e-6
    assert not normal.all()  # the range reaches subnormal results too
    tiny = np.finfo(np.float32).smallest_subnormal
    assert np.all(np.abs(out[~normal] - ref[~normal]) <= 4 * tiny)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 2), (2,)), ((2, 3, 4), (4, 2), (1, 2)),
                                    ((3, 4), (4, 2), (3, 1)), ((4,), (4, 2), (2,))], ids=str)
def test_linear_fast_path_matches_portable_rule(shapes, rng):
    op = gg.registry["linear"]
    x, w, b = (rng.standard_normal(s) for s in shapes)
    before = [a.copy() for a in (x, w, b)]
    fast, _ = op.fast_forward["numpy"](np, x, w, b)
    slow, _ = op.forward(np, x, w, b)
    np.testing.assert_allclose(fast, slow, rtol=1e-14)
    for a, a0 in zip((x, w, b), before):
        np.testing.assert_array_equal(a, a0)
    b32 = b.astype(np.float32)  # mixed dtypes never take the in-place path
    np.testing.assert_allclose(op.fast_forward["numpy"](np, x, w, b32)[0], x @ w + b32)
