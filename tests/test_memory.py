"""Memory and scale: no reference cycles, no growth over long runs, fan-out in linear time.

The 200,000-op chain is in test_engine.py (test_long_chain_is_iterative).
"""

from __future__ import annotations

import gc
import sys
import os
import tracemalloc
import weakref

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim


@pytest.fixture
def no_gc():
    """Only reference counting frees memory here: anything in a cycle would stay."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _eager_graph(op, x):
    h1 = op(x)
    h2 = gg.sigmoid(h1) * x
    h2 += 1.0  # an in-place update, recorded
    y = gg.sum(op(h2) + h1)
    return [h1, h2, y], [weakref.ref(h1._node.res), weakref.ref(y._node.inputs[0].inputs[0].res)]


@pytest.mark.parametrize("run_backward", [False, True])
@pytest.mark.parametrize("anomaly", [False, True])
def test_no_reference_cycles_in_eager_graphs(no_gc, saving_op, run_backward, anomaly):
    with gg.use_backend("numpy"):
        x = gg.Variable(np.array([0.5, -1.0, 2.0]))
        mode = gg.detect_anomaly() if anomaly else gg.no_grad.__new__(_Nothing)
        with mode:
            tensors, saved = _eager_graph(saving_op, x)
            if run_backward:
                tensors[-1].backward(retain_graph=True)  # keep residuals until del
        refs = [weakref.ref(t) for t in tensors] + saved
        assert all(r() is not None for r in refs)
        del tensors
        assert [r() for r in refs] == [None] * len(refs)
        assert (x.grad is not None) == run_backward


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_no_reference_cycles_in_graphs_and_checked_raw_arrays(no_gc, saving_op):
    with gg.use_backend("numpy"):
        W = gg.Variable(np.ones((3, 2)))
        x = gg.Placeholder((None, 3), "float64", name="x")
        loss = gg.sum(saving_op(gg.tanh(x @ W)))
        for _ in range(2):  # the checked first run and a compiled one
            gg.gradients(loss, [W], feed={x: np.ones((4, 3))})
        refs = [weakref.ref(loss), weakref.ref(x)]
        del loss, x
        assert [r() for r in refs] == [None, None]
        raw = np.array([1.0, 2.0])  # checksummed: the Node keeps (array, crc)
        y = gg.sum(saving_op(gg.Variable(np.ones(2)) * raw))
        ref = weakref.ref(y)
        y.backward()
        del y
        assert ref() is None


def _traced_bytes(ignore):
    gc.collect()
    return sum(t.size for t in tracemalloc.take_snapshot().filter_traces(ignore).traces)


def _grown(step, warmup, steps):
    """Traced memory growth (bytes) over ``steps`` steps, after ``warmup`` steps.

    NumPy keeps freed small buffers and shape arrays in caches of its own, which fill up slowly
    under tracing; allocations made by NumPy's Python code for itself are left out (arrays are
    not: their data is traced in NumPy's own domain, which is kept)."""
    ignore = [tracemalloc.Filter(False, os.path.join(os.path.dirname(np.__file__), "*"),
                                 domain=0),
              tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen *>"),
              tracemalloc.Filter(False, os.path.join(os.path.dirname(os.__file__), "*"))]
    tracemalloc.start()
    try:
        for _ in range(warmup):  # traced too: the bounded write logs refill with traced
            step()  # entries, and version numbers pass the small-int cache
        start = _traced_bytes(ignore)
        for _ in range(steps):
            step()
        return _traced_bytes(ignore) - start
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_no_growth_over_5000_eager_and_5000_graph_steps():
    """A linear model trained eagerly (SGD with momentum) and as a graph (Adam): after warm-up,
    5,000 traced steps each leave no memory behind. One leaked object per step would show as
    several hundred kilobytes."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4)).astype("float32")
    T = rng.standard_normal((8, 2)).astype("float32")
    with gg.use_backend("numpy"):
        model = nn.Linear(4, 2, seed=0)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        xt, tt = gg.asarray(X), gg.asarray(T)

        def eager_step():
            loss = nn.mse_loss(model(xt), tt)
            opt.zero_grad()
            loss.backward()
            opt.step()

        gmodel = nn.Linear(4, 2, seed=0)
        gopt = optim.Adam(gmodel.parameters(), lr=0.01)
        xs = gg.Placeholder((None, 4), "float32", name="x")
        ts = gg.Placeholder((None, 2), "float32", name="t")
        gloss = nn.mse_loss(gmodel(xs), ts)
        feed = {xs: X, ts: T}

        def graph_step():
            gopt.minimize(gloss, feed=feed)

        eager = _grown(eager_step, 400, 5_000)
        graph = _grown(graph_step, 400, 5_000)
    # one leaked object per step would be >= 5,000 x 48 bytes = 240 kB; 32 kB leaves room for
    # one-off interpreter growth (a dict or cache resizing once) without hiding a leak
    assert eager < 32_768, f"eager training grew by {eager} bytes over 5,000 steps"
    assert graph < 32_768, f"graph training grew by {graph} bytes over 5,000 steps"


def _fan_out_backward_work(n):
    """Python lines run plus C functions called by the backward of one Tensor used n times:
    a count, not a time, so it is the same on a loaded machine."""
    x = gg.Variable(np.array([1.5]))
    s = x
    for _ in range(n):
        s = s + x
    events = [0]

    def tracer(frame, event, arg):
        events[0] += 1
        return tracer

    def profiler(frame, event, arg):
        if event == "c_call":
            events[0] += 1

    sys.settrace(tracer)
    sys.setprofile(profiler)
    try:
        s.backward()
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    assert x.grad[0] == float(n + 1)  # exact: an integer
    return events[0]


def test_fan_out_work_grows_linearly():
    """One Tensor used 4,000 times costs about twice the backward work of 2,000 times
    (quadratic accumulation would give 4x). Work is counted, not timed."""
    with gg.use_backend("numpy"):
        small = _fan_out_backward_work(2_000)
        large = _fan_out_backward_work(4_000)
    assert large / small < 2.2, f"4k uses: {large} events, 2k uses: {small} events"
