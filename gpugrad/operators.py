"""Python operators and methods shared by eager Tensors and graph Symbols.

Each one calls a registered op, so ``a + b`` and ``gpugrad.add(a, b)`` are the same thing
in both front ends.
"""

from __future__ import annotations

from typing import Any

from . import backend as B
from . import hooks
from . import numpy_protocols as _numpy
from .errors import at
from .shape_rules import data_dependent
from .ops import arithmetic, compare, elementwise, indexing, linalg, reductions, shape
from .ops import masking

_take = indexing.take


def index(x: Any, key: Any) -> Any:
    """``x[key]``: basic keys go to getitem; one integer array (x[idx], x[:, idx]) to take;
    a boolean mask of x's leading dims (x[mask]) to getitem_mask."""
    parts = key if isinstance(key, tuple) else (key,)
    arrays = [i for i, k in enumerate(parts)
              if not (k is None or k is Ellipsis or isinstance(k, (int, slice)))]
    if not arrays:
        return indexing.getitem(x, key=key)
    pos = arrays[0]
    if len(parts) > 1 and _points(x, parts):
        return _gather_points(x, parts)
    if len(arrays) > 1 or any(not (isinstance(k, slice) and k == slice(None))
                              for i, k in enumerate(parts) if i != pos):
        raise TypeError(
            f"getitem: index {key!r} mixes an integer array with other indices; gpugrad "
            "differentiates basic indices and one integer array alone (x[idx], x[:, idx]); "
            "use gpugrad.take(x, idx, axis=...) for other gathers"
        )
    idx = parts[pos]
    if hasattr(idx, "requires_grad") and hasattr(idx, "xp"):  # a Tensor of indices
        idx = idx.data
    if isinstance(idx, (list, tuple)) or (type(idx).__module__ == "numpy"
                                          and getattr(x, "xp", None) is not None):
        # host index data is small: it crosses to x's device here
        xp = getattr(x, "xp", None)
        if xp is None:
            idx = B.to_backend(idx)
        else:
            idx = xp.asarray(idx, device=x.device)
    if getattr(idx, "_gpugrad_symbolic", False) and not hasattr(idx, "dtype"):
        raise TypeError(at(
            "getitem: the index is a graph value whose dtype is not known until it runs; a "
            "boolean mask gives a data-dependent shape, so use gpugrad.where(mask, x, 0.0) "
            "instead; for integer indices use gpugrad.take(x, idx, axis=...)"))
    kind = str(getattr(idx, "dtype", ""))
    if "bool" in kind:
        return _masked(x, idx, key, pos, len(parts))
    if "int" not in kind and not (getattr(idx, "_gpugrad_symbolic", False)
                                  and idx.dtype is None):  # a graph node of unknown dtype
        raise TypeError(f"getitem: index arrays must be integers, got {kind or type(idx)}")
    return _take(x, idx, axis=pos)


def _points(x: Any, parts: tuple) -> bool:
    """Whether ``x[parts]`` picks points: ints and integer arrays only, one per leading axis
    (``x[0, idx]``, ``x[i, j]``), on an eager Tensor."""
    if getattr(x, "xp", None) is None or len(parts) > len(x.shape):
        return False
    return all(isinstance(k, int) or (hasattr(k, "shape") and "int" in str(k.dtype)
                                      and not getattr(k, "_gpugrad_symbolic", False))
               for k in parts)


def _gather_points(x: Any, parts: tuple) -> Any:
    """``x[i, j, ...]`` with ints and integer arrays (broadcast together, as NumPy does): one
    ``take`` from x with its indexed axes flattened, at the flat positions."""
    xp, k = x.xp, len(parts)
    dims = x.shape[:k]
    keys = [p.data if hasattr(p, "requires_grad") and hasattr(p, "xp") else p for p in parts]
    keys = [xp.asarray(p, device=x.device) if isinstance(p, int) or type(p).__module__ == "numpy"
            else p for p in keys]  # host ints and NumPy indices cross to x's device
    flat = None
    for key, n in zip(xp.broadcast_arrays(*keys), dims):
        key = xp.astype(key, xp.int64)
        key = xp.where(key < 0, key + n, key)
        flat = key if flat is None else flat * n + key
    rows = 1
    for n in dims:
        rows *= n
    rest = x.shape[k:]
    picked = _take(shape.reshape(x, (rows, *rest)), xp.reshape(flat, (-1,)), axis=0)
    return shape.reshape(picked, (*flat.shape, *rest))


def _masked(x: Any, mask: Any, key: Any, pos: int, n: int) -> Any:
    """``x[mask]``: eager only, since the result's length depends on the data."""
    if getattr(x, "_gpugrad_symbolic", False) or getattr(mask, "_gpugrad_symbolic", False):
        raise TypeError(at(data_dependent("getitem")))
    if pos or n != 1:
        raise TypeError(at(
            f"getitem: index {key!r} mixes a boolean mask with other indices; a mask must be "
            "the only index (x[mask], covering x's leading dims), or use gpugrad.where"))
    k, dims = len(mask.shape), tuple(x.shape)
    if 0 in mask.shape and k <= len(dims) and all(m in (d, 0) for d, m in zip(dims, mask.shape)):
        # an empty mask selects nothing (the standard allows a 0 where x's side is not)
        rows = 1
        for d in dims[:k]:
            rows *= d
        return shape.reshape(x, (rows, *dims[k:]))[0:0]
    return masking.getitem_mask(x, mask)


