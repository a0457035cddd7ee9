"""gpugrad.array_api.linalg's functions written from ops: norms, products, traces, powers,
pinv, matrix_rank, and the triangular solves the standard lacks (solve_triangular,
cho_solve)."""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

from ..ops.complexes import is_complex
from ..tensor import Tensor
from . import _wrap as W
from ._creation import astype, eye, finfo
from ._elementwise import abs, multiply, pow, sqrt, where
from ._linalg_core import _mH, _t, inv, solve, svd, svdvals
from ._manipulation import (broadcast_arrays, expand_dims, matmul, moveaxis, reshape, stack,
                            take, tril, triu)
from ._reductions import max, min, sum

_INF = math.inf


@W.mark("composite")
def diagonal(x: Any, /, *, offset: int = 0) -> Tensor:
    """The ``offset``-th diagonal of each matrix (..., M, N) -> (..., K) (a ``take`` from the
    flattened matrices)."""
    x = _t(x)
    m, n = x.shape[-2], x.shape[-1]
    rows = np.arange(builtins.max(0, -offset), builtins.max(0, builtins.min(m, n - offset)))
    flat = rows * n + rows + offset
    idx = flat if x.xp is np else x.xp.asarray(flat, device=x.device)
    return take(reshape(x, tuple(x.shape[:-2]) + (m * n,)), idx, axis=-1)


@W.mark("composite")
def trace(x: Any, /, *, offset: int = 0, dtype: Any = None) -> Tensor:
    """The sum of the ``offset``-th diagonal of each matrix."""
    d = diagonal(x, offset=offset)
    return sum(d, axis=-1) if dtype is None else sum(d, axis=-1, dtype=dtype)


@W.mark("composite")
def outer(x1: Any, x2: Any, /) -> Tensor:
    """The outer product of two vectors: out[i, j] = x1[i] x2[j]."""
    a, b = (_t(v) for v in W.promote(x1, x2))
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"outer: needs two vectors, got shapes {a.shape} and {b.shape}")
    return multiply(expand_dims(a, axis=-1), expand_dims(b, axis=0))


@W.mark("composite")
def cross(x1: Any, x2: Any, /, *, axis: int = -1) -> Tensor:
    """The cross product of 3-vectors along ``axis`` (broadcast first)."""
    a, b = broadcast_arrays(*W.promote(_t(x1), _t(x2)))
    if a.shape[axis] != 3:
        raise ValueError(f"cross: axis {axis} must have size 3, got shape {a.shape}")
    a, b = moveaxis(a, axis, -1), moveaxis(b, axis, -1)
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    out = stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
    return moveaxis(out, -1, axis)


@W.mark("composite")
def matrix_power(x: Any, n: int, /) -> Tensor:
    """x multiplied by itself n times (n < 0: the inverse's power; n = 0: the identity), by
    repeated squaring."""
    x = _t(x)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"matrix_power: needs square matrices, got shape {x.shape}")
    n = int(n)
    if n < 0:
        x, n = inv(x), -n
    result = None
    base = x
    while n:
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    if result is None:
        ident = eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return ident + x * 0.0  # the batch shape, and a zero gradient
    return result


@W.mark("composite")
def vector_norm(x: Any, /, *, axis: Any = None, keepdims: bool = False,
                ord: float = 2) -> Tensor:
    """The ``ord``-norm of vectors along ``axis`` (all axes if None). At a zero vector the
    2-norm's gradient is 0 (PyTorch's choice of subgradient)."""
    x = _t(x)
    if axis is None:
        axis = tuple(range(x.ndim))
    a = abs(x)
    if ord == _INF:
        return max(a, axis=axis, keepdims=keepdims)
    if ord == -_INF:
        return min(a, axis=axis, keepdims=keepdims)
    if ord == 0:
        return sum(astype(a != 0.0, a.dtype), axis=axis, keepdims=keepdims)
    if ord == 1:
        return sum(a, axis=axis, keepdims=keepdims)
    if ord == 2:  # 0 at a zero vector, with gradient 0 there (PyTorch's subgradient)
        sq = sum(a * a, axis=axis, keepdims=keepdims)
        pos = sq > 0.0
        return where(pos, sqrt(where(pos, sq, 1.0)), 0.0)
    return pow(sum(pow(a, float(ord)), axis=axis, keepdims=keepdims), 1.0 / float(ord))


