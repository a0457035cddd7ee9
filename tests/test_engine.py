"""The eager engine: backward (ordering, fan-out, seeds, freeing, retain_graph), no_grad and
detach, and backends or devices meeting in one op.

Gradients are checked against hand-derived formulas (no framework as an oracle).
"""


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
from helpers import const, var


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
