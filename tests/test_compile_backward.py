"""``loss.backward()`` from a ``gg.compile`` call whose gradients were computed with its
forward (gpugrad.compiler.tape): the gradients go straight to ``.grad`` without the general
sweep, with the general sweep's results (values by hand), accumulation, ``retain_graph``,
freeing and staleness checks; seeds other than one, anomaly mode, backward hooks and inputs
that are not leaves take the general sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_orders_agree

import gpugrad as gg
from gpugrad import eager, optim
from gpugrad import hooks

TOL = {"rtol": 1e-12, "atol": 1e-12}
X = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])
W0 = np.array([[0.3], [-0.6]])


def _by_hand(x=X, w=W0):
    """loss = sum(sigmoid(x @ w)); d/dw = x.T @ (s (1 - s)); d/dx = (s (1 - s)) @ w.T."""
    s = 1.0 / (1.0 + np.exp(-(x @ w)))
    d = s * (1.0 - s)
    return s.sum(), x.T @ d, d @ w.T


@pytest.fixture
def general_sweeps():
    """Counts the runs of the general sweep (gpugrad.eager.backward)."""
    calls = []
    sweep = hooks.sweep

    def counted(*args, **kwargs):
        calls.append(1)
        return sweep(*args, **kwargs)

    hooks.sweep = counted
    try:
        yield calls
    finally:
        hooks.sweep = sweep


def _one_step_by_hand(f, arg, W) -> None:
    """``f(arg).backward()`` from no gradient gives the hand-derived loss and ``W.grad``."""
    W.grad = None
    loss = f(arg)
    loss.backward()
    value, dw, _ = _by_hand(w=W.data)
    assert_orders_agree(float(loss), value, **TOL)
    assert_orders_agree(W.grad, dw, **TOL)


def _compiled():
    W = gg.Variable(W0.copy(), name="W")
    f = gg.compile(lambda x: gg.sum(gg.sigmoid(x @ W)))
    x = gg.asarray(X)
    f(x).backward()  # the traced run; later calls run the planned program
    W.grad = None
    return W, f, x


def test_gradients_go_to_grad_and_accumulate(bk64, general_sweeps):
    W, f, x = _compiled()
    value, dw, _ = _by_hand()
    del general_sweeps[:]
    loss = f(x)
    assert_orders_agree(float(loss), value, **TOL)
    loss.backward()
    assert_orders_agree(gg.to_numpy(W.grad), dw, **TOL)
    f(x).backward()  # no zero_grad: adds to the gradient already there
    assert_orders_agree(gg.to_numpy(W.grad), 2 * dw, **TOL)
    assert not general_sweeps


def test_retain_graph_then_freed(bk64, general_sweeps):
    W, f, x = _compiled()
    _, dw, _ = _by_hand()
    loss = f(x)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_orders_agree(gg.to_numpy(W.grad), 2 * dw, **TOL)
    del general_sweeps[:]
    with pytest.raises(gg.GradientError, match="already freed"):
        loss.backward()
    assert general_sweeps  # the general sweep names the error


def test_a_seed_other_than_one_scales(bk64, general_sweeps):
    W, f, x = _compiled()
    _, dw, _ = _by_hand()
    f(x).backward(grad=gg.asarray(np.array(3.0)))
    assert_orders_agree(gg.to_numpy(W.grad), 3 * dw, **TOL)
    assert general_sweeps


def test_anomaly_mode_and_hooks_take_the_general_sweep(numpy_backend, general_sweeps):
    W, f, x = _compiled()
    _, dw, _ = _by_hand()
    del general_sweeps[:]
    with gg.detect_anomaly():
        f(x).backward()
    assert len(general_sweeps) == 1
    assert_orders_agree(W.grad, dw, **TOL)
    seen = []

    def hook(nodes, leaves, grads):
        seen.append(len(nodes))

    eager.backward_hooks.append(hook)
    try:
        W.grad = None
        f(x).backward()
    finally:
        eager.backward_hooks.remove(hook)
    assert seen == [1] and len(general_sweeps) == 2
    assert_orders_agree(W.grad, dw, **TOL)


def test_tensor_arguments_leaf_and_not(bk64, general_sweeps):
    W = gg.Variable(W0.copy(), name="W")
    f = gg.compile(lambda x: gg.sum(gg.sigmoid(x @ W)))
    _, dw, dx = _by_hand()
    for _ in range(2):
        W.grad = None
        xv = gg.Variable(X.copy())
        f(xv).backward()
        assert_orders_agree(gg.to_numpy(xv.grad), dx, **TOL)
        assert_orders_agree(gg.to_numpy(W.grad), dw, **TOL)
    del general_sweeps[:]
    xv = gg.Variable(X.copy())
    f(xv * 1.0).backward()  # not a leaf: the gradient goes on through the tape
    assert_orders_agree(gg.to_numpy(xv.grad), dx, **TOL)
    assert general_sweeps


def test_a_step_between_call_and_backward_is_caught(bk64):
    W, f, x = _compiled()
    opt = optim.SGD([W], lr=0.1)
    loss = f(x)
    W.grad = W.data * 0 + 1.0
    opt.step()
    with pytest.raises(gg.GradientError, match="SGD step called at"):
        loss.backward()


def test_training_loop_matches_the_formulas(numpy_backend):
    """zero_grad, compiled call, backward, step, five times: plain gradient descent on the
    hand-derived gradient."""
    W, f, x = _compiled()
    opt = optim.SGD([W], lr=0.5)
    w = W0.copy()
    for _ in range(5):
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        opt.step()
        value, dw, _ = _by_hand(w=w)
        assert_orders_agree(float(loss), value, **TOL)
        w = w - 0.5 * dw
        assert_orders_agree(W.data, w, **TOL)
    assert W.version == 5


def test_a_variable_rebound_to_another_shape(numpy_backend, general_sweeps):
    """The jit signature does not hold the Variables' shapes: a Variable given an array of
    another shape runs (and plans) anew, with the right numbers."""
    W, f, x = _compiled()
    f(x)
    W.data = np.array([[0.3, 0.1, -0.2], [-0.6, 0.4, 0.5]])
    for _ in range(3):
        _one_step_by_hand(f, x, W)
    W.data = W0.copy()
    W.grad = None
    f(x).backward()
    assert_orders_agree(W.grad, _by_hand()[1], **TOL)


def test_an_overflowing_call_runs_as_eager_code_does(numpy_backend, monkeypatch):
    monkeypatch.setenv("GPUGRAD_JIT", "0")  # bit for bit: NumPy's own exp
    W = gg.Variable(np.array([1.0, 2.0]))

    def fn(x):
        return gg.sum(gg.exp(x * W))

    f = gg.compile(fn)
    for scale in (1.0, 1.0, 1000.0, 1.0):
        x = gg.asarray(np.array([0.5, -0.25]) * scale)
        with np.errstate(over="ignore", invalid="ignore"):
            W.grad = None
            want = fn(x)
            want.backward()
            dw = W.grad
            W.grad = None
            got = f(x)
            got.backward()
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(W.grad, dw)


def test_a_recorded_loss_runs_its_learnt_program_directly(numpy_backend):
    """After the first runs, a recorded scalar call finds its planned NumPy program without
    the schedule's lookup (the key it files programs under must match the schedule's own)."""
    W = gg.Variable(np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]))
    step = gg.compile(lambda x: gg.sum(gg.sigmoid(x @ W)))
    x = gg.asarray(np.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]))
    for _ in range(3):
        W.grad = None
        step(x).backward()
    (entry,) = step._cache.values()
    assert entry.direct, "the planned program was never learnt for the direct path"
    s = 1.0 / (1.0 + np.exp(-(x.data @ W.data)))
    np.testing.assert_allclose(W.grad, x.data.T @ (s * (1.0 - s)), rtol=1e-14)


def test_the_quick_call_goes_the_long_way_on_any_surprise(numpy_backend, general_sweeps):
    """Once learnt, a recorded loss runs its program directly (Entry.run, through its
    Direct), from a Tensor or a host array argument alike. Anomaly mode and a Variable
    rebound to another shape go the long way, with the same numbers; writes into what
    backward reads are still caught."""
    W, f, x = _compiled()
    for _ in range(2):
        W.grad = None
        f(x).backward()
    (entry,) = f._cache.values()
    assert entry.direct is not None
    del general_sweeps[:]  # (the traced run swept)
    for arg in (x, X.copy()):  # a Tensor, a host array of the same signature
        _one_step_by_hand(f, arg, W)
    assert not general_sweeps
    _, dw, _ = _by_hand()
    W.grad = None
    with gg.detect_anomaly():
        f(x).backward()
    assert len(general_sweeps) == 1
    assert_orders_agree(W.grad, dw, **TOL)
    loss = f(x)
    with gg.no_grad():
        W *= 1.0  # an in-place write into an array backward reads
    with pytest.raises(gg.GradientError, match="modified in place"):
        loss.backward()
    loss = f(x)
    x *= 1.0  # the argument, written in place
    with pytest.raises(gg.GradientError, match="modified in place"):
        loss.backward()
    W.data = np.array([[0.3, 0.1], [-0.6, 0.4]])  # another shape: not the learnt program
    _one_step_by_hand(f, x, W)
