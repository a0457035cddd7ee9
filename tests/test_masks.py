"""Boolean masks in eager mode: ``x[mask]`` and ``x[mask] = value``, their gradients, the
version counters of the in-place set, and the clear refusal inside a graph.

The op case table (tests/op_cases.py) runs the generic checks on getitem_mask and
setitem_mask too (NumPy forward, finite differences, second derivatives); this file holds the
hand-derived values and the paths around the ops.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from helpers import const, host, var


def test_mask_of_the_full_shape_picks_in_order_and_scatters_back(bk):
    x0 = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    x = var(bk, x0)
    y = x[x > 0.0]
    np.testing.assert_array_equal(host(y), [1.0, 3.0, 5.0])
    gg.sum(y * y).backward()  # d/dx sum(x[m]**2) = 2x on the mask, 0 elsewhere
    np.testing.assert_array_equal(host(x.grad), [[2.0, 0.0, 6.0], [0.0, 10.0, 0.0]])


def test_mask_of_the_leading_dims_picks_rows(bk):
    x = var(bk, np.arange(12.0).reshape(3, 2, 2))
    rows = x[np.array([True, False, True])]  # a host mask crosses to x's device
    assert rows.shape == (2, 2, 2)
    np.testing.assert_array_equal(host(rows), np.arange(12.0).reshape(3, 2, 2)[[0, 2]])
    seed = np.arange(8.0).reshape(2, 2, 2)
    rows.backward(grad=gg.asarray(seed.astype(bk.float_dtype)))
    np.testing.assert_array_equal(host(x.grad), [seed[0], np.zeros((2, 2)), seed[1]])
    x.grad = None
    both = x[[[True, False], [False, False], [False, True]]]  # a list mask of two dims
    assert both.shape == (2, 2)
    gg.sum(both).backward()
    np.testing.assert_array_equal(host(x.grad)[:, :, 0], [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])


def test_an_empty_selection_has_zero_rows_and_a_zero_gradient(bk):
    x = var(bk, np.ones((2, 3)))
    y = x[np.array([False, False])]
    assert y.shape == (0, 3)
    gg.sum(y).backward()
    np.testing.assert_array_equal(host(x.grad), np.zeros((2, 3)))


@pytest.mark.parametrize("mask", [
    [[True, False, True], [False, True, True]],
    [True, False],
    [[True, True, True], [True, True, True]],
], ids=["full", "leading", "all"])
def test_mask_gradient_by_finite_differences(mask, bk64, rng):
    m = np.array(mask)
    gg.testing.check_grad(lambda x: gg.sin(x[m]) * 2.0, rng.standard_normal((2, 3)))


def test_mask_gradient_of_the_portable_rule_equals_the_fast_path(rng):
    from gpugrad.ops import masking

    g = rng.standard_normal((3, 4))
    mask = np.array([[True, False], [False, True], [False, True]])  # 3 picked
    res = (mask, (3, 2, 4))
    (fast, _) = masking._getitem_mask_vjp_write(np, g, res)
    (portable, _) = masking._getitem_mask_vjp(np, g, res)
    np.testing.assert_array_equal(fast, portable)
    assert portable[0, 0].tolist() == g[0].tolist() and not portable[0, 1].any()


def test_masked_assignment_fills_selected_entries_in_order(bk):
    t = const(bk, np.zeros((2, 2)))
    t[np.array([[False, True], [True, False]])] = const(bk, [1.0, 2.0])
    np.testing.assert_array_equal(host(t), [[0.0, 1.0], [2.0, 0.0]])  # row-major order
    assert t.version == 1
    W = var(bk, [[1.0, 1.0], [1.0, 1.0]])
    h = W * 3.0
    h[np.array([[False, True], [True, False]])] = const(bk, [1.0, 2.0])  # recorded
    np.testing.assert_array_equal(host(h), [[3.0, 1.0], [2.0, 3.0]])
    assert h.version == 1 and h.requires_grad


def test_gradient_of_the_assigned_value_and_of_the_tensor(bk):
    W = var(bk, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], name="W")
    v = var(bk, [10.0, 20.0], name="v")
    h = W * 1.0
    h[np.array([[True, False, False], [False, False, True]])] = v
    assert h.version == 1
    gg.sum(h * h).backward()
    np.testing.assert_array_equal(host(W.grad), [[0.0, 4.0, 6.0], [8.0, 10.0, 0.0]])
    np.testing.assert_array_equal(host(v.grad), [20.0, 40.0])
    # a value broadcast over the selection gets the sum of its copies' gradients
    s = var(bk, [7.0], name="s")
    k = W * 1.0
    k[np.array([True, False])] = s  # row 0 becomes (7, 7, 7)
    gg.sum(k).backward()
    np.testing.assert_array_equal(host(s.grad), [3.0])


@pytest.mark.parametrize("vshape,mask", [
    ((3,), [[True, False, True], [False, True, False]]),
    ((1, 3), [True, False]),
    ((), [[False, True, True], [True, False, False]]),
], ids=["picked", "row", "scalar"])
def test_masked_assignment_gradients_by_finite_differences(vshape, mask, bk64, rng):
    m = np.array(mask)

    def f(x, v):
        h = x * 1.0
        h[m] = v
        return gg.tanh(h) * h

    gg.testing.check_grad(f, rng.standard_normal((2, 3)), rng.standard_normal(vshape))


def test_a_masked_write_into_a_saved_array_is_caught_by_backward(bk):
    W = var(bk, [1.0, 2.0, 3.0])
    c = const(bk, [4.0, 5.0, 6.0])
    y = gg.sum(W * c)  # multiply saved c
    c[c > 4.5] = 0.0
    assert c.version == 1
    np.testing.assert_array_equal(host(c), [4.0, 0.0, 0.0])
    with pytest.raises(gg.GradientError, match=r"multiply saved an array .* version"):
        y.backward()


def test_the_relu_assignment_written_with_a_mask(bk):
    W = var(bk, [-1.0, 2.0, -3.0])
    h = W * 1.0
    h[h < 0.0] = 0.0
    gg.sum(h * h).backward()
    np.testing.assert_array_equal(host(W.grad), [0.0, 4.0, 0.0])


def test_bad_masks_get_clear_errors(bk):
    x = var(bk, np.ones((2, 3)))
    with pytest.raises(gg.OpError, match=r"^getitem_mask: mask of shape \(3,\) does not cover "
                                         r"the leading dims of x \(2, 3\).*called at "):
        x[np.array([True, False, True])]
    with pytest.raises(TypeError, match=r"mixes a boolean mask with other indices.*where"):
        x[:, np.array([True, False, True])]
    c = const(bk, np.ones((2, 3)))
    with pytest.raises(gg.OpError, match=r"mask of shape \(3,\) does not cover the leading dims "
                                         r"of the Tensor \(2, 3\)"):
        c[np.array([True, False, True])] = 0.0
    with pytest.raises(gg.OpError, match=r"^setitem_mask: mask of shape \(2, 2\)"):
        h = x * 1.0
        h[np.ones((2, 2), dtype=bool)] = 0.0
    with pytest.raises(gg.OpError, match="setitem"):
        c[np.array([True, False])] = const(bk, [1.0, 2.0])  # 2 values for a row of 3


def test_a_mask_in_a_graph_suggests_where():
    x = gg.Placeholder((None, 3), "float64", name="x")
    for build in (lambda: x[x > 0.0], lambda: x[np.array([True, False])],
                  lambda: gg.asarray(np.ones((2, 3)))[x > 0.0]):
        with pytest.raises(TypeError, match=r"^getitem: a boolean mask selects a number of "
                                            r"elements that depends on the data.*gg.where"):
            build()
    # the suggested form keeps the shape, so it builds and runs
    y = gg.where(x > 0.0, x, 0.0)
    assert y.shape == (None, 3)
    out = y.eval({x: np.array([[1.0, -2.0, 3.0]])})
    np.testing.assert_array_equal(gg.to_numpy(out), [[1.0, 0.0, 3.0]])