def _api(name: str) -> Any:
    return getattr(hooks.namespace, name)  # gpugrad.array_api, built on top of Tensor


class ArrayOps:
    """Operator overloads; subclasses provide ``shape`` where methods need it."""

    __slots__ = ()
    __array_priority__ = 1000

    # NumPy: operators' ufuncs run our ops (host_array + t); other ufuncs and functions raise
    # naming the gg function; np.asarray gives a constant's values (see numpy_protocols)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _numpy.ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _numpy.function(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        return _numpy.to_array(self, dtype, copy)

    # the four arithmetic operators go straight to the engine (Op.pair): their rules take
    # exactly two arrays, so there is no signature to map
    def __add__(self, other): return _add(self, other)
    def __radd__(self, other): return _add(other, self)
    def __sub__(self, other): return _subtract(self, other)
    def __rsub__(self, other): return _subtract(other, self)
    def __mul__(self, other): return _multiply(self, other)
    def __rmul__(self, other): return _multiply(other, self)
    def __truediv__(self, other): return _divide(self, other)
    def __rtruediv__(self, other): return _divide(other, self)
    def __pow__(self, other): return arithmetic.pow(self, other)
    def __rpow__(self, other): return arithmetic.pow(other, self)
    def __matmul__(self, other): return linalg.matmul(self, other)
    def __rmatmul__(self, other): return linalg.matmul(other, self)
    def __neg__(self): return arithmetic.negative(self)
    def __pos__(self): return self
    def __abs__(self): return elementwise.abs(self)
    def __lt__(self, other): return compare.less(self, other)
    def __le__(self, other): return compare.less_equal(self, other)
    def __gt__(self, other): return compare.greater(self, other)
    def __ge__(self, other): return compare.greater_equal(self, other)
    def __eq__(self, other): return compare.equal(self, other)  # type: ignore[override]
    def __ne__(self, other): return compare.not_equal(self, other)  # type: ignore[override]
    __hash__ = object.__hash__

    def __getitem__(self, key): return index(self, key)

    # the rest of the standard's operators, through the array-API namespace
    def __invert__(self): return _api("bitwise_invert")(self)
    def __and__(self, other): return _api("bitwise_and")(self, other)
    def __rand__(self, other): return _api("bitwise_and")(other, self)
    def __or__(self, other): return _api("bitwise_or")(self, other)
    def __ror__(self, other): return _api("bitwise_or")(other, self)
    def __xor__(self, other): return _api("bitwise_xor")(self, other)
    def __rxor__(self, other): return _api("bitwise_xor")(other, self)
    def __lshift__(self, other): return _api("bitwise_left_shift")(self, other)
    def __rshift__(self, other): return _api("bitwise_right_shift")(self, other)
    def __mod__(self, other): return _api("remainder")(self, other)
    def __rmod__(self, other): return _api("remainder")(other, self)
    def __floordiv__(self, other): return _api("floor_divide")(self, other)
    def __rfloordiv__(self, other): return _api("floor_divide")(other, self)

    def sum(self, axis=None, keepdims=False):
        """Sum over ``axis`` (see gpugrad.sum)."""
        return reductions.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        """Mean over ``axis`` (see gpugrad.mean)."""
        return reductions.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        """Largest element over ``axis``; ties share the gradient (see gpugrad.max)."""
        return reductions.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        """Smallest element over ``axis``; ties share the gradient (see gpugrad.min)."""
        return reductions.min(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        """Reshape: ``t.reshape(2, 3)`` or ``t.reshape((2, 3))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _reshape(self, shape=tuple(shape))

    def astype(self, dtype):
        """Convert to ``dtype`` (a backend dtype or a name such as ``'float64'``)."""
        return elementwise.astype(self, dtype=B.resolve_dtype(self._xp_for_dtype(), dtype))

    def _xp_for_dtype(self):
        return B.current().xp

    @property
    def mT(self):
        """Transpose of the last two axes."""
        return linalg.matrix_transpose(self)

    @property
    def T(self):
        """Transpose of a 2-D array (use ``.mT`` for stacks of matrices)."""
        nd = len(self.shape)
        if nd != 2:
            raise ValueError(f"T: defined for 2-D arrays only (shape {tuple(self.shape)}); "
                             "use .mT for a stack of matrices or permute_dims")
        return linalg.matrix_transpose(self)


_reshape = shape.reshape


def _pair(op: Any) -> Any:
    assert op.nbare == 2 and not op.variadic, op.name  # the rule's form is (a, b)
    return op.pair


_add = _pair(arithmetic.add)
_subtract = _pair(arithmetic.subtract)
_multiply = _pair(arithmetic.multiply)
_divide = _pair(arithmetic.divide)
