"""The NumPy fast paths added to cut eager overhead, each against its portable rule (the
definition): sum/mean backward, take_along_axis, softmax_cross_entropy, and the engine's
unbroadcast. Plus the eager ``nn.cross_entropy`` (one fused op) against its graph form (the
composite log_softmax / take_along_axis) and hand-derived gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.ops import indexing, reductions, softmax
from gpugrad.shaping import unbroadcast


def _same(fast, portable):
    fast, portable = np.asarray(fast), np.asarray(portable)
    assert fast.shape == portable.shape and fast.dtype == portable.dtype
    np.testing.assert_allclose(fast, portable, rtol=1e-6 if fast.dtype == np.float32 else 1e-14,
                               atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sum", "mean"])
@pytest.mark.parametrize("shape,axis,keepdims", [
    ((3, 4), None, False), ((3, 4), None, True), ((2, 3, 4), (0, 2), False),
    ((5,), 0, True), ((), None, False), ((0, 3), None, False)])
def test_reduction_vjp_fast_path_equals_portable(name, shape, axis, keepdims, dtype):
    op = gg.registry[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the mean of nothing
        out, res = op.forward(np, x, axis=axis, keepdims=keepdims)
    g = np.asarray(rng.standard_normal(np.shape(out)).astype(dtype))
    (fast,) = op.fast_vjp["numpy"](np, g, res, axis=axis, keepdims=keepdims)
    (portable,) = op.vjp(np, g, res, axis=axis, keepdims=keepdims)
    _same(fast, portable)


def test_full_reduction_gradient_is_a_read_only_view():
    g = np.asarray(np.float64(2.5))
    (fast,) = reductions.sum.fast_vjp["numpy"](np, g, (3, 4))
    assert fast.shape == (3, 4) and not fast.flags.writeable and not any(fast.strides)
    np.testing.assert_array_equal(fast, np.full((3, 4), 2.5))


@pytest.mark.parametrize("shape,idx,axis", [
    ((3, 4), [[1], [3], [-1]], -1),       # the fast case: one label per row
    ((3, 4), [[1], [3], [0]], 1),
    ((3, 4), [[0, 0], [3, -1], [1, 2]], -1),  # repeats: the portable rule
    ((3, 2), [[2, 0], [2, -3]], 0),
])
def test_take_along_axis_fast_paths_equal_portable(shape, idx, axis):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    idx = np.asarray(idx)
    op = indexing.take_along_axis
    fast, fres = op.fast_forward["numpy"](np, x, idx, axis=axis)
    portable, pres = op.forward(np, x, idx, axis=axis)
    _same(fast, portable)
    g = rng.standard_normal(portable.shape)
    _same(op.fast_vjp["numpy"](np, g, fres, axis=axis)[0],
          op.vjps[0](np, g, pres, axis=axis)[0] if op.vjps else op.vjp(np, g, pres, axis=axis)[0])


def _ce_cases():
    rng = np.random.default_rng(2)
    yield rng.standard_normal((5, 4)), np.array([0, 3, 1, -1, 2]), -1
    yield rng.standard_normal((5, 4)).astype("float32"), np.array([0, 3, 1, 1, 2]), 1
    yield np.array([[1e4, -1e4, 0.0], [-np.inf, 0.0, 1.0]]), np.array([0, 2]), -1
    yield np.array([[np.inf, 0.0], [1.0, 2.0]]), np.array([1, 0]), -1  # non-finite: portable
    yield rng.standard_normal((3, 2, 4)), np.array([[0, 3], [1, 1], [2, 0]]), -1
    yield rng.standard_normal((3, 2)), np.array([2, 0]), 0


@pytest.mark.parametrize("x,t,axis", list(_ce_cases()))
@pytest.mark.parametrize("scalar_g", [False, True])
def test_softmax_cross_entropy_fast_paths_equal_portable(x, t, axis, scalar_g):
    op = softmax.softmax_cross_entropy
    with np.errstate(invalid="ignore"):
        fast, fres = op.fast_forward["numpy"](np, x, t, axis=axis)
        portable, pres = op.forward(np, x, t, axis=axis)
    np.testing.assert_allclose(fast, portable, rtol=1e-6 if x.dtype == np.float32 else 1e-13)
    assert fast.dtype == portable.dtype
    rng = np.random.default_rng(3)
    if scalar_g:  # what the backward of a mean hands over: a stride-0 view
        g = np.broadcast_to(np.asarray(0.25, dtype=x.dtype), portable.shape)
    else:
        g = rng.standard_normal(portable.shape).astype(x.dtype)
    with np.errstate(invalid="ignore"):
        gf, _ = op.fast_vjp["numpy"](np, g, fres, axis=axis)
        gp, _ = op.vjp(np, g, pres, axis=axis)
    np.testing.assert_allclose(gf, gp, rtol=1e-6 if x.dtype == np.float32 else 1e-13,
                               atol=1e-7 if x.dtype == np.float32 else 1e-15)
    assert gf.dtype == x.dtype


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot(bk64):
    x = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    t = np.array([2, 0])
    logits = gg.Variable(x)
    gg.sum(gg.softmax_cross_entropy(logits, gg.asarray(t))).backward()
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    np.testing.assert_allclose(gg.to_numpy(logits.grad), p - np.eye(3)[t], rtol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_eager_cross_entropy_equals_its_graph_form(reduction, bk64):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, 6)
    logits = gg.Variable(x)
    eager = nn.cross_entropy(logits, gg.asarray(t), reduction=reduction)  # one fused op on the tape
    assert eager._node.op.name == "softmax_cross_entropy" or reduction != "none"
    xs = gg.Placeholder((6, 5), "float64", name="x")
    ts = gg.Placeholder((6,), "int64", name="t")
    graph = nn.cross_entropy(xs, ts, reduction=reduction)  # the composite
    feed = {xs: x, ts: t}
    np.testing.assert_allclose(gg.to_numpy(eager), gg.to_numpy(graph.eval(feed)), rtol=1e-13)
    seed = rng.standard_normal(tuple(eager.shape))
    eager.backward(grad=gg.asarray(seed))
    (gx,) = gg.gradients(graph, [xs], feed=feed, grad=gg.asarray(seed))
    np.testing.assert_allclose(gg.to_numpy(logits.grad), gg.to_numpy(gx), rtol=1e-12,
                               atol=1e-15)


def test_eager_cross_entropy_copies_host_labels(numpy_backend):
    x = np.array([[1.0, 2.0, 0.5]])
    t = np.array([1])
    logits = gg.Variable(x)
    loss = nn.cross_entropy(logits, t)
    t[0] = 0  # the caller's array changes before backward: the tape kept its own copy
    loss.backward()
    p = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(gg.to_numpy(logits.grad), p - [[0.0, 1.0, 0.0]], rtol=1e-13)


@pytest.mark.parametrize("gshape,shape", [
    ((4, 3), (3,)), ((4, 3), (1, 3)), ((2, 4, 3), (4, 1)), ((4, 3), (4, 3)), ((3,), ()),
    ((2, 3), ()), ((0, 3), (3,)), ((3,), (2, 3))])
def test_unbroadcast_numpy_equals_portable(gshape, shape):
    import array_api_strict as strict

    rng = np.random.default_rng(5)
    g = rng.standard_normal(gshape)
    fast = unbroadcast(np, g, shape)
    portable = unbroadcast(strict, strict.asarray(g), shape)
    assert fast.shape == shape
    np.testing.assert_allclose(fast, np.asarray(portable), rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_fast_forward_equals_portable_at_the_extremes(dtype):
    """1 / (1 + exp(-x)) in one buffer, with the exact rule wherever exp(-x) overflows: the
    same values (subnormals included), and no warning."""
    op = gg.registry["sigmoid"]
    info = np.finfo(dtype)
    rng = np.random.default_rng(2)
    special = [0.0, -0.0, 1.0, -1.0, 20.0, -20.0, 88.0, -88.8, 89.0, 100.0, -100.0, -103.0,
               700.0, -720.0, -745.0, np.inf, -np.inf, info.max, -info.max, info.tiny]
    for x in (np.array(special, dtype), (rng.standard_normal(500) * 30).astype(dtype),
              np.array([[np.nan, 2.0], [3.0, -np.inf]], dtype)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fast, saved = op.fast_forward["numpy"](np, x)
            portable, _ = op.forward(np, x)
        assert saved is fast and fast.dtype == x.dtype
        rtol = 4 * info.eps
        np.testing.assert_allclose(fast, portable, rtol=rtol, atol=0)
        assert np.array_equal(fast == 0, portable == 0)  # an underflow to zero in both or none
