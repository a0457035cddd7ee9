"""The eager front end's Tensors: their facts, operators, indexing and methods.

Gradients are checked against hand-derived formulas (no framework as an oracle).
"""



import numpy as np
import pytest

import gpugrad as gg
from helpers import assert_on_backend as check_on_backend
from helpers import host
from gpugrad import backend as B
from helpers import const, var


# --- Tensor facts ---------------------------------------------------------------------------

def test_tensor_attributes(bk):
    a = np.arange(6, dtype=bk.float_dtype).reshape(2, 3)
    W = gg.Variable(a, name="W")
    check_on_backend(bk, W.data)
    assert W.grad is None
    assert W.requires_grad is True
    assert W.shape == (2, 3) and isinstance(W.shape, tuple)
    assert W.ndim == 2 and W.size == 6 and len(W) == 2
    assert B.dtype_name(W.dtype) == bk.float_dtype
    assert W.dtype == W.data.dtype
    assert W.device == B.device_of(W.data)
    if bk.device_name is not None:
        assert W.device == bk.backend().device
    assert W.xp is B.namespace_of(W.data)
    assert B.name_of(W.xp) == bk.name
    assert W.name == "W"
    np.testing.assert_array_equal(host(W), a)

    c = gg.asarray(a)
    assert c.requires_grad is False and c.grad is None
    # a Variable copies its value; mutating the host array afterwards changes nothing
    a[0, 0] = 100.0
    assert host(W)[0, 0] == 0.0


def test_variable_copies_backend_array(bk):
    arr = const(bk, [1.0, 2.0]).data
    W = gg.Variable(arr)
    assert W.data is not arr
    np.testing.assert_array_equal(host(W), [1.0, 2.0])


def test_scalar_conversions(bk):
    t = var(bk, [2.5])
    assert t.item() == 2.5  # item(): any one-element Tensor
    assert float(t.sum()) == 2.5  # float(): a 0-d Tensor, as the array API defines
    assert int(gg.asarray(np.asarray(7))) == 7
    assert "requires_grad=True" in repr(t)


def test_only_floating_dtypes_can_require_gradients(bk):
    with pytest.raises(TypeError, match="int64"):
        gg.Variable(np.array([1, 2, 3], dtype=np.int64), name="counts")
    with pytest.raises(TypeError, match="counts"):
        gg.Variable(np.array([1, 2, 3], dtype=np.int64), name="counts")
    with pytest.raises(TypeError, match="bool"):
        gg.Variable(np.array([True, False]))
    # integer constants are fine, and are constants for the engine
    k = gg.asarray(np.array([1, 2, 3]))
    assert not k.requires_grad
    W = var(bk, [1.0, 1.0, 1.0])
    y = (W * k.astype(bk.float_dtype)).sum()
    y.backward()
    np.testing.assert_array_equal(host(W.grad), [1.0, 2.0, 3.0])


# --- operators ------------------------------------------------------------------------------

def test_binary_operators_values_and_gradients(bk, rng):
    a0 = rng.uniform(0.5, 2.0, (2, 3)).astype(bk.float_dtype)
    b0 = rng.uniform(0.5, 2.0, (2, 3)).astype(bk.float_dtype)
    A64, B64 = a0.astype(np.float64), b0.astype(np.float64)
    cases = [
        (lambda a, b: a + b, A64 + B64, np.ones_like(A64), np.ones_like(B64)),
        (lambda a, b: a - b, A64 - B64, np.ones_like(A64), -np.ones_like(B64)),
        (lambda a, b: a * b, A64 * B64, B64, A64),
        (lambda a, b: a / b, A64 / B64, 1 / B64, -A64 / B64**2),
        (lambda a, b: a ** b, A64**B64, B64 * A64 ** (B64 - 1), A64**B64 * np.log(A64)),
    ]
    for fn, value, da, db in cases:
        a, b = gg.Variable(a0), gg.Variable(b0)
        out = fn(a, b)
        assert isinstance(out, gg.Tensor) and out.requires_grad
        check_on_backend(bk, out.data)
        np.testing.assert_allclose(host(out), value, rtol=1e-5)
        out.sum().backward()
        np.testing.assert_allclose(host(a.grad), da, rtol=1e-5)
        np.testing.assert_allclose(host(b.grad), db, rtol=1e-5)
        assert B.dtype_name(a.grad.dtype) == bk.float_dtype


