"""Manipulation, indexing and linear-algebra functions of gpugrad.array_api.

Each is a registered op or is written from them (slicing, ``take``, ``reshape``,
``broadcast_to``, ``permute_dims``, ``matmul``), so all of them are differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend as B
from ..ops import complexes, indexing, linalg, reductions
from ..ops import shape as shape_ops
from ..tensor import Tensor
from . import _wrap as W
from ._creation import astype, zeros_like
from ._elementwise import multiply, where
from ._wrap import mark

matrix_transpose = linalg.matrix_transpose


matmul = W.promoting(linalg.matmul)


# registered ops, whose signatures take the standard's calls (and ``expand_dims(x, 0)``)
permute_dims = linalg.permute_dims
reshape = shape_ops.reshape
expand_dims = shape_ops.expand_dims
squeeze = shape_ops.squeeze
broadcast_to = shape_ops.broadcast_to
take = indexing.take
take_along_axis = indexing.take_along_axis


concat = W.promoting(shape_ops.concat, sequence=True)
stack = W.promoting(shape_ops.stack, sequence=True)


def _axes(ndim: int, axis: Any) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,)
    return tuple(a % ndim for a in axis)


def _along(ax: int, key: Any) -> tuple:
    return (slice(None),) * ax + (key, ...)


@mark("composite")
def moveaxis(x: Any, source: int | tuple[int, ...], destination: int | tuple[int, ...],
             /) -> Tensor:
    """x with axes moved from ``source`` to ``destination`` (a ``permute_dims``)."""
    x = W.as_tensor(x)
    src = _axes(x.ndim, source)
    dst = _axes(x.ndim, destination)
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute_dims(x, order)


@mark("composite")
def flip(x: Any, /, *, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """x reversed along ``axis`` (a slice with step -1)."""
    x = W.as_tensor(x)
    axes = _axes(x.ndim, axis)
    return x[tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(x.ndim))]


@mark("composite")
def roll(x: Any, /, shift: int | tuple[int, ...], *,
         axis: int | tuple[int, ...] | None = None) -> Tensor:
    """x rotated by ``shift`` along ``axis`` (the flattened array if None): two slices,
    concatenated."""
    x = W.as_tensor(x)
    if axis is None:
        return reshape(roll(reshape(x, (-1,)), shift, axis=0), x.shape)
    shifts = (shift,) if isinstance(shift, int) else tuple(shift)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    for s, ax in zip(shifts, axes):
        ax %= x.ndim
        n = x.shape[ax]
        s = s % n if n else 0
        if s:
            x = concat([x[_along(ax, slice(n - s, None))], x[_along(ax, slice(0, n - s))]],
                       axis=ax)
    return x


def _index_array(x: Tensor, host: np.ndarray) -> Any:
    """Host integer indices as a backend array on x's device."""
    if x.xp is np:
        return host
    return x.xp.asarray(host, device=x.device)


