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
from ._wrap import mark, standard

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


@standard("none")
def all(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Whether every element (along ``axis``) is true."""


@standard("none")
def any(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Whether any element (along ``axis``) is true."""


@standard("none")
def argmax(x: Any, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The index of the (first) largest element along ``axis`` (of the flattened x if None)."""


@standard("none")
def argmin(x: Any, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The index of the (first) smallest element along ``axis`` (of the flattened x if None)."""


@standard("none")
def argsort(x: Any, /, *, axis: int = -1, descending: bool = False,
            stable: bool = True) -> Tensor:
    """The indices that sort x along ``axis``."""


@standard("none")
def count_nonzero(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Tensor:
    """How many elements (along ``axis``) are not zero."""


@standard("none")
def isin(x1: Any, x2: Any, /, *, invert: bool = False) -> Tensor:
    """Whether each element of x1 is in x2 (is not, with ``invert``)."""


@standard("none")
def nonzero(x: Any, /) -> tuple:
    """The indices of the elements that are not zero, one array per axis."""


@standard("none")
def searchsorted(x1: Any, x2: Any, /, *, side: str = "left", sorter: Any = None) -> Tensor:
    """The indices where x2's elements would go into the sorted x1, keeping it sorted."""


@standard("constants")
def cumulative_prod(x: Any, /, *, axis: int | None = None, dtype: Any = None,
                    include_initial: bool = False) -> Tensor:
    """Running product along ``axis`` (constants only: no gradient rule yet)."""


@standard("constants")
def prod(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tensor:
    """Product of the elements (along ``axis``) (constants only: no gradient rule yet)."""


@standard("constants")
def unique_all(x: Any, /) -> tuple:
    """Unique values, first indices, inverse indices and counts (constants only)."""


@standard("constants")
def unique_counts(x: Any, /) -> tuple:
    """Unique values and their counts (constants only)."""


@standard("constants")
def unique_inverse(x: Any, /) -> tuple:
    """Unique values and the inverse indices (constants only)."""


@standard("constants")
def unique_values(x: Any, /) -> Tensor:
    """The unique values (constants only)."""
