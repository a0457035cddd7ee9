"""gpugrad.array_api calls as the standard writes them: signatures, ``to_device``, special
cases, integer-array indexing, ``finfo``, the errors the standard names."""

import inspect
import math

import numpy as np
import pytest

import gpugrad as gg

xa = gg.array_api
P = inspect.Parameter

SIGNATURES = {
    "all": ("x", "/", "axis", "keepdims"),
    "argmax": ("x", "/", "axis", "keepdims"),
    "argsort": ("x", "/", "axis", "descending", "stable"),
    "count_nonzero": ("x", "/", "axis", "keepdims"),
    "cumulative_prod": ("x", "/", "axis", "dtype", "include_initial"),
    "prod": ("x", "/", "axis", "dtype", "keepdims"),
    "searchsorted": ("x1", "x2", "/", "side", "sorter"),
    "arange": ("start", "/", "stop", "step", "dtype", "device"),
    "eye": ("n_rows", "n_cols", "/", "k", "dtype", "device"),
    "full_like": ("x", "/", "fill_value", "dtype", "device"),
    "linspace": ("start", "stop", "/", "num", "dtype", "device", "endpoint"),
    "zeros": ("shape", "dtype", "device"),
}


def _written(fn) -> tuple:
    out = []
    for p in inspect.signature(fn).parameters.values():
        out.append(p.name)
        if p.kind is P.POSITIONAL_ONLY and not any(
                q.kind is P.POSITIONAL_ONLY for q in list(
                    inspect.signature(fn).parameters.values())[len(out):]):
            out.append("/")
    return tuple(out)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_as_the_standard_writes_it(name):
    assert _written(getattr(xa, name)) == SIGNATURES[name]


def test_declared_signature_refuses_other_calls():
    with pytest.raises(TypeError, match="gpugrad.array_api.all: .*keyword"):
        xa.all(gg.asarray([True]), bogus=1)


