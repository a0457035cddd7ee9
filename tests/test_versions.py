"""Version counters and in-place updates: no silently wrong gradient after a mutation.

DeZero returns 200 instead of 2 when an input is edited in place between forward and backward;
here backward raises instead, naming the op that saved the array and both versions.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from helpers import const, var
from gpugrad import nn, optim
from helpers import host


STALE = r"backward: multiply saved an array \(input 1, shape \(2,\)\) for its gradient, and " \
        r"it was modified in place afterwards, at test_versions.py:\d+: expected version 0, " \
        r"found version 1"


# --- the counters ---------------------------------------------------------------------------

def test_in_place_updates_write_into_the_array_and_bump_the_version(bk):
    c = const(bk, [1.0, 2.0, 3.0])
    data = c.data
    assert c.version == 0
    c += 1.0
    c -= const(bk, [0.5, 0.5, 0.5])
    c *= 2.0
    c /= 3.0
    c[0] = 10.0
    c[1:] = const(bk, [7.0, 8.0])
    assert c.version == 6
    assert c.data is data  # written in place, not rebound
    np.testing.assert_allclose(host(c), [10.0, 7.0, 8.0])
    same = c
    c += 1.0
    assert c is same


def test_variable_in_place_is_refused_under_grad_mode_and_allowed_under_no_grad(bk):
    W = var(bk, [1.0, 2.0])
    W.name = "W"
    for fn, what in [(lambda: W.__iadd__(1.0), r"add \(in place, \+=\)"),
                     (lambda: W.__imul__(2.0), r"multiply \(in place, \*=\)"),
                     (lambda: W.__setitem__(0, 5.0), r"setitem \(t\[key\] = value\)")]:
        with pytest.raises(gg.GradientError, match=what + r": Variable 'W' \(2,\) requires "
                                                          r"gradients.*no_grad"):
            fn()
    assert W.version == 0 and W._node is None
    with gg.no_grad():
        W -= 0.5
        W[1] = 0.0
    assert W.version == 2 and W.requires_grad and W._node is None
    np.testing.assert_array_equal(host(W), [0.5, 0.0])


def test_optimizers_and_minimize_bump_versions(bk):
    w = var(bk, [1.0, 2.0])
    for opt in (optim.SGD([w], lr=0.1, momentum=0.9), optim.Adam([w], lr=0.1)):
        before = w.version
        gg.sum(w * w).backward()
        opt.step()
        assert w.version == before + 1
    x = gg.Placeholder((2,), bk.float_dtype, name="x")
    loss = gg.sum((w - x) ** 2)
    before = w.version
    gg.minimize(loss, [w], lr=0.1, feed={x: np.zeros(2, bk.float_dtype)})
    optim.SGD([w], lr=0.1).minimize(loss, feed={x: np.zeros(2, bk.float_dtype)})
    assert w.version == before + 2


# --- backward refuses arrays changed after they were saved ----------------------------------

def test_the_dezero_case_raises_instead_of_a_wrong_gradient(bk):
    W = var(bk, [1.0, 1.0])
    x = const(bk, [2.0, 2.0])
    y = gg.sum(W * x)  # multiply saves x: dy/dW = x = 2
    x *= 100.0  # DeZero would now report 200
    with pytest.raises(gg.GradientError, match=STALE):
        y.backward()
    assert W.grad is None  # nothing accumulated


def test_an_optimizer_step_between_forward_and_backward_is_caught(bk):
    W, b = var(bk, [1.0, 2.0]), var(bk, [0.5, 0.5])
    opt = optim.SGD([W, b], lr=0.1)
    gg.sum(W * W + b).backward()
    loss = gg.sum(W * W + b)  # multiply saved W
    opt.step()
    with pytest.raises(gg.GradientError, match=r"multiply saved an array \(input 0, shape "
                                               r"\(2,\)\).*at SGD step called at test_versions"):
        loss.backward()


def test_unsaved_inputs_may_change(bk):
    W = var(bk, [1.0, 2.0])
    c = const(bk, [3.0, 4.0])
    y = gg.sum(W + c)  # add saves nothing
    c += 1.0
    y.backward()
    np.testing.assert_array_equal(host(W.grad), [1.0, 1.0])


def test_a_second_backward_after_a_write_is_caught(bk):
    W = var(bk, [1.0, 2.0])
    x = const(bk, [3.0, 4.0])
    y = gg.sum(W * x)
    y.backward(retain_graph=True)
    x[0] = -1.0
    with pytest.raises(gg.GradientError, match=STALE):
        y.backward()
    np.testing.assert_array_equal(host(W.grad), [3.0, 4.0])


def test_writes_through_an_alias_made_by_detach_are_caught(bk):
    W = var(bk, [1.0, 2.0])
    h = W * 2.0
    d = h.detach()
    assert d.data is h.data and d.version == h.version == 0
    y = gg.sum(h * h)  # saves h's array
    d += 1.0  # a constant: written in place, into h's array too
    assert h.version == d.version == 1
    with pytest.raises(gg.GradientError, match="multiply saved an array .* expected version 0, "
                                               "found version 1"):
        y.backward()
    # through a leaf: detach shares its counter too
    x = const(bk, [1.0, 1.0])
    y = gg.sum(W * x)
    x.detach()[0] = 5.0
    with pytest.raises(gg.GradientError, match=STALE):
        y.backward()


def test_writes_through_a_numpy_view_are_caught():
    with gg.use_backend("numpy"):
        W = gg.Variable(np.array([1.0, 2.0]))
        c = gg.asarray(np.array([3.0, 4.0, 5.0]))
        y = gg.sum(W * c[:2])  # c[:2] is a view of c's array
        c += 1.0
        with pytest.raises(gg.GradientError, match="multiply saved an array"):
            y.backward()
        y = gg.sum(W * c[1:])
        view = c[:2]  # a different Tensor, same memory
        view[1] = 0.0
        with pytest.raises(gg.GradientError, match="multiply saved an array"):
            y.backward()


def test_many_later_writes_do_not_hide_an_earlier_one(bk):
    W = var(bk, [1.0, 2.0])
    x = const(bk, [3.0, 4.0])
    others = [const(bk, [0.0]) for _ in range(10)]
    y = gg.sum(W * x)
    x += 1.0
    for _ in range(gg.versions.KEEP + 10):  # more writes than the log keeps
        others[0] += 1.0
    with pytest.raises(gg.GradientError, match=STALE):
        y.backward()


# --- Tensors with recorded history are updated out of place ---------------------------------

def test_recorded_tensor_updates_are_recorded_and_keep_saved_arrays(bk64):
    W = var(bk64, [1.0, 2.0, 3.0])
    h = W * 2.0
    early = gg.sum(h * h)  # saved h's first array: d/dW = 8 W
    h += 1.0  # h = 2W + 1
    h[0] = 5.0  # h = (5, 2W1 + 1, 2W2 + 1)
    h *= W  # h = (5 W0, (2W1+1) W1, (2W2+1) W2)
    assert h.version == 3 and h.requires_grad
    gg.sum(h).backward(retain_graph=True)  # early shares W * 2.0 with h
    np.testing.assert_allclose(host(W.grad), [5.0, 4 * 2.0 + 1, 4 * 3.0 + 1])
    W.grad = None
    early.backward()  # its saved arrays were never overwritten
    np.testing.assert_allclose(host(W.grad), [8.0, 16.0, 24.0])


def test_a_constant_receiving_a_tracked_value_becomes_recorded(bk64):
    W = var(bk64, [1.0, 2.0])
    c = const(bk64, [0.0, 0.0, 0.0])
    c[1:] = W * 3.0
    c += W[0]
    assert c.requires_grad
    gg.sum(c * c).backward()  # c = (W0, 3W0 + W0, 3W1 + W0)
    c0, c1, c2 = 1.0, 4.0, 7.0
    np.testing.assert_allclose(host(W.grad), [2 * c0 + 2 * c1 * 4 + 2 * c2, 2 * c2 * 3])


def test_boolean_mask_assignment_on_a_recorded_tensor(bk):
    W = var(bk, [-1.0, 2.0, -3.0])
    h = W * 1.0
    h[h < 0.0] = 0.0  # relu, written as an assignment
    gg.sum(h * h).backward()
    np.testing.assert_array_equal(host(W.grad), [0.0, 4.0, 0.0])


def test_updates_under_no_grad_are_not_recorded_but_never_overwrite(bk):
    W = var(bk, [1.0, 2.0])
    h = W * 3.0
    y = gg.sum(h * h)
    with gg.no_grad():
        h += 100.0  # untracked, like any no_grad computation; h keeps its history
    assert h.requires_grad and h.version == 1
    y.backward()  # y's saved arrays are intact
    np.testing.assert_allclose(host(W.grad), [18.0, 36.0])


# --- host NumPy arrays ----------------------------------------------------------------------

def test_asarray_copies_host_arrays_so_later_edits_cannot_reach_saved_ones(bk):
    arr = np.array([2.0, 3.0], dtype=bk.float_dtype)
    W = var(bk, [1.0, 1.0])
    y = gg.sum(W * gg.asarray(arr))
    arr[:] = 1000.0
    y.backward()
    np.testing.assert_array_equal(host(W.grad), [2.0, 3.0])


def test_asarray_copy_false_shares_a_numpy_array():
    with gg.use_backend("numpy"):
        arr = np.array([2.0, 3.0])
        t = gg.asarray(arr, copy=False)
        assert t.data is arr
        assert gg.asarray(t.data).data is not arr


def test_a_raw_numpy_array_edited_before_backward_is_caught_by_its_checksum():
    with gg.use_backend("numpy"):
        arr = np.array([2.0, 3.0])
        W = gg.Variable(np.array([1.0, 1.0]))
        y = gg.sum(W * arr)  # the raw array is saved: its checksum is kept
        arr[0] = 200.0
        with pytest.raises(gg.GradientError, match=r"multiply saved a NumPy array you passed in "
                                                   r"\(input 1, shape \(2,\)\).*gpugrad.asarray"):
            y.backward()
        y = gg.sum(W * arr)
        y.backward()  # unchanged: fine
        np.testing.assert_array_equal(W.grad, [200.0, 3.0])


# --- in-place errors ------------------------------------------------------------------------

def test_in_place_updates_keep_shape_and_dtype():
    with gg.use_backend("numpy"):
        c32 = gg.asarray(np.ones(3, "float32"))
        with pytest.raises(gg.DtypeError, match=r"add \(in place, \+=\): a float64 value would "
                                                r"be silently downcast into the float32 Tensor"):
            c32 += np.ones(3)
        ints = gg.asarray(np.arange(3))
        with pytest.raises(gg.DtypeError, match="truncated"):
            ints[0] = 0.5
        with pytest.raises(gg.OpError, match=r"add \(in place, \+=\): shapes \(3,\) and "
                                             r"\(2, 3\): the result would have shape \(2, 3\)"):
            c32 += gg.asarray(np.ones((2, 3), "float32"))
        assert c32.version == 0 and ints.version == 0
        h = gg.Variable(np.ones(3, "float32")) * 1.0
        with pytest.raises(gg.OpError, match=r"the result has shape \(2, 3\), but an in-place "
                                             r"update keeps the Tensor's shape \(3,\)"):
            h += gg.asarray(np.ones((2, 3), "float32"))


def test_model_training_loop_is_unaffected(bk):
    """The usual loop (forward, backward, step) never trips the check."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = gg.asarray(np.ones((5, 3), "float32"))
    t = gg.asarray(np.array([0, 1, 0, 1, 1]))
    for _ in range(3):
        loss = nn.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.version == 3 for p in model.parameters())


def test_create_graph_refuses_inputs_written_after_recording(bk64):
    """backward(create_graph=True) replays the forward from the recorded inputs, so a write
    to any of them (saved or not) would change the answer: it is refused."""
    W = var(bk64, [1.0, 2.0])
    c = const(bk64, [3.0, 4.0])
    y = gg.sum(gg.exp(W + c))  # add saves nothing, but the replay would read c again
    c += 1.0
    with pytest.raises(gg.GradientError, match=r"backward\(create_graph=True\): add recorded "
                                               r"input 1 \(shape \(2,\)\), which was modified "
                                               r"in place afterwards.*expected version 0, "
                                               r"found version 1"):
        y.backward(create_graph=True)
    y = gg.sum(gg.exp(W + c))  # recorded after the write: fine
    y.backward(create_graph=True)
    np.testing.assert_allclose(host(W.grad), np.exp([5.0, 7.0]), rtol=1e-12)
