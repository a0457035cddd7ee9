"""DLPack both ways: Tensors as producers, gg.from_dlpack and gg.asarray as consumers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HAS_GPU
from helpers import assert_on_backend, host

import gpugrad as gg
from gpugrad import backend as B


def test_numpy_consumes_a_tensor_without_a_copy(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0, 3.0]))
    a = np.from_dlpack(w)
    assert np.shares_memory(a, w.data)
    assert w.__dlpack_device__() == (1, 0)
    b = np.from_dlpack(w, copy=True)
    assert not np.shares_memory(b, w.data)
    np.testing.assert_array_equal(b, [1.0, 2.0, 3.0])
    view = gg.asarray(np.arange(6.0).reshape(2, 3))[:, 1]  # strided
    np.testing.assert_array_equal(np.from_dlpack(view), [1.0, 4.0])


def test_dlpack_keywords_follow_the_standard(bk):
    t = gg.asarray(np.array([1.0, 2.0], dtype=bk.float_dtype))
    for kw in ({}, {"max_version": (1, 0)}, {"max_version": (0, 8)}, {"copy": True},
               {"dl_device": (1, 0)}, {"stream": None}):
        capsule = t.__dlpack__(**kw)
        assert type(capsule).__name__ == "PyCapsule"
    np.testing.assert_array_equal(np.from_dlpack(t), np.array([1.0, 2.0], bk.float_dtype))


def test_from_dlpack_shares_numpy_memory(numpy_backend):
    src = np.arange(4.0)
    t = gg.from_dlpack(src)
    assert type(t) is gg.Tensor and not t.requires_grad
    assert np.shares_memory(t.data, src)
    assert not np.shares_memory(gg.from_dlpack(src, copy=True).data, src)
    assert not np.shares_memory(gg.asarray(src).data, src)  # asarray copies host arrays
    assert np.shares_memory(gg.from_dlpack(t).data, src)  # a Tensor is a producer too


def test_from_dlpack_onto_each_backend(bk):
    src = np.arange(6.0, dtype=bk.float_dtype).reshape(2, 3)
    for t in (gg.from_dlpack(src), gg.array_api.from_dlpack(src)):
        assert_on_backend(bk, t.data)
        np.testing.assert_array_equal(host(t), src)


def test_strict_array_into_numpy_backend():
    import array_api_strict as xs

    a = xs.asarray([1.0, 2.0], device=xs.Device("device1"))
    with gg.use_backend("numpy"):
        for t in (gg.asarray(a), gg.from_dlpack(a)):
            assert isinstance(t.data, np.ndarray)
            np.testing.assert_array_equal(t.data, [1.0, 2.0])
        assert gg.asarray(a, dtype="float32").dtype == np.float32


def test_not_a_producer_gets_a_clear_error(numpy_backend):
    with pytest.raises(TypeError, match="from_dlpack: a list is not a DLPack producer"):
        gg.from_dlpack([1.0, 2.0])


def test_imported_values_train(bk64):
    src = np.array([0.5, -1.0, 2.0])
    x = gg.from_dlpack(src)
    w = gg.Variable(x)  # a trainable copy
    gg.sum(w * x).backward()
    np.testing.assert_array_equal(host(w.grad), src)  # d/dw sum(w * x) = x
    with gg.no_grad():
        w -= 1.0  # the Variable owns a copy: the source is untouched
    np.testing.assert_array_equal(src, [0.5, -1.0, 2.0])


def test_torch_both_ways(numpy_backend):
    torch = pytest.importorskip("torch")
    w = gg.Variable(np.array([1.0, 2.0, 3.0]))
    tt = torch.from_dlpack(w)
    assert tt.data_ptr() == w.data.ctypes.data  # zero copy on the CPU
    assert tt.dtype == torch.float64 and tt.tolist() == [1.0, 2.0, 3.0]
    src = torch.arange(4, dtype=torch.float32)
    shared = gg.from_dlpack(src)
    assert np.shares_memory(shared.data, src.numpy())
    assert np.shares_memory(gg.asarray(src, copy=False).data, src.numpy())
    copied = gg.asarray(src)
    assert not np.shares_memory(copied.data, src.numpy())
    np.testing.assert_array_equal(copied.data, [0.0, 1.0, 2.0, 3.0])
    assert copied.dtype == np.float32
    w = gg.Variable(src)  # a Variable owns a copy: optimizer steps never write into src
    src[0] = 5.0
    assert w.data.tolist() == [0.0, 1.0, 2.0, 3.0]
    with gg.use_backend("array_api_strict"):
        t = gg.asarray(src)
        assert B.name_of(t.xp) == "array_api_strict"
        assert torch.from_dlpack(t).tolist() == [5.0, 1.0, 2.0, 3.0]


def test_jax_both_ways(numpy_backend):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    src = jnp.arange(3.0)
    t = gg.asarray(src)
    np.testing.assert_array_equal(t.data, [0.0, 1.0, 2.0])
    shared = gg.from_dlpack(src)  # zero copy; JAX arrays are immutable, so read-only
    assert np.shares_memory(shared.data, np.from_dlpack(src))
    assert not shared.data.flags.writeable and t.data.flags.writeable
    back = jax.dlpack.from_dlpack(gg.asarray(np.array([1.0, 2.0], "float32")))
    assert back.tolist() == [1.0, 2.0]
    t += 1.0  # the copy is ours to update in place
    assert t.data.tolist() == [1.0, 2.0, 3.0]
    with gg.use_backend("array_api_strict"):
        t = gg.asarray(src)
        t += 1.0
        assert gg.to_numpy(t).tolist() == [1.0, 2.0, 3.0]


class _Producer:
    """Only the DLPack protocol: not an array any backend recognises."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_placeholder_takes_any_dlpack_producer(bk64):
    import array_api_strict as xs

    x = gg.Placeholder((None, 2), "float64", name="x")
    w = gg.Variable(np.array([3.0, -1.0]))
    loss = gg.sum(x * w)
    src = np.array([[1.0, 2.0], [0.5, 4.0]])
    feeds = [_Producer(src), xs.asarray(src, device=xs.Device("device1"))]
    for fed in feeds:
        (gw,) = gg.gradients(loss, [w], feed={x: fed})
        np.testing.assert_array_equal(host(gw), src.sum(0))  # d/dw sum(x * w)
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'x': fed dtype float32 \(2, 2\) "
                                           r"but it was declared float64"):
        loss.eval(feed={x: _Producer(src.astype(np.float32))})
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'x': fed shape \(3,\)"):
        loss.eval(feed={x: _Producer(np.zeros(3))})
    with pytest.raises(gg.FeedError, match=r"^Placeholder 'x': feed is a dict, not an array; "
                                           r"feed a NumPy or backend array"):
        loss.eval(feed={x: {"a": 1}})


def test_placeholder_takes_torch_and_jax_arrays(numpy_backend):
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    x = gg.Placeholder((3,), "float32", name="x")
    y = x * 2.0
    np.testing.assert_array_equal(y.eval(feed={x: torch.arange(3.0)}), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(y.eval(feed={x: jnp.arange(3.0)}), [0.0, 2.0, 4.0])
    with pytest.raises(gg.FeedError, match="fed dtype float64"):
        y.eval(feed={x: torch.arange(3.0, dtype=torch.float64)})


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_cupy_both_ways():
    import cupy

    with gg.use_backend("cupy"):
        w = gg.Variable(np.array([1.0, 2.0]))
        c = cupy.from_dlpack(w)
        assert c.data.ptr == w.data.data.ptr  # zero copy on the GPU
        src = cupy.arange(3.0)
        t = gg.from_dlpack(src)
        assert t.data.data.ptr == src.data.ptr
        host_t = gg.from_dlpack(np.arange(3.0))  # host memory crosses once
        assert "cupy" in type(host_t.data).__module__
    with gg.use_backend("numpy"):
        t = gg.asarray(cupy.arange(3.0))  # a GPU array comes to the host by copy
        np.testing.assert_array_equal(t.data, [0.0, 1.0, 2.0])
