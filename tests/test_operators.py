"""The standard's remaining Python operators on Tensors: bitwise/logical, %, //, shifts."""

from __future__ import annotations

import numpy as np

import gpugrad as gg


def test_logical_and_integer_operators(bk):
    x = gg.asarray(np.array([-1.5, 0.25, 2.0, 3.5], dtype=bk.float_dtype))
    pos, small = x > 0.0, x < 3.0
    np.testing.assert_array_equal(gg.to_numpy(~pos), [True, False, False, False])
    np.testing.assert_array_equal(gg.to_numpy(pos & small), [False, True, True, False])
    np.testing.assert_array_equal(gg.to_numpy(pos | small), [True, True, True, True])
    np.testing.assert_array_equal(gg.to_numpy(pos ^ small), [True, False, False, True])
    i = gg.asarray(np.array([1, 2, 3], dtype="int32"))
    np.testing.assert_array_equal(gg.to_numpy(i << 1), [2, 4, 6])
    np.testing.assert_array_equal(gg.to_numpy(i >> 1), [0, 1, 1])
    np.testing.assert_array_equal(gg.to_numpy(~i), [-2, -3, -4])


def test_remainder_and_floor_divide(bk):
    host = np.array([-1.5, 0.25, 2.0, 3.5], dtype=bk.float_dtype)
    x = gg.asarray(host)
    np.testing.assert_allclose(gg.to_numpy(x % 2.0), host % 2.0)
    np.testing.assert_allclose(gg.to_numpy(x // 2.0), host // 2.0)
    np.testing.assert_allclose(gg.to_numpy(7.0 % (x + 2.0)), 7.0 % (host + 2.0), rtol=1e-6)
    np.testing.assert_allclose(gg.to_numpy(7.0 // (x + 2.0)), 7.0 // (host + 2.0))


def test_remainder_gradient_is_one_in_its_first_argument(bk64):
    w = gg.Variable(np.array([0.3, 1.7, 2.2]))
    gg.sum(w % 1.0).backward()
    np.testing.assert_allclose(gg.to_numpy(w.grad), [1.0, 1.0, 1.0])
