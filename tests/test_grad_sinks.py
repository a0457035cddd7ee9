"""Gradient sinks (gpugrad.eager.grad_sinks): a sweep writes a registered leaf's gradient into
a given array, as gpugrad.distributed's sharded update has it write into shared memory. The
gradients must be exactly the ones the sweep computes without sinks, and those must match
finite differences."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import eager
from gpugrad.ops import linalg
from tests.helpers import host


@contextlib.contextmanager
def sinks_for(params):
    """Register a fresh array per parameter, shaped like it; unregister afterwards."""
    made = {}
    for p in params:
        made[p] = p.xp.zeros(p.shape, dtype=p.dtype, device=p.device)
        eager.grad_sinks[p] = made[p]
    try:
        yield made
    finally:
        for p in params:
            eager.grad_sinks.pop(p, None)


def make(seed=0, dtype="float64"):
    r = np.random.default_rng(seed)
    W = gg.Variable(r.normal(size=(4, 3)).astype(dtype), name="W")
    b = gg.Variable(r.normal(size=3).astype(dtype), name="b")
    V = gg.Variable(r.normal(size=(3, 2)).astype(dtype), name="V")
    x = gg.asarray(r.normal(size=(2, 5, 4)).astype(dtype))  # a stack: Linear on (B, T, F)
    return [W, b, V], x


def loss(ps, x):
    W, b, V = ps
    h = gg.tanh(linalg.linear(x, W, b))   # W's first gradient: the stacked product
    t = (x @ W) * 0.5                      # W's second: added in place into its sink
    return gg.sum(gg.sin(h @ V) * 2.0) + gg.sum(t * t)


def fresh_grads(seed=0, dtype="float64"):
    ps, x = make(seed, dtype)
    loss(ps, x).backward()
    return [host(p.grad) for p in ps]


def numeric(ps, x, eps=1e-6):
    """Central differences of ``loss`` for every entry of every parameter (float64)."""
    out = []
    for p in ps:
        base = np.array(gg.to_numpy(p.data), dtype=np.float64)
        g = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            vals = []
            for d in (eps, -eps):
                moved = base.copy()
                moved[idx] += d
                p.data = p.xp.asarray(moved, device=p.device)
                vals.append(float(gg.to_numpy(loss(ps, x).data)))
            g[idx] = (vals[0] - vals[1]) / (2 * eps)
        p.data = p.xp.asarray(base, device=p.device)
        out.append(g)
    return out


def test_a_sweep_writes_registered_gradients_into_their_sinks_exactly(bk64, monkeypatch):
    want = fresh_grads()
    ps, x = make()
    calls = []
    into = linalg._matmul_db_numpy.into
    monkeypatch.setattr(linalg._matmul_db_numpy, "into",
                        lambda *a: calls.append(into(*a) is not None) or calls[-1] or None)
    with sinks_for(ps) as sinks:
        loss(ps, x).backward()
        # on NumPy, V's gradient and W's first were computed in their sinks (W's second is
        # added in place)
        assert calls == ([True, True] if bk64.name == "numpy" else [])
        for p, w in zip(ps, want):
            assert p.grad is sinks[p]  # the array itself, not a copy
            np.testing.assert_array_equal(host(p.grad), w)  # the same bits as without
        # and both match finite differences
        for p, n in zip(ps, numeric(ps, x)):
            np.testing.assert_allclose(host(p.grad), n, rtol=1e-6, atol=1e-7, err_msg=p.name)


def test_float32_sinks_match_the_plain_sweep(bk):
    want = fresh_grads(3, "float32")
    ps, x = make(3, "float32")
    with sinks_for(ps) as sinks:
        loss(ps, x).backward()
        for p, w in zip(ps, want):
            assert p.grad is sinks[p]
            np.testing.assert_array_equal(host(p.grad), w)


def test_accumulating_without_zero_grad_keeps_the_old_gradient_apart(bk64):
    """A second backward adds out of place: .grad becomes a private array holding the sum,
    and an array kept from the first .grad (the sink) is not changed by it."""
    want = fresh_grads()
    ps, x = make()
    with sinks_for(ps) as sinks:
        loss(ps, x).backward()
        kept = [p.grad for p in ps]
        loss(ps, x).backward()
        for p, k, w in zip(ps, kept, want):
            assert p.grad is not sinks[p]
            np.testing.assert_array_equal(host(k), w)
            np.testing.assert_allclose(host(p.grad), 2 * w, rtol=1e-15, atol=0)
        # after zero_grad the sinks are used again (and overwritten: copy to keep)
        for p in ps:
            p.grad = None
        loss(ps, x).backward()
        for p, w in zip(ps, want):
            assert p.grad is sinks[p]
            np.testing.assert_array_equal(host(p.grad), w)


def test_a_sink_of_another_shape_or_dtype_is_not_used(numpy_backend):
    ps, x = make()
    W = ps[0]
    eager.grad_sinks[W] = np.zeros((3, 4))
    try:
        loss(ps, x).backward()
        assert W.grad is not eager.grad_sinks[W] and W.grad.shape == (4, 3)
        np.testing.assert_array_equal(W.grad, fresh_grads()[0])
    finally:
        del eager.grad_sinks[W]


def test_a_leaf_the_sweep_never_reaches_keeps_no_gradient(numpy_backend):
    ps, x = make()
    unused = gg.Variable(np.ones(2))
    with sinks_for(ps + [unused]) as sinks:
        loss(ps, x).backward()
        assert unused.grad is None and not np.any(sinks[unused])


@pytest.mark.parametrize("a_shape", [(5, 4), (2, 5, 4)])
def test_matmul_weight_gradient_into_an_array_is_the_rule_bit_for_bit(numpy_backend, a_shape):
    r = np.random.default_rng(1)
    a = r.normal(size=a_shape).astype(np.float32)
    w = r.normal(size=(4, 3)).astype(np.float32)
    g = r.normal(size=a_shape[:-1] + (3,)).astype(np.float32)
    want = linalg._matmul_db_numpy(np, g, (a, w))
    store = np.full(13, np.nan, np.float32)
    out = store[1:].reshape(4, 3)  # an offset slice of a bigger buffer, as a bucket's slot
    assert linalg._matmul_db_numpy.into(np, g, (a, w), out) is out
    np.testing.assert_array_equal(out, want)
    assert np.isnan(store[0])
    # where it cannot write into ``out``, it says so and leaves ``out`` alone
    for bad in (np.zeros((4, 3)), np.zeros((3, 4), np.float32).T, np.zeros((4, 2), np.float32)):
        assert linalg._matmul_db_numpy.into(np, g, (a, w), bad) is None
        assert not np.any(bad)
