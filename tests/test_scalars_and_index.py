"""Python scalars are weak (they never change an array's dtype), and a 0-d integer Tensor is
a Python index (``__index__``)."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import gpugrad as gg

xa = gg.array_api

INT_DTYPES = ["int8", "uint8", "int16", "int32", "uint32", "int64"]

SCALAR_CALLS = {
    "clip": lambda a: gg.clip(a, min=0, max=1),
    "xa.clip": lambda a: xa.clip(a, 0, 1),
    "where": lambda a: gg.where(a > 1, a, 0),
    "where_left": lambda a: gg.where(a > 1, 0, a),
    "xa.where": lambda a: xa.where(a > 1, a, 0),
    "maximum": lambda a: gg.maximum(a, 1),
    "minimum": lambda a: gg.minimum(a, 1),
    "xa.maximum": lambda a: xa.maximum(a, 1),
    "xa.minimum": lambda a: xa.minimum(1, a),
    "add": lambda a: a + 1,
    "radd": lambda a: 1 + a,
    "subtract": lambda a: gg.subtract(a, 1),
    "multiply": lambda a: a * 2,
    "pow": lambda a: a ** 2,
    "floor_divide": lambda a: xa.floor_divide(a, 2),
    "remainder": lambda a: xa.remainder(a, 2),
    "bitwise_and": lambda a: xa.bitwise_and(a, 1),
    "setitem": lambda a: gg.setitem(a, 1, key=0),
}


@pytest.mark.parametrize("call", sorted(SCALAR_CALLS))
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_python_int_keeps_integer_dtype(call, dtype, bk):
    a = gg.asarray(np.array([0, 3, 5], dtype))
    out = SCALAR_CALLS[call](a)
    assert gg.to_numpy(out).dtype == np.dtype(dtype), f"{call} changed {dtype}"


@pytest.mark.parametrize("dtype", ["int32", "uint8"])
def test_scalar_values_are_right(dtype, bk):
    a = gg.asarray(np.array([0, 3, 5], dtype))
    np.testing.assert_array_equal(gg.to_numpy(gg.where(a > 1, a, 0)), [0, 3, 5])
    np.testing.assert_array_equal(gg.to_numpy(gg.where(a > 3, 7, a)), [0, 3, 7])
    np.testing.assert_array_equal(gg.to_numpy(gg.maximum(a, 4)), [4, 4, 5])
    np.testing.assert_array_equal(gg.to_numpy(gg.clip(a, min=1, max=4)), [1, 3, 4])


def test_float_and_bool_scalars_keep_their_kinds(bk):
    x = gg.asarray(np.array([0.5, -1.0], bk.float_dtype))
    assert gg.to_numpy(gg.where(x > 0, 0, x)).dtype == np.dtype(bk.float_dtype)  # int -> float
    assert gg.to_numpy(gg.maximum(x, 0)).dtype == np.dtype(bk.float_dtype)
    m = gg.asarray(np.array([True, False]))
    assert gg.to_numpy(gg.where(m, True, m)).dtype == np.bool_
    # a float scalar beside an integer array: the standard leaves mixed kinds undefined;
    # NumPy gives a floating result, array_api_strict refuses (an OpError naming where)
    i = gg.asarray(np.array([1, 2], np.int32))
    if bk.name == "numpy":
        assert gg.to_numpy(gg.where(i > 1, i, 0.5)).dtype.kind == "f"
    else:
        with pytest.raises(gg.OpError, match="where"):
            gg.where(i > 1, i, 0.5)


def test_gradient_of_where_with_int_scalar_stays_float(bk64):
    x = gg.Variable(np.array([0.5, -1.0, 2.0]))
    gg.sum(gg.where(x > 0, x, 0) * 3.0).backward()
    np.testing.assert_array_equal(gg.to_numpy(x.grad), [3.0, 0.0, 3.0])


@pytest.mark.parametrize("dtype", ["int32", "uint8", "int64"])
def test_zero_d_integer_tensor_is_an_index(dtype, bk):
    t = gg.asarray(np.array(2, dtype))
    assert operator.index(t) == 2
    assert [10, 20, 30][t] == 30
    assert list(range(t)) == [0, 1]
    assert "abcd"[t:] == "cd"
    x = gg.asarray(np.arange(5.0, dtype=bk.float_dtype))
    np.testing.assert_array_equal(gg.to_numpy(x[t]), 2.0)
    np.testing.assert_array_equal(gg.to_numpy(x[t:]), [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(np.arange(4)[t], 2)


def test_index_gradient_flows_through_tensor_index(bk64):
    x = gg.Variable(np.array([1.0, 2.0, 3.0]))
    t = gg.asarray(np.array(1, np.int64))
    gg.sum(x[t:] * 2.0).backward()
    np.testing.assert_array_equal(gg.to_numpy(x.grad), [0.0, 2.0, 2.0])


@pytest.mark.parametrize("value, what", [
    (np.array(2.0), "float64 ()"),
    (np.array([1, 2]), "int64 (2,)"),
    (np.array(True), "bool ()"),
])
def test_non_index_tensors_get_a_clear_error(value, what, bk64):
    t = gg.asarray(value)
    with pytest.raises(TypeError, match=rf"only a 0-d integer Tensor can be used as an "
                                        rf"index, got {re_escape(what)}"):
        operator.index(t)
    with pytest.raises(TypeError, match="0-d integer Tensor"):
        [1, 2, 3][t]


def re_escape(s: str) -> str:
    import re

    return re.escape(s)
