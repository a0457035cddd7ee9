"""One compile for every batch size (gpugrad/compiler/batch.py): a graph's planned program and
a ``gg.compile`` trace serve every batch size, equal to eager results; what depends on the
batch size as a number (a trace that reads it, a slice of the batch, a weight sized like the
batch) is specialised or runs generically, and stays right."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.compiler import batch

TOL = {"rtol": 1e-12, "atol": 1e-14}
SIZES = [1, 2, 3, 31, 32, 33, 64, 100, 1024, 7, 1, 32]  # back to 1 after its frame went


def _np(a):
    return gg.to_numpy(a)


def _data(n, seed, d=8, classes=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, classes, n)


def _pair(sizes=(8, 16, 4)):
    """Two equal MLPs with SGD each: one to compile, one to run eagerly."""
    models = [nn.MLP(list(sizes), activation="sigmoid", seed=0, dtype="float64")
              for _ in range(2)]
    return models, [optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]


def _eager_step(model, opt, X, Y):
    opt.zero_grad()
    loss = nn.cross_entropy(model(gg.asarray(X)), gg.asarray(Y))
    loss.backward()
    opt.step()
    return loss


def _same_params(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        assert_orders_agree(_np(p.data), _np(q.data), **TOL)


def test_compiled_training_step_traces_and_plans_once_for_every_batch_size(numpy_backend):
    (a, b), (oa, ob) = _pair()
    step = gg.compile(lambda x, y: nn.cross_entropy(a(x), y))
    for k, n in enumerate(SIZES):
        X, Y = _data(n, k)
        oa.zero_grad()
        loss = step(gg.asarray(X), gg.asarray(Y))
        loss.backward()
        oa.step()
        assert_orders_agree(_np(loss), _np(_eager_step(b, ob, X, Y)), **TOL)
        _same_params(a, b)
    info = step.cache_info()
    assert info.traces == 1 and info.misses == 1 and info.hits == len(SIZES) - 1
    (entry,) = step._cache.values()
    assert entry.symbolic and entry.sched.builds == 1
    (prog,) = entry.sched.programs.values()
    assert prog.frames is not None and len(prog.frames.by_n) <= batch.FRAMES
    if prog.tier == "numpy":  # (GPUGRAD_JIT=now: the native tier's kernel sums it itself)
        assert "np.dot(ONESn_float64" in prog.source  # the bias gradient reads the frame's ones


def test_graph_minimize_and_gradients_plan_once_for_every_batch_size(numpy_backend):
    (a, b), (oa, ob) = _pair()
    x = gg.Placeholder((None, 8), "float64", name="x")
    y = gg.Placeholder((None,), "int64", name="y")
    loss = nn.cross_entropy(a(x), y)
    for k, n in enumerate(SIZES):
        X, Y = _data(n, k)
        value, grads = gg.value_and_gradients(loss, a.parameters(), feed={x: X, y: Y})
        ob.zero_grad()
        want = nn.cross_entropy(b(gg.asarray(X)), gg.asarray(Y))
        want.backward()
        assert_orders_agree(_np(value), _np(want), **TOL)
        only = gg.gradients(loss, a.parameters(), feed={x: X, y: Y})  # (a pruned program)
        for g, h, p in zip(grads, only, b.parameters()):
            assert_orders_agree(_np(g), _np(p.grad), **TOL)
            assert_orders_agree(_np(h), _np(p.grad), **TOL)
        got = oa.minimize(loss, feed={x: X, y: Y})
        assert_orders_agree(_np(got), _np(_eager_step(b, ob, X, Y)), **TOL)
        _same_params(a, b)
    for sched in loss._schedules.values():  # gradients, and the training step
        assert sched.builds == len(sched.programs) and 1 <= sched.builds <= 3
        for prog in sched.programs.values():  # cross-entropy's rows and count: per size
            if prog.tier == "numpy":  # (the native tier's kernels read the rows themselves)
                assert "ARn" in prog.source and "ONESn_float64" in prog.source
            assert not any(f"AR{n}" in prog.source for n in SIZES)
    modes = sum(len(s.programs) for s in loss._schedules.values())
    assert modes == 3  # value_and_gradients, gradients and minimize: one program each


def test_a_weight_sized_like_the_batch_is_not_the_batch(numpy_backend):
    """64x64 weights while the batch is 64, then other sizes: one program, right values; and
    a weight passed as an argument of the batch's size is told apart by its size later."""
    (a, b), (oa, ob) = _pair((64, 64, 64, 10))
    x = gg.Placeholder((None, 64), "float64", name="x")
    y = gg.Placeholder((None,), "int64", name="y")
    loss = nn.cross_entropy(a(x), y)
    for k, n in enumerate([64, 32, 64, 1]):
        X, Y = _data(n, k, d=64, classes=10)
        got = oa.minimize(loss, feed={x: X, y: Y})
        assert_orders_agree(_np(got), _np(_eager_step(b, ob, X, Y)), **TOL)
        _same_params(a, b)
    (sched,) = loss._schedules.values()
    assert sched.builds == 1
    rng = np.random.default_rng(0)
    f = gg.compile(lambda x, w: gg.sum(gg.tanh(x @ w)))
    W = rng.standard_normal((64, 64))
    for n in (64, 32, 64, 5):
        X = rng.standard_normal((n, 64))
        assert_orders_agree(_np(f(X, W)), np.sum(np.tanh(X @ W)), **TOL)
    assert f.cache_info().traces == 2  # x and w batched together at 64; w not at 32 or 5