def test_matmul_operator_gradients(bk, rng):
    a0 = rng.standard_normal((2, 3)).astype(bk.float_dtype)
    b0 = rng.standard_normal((3, 4)).astype(bk.float_dtype)
    a, b = gg.Variable(a0), gg.Variable(b0)
    out = a @ b
    assert out.shape == (2, 4)
    np.testing.assert_allclose(host(out), a0.astype(float) @ b0.astype(float), rtol=1e-5,
                               atol=1e-6)
    g0 = rng.standard_normal((2, 4)).astype(bk.float_dtype)
    out.backward(grad=gg.asarray(g0))
    np.testing.assert_allclose(host(a.grad), g0.astype(float) @ b0.T.astype(float), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(host(b.grad), a0.T.astype(float) @ g0.astype(float), rtol=1e-5,
                               atol=1e-6)


def test_unary_negative_and_positive(bk):
    x = var(bk, [1.0, -2.0])
    y = -x
    np.testing.assert_array_equal(host(y), [-1.0, 2.0])
    (y * const(bk, [3.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [-3.0, -5.0])
    assert +x is x


def test_reflected_ops_with_python_scalars(bk):
    x0 = np.array([0.5, 1.0, 2.0])
    cases = [
        (lambda x: 3.0 + x, 3.0 + x0, np.ones(3)),
        (lambda x: 3.0 - x, 3.0 - x0, -np.ones(3)),
        (lambda x: 3.0 * x, 3.0 * x0, 3.0 * np.ones(3)),
        (lambda x: 3.0 / x, 3.0 / x0, -3.0 / x0**2),
        (lambda x: 2.0 ** x, 2.0**x0, 2.0**x0 * np.log(2.0)),
        (lambda x: 2 * x, 2 * x0, 2.0 * np.ones(3)),  # an int scalar
        (lambda x: x ** 2, x0**2, 2 * x0),
        (lambda x: x ** 0.5, x0**0.5, 0.5 * x0**-0.5),
        (lambda x: x - 1, x0 - 1, np.ones(3)),
    ]
    for fn, value, grad in cases:
        x = var(bk, x0)
        y = fn(x)
        # a Python float never upcasts: the result keeps the Variable's dtype
        assert B.dtype_name(y.dtype) == bk.float_dtype
        check_on_backend(bk, y.data)
        np.testing.assert_allclose(host(y), value, rtol=1e-6)
        y.sum().backward()
        np.testing.assert_allclose(host(x.grad), grad, rtol=1e-6)
        assert B.dtype_name(x.grad.dtype) == bk.float_dtype


def test_reflected_ops_with_numpy_arrays_on_the_left():
    with gg.use_backend("numpy"):
        x = gg.Variable(np.array([[1.0, 2.0], [3.0, 4.0]]))
        left = np.array([[2.0, 0.5], [1.0, -1.0]])
        for fn, value, grad in [
            (lambda: left + x, left + x.data, np.ones((2, 2))),
            (lambda: left - x, left - x.data, -np.ones((2, 2))),
            (lambda: left * x, left * x.data, left),
            (lambda: left / x, left / x.data, -left / x.data**2),
            (lambda: left @ x, left @ x.data, left.T @ np.ones((2, 2))),
        ]:
            x.grad = None
            y = fn()
            # numpy defers to the Tensor's reflected operator (no object arrays)
            assert isinstance(y, gg.Tensor), type(y)
            np.testing.assert_allclose(host(y), value)
            y.sum().backward()
            np.testing.assert_allclose(host(x.grad), grad)


def test_comparisons_give_booleans_without_gradient(bk):
    x = var(bk, [1.0, 2.0, 3.0])
    y = var(bk, [3.0, 2.0, 1.0])
    for res, want in [
        (x < y, [True, False, False]),
        (x <= y, [True, True, False]),
        (x > y, [False, False, True]),
        (x >= y, [False, True, True]),
        (x == y, [False, True, False]),
        (x != y, [True, False, True]),
        (x > 1.5, [False, True, True]),
        (2.0 < x, [False, False, True]),
    ]:
        assert isinstance(res, gg.Tensor)
        assert res.requires_grad is False and res._node is None
        assert B.dtype_name(res.dtype) == "bool"
        np.testing.assert_array_equal(gg.to_numpy(res), want)
    # a mask from a comparison feeds where(); only the branches get gradient
    z = gg.where(x > 1.5, x * 2.0, y)
    z.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 2.0, 2.0])
    np.testing.assert_array_equal(host(y.grad), [1.0, 0.0, 0.0])


def test_tensor_is_hashable_by_identity(bk):
    x = var(bk, [1.0])
    d = {x: 1}
    assert d[x] == 1
    assert x in {x}
    assert var(bk, [1.0]) not in d  # equal values, another Variable


# --- indexing -------------------------------------------------------------------------------

def test_basic_indexing_values_and_gradients(bk):
    x0 = np.arange(12.0).reshape(3, 4)
    cases = [
        (lambda x: x[1], x0[1]),
        (lambda x: x[-1, 2], x0[-1, 2]),
        (lambda x: x[:, 1:3], x0[:, 1:3]),
        (lambda x: x[::2, ::-1], x0[::2, ::-1]),
        (lambda x: x[..., 0], x0[..., 0]),
        (lambda x: x[None, 0:2], x0[None, 0:2]),
    ]
    for fn, value in cases:
        x = var(bk, x0)
        y = fn(x)
        np.testing.assert_array_equal(host(y), value)
        # gradient of sum(y * w): w scattered back to the picked positions
        w = np.arange(1.0, 1.0 + np.size(value)).reshape(np.shape(value))
        (y * const(bk, w)).sum().backward()
        want = np.zeros_like(x0)
        idx_host = fn(_Recorder(x0.shape))
        want[idx_host.key] = w
        np.testing.assert_array_equal(host(x.grad), want)


class _Recorder:
    """Stands in for a Tensor to capture the key a lambda indexes with."""

    def __init__(self, shape):
        self.shape = shape
        self.key = None

    def __getitem__(self, key):
        self.key = key
        return self


def test_integer_array_indexing_accumulates_repeats(bk):
    x = var(bk, [10.0, 20.0, 30.0, 40.0])
    y = x[[0, 0, 2, 0]]
    np.testing.assert_array_equal(host(y), [10.0, 10.0, 30.0, 10.0])
    y.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [3.0, 0.0, 1.0, 0.0])

    m = var(bk, np.arange(6.0).reshape(2, 3))
    z = m[:, np.array([2, 2])]
    np.testing.assert_array_equal(host(z), [[2.0, 2.0], [5.0, 5.0]])
    z.sum().backward()
    np.testing.assert_array_equal(host(m.grad), [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])


