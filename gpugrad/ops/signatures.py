"""Each op's user-facing call, written once: what ``gg.<name>`` and
``gpugrad.array_api.<name>`` accept, mapped to the rule's keywords.

The calls are the array-API standard's (positional ``shape`` and ``axes``, ``min``/``max``,
``dtype=``, ``copy=``) plus the positional forms NumPy and PyTorch users type:
``sum(x, 0)``, ``mean(x, 1)``, ``concat([a, b], 1)``, ``stack(xs, 0)``,
``expand_dims(x, 0)``, ``clip(x, 0, 1)``. Rules keep their static parameters keyword-only;
a call already in the rule's form (``sum(x, axis=0)``) goes to the engine directly.

>>> import gpugrad as gg
>>> x = gg.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
>>> gg.sum(x, 1).shape, gg.reshape(x, (3, 2)).shape, gg.permute_dims(x, (1, 0)).shape
((2,), (3, 2), (3, 2))
>>> gg.to_numpy(gg.clip(x[0], 1.5, 2.5))
array([1.5, 2. , 2.5])
"""

from __future__ import annotations

from typing import Any

from .. import backend as B
from .. import errors as E
from ..binding import check_params
from . import arithmetic, compare, elementwise, indexing, linalg, reductions, scan, softmax, trig
from . import shape as shape_ops
from .elementwise import astype as _astype_op


def _as_dtype(x: Any, dtype: Any) -> Any:
    """x converted to ``dtype`` when one is given and differs (``astype(..., copy=False)``)."""
    return x if dtype is None else _astype_op(x, dtype, copy=False)


# --- reductions, scans, softmax: an axis by position --------------------------------------

@reductions.sum.defsignature
def _sum(x: Any, /, axis: Any = None, *, dtype: Any = None, keepdims: bool = False) -> Any:
    # NumPy sums small integers in a wider type; the result has the asked-for dtype
    return _as_dtype(reductions.sum.run(_as_dtype(x, dtype), axis=axis, keepdims=keepdims),
                     dtype)


def _reduction(op: Any) -> None:
    @op.defsignature
    def call(x: Any, /, axis: Any = None, *, keepdims: bool = False) -> Any:
        return op.run(x, axis=axis, keepdims=keepdims)


for _op in (reductions.mean, reductions.max, reductions.min, softmax.logsumexp):
    _reduction(_op)


@scan.cumulative_sum.defsignature
def _cumulative_sum(x: Any, /, axis: int | None = None, *, dtype: Any = None,
                    include_initial: bool = False) -> Any:
    return _as_dtype(scan.cumulative_sum.run(_as_dtype(x, dtype), axis=axis,
                                             include_initial=include_initial), dtype)


def _along(op: Any) -> None:
    @op.defsignature
    def call(x: Any, /, axis: int = -1) -> Any:
        return op.run(x, axis=axis)


for _op in (softmax.softmax, softmax.log_softmax):
    _along(_op)


# --- shapes: shape, axes and axis by position -------------------------------------------

@shape_ops.reshape.defsignature
def _reshape(x: Any, /, shape: Any, *, copy: bool | None = None) -> Any:
    # gpugrad never writes into a result in place, so a view and a copy behave the same
    check_params("reshape", {"copy": copy})
    return shape_ops.reshape.run(x, shape=shape)


@shape_ops.broadcast_to.defsignature
def _broadcast_to(x: Any, /, shape: Any) -> Any:
    return shape_ops.broadcast_to.run(x, shape=shape)


@shape_ops.expand_dims.defsignature
def _expand_dims(x: Any, /, axis: Any = 0) -> Any:
    return shape_ops.expand_dims.run(x, axis=axis)


@shape_ops.squeeze.defsignature
def _squeeze(x: Any, /, axis: Any) -> Any:
    return shape_ops.squeeze.run(x, axis=axis)


@linalg.permute_dims.defsignature
def _permute_dims(x: Any, /, axes: Any) -> Any:
    return linalg.permute_dims.run(x, axes=axes)


@shape_ops.concat.defsignature
def _concat(arrays: Any, /, axis: int | None = 0) -> Any:
    return shape_ops.concat.run(arrays, axis=axis)


@shape_ops.stack.defsignature
def _stack(arrays: Any, /, axis: int = 0) -> Any:
    return shape_ops.stack.run(arrays, axis=axis)


@indexing.take.defsignature
def _take(x: Any, indices: Any, /, axis: int | None = None) -> Any:
    return indexing.take.run(x, indices, axis=axis)


@indexing.take_along_axis.defsignature
def _take_along_axis(x: Any, indices: Any, /, axis: int = -1) -> Any:
    return indexing.take_along_axis.run(x, indices, axis=axis)


# --- element-wise: the standard's names, bounds by position, dtypes by name -----------------

def _is_scalar(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not hasattr(v, "shape"))


@elementwise.clip.defsignature(direct=False)
def _clip(x: Any, /, min: Any = None, max: Any = None) -> Any:
    """Scalar bounds use the rule; an array bound is differentiable too (a ``where``). A
    NaN bound gives NaN, as NumPy's clip, and takes the gradient there (x gets 0)."""
    if _is_scalar(min) and _is_scalar(max):
        return elementwise.clip.run(x, min=min, max=max)
    out = x
    for bound, beyond in ((min, compare.less), (max, compare.greater)):
        if bound is not None:
            out = elementwise.where(beyond(out, bound), bound, out)
            if not _is_scalar(bound):  # NaN where the bound is (bound != bound)
                out = elementwise.where(compare.not_equal(bound, bound), bound, out)
            elif bound != bound:
                out = arithmetic.add(arithmetic.multiply(out, 0.0), bound)
    return out


@elementwise.astype.defsignature(direct=False)
def _astype(x: Any, /, dtype: Any, *, copy: bool = True, device: Any = None) -> Any:
    """``dtype`` is a name or any backend's dtype, read as x's backend's dtype."""
    xp = getattr(x, "xp", None) or (B.namespace_of(x) if B.is_backend_array(x)
                                    else B.current().xp)
    here = getattr(x, "device", None)
    if device is not None and here is not None and device != here:
        raise NotImplementedError(
            f"astype: moving a Tensor to device {device!r} (it is on {here!r}) is not "
            "implemented; gpugrad keeps a graph on one device")
    name = dtype if isinstance(dtype, str) else B.dtype_name(dtype)
    try:
        want = B.resolve_dtype(xp, name if hasattr(xp, name) else dtype)  # NumPy takes float
    except TypeError as exc:
        raise TypeError(E.at(f"`astype`: {exc}")) from None
    if not copy and getattr(x, "dtype", None) == want:
        return x
    return elementwise.astype.run(x, dtype=want)


def _binary(op: Any) -> None:
    @op.defsignature
    def call(x1: Any, x2: Any, /) -> Any:
        return op.run(x1, x2)


for _op in (arithmetic.add, arithmetic.subtract, arithmetic.multiply, arithmetic.divide,
            arithmetic.pow, trig.atan2, elementwise.logaddexp, elementwise.maximum,
            elementwise.minimum, linalg.matmul, compare.equal, compare.not_equal, compare.less,
            compare.less_equal, compare.greater, compare.greater_equal):
    _binary(_op)


@arithmetic.negative.defsignature
def _negative(x: Any, /) -> Any:
    return arithmetic.negative.run(x)


@elementwise.where.defsignature
def _where(condition: Any, x1: Any, x2: Any, /) -> Any:
    return elementwise.where.run(condition, x1, x2)
