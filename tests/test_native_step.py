"""The eager step's native kernel (gpugrad.optim_in_place._native_step) and the way from a
compiled loss to updated parameters: ``loss = step(x, y); loss.backward(); opt.step()``.

The kernel takes every parameter's arrays and the step's scalars once; it checks the
gradients' and states' shapes itself, and numba checks dtypes and C order, so anything it
cannot take leaves the parameters untouched and the NumPy step decides, with the same
numbers and counts as ``GPUGRAD_JIT=0``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_ulp_close

import gpugrad as gg
from gpugrad import GradientError, nn, optim

pytest.importorskip("numba")


def _agree(a, b, dtype):
    if dtype == "float64":
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    else:
        assert_ulp_close(a, b, ulps=4)


def _train(name, dtype, grads, steps=6):
    """Eager steps of a small MLP; ``grads(k, params)`` may replace the gradients of step
    ``k`` before ``opt.step()``. The parameters and the optimizer's counts after them."""
    model = nn.MLP([5, 7, 3], activation="tanh", seed=2, dtype=dtype)
    opt = optim.OPTIMIZERS[name](model.parameters(), lr=0.05)
    rng = np.random.default_rng(4)
    for k in range(steps):
        X, Y = rng.standard_normal((6, 5)).astype(dtype), rng.integers(0, 3, 6)
        opt.zero_grad()
        nn.cross_entropy(model(gg.asarray(X)), Y).backward()
        grads(k, opt.params)
        opt.step()
    counts = (opt.steps, [opt.param_steps.get(p) for p in opt.params])
    return [np.array(p.data) for p in opt.params], counts, opt


def _both(monkeypatch, name, dtype, grads, steps=6):
    """The NumPy step's results, then the native one's (whose plan did go native)."""
    monkeypatch.setenv("GPUGRAD_JIT", "0")
    want = _train(name, dtype, grads, steps)
    monkeypatch.setenv("GPUGRAD_JIT", "now")
    got = _train(name, dtype, grads, steps)
    assert got[2]._scratch.native, "the planned step did not go native"
    return want, got


def _keep(k, params):
    pass


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_gradients_the_kernel_refuses_take_the_numpy_step(name, dtype, native, monkeypatch):
    """A Fortran-ordered gradient (numba has no signature for it), one of another dtype, one
    that broadcasts to its parameter (the kernel's own shape check): the step's numbers and
    counts are those of ``GPUGRAD_JIT=0``, step by step."""
    other = "float32" if dtype == "float64" else "float64"

    def odd(k, params):
        g = params[0].grad
        if k == 3:
            params[0].grad = np.asfortranarray(g)
        elif k == 4:
            params[0].grad = g.astype(other)
        elif k == 5:  # (1, 7): broadcasts to the (5, 7) weight
            params[0].grad = np.ascontiguousarray(g[:1])

    want, got = _both(monkeypatch, name, dtype, odd)
    for a, b in zip(got[0], want[0]):
        _agree(a, b, dtype)
    assert got[1] == want[1]


def test_adam_whose_parameters_counted_apart_takes_the_numpy_step(native, monkeypatch):
    """Adam counts each parameter's updates: where one parameter had no gradient at some
    step, the counts differ, the scalars are not shared and the NumPy step runs, counting
    each as ``GPUGRAD_JIT=0`` does."""
    def skip(k, params):
        if k == 2:
            params[1].grad = None

    want, got = _both(monkeypatch, "adam", "float64", skip, steps=8)
    for a, b in zip(got[0], want[0]):
        _agree(a, b, "float64")
    assert got[1] == want[1] and got[1][1][1] == 7


def test_the_eager_kernel_writes_nothing_where_a_shape_does_not_fit(native):
    """The kernel checks every parameter before it writes: a gradient of the wrong shape
    for the second parameter leaves the first one untouched too."""
    from gpugrad.compiler import native_update, tier

    kernel = native_update.Update("T n0 = (P - (h2 * G));\nP = n0;", ["h2"], 0, [2, 1],
                                  "float64", eager=True)
    nu = tier.compiled([("NU", kernel)]).NU
    P0, P1 = np.ones((3, 4)), np.ones(4)
    assert nu(P0, np.ones((3, 4)), P1, np.ones(3), 0.5)
    assert (P0 == 1).all() and (P1 == 1).all()
    assert not nu(P0, np.ones((3, 4)), P1, np.ones(4), 0.5)
    assert (P0 == 0.5).all() and (P1 == 0.5).all()


