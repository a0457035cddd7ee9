"""One front door: every name of the array-API standard is at ``gg.*`` (and ``gg.linalg.*``,
``gg.fft.*`` where those extensions exist), and gpugrad.array_api exports the standard's names
and its documented extras, nothing else."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.array_api import _names

xa = gg.array_api

PROMOTING = {"add", "atan2", "concat", "divide", "logaddexp", "matmul", "maximum", "minimum",
             "multiply", "pow", "stack", "subtract", "where"}
"""Standard names where gg.<name> is the registered op (which refuses float32 meeting float64)
and gpugrad.array_api.<name> wraps it to promote, as the standard says."""


def test_every_standard_name_is_at_gg():
    missing = [n for n in _names.STANDARD if not hasattr(gg, n)]
    assert missing == []
    differs = {n for n in _names.STANDARD if getattr(gg, n) is not getattr(xa, n)}
    assert differs == PROMOTING
    for n in PROMOTING:  # the same computation: the wrapper calls the op
        assert getattr(gg, n) is gg.registry[n]


def test_dtypes_at_gg_follow_the_backend():
    for name in _names.DTYPES:
        assert getattr(gg, name) == getattr(xa, name)
    with gg.use_backend("array_api_strict"):
        import array_api_strict

        assert gg.float32 == array_api_strict.float32
    assert set(_names.DTYPES) <= set(dir(gg))
    with pytest.raises(AttributeError, match="no attribute 'float16'"):
        gg.float16  # noqa: B018


@pytest.mark.parametrize("ext,names", [("linalg", _names.LINALG), ("fft", _names.FFT)])
def test_extensions_at_gg_when_present(ext, names):
    info = xa.__array_namespace_info__().capabilities()
    if not hasattr(xa, ext):
        assert ext not in info["extensions"] and not hasattr(gg, ext)
        pytest.skip(f"gpugrad.array_api.{ext} is not here yet")
    assert ext in info["extensions"]
    module = getattr(xa, ext)
    assert getattr(gg, ext) is module
    assert [n for n in names if not hasattr(module, n)] == []


def test_namespace_exports_the_standard_and_documented_extras_only():
    public = {n for n in dir(xa) if not n.startswith("_")}
    allowed = (set(_names.STANDARD) | set(_names.EXTRAS) | set(_names.DTYPES)
               | set(_names.EXTENSIONS))
    assert public - allowed == set()
    assert set(_names.STANDARD) - set(dir(xa)) == set()
    for leak in ("B", "Op", "Any", "math", "annotations", "sys"):
        assert not hasattr(xa, leak)
    assert set(xa.__all__) == {*_names.STANDARD, *_names.EXTRAS,
                               *(e for e in _names.EXTENSIONS if hasattr(xa, e))}
    assert xa.__array_api_version__ == "2025.12"


def test_info_object():
    info = xa.__array_namespace_info__()
    caps = info.capabilities()
    assert caps["boolean indexing"] is True and isinstance(caps["extensions"], tuple)
    with gg.use_backend("numpy"):
        assert info.devices() == ("cpu",) and info.default_device() == "cpu"
        assert info.default_dtypes()["indexing"] == np.int64
        assert set(info.dtypes(kind="real floating")) == {"float32", "float64"}
    with gg.use_backend("array_api_strict"):
        assert isinstance(info.devices(), tuple) and len(info.devices()) > 1


def _np_int(n):
    return np.int64(n)


@pytest.mark.parametrize("as_int", [_np_int, np.asarray, lambda n: gg.asarray(n),
                                    lambda n: np.int32(n)], ids=["np.int64", "0-d ndarray",
                                                                 "0-d Tensor", "np.int32"])
def test_shapes_axes_and_sizes_take_anything_with_index(as_int):
    x = gg.asarray(np.arange(6.0))
    assert gg.reshape(x, (as_int(3), as_int(2))).shape == (3, 2)
    assert gg.reshape(x, as_int(6)).shape == (6,)
    assert gg.broadcast_to(gg.reshape(x, (1, 6)), (as_int(2), 6)).shape == (2, 6)
    assert gg.expand_dims(x, axis=as_int(0)).shape == (1, 6)
    assert gg.sum(gg.reshape(x, (2, 3)), axis=as_int(1)).shape == (2,)
    assert gg.permute_dims(gg.reshape(x, (2, 3)), (as_int(1), as_int(0))).shape == (3, 2)
    assert gg.zeros((as_int(2), 3)).shape == (2, 3)
    assert float(x[as_int(4)]) == 4.0


@pytest.mark.parametrize("bad", [np.True_, np.float64(3.0), np.asarray([3]),
                                 np.asarray(True)])
def test_non_integers_are_still_refused_as_shapes(bad):
    with pytest.raises(TypeError, match="`shape` must be a tuple of ints"):
        gg.reshape(gg.asarray(np.arange(3.0)), (bad, 1))


def test_scipy_style_broadcast_to_is_differentiable():
    x = gg.Variable(np.arange(3.0))
    shape = tuple(np.int64(n) for n in (2, 3))
    gg.sum(gg.broadcast_to(x, shape)).backward()
    np.testing.assert_array_equal(gg.to_numpy(x.grad), [2.0, 2.0, 2.0])
