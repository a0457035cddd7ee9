"""The eager front end: Tensor facts, operators, methods, and the backward pass.

Gradients are checked against hand-derived formulas (no framework as an oracle).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref

import numpy as np
import pytest

import gpugrad as gg
from helpers import assert_on_backend as check_on_backend
from helpers import host
from gpugrad import backend as B

# --- helpers --------------------------------------------------------------------------------

def var(bk, values, name=None):
    return gg.Variable(np.asarray(values, dtype=bk.float_dtype), name=name)


def const(bk, values):
    return gg.asarray(np.asarray(values, dtype=bk.float_dtype))


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


def test_boolean_mask_indexing_is_refused(bk):
    x = var(bk, [1.0, 2.0])
    with pytest.raises(TypeError, match="where"):
        _ = x[x > 1.0]


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


# --- backward -------------------------------------------------------------------------------

@pytest.fixture
def default_recursion_limit():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # CPython's default
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_long_chain_is_iterative(default_recursion_limit):
    """200,000 ops in a chain, at the default recursion limit (numpy: a few seconds)."""
    with gg.use_backend("numpy"):
        x = gg.Variable(np.array([1.0]))
        y = x
        for _ in range(200_000):
            y = y * 1.0000001
        y.backward()
        np.testing.assert_allclose(x.grad, [1.0000001**200_000], rtol=1e-9)
        assert y.data[0] == pytest.approx(1.0000001**200_000, rel=1e-9)
        # a second chain that is never differentiated: freeing it must not recurse either
        z = x
        for _ in range(100_000):
            z = z + 0.0
        ref = weakref.ref(z)
        del y, z
        gc.collect()
        assert ref() is None


def test_fan_out_accumulates_exactly(bk):
    x = var(bk, [1.5])
    n = 20_000
    s = x
    for _ in range(n):
        s = s + x
    s.backward()
    assert host(x.grad)[0] == float(n + 1)  # an integer: exact in float32 and float64

    # one op taking the same Tensor 20,000 times
    x = var(bk, [2.0])
    gg.stack([x] * n).sum().backward()
    assert host(x.grad)[0] == float(n)


def test_diamond_graph_gradient(bk):
    x = var(bk, [3.0])
    a = x * x       # 9, da/dx = 6
    b = a * x       # x**3
    c = a + b       # x**2 + x**3, dc/dx = 2x + 3x**2 = 33
    c.backward()
    assert host(x.grad)[0] == 33.0


def test_non_scalar_output_needs_a_seed(bk):
    x = var(bk, np.ones((2, 3)))
    y = x * 2.0
    with pytest.raises(gg.GradientError, match=r"\(2, 3\)"):
        y.backward()
    # one-element outputs of any rank need no seed
    (x.sum(axis=(0, 1), keepdims=True)).backward()
    np.testing.assert_array_equal(host(x.grad), np.ones((2, 3)))


def test_seed_gradient(bk):
    x = var(bk, np.ones((2, 3)))
    y = x * 2.0
    with pytest.raises(gg.GradientError) as info:
        y.backward(grad=np.ones((3, 2), dtype=bk.float_dtype))
    assert "(3, 2)" in str(info.value) and "(2, 3)" in str(info.value)
    seed = np.arange(6.0).reshape(2, 3).astype(bk.float_dtype)
    y.backward(grad=seed)  # a host seed crosses to the device
    np.testing.assert_array_equal(host(x.grad), 2.0 * seed)
    check_on_backend(bk, x.grad)


def test_backward_of_a_constant_raises(bk):
    c = const(bk, [1.0]) * 2.0
    with pytest.raises(gg.GradientError, match="does not require"):
        c.backward()


def test_saved_arrays_are_freed_after_backward(bk):
    x = var(bk, [1.0, 2.0])
    y = (gg.exp(x) * x).sum()
    nodes = [y._node, y._node.inputs[0]]
    assert all(n.res is not gg.eager.FREED for n in nodes)
    y.backward()
    assert all(n.res is gg.eager.FREED for n in nodes)
    with pytest.raises(gg.GradientError, match="retain_graph"):
        y.backward()


def test_residual_memory_is_released(saving_op):
    with gg.use_backend("numpy"):
        x = gg.Variable(np.array([1.0, 3.0]))
        y = saving_op(x).sum()
        ref = weakref.ref(y._node.inputs[0].res)
        y.backward()
        gc.collect()
        assert ref() is None
        np.testing.assert_array_equal(x.grad, [2.0, 6.0])

        x.grad = None
        y = saving_op(x).sum()
        ref = weakref.ref(y._node.inputs[0].res)
        y.backward(retain_graph=True)
        gc.collect()
        assert ref() is not None


def test_retain_graph_accumulates(bk):
    x = var(bk, [1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(host(x.grad), [2.0, 4.0])
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(host(x.grad), [4.0, 8.0])
    y.backward()
    np.testing.assert_array_equal(host(x.grad), [6.0, 8.0 + 4.0])
    with pytest.raises(gg.GradientError, match="retain_graph"):
        y.backward()


def test_accumulation_is_out_of_place(bk):
    x = var(bk, [1.0])
    (x * 2.0).backward()
    first = x.grad
    (x * 3.0).backward()
    assert host(first)[0] == 2.0
    assert host(x.grad)[0] == 5.0


def test_intermediate_tensors_get_no_grad(bk):
    x = var(bk, [1.0])
    h = x * 2.0
    (h * h).backward()
    assert h.grad is None
    assert host(x.grad)[0] == 8.0


# --- no_grad and detach ---------------------------------------------------------------------

def test_no_grad_context_and_decorator(bk):
    x = var(bk, [1.0])
    with gg.no_grad():
        assert not gg.is_grad_enabled()
        y = x * 2.0
        with gg.no_grad():
            pass
        assert not gg.is_grad_enabled()
    assert gg.is_grad_enabled()
    assert not y.requires_grad and y._node is None

    @gg.no_grad()
    def f(t):
        return t * 3.0, gg.is_grad_enabled()

    z, enabled = f(x)
    assert not z.requires_grad and enabled is False
    assert gg.is_grad_enabled()
    assert (x * 3.0).requires_grad


def test_no_grad_is_per_thread():
    x = gg.Variable(np.array([1.0]))
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def in_no_grad():
        with gg.no_grad():
            entered.set()
            checked.wait(10)
            seen["worker"] = (x * 2.0).requires_grad

    def plain():
        seen["other"] = (gg.is_grad_enabled(), (x * 2.0).requires_grad)

    worker = threading.Thread(target=in_no_grad)
    worker.start()
    assert entered.wait(10)
    # the worker is inside no_grad right now; this thread and a fresh one are unaffected
    assert gg.is_grad_enabled() and (x * 2.0).requires_grad
    other = threading.Thread(target=plain)
    other.start()
    other.join()
    checked.set()
    worker.join()
    assert seen == {"worker": False, "other": (True, True)}

    # and the other way round: this thread in no_grad, a new thread records
    with gg.no_grad():
        other = threading.Thread(target=plain)
        other.start()
        other.join()
        assert not (x * 2.0).requires_grad
    assert seen["other"] == (True, True)


def test_no_grad_is_per_task():
    x = gg.Variable(np.array([1.0]))

    async def main():
        inside = asyncio.Event()
        done = asyncio.Event()

        async def quiet():
            with gg.no_grad():
                inside.set()
                await done.wait()
                return (x * 2.0).requires_grad

        async def loud():
            await inside.wait()
            r = (gg.is_grad_enabled(), (x * 2.0).requires_grad)
            done.set()
            return r

        return await asyncio.gather(quiet(), loud())

    assert asyncio.run(main()) == [False, (True, True)]


def test_detach_shares_data_but_not_graph(bk):
    x = var(bk, [3.0])
    h = x * x
    d = h.detach()
    assert d.data is h.data
    assert d.requires_grad is False and d._node is None and d.grad is None
    assert type(d) is gg.Tensor
    (h * d).backward()  # d is a constant 9: d/dx (x**2 * 9) = 18 x
    assert host(x.grad)[0] == 54.0
    with pytest.raises(gg.GradientError):
        d.backward()


# --- backends and devices meeting -----------------------------------------------------------

def _strict_device(name):
    import array_api_strict

    return array_api_strict.Device(name)


def test_mixing_strict_devices_raises():
    pytest.importorskip("array_api_strict")
    with gg.use_backend("array_api_strict", _strict_device("device1")):
        a = gg.Variable([1.0, 2.0])
    with gg.use_backend("array_api_strict", _strict_device("device2")):
        b = gg.Variable([1.0, 2.0])
    assert a.device != b.device
    for fn, opname in [(lambda: a + b, "add"), (lambda: a * b, "multiply"),
                       (lambda: gg.maximum(b, a), "maximum")]:
        with pytest.raises(gg.BackendError) as info:
            fn()
        msg = str(info.value)
        assert msg.startswith(opname + ":"), msg
        assert "device1" in msg and "device2" in msg
    # a raw backend array on the other device is refused too
    with pytest.raises(gg.BackendError, match="device2"):
        a - b.data


def test_mixing_numpy_and_strict_raises():
    pytest.importorskip("array_api_strict")
    with gg.use_backend("array_api_strict", _strict_device("device1")):
        s = gg.Variable([1.0, 2.0])
    with gg.use_backend("numpy"):
        n = gg.Variable([1.0, 2.0])
    for fn in [lambda: s + n, lambda: n + s, lambda: s @ n]:
        with pytest.raises(gg.BackendError) as info:
            fn()
        msg = str(info.value)
        assert "numpy" in msg and "array_api_strict" in msg
    # a host numpy array does not silently cross inside an op: use gg.asarray
    with pytest.raises(gg.BackendError, match="subtract"):
        np.array([1.0, 2.0]) - s


def test_forward_errors_name_the_op_and_shapes(bk):
    a = var(bk, np.ones((2, 3)))
    b = var(bk, np.ones((4, 5)))
    with pytest.raises(gg.OpError) as info:
        _ = a @ b
    msg = str(info.value)
    assert msg.startswith("matmul:")
    assert "(2, 3)" in msg and "(4, 5)" in msg
    with pytest.raises(gg.OpError, match=r"add.*\(2, 3\).*\(4, 5\)"):
        _ = a + b
    with pytest.raises(gg.OpError, match="reshape"):
        a.reshape(7)


def test_zero_d_gradients_stay_arrays(bk):
    """NumPy turns 0-d sums into NumPy scalars; gradients must stay backend arrays."""
    c = gg.Variable(np.array(2.0, dtype=bk.float_dtype))
    (c * c).backward()  # c reaches the output twice: the two gradients are summed
    assert type(c.grad) is type(c.data) and c.grad.shape == ()
    (c * 3.0).backward()  # accumulation into .grad
    assert type(c.grad) is type(c.data)
    assert host(c.grad) == 7.0
    check_on_backend(bk, c.grad)


def test_broadcast_gradients_are_summed_back(bk):
    a = var(bk, np.ones((2, 1)))
    b = var(bk, np.ones((1, 3)))
    c = gg.Variable(np.array(2.0, dtype=bk.float_dtype))
    d = var(bk, [1.0, 2.0, 3.0])
    ((a + b) * c * d).sum().backward()
    np.testing.assert_array_equal(host(a.grad), [[12.0], [12.0]])
    np.testing.assert_array_equal(host(b.grad), [[4.0, 8.0, 12.0]])
    assert c.grad.shape == () and host(c.grad) == 24.0
    np.testing.assert_array_equal(host(d.grad), [8.0, 8.0, 8.0])


def test_unnamed_intermediates_are_freed_before_backward():
    """The tape keeps residuals, not intermediate Tensors: an activation nobody names and no
    rule saved is freed at once (this is what keeps peak memory at the floor's)."""
    with gg.use_backend("numpy"):
        x = gg.Variable(np.ones(4))
        h = x * 2.0  # multiply saves (x, 2.0); the product array itself is saved by nobody
        ref = weakref.ref(h.data)
        y = gg.sum(h + 1.0)  # add saves nothing
        del h
        gc.collect()
        assert ref() is None
        y.backward()
        np.testing.assert_array_equal(x.grad, [2.0] * 4)
