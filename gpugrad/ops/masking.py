"""Boolean masks: ``x[mask]`` (getitem_mask) and the out-of-place ``x[mask] = value``
(setitem_mask) that item assignment on a recorded Tensor uses.

A mask covers x's leading dims (``mask.shape == x.shape[:mask.ndim]``); ``x[mask]`` has shape
``(count,) + x.shape[mask.ndim:]``, where count is how many entries are True. That count
depends on the data, so these ops run eagerly only: a graph (Placeholders, ``gg.compile``)
refuses them and suggests ``gg.where``.

The backward of ``x[mask]`` scatters ``g`` back into zeros with gathers only: the running
count of the mask gives each True position its row of ``g``, and False positions read an
appended zero row. NumPy and CuPy get a fast path that writes ``g`` through the mask.
"""

from ..registry import defop
from .indexing import _native


def _check(xp, x, mask, op):
    if mask.dtype != xp.bool:
        raise TypeError(f"the mask must be boolean, got dtype {mask.dtype}")
    k = mask.ndim
    if k > x.ndim or tuple(mask.shape) != tuple(x.shape)[:k]:
        raise IndexError(
            f"mask of shape {tuple(mask.shape)} does not cover the leading dims of x "
            f"{tuple(x.shape)}; {op} needs mask.shape == x.shape[:mask.ndim]")


@defop("getitem_mask")
def getitem_mask(xp, x, mask):
    """x[mask] for a boolean mask over x's leading dims: the True entries in order, shape
    (count,) + x.shape[mask.ndim:];  d/dx: g put back at the True entries, zeros elsewhere"""
    _check(xp, x, mask, "x[mask]")
    return x[mask], (mask, tuple(x.shape))


def _getitem_mask_vjp(xp, g, res):
    mask, shape = res
    rest = shape[mask.ndim:]
    n = 1
    for d in mask.shape:
        n *= d
    flat = xp.reshape(mask, (n,))
    row = xp.cumulative_sum(xp.astype(flat, xp.int64)) - 1  # each True entry's row of g
    row = xp.where(flat, row, g.shape[0])  # False entries read the zero row appended below
    zero = xp.zeros((1,) + rest, dtype=g.dtype, device=g.device)
    out = xp.take(xp.concat([g, zero], axis=0), row, axis=0)
    return (xp.reshape(out, shape), None)


def _getitem_mask_vjp_write(xp, g, res):
    mask, shape = res
    out = _native(xp, g).zeros(shape, dtype=g.dtype)
    out[mask] = g
    return (out, None)


getitem_mask.defvjp(_getitem_mask_vjp)
getitem_mask.def_fast_path("numpy", vjp=_getitem_mask_vjp_write)
getitem_mask.def_fast_path("cupy", vjp=_getitem_mask_vjp_write)


@defop("setitem_mask")
def setitem_mask(xp, x, value, mask):
    """x with x[mask] replaced by value, which broadcasts to x[mask]'s shape (a new array: x
    is not written);  d/dx = g with zeros at the mask, d/dvalue = g[mask] (summed back to
    value's shape)"""
    _check(xp, x, mask, "x[mask] = value")
    out = xp.asarray(x, copy=True)
    out[mask] = value
    return out, mask


def _setitem_mask_dx(xp, g, mask):
    wide = xp.reshape(mask, tuple(mask.shape) + (1,) * (g.ndim - mask.ndim))
    return xp.where(wide, 0.0, g)


setitem_mask.defvjp(_setitem_mask_dx, lambda xp, g, mask: g[mask], None)