def test_a_graph_saved_before_a_native_step_refuses_to_backward(native):
    """The native step records its writes as the NumPy step does: a graph that saved a
    parameter before the step refuses to backward after it."""
    _, _, opt = _train("sgd", "float64", _keep)
    W = opt.params[0]
    stale = gg.sum(W * W)
    W.grad = np.ones_like(W.data)
    for p in opt.params[1:]:
        p.grad = np.zeros_like(p.data)
    before = W.data
    opt.step()
    assert W.data is before and (W.data != 0).any()
    with pytest.raises(GradientError, match="SGD step"):
        stale.backward()


def test_a_compiled_loss_steps_as_the_eager_code_does(native):
    """``opt.zero_grad(); loss = step(x, y); loss.backward(); opt.step()`` with the compiled
    call's whole program and the native step: the same losses, gradients and parameters as
    the eager code (4 ulps in float32), and gradients add up when not zeroed."""
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 5)).astype("float32"), rng.integers(0, 3, 8))
                for _ in range(6)]
    runs = []
    for compiled in (False, True):
        model = nn.MLP([5, 7, 3], activation="sigmoid", seed=1, dtype="float32")
        opt = optim.SGD(model.parameters(), lr=0.1)
        def fn(x, y, model=model):
            return nn.cross_entropy(model(x), y)

        step = gg.compile(fn) if compiled else fn
        seen = []
        for X, Y in batches:
            opt.zero_grad()
            loss = step(gg.asarray(X), gg.asarray(Y))
            loss.backward()
            seen.append(float(loss))
            opt.step()
        opt.zero_grad()
        loss = step(gg.asarray(X), gg.asarray(Y))
        loss.backward()
        once = [np.array(p.grad) for p in opt.params]
        step(gg.asarray(X), gg.asarray(Y)).backward()  # not zeroed: adds
        twice = [np.array(p.grad) for p in opt.params]
        runs.append((seen, [np.array(p.data) for p in opt.params], once, twice))
        if compiled:
            assert opt._scratch.native and step.cache_info().traces == 1
    (l0, p0, g0, _), (l1, p1, g1, t1) = runs
    assert_ulp_close(np.float32(l1), np.float32(l0), ulps=4)
    for a, b in zip(p1 + g1, p0 + g0):
        assert_ulp_close(a, b, ulps=4)
    for t, g in zip(t1, g1):
        np.testing.assert_array_equal(t, g + g)
    with pytest.raises(GradientError, match="retain_graph"):
        loss.backward()


@pytest.mark.parametrize("planned", ["eager", "graph"])
def test_an_overflowing_native_update_is_reported_as_numpy_would(planned, native):
    """An update that makes an infinity of finite numbers (a finite gradient times a large
    learning rate): every parameter is written (and its version says so), then NumPy's
    error state decides: raise, warn, or nothing; a graph's step is not run again (it would
    step twice)."""
    w, u = gg.Variable(np.array([1.0])), gg.Variable(np.array([1e-300]))
    opt = optim.SGD([w, u], lr=1e10, momentum=0.5)
    x, y = gg.Placeholder((1,), "float64"), gg.Placeholder((1,), "float64")
    loss = gg.sum(w * x) + gg.sum(u * y)

    def step(big):
        ys = np.array([big])
        if planned == "eager":
            opt.zero_grad()
            (gg.sum(w * np.ones(1)) + gg.sum(u * ys)).backward()
            opt.step()
        else:
            opt.minimize(loss, feed={x: np.ones(1), y: ys})

    for _ in range(3):  # planned, then native; u's gradient 0
        step(0.0)
    before, w_before = (w.version, u.version), float(w.data[0])
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        step(1e300)
    assert w.version > before[0] and u.version > before[1]
    assert np.isneginf(u.data[0]) and np.isfinite(w.data[0])
    assert float(w.data[0]) > w_before - 1e10 * 4  # one step (velocity 1.875), not two
    u.data[...] = 1e-300
    with pytest.warns(RuntimeWarning, match="overflow"):
        step(1e300)
    u.data[...] = 1e-300
    with np.errstate(over="ignore"):
        step(1e300)
    assert np.isneginf(u.data[0])
