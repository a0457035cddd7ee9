"""Statistical, searching, sorting, set and utility functions of gpugrad.array_api.

Sums, means, extrema and running sums are registered ops; ``var``, ``std``, ``diff`` and
``sort`` (a gather by ``argsort``) are written from ops. Index-valued and boolean functions
have no gradient.
"""

from __future__ import annotations

from typing import Any

from ..ops import reductions, scan
from ..tensor import Tensor
from . import _wrap as W
from ._elementwise import sqrt
from ._manipulation import concat, take_along_axis
from ._wrap import mark, passthrough

# registered ops, whose signatures take the standard's calls (and ``sum(x, 0)``)
sum = reductions.sum
mean = reductions.mean
max = reductions.max
min = reductions.min
cumulative_sum = scan.cumulative_sum


@mark("composite")
def var(x: Any, /, *, axis: Any = None, correction: float = 0.0,
        keepdims: bool = False) -> Tensor:
    """Variance over ``axis``: sum((x - mean)**2) / (N - correction)."""
    x = W.as_tensor(x)
    n = 1
    for a in range(x.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis:
        n *= x.shape[a]
    d = x - reductions.mean(x, axis=axis, keepdims=True)
    return reductions.sum(d * d, axis=axis, keepdims=keepdims) / float(n - correction)


@mark("composite")
def std(x: Any, /, *, axis: Any = None, correction: float = 0.0,
        keepdims: bool = False) -> Tensor:
    """Standard deviation over ``axis``: the square root of ``var``."""
    return sqrt(var(x, axis=axis, correction=correction, keepdims=keepdims))


@mark("composite")
def diff(x: Any, /, *, axis: int = -1, n: int = 1, prepend: Any = None,
         append: Any = None) -> Tensor:
    """n-th forward difference along ``axis`` (slices subtracted), with optional arrays
    joined before and after first."""
    x = W.as_tensor(x)
    ax = axis % x.ndim
    parts = [p for p in (prepend, x, append) if p is not None]
    if len(parts) > 1:
        x = concat(parts, axis=ax)
    lead = (slice(None),) * ax
    for _ in range(n):
        m = x.shape[ax]
        x = x[lead + (slice(1, None), ...)] - x[lead + (slice(0, m - 1), ...)]
    return x


@mark("composite")
def sort(x: Any, /, *, axis: int = -1, descending: bool = False,
         stable: bool = True) -> Tensor:
    """x sorted along ``axis``: a gather at ``argsort``'s indices, so each value's gradient
    goes back to where it came from."""
    order = argsort(x, axis=axis, descending=descending, stable=stable)
    return take_along_axis(x, order, axis=axis)


all = passthrough("all", "none")
any = passthrough("any", "none")
argmax = passthrough("argmax", "none")
argmin = passthrough("argmin", "none")
argsort = passthrough("argsort", "none")
count_nonzero = passthrough("count_nonzero", "none")
isin = passthrough("isin", "none")
nonzero = passthrough("nonzero", "none")
searchsorted = passthrough("searchsorted", "none")

cumulative_prod = passthrough("cumulative_prod", "constants")
prod = passthrough("prod", "constants")
unique_all = passthrough("unique_all", "constants")
unique_counts = passthrough("unique_counts", "constants")
unique_inverse = passthrough("unique_inverse", "constants")
unique_values = passthrough("unique_values", "constants")