def test_a_trace_that_reads_the_batch_size_is_specialised(numpy_backend):
    calls = []

    @gg.compile
    def per_row(x):
        calls.append(x.shape)
        return gg.sum(x * x) / x.shape[0]

    @gg.compile
    def col(x):  # reads the shape of a value without the batch: one trace
        s = gg.sum(x, axis=0)
        return gg.sum(s * s) / s.shape[0]

    rng = np.random.default_rng(1)
    for n in (2, 3, 2, 5):
        X = rng.standard_normal((n, 3))
        assert_orders_agree(_np(per_row(gg.asarray(X))), np.sum(X * X) / n, **TOL)
        assert_orders_agree(_np(col(gg.asarray(X))), np.sum(X.sum(0) ** 2) / 3, **TOL)
    assert per_row.cache_info().traces == 3 and calls == [(2, 3), (3, 3), (5, 3)]
    assert col.cache_info().traces == 1
    W = gg.Variable(rng.standard_normal((3, 2)), name="W")
    fixed = gg.compile(lambda x: gg.sum(gg.reshape(x, (4, -1)) @ W))  # 4: the first batch
    for _ in range(2):
        X = rng.standard_normal((4, 3))
        assert_orders_agree(_np(fixed(gg.asarray(X))), np.sum(X @ _np(W.data)), **TOL)
    (entry,) = fixed._cache.values()
    assert not entry.symbolic  # so another size traces again, and is refused, as eagerly:
    with pytest.raises(gg.errors.OpError, match="matmul"):  # (4, 6) @ (3, 2)
        fixed(gg.asarray(rng.standard_normal((8, 3))))
    assert fixed.cache_info().misses == 2


def test_a_slice_of_the_batch_runs_right_at_every_size(numpy_backend):
    """``x[:4]``: 4 rows at a batch of 8, 2 at a batch of 2 (that size runs the rules)."""
    rng = np.random.default_rng(2)
    x = gg.Placeholder((None, 3), "float64", name="x")
    W = gg.Variable(rng.standard_normal((3, 2)), name="W")
    loss = gg.sum(gg.tanh(x[:4] @ W))
    for n in (8, 8, 2, 2, 9, 8):
        X = rng.standard_normal((n, 3))
        value, (g,) = gg.value_and_gradients(loss, [W], feed={x: X})
        t = np.tanh(X[:4] @ _np(W.data))
        assert_orders_agree(_np(value), t.sum(), **TOL)
        assert_orders_agree(_np(g), X[:4].T @ (1 - t * t), **TOL)
    f = gg.compile(lambda x: gg.mean(gg.tanh(x[:4] @ W)))  # the same, traced (a mean: its
    for n in (8, 8, 2, 2, 9, 3):                           # count is the slice's, 4 rows)
        X = rng.standard_normal((n, 3))
        out = f(gg.asarray(X))
        out.backward()
        t = np.tanh(X[:4] @ _np(W.data))
        assert_orders_agree(_np(out), t.mean(), **TOL)
        assert_orders_agree(_np(W.grad), X[:4].T @ (1 - t * t) / t.size, **TOL)
        W.grad = None
    assert f.cache_info().traces == 1


def test_the_frames_a_program_keeps_are_bounded(numpy_backend):
    x = gg.Placeholder((None, 5), "float64", name="x")
    W = gg.Variable(np.ones((5, 2)), name="W")
    b = gg.Variable(np.zeros(2), name="b")
    loss = gg.mean(gg.sigmoid(x @ W + b))
    for n in range(1, 12):
        for _ in range(2):
            value, grads = gg.value_and_gradients(loss, [W, b], feed={x: np.ones((n, 5))})
        s = 1 / (1 + np.exp(-5.0))
        assert_orders_agree(_np(value), s, **TOL)
        assert_orders_agree(_np(grads[1]), np.full(2, s * (1 - s) / 2), **TOL)
    (sched,) = loss._schedules.values()
    (prog,) = sched.programs.values()
    assert sched.builds == 1 and prog.frames.made == 11
    assert len(prog.frames.by_n) == batch.FRAMES and "INV2n_float64" in prog.source


def test_every_batch_size_from_1_to_1024_is_one_trace_and_one_program(numpy_backend):
    """The issue's check, in full: a compiled loss and its gradients at each batch size
    from 1 to 1024 (against eager at a sample), with one trace and one planned program."""
    a, b = (nn.MLP([4, 8, 3], activation="tanh", seed=1, dtype="float64") for _ in range(2))
    step = gg.compile(lambda x, y: nn.cross_entropy(a(x), y))
    rng = np.random.default_rng(3)
    for n in range(1, 1025):
        X, Y = rng.standard_normal((n, 4)), rng.integers(0, 3, n)
        for m in (a, b):
            for p in m.parameters():
                p.grad = None
        loss = step(gg.asarray(X), gg.asarray(Y))
        loss.backward()
        if n % 41 and n not in (1, 2, 3, 31, 32, 33, 1024):
            continue  # against eager at a sample of the sizes
        want = nn.cross_entropy(b(gg.asarray(X)), gg.asarray(Y))
        want.backward()
        assert_orders_agree(_np(loss), _np(want), **TOL)
        for p, q in zip(a.parameters(), b.parameters()):
            assert_orders_agree(_np(p.grad), _np(q.grad), **TOL)
    info = step.cache_info()
    assert (info.traces, info.misses, info.hits) == (1, 1, 1023)
    (entry,) = step._cache.values()
    assert entry.sched.builds == 1 and len(entry.sched.programs) == 1