def test_creation_and_reductions_with_keywords(bk64):
    x = gg.asarray(np.array([[1.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(gg.to_numpy(xa.all(x, axis=0)), [True, False])
    assert int(xa.argmax(x, axis=None)) == 3
    assert gg.to_numpy(xa.prod(x, axis=1, dtype="float32")).dtype == np.float32
    np.testing.assert_array_equal(gg.to_numpy(xa.eye(2, 3, k=1)), np.eye(2, 3, k=1))
    np.testing.assert_array_equal(gg.to_numpy(xa.linspace(0.0, 1.0, num=3)), [0.0, 0.5, 1.0])
    sorted_ = gg.asarray(np.array([3.0, 1.0, 2.0]))
    at = xa.searchsorted(sorted_, 2.5, sorter=xa.argsort(sorted_))
    assert int(at) == 2


def test_sum_has_the_asked_for_dtype():
    x = gg.asarray(np.array([200, 100], dtype=np.uint8))
    out = xa.sum(x, dtype="uint8")
    assert out.dtype == np.uint8 and int(out) == 44  # wraps, as the dtype says


def test_to_device():
    x = gg.Variable(np.array([1.0, 2.0]))
    assert x.to_device(x.device) is x
    with gg.use_backend("array_api_strict"):
        import array_api_strict

        y = gg.asarray([1.0, 2.0])
        other = array_api_strict.Device("device1")
        moved = y.to_device(other)
        assert moved.device == other and moved.device != y.device
        v = gg.Variable(array_api_strict.asarray([1.0]))
        with pytest.raises(NotImplementedError, match="detach"):
            v.to_device(other)
        assert v.detach().to_device(other).device == other


INF = math.inf


def test_floor_divide_special_cases(bk64):
    x1 = gg.asarray([INF, INF, -INF, -INF, 1.0, -1.0, 1.0, -1.0, 7.0])
    x2 = gg.asarray([2.0, -2.0, 2.0, -2.0, -INF, INF, INF, -INF, -2.0])
    out = gg.to_numpy(xa.floor_divide(x1, x2))
    want = np.array([INF, -INF, -INF, INF, -0.0, -0.0, 0.0, 0.0, -4.0])
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(want))
    y = gg.asarray([INF, -3.0])
    y //= 2.0
    np.testing.assert_array_equal(gg.to_numpy(y), [INF, -2.0])
    assert gg.to_numpy(xa.floor_divide(gg.asarray([7, -7]), 2)).tolist() == [3, -4]


def test_hypot_with_a_python_scalar_keeps_the_dtype():
    x = gg.asarray(np.array([3.0, -4.0], dtype=np.float32))
    out = xa.hypot(x, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(gg.to_numpy(out), [5.0, math.hypot(4, 4)], rtol=1e-6)


def test_finfo_holds_python_numbers():
    info = xa.finfo(xa.complex64)
    assert type(info.eps) is float and info.eps == 2.0 ** -23 and info.bits == 32
    assert type(xa.finfo("float64").smallest_normal) is float


@pytest.mark.parametrize("key", [(1, [2, 0, 1]), ([[0], [1]], [2, 0]), ([[0], [1]], -1, [3]),
                                 (-1, np.int64(-2)), (0, 0, [1, 3])])
def test_getitem_with_ints_and_integer_arrays(key, bk64):
    host = np.arange(24.0).reshape(2, 3, 4)
    x = gg.Variable(host)
    tkey = tuple(gg.asarray(np.asarray(k)) if isinstance(k, list) else k for k in key)
    npkey = tuple(np.asarray(k) if isinstance(k, list) else k for k in key)
    out = x[tkey]
    np.testing.assert_array_equal(gg.to_numpy(out), host[npkey])
    gg.sum(out * out).backward()
    want = np.zeros_like(host)
    np.add.at(want, npkey, 2 * host[npkey])
    np.testing.assert_array_equal(gg.to_numpy(x.grad), want)


def test_out_of_range_axis_and_mask_raise_index_errors():
    x = gg.asarray(np.zeros((2, 2)))
    with pytest.raises(IndexError, match="axis 3"):
        xa.expand_dims(x, axis=3)
    with pytest.raises(IndexError, match="does not cover"):
        gg.asarray(np.float64(1.0))[gg.asarray(np.zeros(0, dtype=bool))]
    with pytest.raises(gg.OpError):  # and still the OpError it was
        xa.expand_dims(x, axis=-4)


def test_every_function_has_a_written_signature():
    """No ``(*args, **kwargs)``: star-args only where the standard has them."""
    from gpugrad.array_api import _names

    starred = {"broadcast_arrays", "broadcast_shapes", "meshgrid", "result_type"}
    for name in _names.STANDARD:
        fn = getattr(xa, name)
        if not callable(fn):
            continue
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert P.VAR_KEYWORD not in kinds, name
        assert (P.VAR_POSITIONAL in kinds) == (name in starred), name
    assert str(inspect.signature(xa.ceil)) == "(x, /)"
    assert str(inspect.signature(xa.logical_and)) == "(x1, x2, /)"


def test_scalar_beside_an_array_takes_its_dtype_in_copysign():
    out = xa.copysign(0, gg.asarray(np.array([-1.0, 2.0], dtype=np.float32)))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.signbit(gg.to_numpy(out)), [True, False])


def test_cumulative_sum_has_the_asked_for_dtype():
    x = gg.asarray(np.array([200, 100], dtype=np.uint8))
    out = xa.cumulative_sum(x, axis=0, dtype="uint8", include_initial=True)
    assert out.dtype == np.uint8 and gg.to_numpy(out).tolist() == [0, 200, 44]


@pytest.mark.parametrize("shape,mask,want", [((1, 3), (0,), (0, 3)), ((1, 3), (1, 0), (0,)),
                                             ((2, 0, 3), (2, 0), (0, 3))])
def test_an_empty_mask_selects_nothing(shape, mask, want):
    x = gg.Variable(np.ones(shape))
    out = x[gg.asarray(np.zeros(mask, dtype=bool))]
    assert out.shape == want
    gg.sum(out).backward()
    np.testing.assert_array_equal(gg.to_numpy(x.grad), np.zeros(shape))
