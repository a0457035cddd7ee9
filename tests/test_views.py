"""Views under autograd (gpugrad.views): writes through a view reach its base and the gradient,
writes into a base are seen through its views, as in PyTorch; and with no history, the same
code aliases as NumPy does. Gradients here are derived by hand or by finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import const, host, var

import gpugrad as gg


def _y(bk, values, history):
    """``values * 2``: with history (from a Variable) or without (from a constant)."""
    x = var(bk, values) if history else const(bk, values)
    return x, x * 2.0


# --- the example, both directions ---------------------------------------------------

def test_a_write_through_a_slice_reaches_the_base_and_the_gradient(bk):
    x, y = _y(bk, [1.0, 2.0, 3.0], history=True)
    v = y[0:2]
    v += 10.0
    np.testing.assert_array_equal(host(y), [12.0, 14.0, 6.0])
    np.testing.assert_array_equal(host(v), [12.0, 14.0])
    gg.sum(y * y).backward()
    # y = [2x0 + 10, 2x1 + 10, 2x2]: d/dx sum(y^2) = 4 y_i / 2 ... = 2 y_i * 2
    np.testing.assert_array_equal(host(x.grad), [48.0, 56.0, 24.0])


def test_a_write_into_the_base_is_seen_through_an_earlier_slice(bk):
    x, y = _y(bk, [1.0, 2.0, 3.0], history=True)
    v = y[1:]
    y += 1.0
    np.testing.assert_array_equal(host(v), [5.0, 7.0])
    gg.sum(v * v).backward()  # v = 2 x[1:] + 1: d/dx = 4 (2x + 1) on x[1:], 0 on x[0]
    np.testing.assert_array_equal(host(x.grad), [0.0, 20.0, 28.0])


def test_with_or_without_history_the_values_are_numpy_s(bk):
    ref = np.array([1.0, 2.0, 3.0, 4.0]) * 2.0
    rv = ref[1:3]
    rv *= 3.0
    ref += 1.0
    for history in (False, True):
        _x, y = _y(bk, [1.0, 2.0, 3.0, 4.0], history)
        v = y[1:3]
        v *= 3.0
        y += 1.0
        np.testing.assert_array_equal(host(y), ref)
        np.testing.assert_array_equal(host(v), rv)
        assert y.requires_grad is history


# --- each view form ---------------------------------------------------------------------------

def test_a_write_through_T_reaches_the_base(bk):
    x = var(bk, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = x * 1.0
    t = y.T                   # (3, 2)
    t[0] = 0.0                # column 0 of y
    np.testing.assert_array_equal(host(y), [[0.0, 2.0, 3.0], [0.0, 5.0, 6.0]])
    gg.sum(y * y).backward()  # 2x where kept, 0 where overwritten
    np.testing.assert_array_equal(host(x.grad), [[0.0, 4.0, 6.0], [0.0, 10.0, 12.0]])


def test_a_write_through_mT_of_a_stack_reaches_the_base(bk):
    a = np.arange(12.0).reshape(2, 2, 3)
    x = var(bk, a)
    y = x * 1.0
    m = y.mT                  # (2, 3, 2)
    m[:, 1] = m[:, 1] * 2.0   # column 1 of each matrix
    want = a.copy()
    want[:, :, 1] *= 2.0
    np.testing.assert_array_equal(host(y), want)
    gg.sum(y).backward()
    scale = np.ones_like(a)
    scale[:, :, 1] = 2.0
    np.testing.assert_array_equal(host(x.grad), scale)


def test_permute_dims_is_a_view_and_a_reshape_that_copies_is_not(bk):
    a = np.arange(6.0).reshape(1, 2, 3)
    x = var(bk, a)
    y = x * 1.0
    p = gg.permute_dims(y, (2, 0, 1))      # (3, 1, 2)
    p[2] += 100.0                          # y[..., 2]
    flat = y.mT.reshape(-1)                # NumPy copies here: not a view, in both modes
    flat += 1.0
    want = a.copy()
    want[..., 2] += 100.0
    np.testing.assert_array_equal(host(y), want)
    gg.sum(y * y).backward()
    np.testing.assert_array_equal(host(x.grad), 2.0 * want)
    c = const(bk, a)
    flat = c.mT.reshape(-1)
    flat += 1.0
    np.testing.assert_array_equal(host(c), a)


def test_a_write_through_a_reshape_view_reaches_the_base(bk):
    x = var(bk, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = x * 1.0
    r = y.reshape(2, 3)
    r[1] -= 1.0
    np.testing.assert_array_equal(host(y), [1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
    gg.sum(y * y).backward()  # d/dx (x - c)^2 = 2 (x - c)
    np.testing.assert_array_equal(host(x.grad), [2.0, 4.0, 6.0, 6.0, 8.0, 10.0])


def test_expand_dims_and_squeeze_views_follow_and_carry_writes(bk):
    x = var(bk, [1.0, 2.0, 3.0])
    y = x * 1.0
    e = gg.expand_dims(y, axis=0)          # (1, 3)
    s = gg.squeeze(e, axis=0)              # (3,): a view of a view
    s /= 2.0
    np.testing.assert_array_equal(host(y), [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(host(e), [[0.5, 1.0, 1.5]])
    gg.sum(e * e).backward()               # (x/2)^2: x/2
    np.testing.assert_array_equal(host(x.grad), [0.5, 1.0, 1.5])


def test_a_view_of_a_view_writes_into_the_root_base_and_every_view_follows(bk):
    x = var(bk, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    y = x * 1.0
    a = y[1:]                 # [1 2 3 4 5]
    b = a[::2]                # [1 3 5]
    other = y[:2]             # [0 1]
    b += 10.0
    np.testing.assert_array_equal(host(y), [0.0, 11.0, 2.0, 13.0, 4.0, 15.0])
    np.testing.assert_array_equal(host(a), [11.0, 2.0, 13.0, 4.0, 15.0])
    np.testing.assert_array_equal(host(other), [0.0, 11.0])
    gg.sum(other * b[0:2]).backward()
    # other . b[:2] = y0*y1 + y1*y3 (y = x + 10 at 1, 3, 5): d/dx0 = y1, d/dx1 = y0 + y3,
    # d/dx3 = y1
    np.testing.assert_array_equal(host(x.grad), [11.0, 13.0, 0.0, 11.0, 0.0, 0.0])


def test_setitem_on_a_view_of_a_constant_with_a_tracked_value_gives_the_base_history(bk):
    c = const(bk, [1.0, 2.0, 3.0])
    w = var(bk, [5.0])
    v = c[0:1]
    v += w
    assert c.requires_grad
    np.testing.assert_array_equal(host(c), [6.0, 2.0, 3.0])
    gg.sum(c * c).backward()               # c0 = 1 + w: d/dw c0^2 = 2 c0
    np.testing.assert_array_equal(host(w.grad), [12.0])


IN_PLACE = {
    "+=": (lambda v: v.__iadd__(3.0), lambda a: a + 3.0, 1.0),
    "-=": (lambda v: v.__isub__(3.0), lambda a: a - 3.0, 1.0),
    "*=": (lambda v: v.__imul__(3.0), lambda a: a * 3.0, 3.0),
    "/=": (lambda v: v.__itruediv__(4.0), lambda a: a / 4.0, 0.25),
    "setitem": (lambda v: v.__setitem__(Ellipsis, 7.0), lambda a: a * 0.0 + 7.0, 0.0),
}


@pytest.mark.parametrize("how", sorted(IN_PLACE))
def test_each_in_place_op_on_a_view_matches_numpy_and_the_hand_gradient(bk, how):
    write, ref_fn, slope = IN_PLACE[how]
    values = [1.0, 2.0, 4.0, 8.0]
    ref = np.array(values) * 2.0
    ref[1:3] = ref_fn(ref[1:3])
    for history in (True, False):
        x, y = _y(bk, values, history)
        write(y[1:3])
        np.testing.assert_array_equal(host(y), ref)
    x, y = _y(bk, values, True)
    write(y[1:3])
    gg.sum(y).backward()                   # 2 outside the slice, 2 * slope inside
    np.testing.assert_array_equal(host(x.grad), [2.0, 2.0 * slope, 2.0 * slope, 2.0])


# --- finite differences of functions that write through views (float64) ----------------------

def _through_slice(x):
    y = x * x
    v = y[1:4]
    v *= x[0:3]
    w = y.reshape(2, 3)[:, ::2]
    w += 1.0
    return gg.sum(gg.sin(y) * y)


def _through_transpose(a):
    y = gg.exp(a * 0.5)
    t = y.mT
    t[..., 0] = t[..., 1] * a[..., 0, 0:1]
    return gg.sum(y * a)


def _base_then_view(x):
    y = x * 1.0
    v = y[::2]
    y *= x
    v -= y[1::2]
    return gg.sum(v * gg.cos(y[1::2]))


@pytest.mark.parametrize("fn, shape", [(_through_slice, (6,)), (_through_transpose, (2, 3, 2)),
                                       (_base_then_view, (6,))],
                         ids=["slice-reshape", "mT", "base-then-view"])
def test_finite_differences_of_writes_through_views(bk64, fn, shape):
    rng = np.random.default_rng(7)
    gg.testing.check_grad(fn, rng.uniform(0.5, 1.5, shape))


# --- versions ----------------------------------------------------------------------------------

def test_a_view_shares_its_base_s_version_counter(bk):
    c = const(bk, [1.0, 2.0, 3.0])
    v = c[1:]
    v += 1.0
    assert (c.version, v.version) == (1, 1)
    np.testing.assert_array_equal(host(c), [1.0, 3.0, 4.0])


def test_backward_refuses_a_saved_array_overwritten_through_a_view(bk):
    c = const(bk, [1.0, 2.0, 3.0])
    w = var(bk, [1.0, 1.0, 1.0])
    loss = gg.sum(w * c)                   # multiply saves c for w's gradient
    v = c.reshape(3, 1)[1:]
    v *= 2.0
    assert c.version == 1
    with pytest.raises(gg.GradientError, match=r"multiply saved an array .*modified in place"):
        loss.backward()


def test_a_write_through_a_view_of_a_variable_under_no_grad_changes_the_variable(bk):
    w = var(bk, [1.0, 2.0, 3.0])
    row = w[0:2]                           # made under grad mode: it has history
    with gg.no_grad():
        row -= 1.0
    np.testing.assert_array_equal(host(w), [0.0, 1.0, 3.0])
    assert w.requires_grad and w.version == 1


# --- what is refused -------------------------------------------------------------------------

def test_a_view_of_a_variable_cannot_be_written_while_gradients_are_recorded(bk):
    w = var(bk, [1.0, 2.0], name="w")
    v = w[0:1]
    with pytest.raises(gg.GradientError, match=r"view of the Variable 'w'.*no_grad"):
        v += 1.0
    with pytest.raises(gg.GradientError, match=r"view of the Variable 'w'"):
        w.reshape(2, 1)[0] = 0.0           # a setitem into a view of a view
    np.testing.assert_array_equal(host(w), [1.0, 2.0])


@pytest.mark.parametrize("history", [True, False])
def test_real_and_imag_views_refuse_writes(history):
    z = gg.asarray(np.array([1 + 2j, 3 + 4j]))
    if history:
        z = gg.Variable(np.array([1 + 2j, 3 + 4j])) * 1.0
    for part in (gg.real(z), gg.imag(z)[0:1]):   # a view of a view after a dtype change too
        with pytest.raises(gg.OpError, match=r"real or imaginary part.*copy"):
            part += 1.0
    np.testing.assert_array_equal(gg.to_numpy(z), [1 + 2j, 3 + 4j])


def test_broadcast_to_refuses_writes_with_history():
    x = gg.Variable(np.array([1.0, 2.0])) * 1.0
    b = gg.broadcast_to(x, (3, 2))
    with pytest.raises(gg.OpError, match=r"one element of its input.*copy"):
        b *= 2.0
    np.testing.assert_array_equal(host(x), [1.0, 2.0])


def test_an_op_is_a_view_op_by_its_declaration_alone(numpy_backend):
    """A user op that declares ``defview`` gets the built-in view ops' treatment (and they
    are plain Ops: the declaration, not a class, makes a view op)."""
    for name in ("getitem", "matrix_transpose", "permute_dims", "reshape", "expand_dims",
                 "squeeze", "real", "imag", "broadcast_to"):
        assert type(gg.registry[name]) is gg.ops.Op and gg.registry[name].view is not None
    assert gg.registry["add"].view is None

    @gg.ops.defop("flip_example")
    def flip(xp, x):
        """x reversed along axis 0; the gradient is reversed back"""
        return xp.flip(x, axis=0), None

    flip.defvjp(lambda xp, g, res: (xp.flip(g, axis=0),))
    flip.defview(lambda src, value: (flip, (value,), {}))
    try:
        x = gg.Variable(np.array([1.0, 2.0, 3.0]))
        y = x * 2.0
        f = flip(y)
        f[0:1] += 10.0                     # through a slice of the flip, into y's last element
        np.testing.assert_array_equal(host(y), [2.0, 4.0, 16.0])
        gg.sum(y * y).backward()           # y = [2x0, 2x1, 2x2 + 10]: d/dx = 4 y
        np.testing.assert_array_equal(host(x.grad), [8.0, 16.0, 64.0])
        flip.defview("the example says so")
        with pytest.raises(gg.OpError, match=r"the example says so \(flip_example of"):
            flip(y)[0:1] += 1.0
    finally:
        gg.ops.unregister("flip_example")


def test_integer_array_indexing_copies_and_its_setitem_says_what_to_use(bk):
    _x, y = _y(bk, [1.0, 2.0, 3.0], history=True)
    picked = y[np.array([0, 2])]            # a copy, as in NumPy and PyTorch
    picked += 1.0
    np.testing.assert_array_equal(host(y), [2.0, 4.0, 6.0])
    with pytest.raises(TypeError, match=r"must be basic.*gpugrad.where"):
        y[np.array([0, 2])] = 0.0
    row = y[0:2]
    with pytest.raises(TypeError, match=r"must be basic.*gpugrad.where"):
        row[np.array([0])] = 0.0            # through a view as well
    np.testing.assert_array_equal(host(row), [2.0, 4.0])
    row[0:1] = 0.0                          # a basic key through the view reaches y
    np.testing.assert_array_equal(host(y), [0.0, 4.0, 6.0])


def test_a_shallow_copy_of_a_view_is_a_view_of_the_same_base(bk):
    import copy

    _x, y = _y(bk, [1.0, 2.0, 3.0], history=True)
    v = copy.copy(y[1:])
    v -= 1.0
    np.testing.assert_array_equal(host(y), [2.0, 3.0, 5.0])
    y *= 2.0
    np.testing.assert_array_equal(host(v), [6.0, 10.0])


def test_views_of_a_parameter_follow_load_state_dict(numpy_backend):
    lin = gg.nn.Linear(2, 3)
    wT = lin.weight.mT
    lin.load_state_dict({"weight": np.arange(6.0).reshape(lin.weight.shape),
                         "bias": np.zeros(lin.bias.shape)})
    np.testing.assert_array_equal(gg.to_numpy(wT), np.arange(6.0).reshape(lin.weight.shape).T)
    with gg.no_grad():
        wT[0] = -1.0
    assert float(gg.sum(lin.weight == -1.0)) == wT.shape[1]


def test_a_view_made_under_no_grad_is_not_written_under_grad_mode(bk):
    x, y = _y(bk, [1.0, 2.0, 3.0], history=True)
    with gg.no_grad():
        v = y[0:2]
    with pytest.raises(gg.GradientError, match=r"made under no_grad.*again"):
        v += 1.0
    np.testing.assert_array_equal(host(y), [2.0, 4.0, 6.0])
    with gg.no_grad():
        v += 1.0                           # not recorded: y's history stays x * 2
    np.testing.assert_array_equal(host(y), [3.0, 5.0, 6.0])
    gg.sum(y).backward()
    np.testing.assert_array_equal(host(x.grad), [2.0, 2.0, 2.0])


def _write_through_view(a):
    y = a * 1.0
    v = y[1:]
    v *= a[0:2]
    return gg.sum(y * y)


def _write_into_viewed_base(a):
    y = a * 1.0
    v = y[1:]
    y += 1.0
    return gg.sum(v)


def _write_without_views(a):
    y = a * 1.0
    y += 1.0
    return gg.sum(y * y)


def test_gg_compile_refuses_writes_it_cannot_make_as_eager_code_does(numpy_backend):
    a = gg.Variable(np.array([1.0, 2.0, 3.0]))
    assert float(_write_through_view(a)) == 41.0   # eager: y = [1, 2, 6]
    assert float(_write_into_viewed_base(a)) == 7.0
    for fn in (_write_through_view, _write_into_viewed_base):
        with pytest.raises(TypeError, match=r"view .*out of place, e.g. y = gpugrad.setitem"):
            gg.compile(fn)(a)
    assert float(gg.compile(_write_without_views)(a)) == float(_write_without_views(a)) == 29.0


def test_a_placeholder_graph_refuses_an_in_place_op_on_a_view():
    x = gg.Placeholder((3,), "float64", name="x")
    head = x[0:2]
    with pytest.raises(TypeError, match=r"\*= on a graph value that is a view"):
        head *= 2.0
    h = x * 2.0
    h += 1.0                               # no view involved: h = h + 1, as before
    np.testing.assert_array_equal(gg.to_numpy(h.eval({x: np.ones(3)})), [3.0, 3.0, 3.0])