# --- methods --------------------------------------------------------------------------------

def test_reductions_methods(bk):
    x0 = np.array([[1.0, 5.0, 2.0], [4.0, 4.0, 0.0]])
    x = var(bk, x0)
    s = x.sum(axis=1)
    np.testing.assert_array_equal(host(s), [8.0, 8.0])
    assert x.sum(axis=0, keepdims=True).shape == (1, 3)
    (s * const(bk, [1.0, 2.0])).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [[1.0] * 3, [2.0] * 3])

    x = var(bk, x0)
    m = x.mean()
    assert m.shape == ()
    np.testing.assert_allclose(host(m), x0.mean())
    m.backward()
    np.testing.assert_allclose(host(x.grad), np.full((2, 3), 1 / 6), rtol=1e-6)

    x = var(bk, x0)
    mx = x.max(axis=1)
    np.testing.assert_array_equal(host(mx), [5.0, 4.0])
    mx.sum().backward()
    # row 2 has a tie between its two 4.0s: they split the gradient
    np.testing.assert_array_equal(host(x.grad), [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])

    x = var(bk, x0)
    x.max().backward()
    np.testing.assert_array_equal(host(x.grad), [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_reshape_and_transposes(bk):
    x0 = np.arange(6.0)
    x = var(bk, x0)
    r1 = x.reshape(2, 3)
    r2 = x.reshape((3, 2))
    assert r1.shape == (2, 3) and r2.shape == (3, 2)
    t = r1.T
    assert t.shape == (3, 2)
    np.testing.assert_array_equal(host(t), x0.reshape(2, 3).T)
    mt = r1.mT
    np.testing.assert_array_equal(host(mt), host(t))
    (t * const(bk, np.arange(6.0).reshape(3, 2))).sum().backward()
    np.testing.assert_array_equal(host(x.grad), np.arange(6.0).reshape(3, 2).T.reshape(-1))

    s = var(bk, np.zeros((2, 3, 4)))
    assert s.mT.shape == (2, 4, 3)
    with pytest.raises(ValueError, match="mT"):
        _ = s.T


def test_astype_keeps_gradient_dtype(bk64):
    x = gg.Variable(np.array([1.0, 2.0], dtype=np.float64))
    y = x.astype("float32")
    assert B.dtype_name(y.dtype) == "float32"
    (y * 3.0).sum().backward()
    assert B.dtype_name(x.grad.dtype) == "float64"
    np.testing.assert_array_equal(host(x.grad), [3.0, 3.0])


def test_float32_gradients_stay_float32(bk):
    x = gg.Variable(np.array([0.5, -1.5], dtype=np.float32))
    y = gg.sum(gg.sigmoid(x * 2.0 + 1.0) ** 2 / 3.0 - x.mean())
    y.backward()
    assert B.dtype_name(x.grad.dtype) == "float32"
    check_on_backend(bk, x.grad)


def test_float32_meeting_float64_raises_and_astype_keeps_the_gradient_float32():
    with gg.use_backend("numpy"):
        x = gg.Variable(np.array([1.0, 2.0], dtype=np.float32))
        c = gg.asarray(np.array([3.0, 4.0], dtype=np.float64))
        with pytest.raises(gg.DtypeError, match="float32 input .* upcast to float64"):
            _ = x * c
        y = x.astype("float64") * c  # the explicit conversion is fine
        assert y.dtype == np.float64
        y.sum().backward()
        assert x.grad.dtype == np.float32
        np.testing.assert_array_equal(x.grad, [3.0, 4.0])
