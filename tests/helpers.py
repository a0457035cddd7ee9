"""Small helpers the test files share."""

from __future__ import annotations

import numpy as np

import gpugrad as gg
from gpugrad import backend as B


def host(t) -> np.ndarray:
    """A host float64 copy of a Tensor or backend array."""
    return np.array(gg.to_numpy(t), dtype=np.float64)


def is_on_backend(bk, arr) -> bool:
    """Whether ``arr`` belongs to the backend under test, on its device."""
    want = bk.backend()
    if B.name_of(B.namespace_of(arr)) != want.name:
        return False
    return want.device is None or arr.device == want.device


def assert_on_backend(bk, arr) -> None:
    want = bk.backend()
    assert B.name_of(B.namespace_of(arr)) == want.name
    if want.device is not None:
        assert arr.device == want.device


def var(bk, values, name=None) -> gg.Variable:
    """A Variable of the backend's float dtype."""
    return gg.Variable(np.asarray(values, dtype=bk.float_dtype), name=name)


def const(bk, values) -> gg.Tensor:
    """A constant Tensor of the backend's float dtype."""
    return gg.asarray(np.asarray(values, dtype=bk.float_dtype))


def ulp_diff(actual, expected, scale=None) -> np.ndarray:
    """Per element, ``|actual - expected|`` in units in the last place (ulps) of their dtype,
    at the larger of the two magnitudes, or at ``scale`` where that is larger. Equal values
    (NaN with NaN, inf with inf of one sign) are 0 ulps apart. Complex: the worse of the
    real and imaginary parts."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind == "c" or e.dtype.kind == "c":
        return np.maximum(ulp_diff(a.real, e.real, scale), ulp_diff(a.imag, e.imag, scale))
    dtype = np.result_type(a, e)
    a, e = a.astype(dtype), e.astype(dtype)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    with np.errstate(invalid="ignore", over="ignore"):
        size = np.maximum(np.abs(a), np.abs(e))
        if scale is not None:
            size = np.maximum(size, np.asarray(scale, dtype))
        ulp = np.spacing(np.where(np.isfinite(size), size, np.finfo(dtype).max))
        out = np.abs(a.astype(np.float64) - e.astype(np.float64)) / ulp.astype(np.float64)
    return np.where(same, 0.0, np.where(np.isnan(out), np.inf, out))


def assert_ulp_close(actual, expected, ulps=4, scale="array"):
    """``actual`` and ``expected``, results of two computation orders (a fused or rewritten
    program against the step-by-step one, another BLAS kernel), agree within ``ulps`` units
    in the last place of their dtype. By default an ulp is taken at the array's largest
    magnitude, since a sum or product of rows is exact only to the ulps of its terms, not
    of a result that cancelled to near zero; ``scale=None`` measures each element at its own
    magnitude. Float64 and float32 alike: an rtol such as 1e-12 asks float32 for less than
    one ulp, which only the same order of operations gives (OpenBLAS picks its kernels per
    CPU; see docs/contributing.md).

    >>> assert_ulp_close(np.float32(1.0) + np.float32(2.0 ** -23), np.float32(1.0), ulps=1)
    >>> ulp_diff(np.float32(1.5), np.float32(1.5) + 3 * np.spacing(np.float32(1.5)))
    array(3.)
    >>> assert_ulp_close(np.float32([1.0, 2.0 ** -20]), np.float32([1.0, 0.0]))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: 8 ulps apart (allowed 4) at index (1,): ...
    """
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"shapes differ: {a.shape} and {e.shape}"
    if scale == "array":
        finite = np.abs(e[np.isfinite(e)]) if e.size else e
        scale = finite.max() if finite.size else None
    d = ulp_diff(a, e, scale)
    if d.size and d.max() > ulps:
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(d)), d.shape))
        raise AssertionError(f"{d.max():.3g} ulps apart (allowed {ulps}) at index {i}: "
                             f"{a[i]!r} vs {e[i]!r}; {int((d > ulps).sum())} of {d.size} "
                             f"elements differ by more ({a.dtype} vs {e.dtype})")


def assert_orders_agree(actual, expected, ulps=4, rtol=1e-12, atol=1e-14):
    """Two computation orders of one result agree: float64 (and complex128) within
    ``rtol``/``atol``, which leaves thousands of ulps for reassociation; narrower dtypes
    within ``ulps`` (see ``assert_ulp_close``), never an rtol below their epsilon. Integer
    and bool results compare as ``assert_allclose`` does."""
    a, e = np.asarray(actual), np.asarray(expected)
    dtype = np.result_type(a, e)
    if dtype.kind in "fc" and dtype.itemsize < (16 if dtype.kind == "c" else 8):
        assert_ulp_close(a, e, ulps)
    else:
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