@mark("composite")
def repeat(x: Any, repeats: Any, /, *, axis: int | None = None) -> Tensor:
    """Each element of x repeated ``repeats`` times along ``axis`` (flattened if None): a
    ``take`` with repeated indices, so gradients of the copies add up."""
    x = W.as_tensor(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    n = x.shape[axis]
    counts = B.to_numpy(W.unwrap(repeats)) if not isinstance(repeats, int) else repeats
    host = np.repeat(np.arange(n, dtype=np.int64), counts)
    return take(x, _index_array(x, host), axis=axis)


@mark("composite")
def tile(x: Any, repetitions: Sequence[int], /) -> Tensor:
    """x repeated ``repetitions[i]`` times along each axis: broadcast over new axes, then
    reshaped."""
    x = W.as_tensor(x)
    reps = tuple(repetitions)
    nd = max(len(reps), x.ndim)
    reps = (1,) * (nd - len(reps)) + reps
    dims = (1,) * (nd - x.ndim) + x.shape
    spread = reshape(x, tuple(v for d in dims for v in (1, d)))
    wide = broadcast_to(spread, tuple(v for r, d in zip(reps, dims) for v in (r, d)))
    return reshape(wide, tuple(r * d for r, d in zip(reps, dims)))


@mark("composite")
def unstack(x: Any, /, *, axis: int = 0) -> tuple[Tensor, ...]:
    """The slices of x along ``axis``, as a tuple."""
    x = W.as_tensor(x)
    ax = axis % x.ndim
    return tuple(x[_along(ax, i)] for i in range(x.shape[ax]))


def _broadcast_shape(shapes: list[tuple]) -> tuple:
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        sizes = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast together")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


@mark("none")
def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The shape that arrays of these shapes broadcast to."""
    return _broadcast_shape([tuple(s) for s in shapes])


@mark("composite")
def broadcast_arrays(*arrays: Any) -> tuple[Tensor, ...]:
    """The arrays broadcast to one shape (``broadcast_to`` each)."""
    tensors = [W.as_tensor(a) for a in arrays]
    shape = _broadcast_shape([t.shape for t in tensors])
    return tuple(t if t.shape == shape else broadcast_to(t, shape) for t in tensors)


@mark("composite")
def meshgrid(*arrays: Any, indexing: str = "xy") -> tuple[Tensor, ...]:
    """Coordinate grids from 1-d arrays (``reshape`` + ``broadcast_to`` each); ``"xy"``
    swaps the first two axes, as the standard says."""
    tensors = [W.as_tensor(a) for a in arrays]
    sizes = [t.shape[0] for t in tensors]
    position = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        position[0], position[1] = 1, 0
        sizes[0], sizes[1] = sizes[1], sizes[0]
    out = []
    for t, p in zip(tensors, position):
        ones = [1] * len(tensors)
        ones[p] = t.shape[0]
        out.append(broadcast_to(reshape(t, tuple(ones)), tuple(sizes)))
    return tuple(out)


@mark("composite")
def tensordot(x1: Any, x2: Any, /, *, axes: int | tuple = 2) -> Tensor:
    """Sum of products over ``axes`` (the last n of x1 with the first n of x2, or two lists):
    both sides are permuted and reshaped to matrices, then one ``matmul``."""
    a, b = (W.as_tensor(v) for v in W.promote(x1, x2))
    if isinstance(axes, int):
        ax_a = tuple(range(a.ndim - axes, a.ndim))
        ax_b = tuple(range(axes))
    else:
        ax_a = tuple(v % a.ndim for v in axes[0])
        ax_b = tuple(v % b.ndim for v in axes[1])
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [i for i in range(b.ndim) if i not in ax_b]
    k = int(np.prod([a.shape[i] for i in ax_a]))
    shape_a = tuple(a.shape[i] for i in free_a)
    shape_b = tuple(b.shape[i] for i in free_b)
    ma = reshape(permute_dims(a, free_a + list(ax_a)), (int(np.prod(shape_a)), k))
    mb = reshape(permute_dims(b, list(ax_b) + free_b), (k, int(np.prod(shape_b))))
    return reshape(matmul(ma, mb), shape_a + shape_b)


@mark("composite")
def vecdot(x1: Any, x2: Any, /, *, axis: int = -1) -> Tensor:
    """Dot products of vectors along ``axis`` (broadcast first): sum(conj(x1) * x2, axis),
    in the promoted dtype of x1 and x2 (uint8 stays uint8). The two vector lengths must be
    equal: they are not broadcast."""
    s1, s2 = tuple(np.shape(x1)), tuple(np.shape(x2))
    n1, n2 = _len_at(s1, axis, s2), _len_at(s2, axis, s1)
    if n1 != n2 and None not in (n1, n2):  # None: unknown until fed (graph front end)
        raise ValueError(f"vecdot: the vectors along axis {axis} have lengths {n1} and {n2} "
                         f"(shapes {s1} and {s2})")
    if complexes.is_complex(x1):
        x1 = complexes.conj(x1)
    prod = multiply(x1, x2)  # multiply promotes
    out = reductions.sum(prod, axis=axis)
    return out if out.dtype == prod.dtype else astype(out, prod.dtype)  # integer sums widen


def _len_at(shape: tuple, axis: int, other: tuple) -> int | None:
    """The size along ``axis`` of ``shape`` padded to ``other``'s number of dimensions."""
    shape = (1,) * (len(other) - len(shape)) + shape
    return shape[axis] if -len(shape) <= axis < len(shape) else None


def _triangle(x: Any, k: int, lower: bool) -> Tensor:
    x = W.as_tensor(x)
    rows, cols = x.shape[-2], x.shape[-1]
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = offset <= k if lower else offset >= k
    mask = keep if x.xp is np else x.xp.asarray(keep, device=x.device)
    return where(mask, x, zeros_like(x))


@mark("composite")
def tril(x: Any, /, *, k: int = 0) -> Tensor:
    """x with the entries above the k-th diagonal zeroed (a ``where``)."""
    return _triangle(x, k, lower=True)


@mark("composite")
def triu(x: Any, /, *, k: int = 0) -> Tensor:
    """x with the entries below the k-th diagonal zeroed (a ``where``)."""
    return _triangle(x, k, lower=False)

