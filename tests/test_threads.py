"""Threads: grad mode, backend and anomaly mode are per thread, so separate models train
concurrently exactly as they do one after another; two threads accumulating into one shared
leaf both land (docs/errors.md)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim


@pytest.fixture
def switch_often():
    """Make the interpreter switch threads every few microseconds, so that any unguarded
    read-modify-write shared between threads gets interleaved."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _data(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((16, 5)).astype("float32"), rng.integers(0, 3, 16))


def _train_eager(seed, steps=25):
    X, y = _data(seed)
    with gg.use_backend("numpy"):
        model = nn.MLP([5, 8, 3], activation="tanh", seed=seed)
        opt = optim.Adam(model.parameters(), lr=0.01)
        xt, yt = gg.asarray(X), gg.asarray(y)
        losses = []
        for i in range(steps):
            if i % 3 == 0:
                with gg.no_grad():  # per thread: must not switch off the others' tapes
                    model(xt)
            loss = nn.cross_entropy(model(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return losses, [gg.to_numpy(p).copy() for p in model.parameters()]


def _train_graph(seed, steps=25):
    X, y = _data(seed)
    with gg.use_backend("numpy"):
        model = nn.MLP([5, 8, 3], activation="sigmoid", seed=seed)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        xs = gg.Placeholder((None, 5), "float32", name="x")
        ys = gg.Placeholder((None,), "int64", name="y")
        loss = nn.cross_entropy(model(xs), ys)
        losses = [float(opt.minimize(loss, feed={xs: X, ys: y})) for _ in range(steps)]
        return losses, [gg.to_numpy(p).copy() for p in model.parameters()]


def _in_threads(fns):
    results = [None] * len(fns)
    errors = []
    start = threading.Barrier(len(fns))

    def run(i):
        try:
            start.wait(10)
            results[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_eight_threads_train_separate_models_exactly_as_serial_runs(switch_often):
    jobs = [lambda s=s: _train_eager(s) for s in range(4)] + \
           [lambda s=s: _train_graph(s) for s in range(4)]
    serial = [job() for job in jobs]
    threaded = _in_threads(jobs)
    for (losses, params), (t_losses, t_params) in zip(serial, threaded):
        assert losses == t_losses
        for a, b in zip(params, t_params):
            np.testing.assert_array_equal(a, b)
    assert serial[0][0] != serial[1][0]  # the jobs differ, so equality above means something


def test_threads_accumulating_into_one_shared_leaf_lose_nothing(switch_often):
    """Each thread runs backward 200 times into the same Variable. The gradients are integers,
    so the total is exact whatever the order: nothing may be lost to a race on ``.grad``."""
    W = gg.Variable(np.zeros(4))
    n, reps = 8, 200

    def work(k):
        c = gg.asarray(np.full(4, float(k + 1)))
        for _ in range(reps):
            gg.sum(W * c).backward()

    _in_threads([lambda k=k: work(k) for k in range(n)])
    expected = reps * sum(range(1, n + 1))
    np.testing.assert_array_equal(W.grad, [expected] * 4)