@W.mark("composite")
def matrix_norm(x: Any, /, *, keepdims: bool = False, ord: Any = "fro") -> Tensor:
    """Matrix norms: ``"fro"``, ``"nuc"`` (sum of singular values), 2 / -2 (largest /
    smallest singular value), 1 / -1 (max / min column sum of |x|), inf / -inf (rows)."""
    x = _t(x)
    if ord == "fro":
        out = vector_norm(x, axis=(-2, -1))
    elif ord == "nuc":
        out = sum(svdvals(x), axis=-1)
    elif ord in (2, -2):
        s = svdvals(x)
        out = max(s, axis=-1) if ord == 2 else min(s, axis=-1)
    elif ord in (1, -1, _INF, -_INF):
        sums = sum(abs(x), axis=-2 if ord in (1, -1) else -1)
        out = max(sums, axis=-1) if ord > 0 else min(sums, axis=-1)
    else:
        raise ValueError(f"matrix_norm: ord must be 'fro', 'nuc', 1, -1, 2, -2, inf or -inf, "
                         f"got {ord!r}")
    if keepdims:
        out = expand_dims(expand_dims(out, axis=-1), axis=-1)
    return out


def _cutoff(x: Tensor, s: Tensor, rtol: Any) -> Tensor:
    if rtol is None:
        rtol = float(builtins.max(x.shape[-2], x.shape[-1])) * float(finfo(s.dtype).eps)
    elif hasattr(rtol, "dtype"):  # an array: compared in s's precision (float32 x, float64 rtol)
        rtol = _t(rtol)
        if rtol.dtype != s.dtype:
            rtol = astype(rtol, s.dtype)
        if rtol.ndim:
            rtol = expand_dims(rtol, axis=-1)
    return max(s, axis=-1, keepdims=True) * rtol


@W.mark("none")
def matrix_rank(x: Any, /, *, rtol: Any = None) -> Tensor:
    """The number of singular values above rtol times the largest (default: max(M, N) eps);
    an integer, so no gradient."""
    x = _t(x).detach()
    s = svdvals(x)
    return sum(astype(s > _cutoff(x, s, rtol), x.xp.int64), axis=-1)


@W.mark("composite")
def pinv(x: Any, /, *, rtol: Any = None) -> Tensor:
    """The Moore-Penrose pseudo-inverse from the SVD: singular values at most rtol times the
    largest count as 0 (default rtol: max(M, N) eps). Differentiable through the SVD."""
    x = _t(x)
    u, s, vh = svd(x, full_matrices=False)
    keep = s > _cutoff(x, s, rtol)
    inv_s = where(keep, 1.0 / where(keep, s, 1.0), 0.0)
    if is_complex(u):
        inv_s = astype(inv_s, u.dtype)
    return matmul(_mH(vh) * expand_dims(inv_s, axis=-2), _mH(u))


@W.mark("composite")
def solve_triangular(x1: Any, x2: Any, /, *, upper: bool = False, left: bool = True,
                     unitriangular: bool = False) -> Tensor:
    """X with x1 X = x2 (``left=False``: X x1 = x2) for triangular x1: only its lower
    (``upper=True``: upper) triangle is read, and with ``unitriangular`` its diagonal is
    taken as ones. The standard has no triangular solve, so this is the general ``solve`` on
    the masked matrix: portable and differentiable (twice), O(n^3) rather than O(n^2); the
    gradient reaches only the triangle read (PyTorch's convention)."""
    a, b = (_t(v) for v in W.promote(x1, x2))
    a = triu(a) if upper else tril(a)
    if unitriangular:
        ident = eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a * (1.0 - ident) + ident
    if left:
        return solve(a, b)
    return _mH(solve(_mH(a), _mH(b)))


@W.mark("composite")
def cho_solve(x1: Any, x2: Any, /, *, upper: bool = False) -> Tensor:
    """X with A X = x2, given A's Cholesky factor x1 (A = L L^H, or U^H U with ``upper``):
    two triangular solves (like scipy.linalg.cho_solve and torch.cholesky_solve).

    >>> import numpy as np, gpugrad as gg
    >>> A = np.array([[4.0, 2.0], [2.0, 5.0]])
    >>> L = gg.linalg.cholesky(gg.asarray(A))
    >>> np.round(gg.to_numpy(gg.linalg.cho_solve(L, gg.asarray(np.array([[2.0], [3.0]])))), 4)
    array([[0.25],
           [0.5 ]])
    """
    c = _t(x1)
    low = _mH(c) if upper else c
    y = solve_triangular(low, x2)
    return solve_triangular(_mH(low), y, upper=True)

