"""In-place updates of Tensors: ``t[key] = v`` and ``t += u`` (also ``-=``, ``*=``, ``/=``).

Three cases, decided per call:

- a Variable (a leaf that requires gradients) under grad mode: refused, since the gradient
  of everything computed from it so far would silently change meaning;
- a Tensor with recorded history (an op computed it from Variables under grad mode), or any
  Tensor receiving a value that requires gradients under grad mode: the update runs out of
  place as a recorded op (``add``, ``setitem``, ``where``, ...) and the Tensor takes the
  result's array and history, so arrays that earlier ops saved are never overwritten;
- otherwise (a constant, or a Variable under ``no_grad``): the backend writes into
  ``t.data``, and the write is noted (see ``gpugrad.versions``) so that backward refuses an
  array that an op saved before the write.

Every case bumps ``t.version``. A view (see ``gpugrad.views``) writes into the shared memory
where its base has no history; otherwise the write runs out of place and its base takes it,
as a recorded copy into the slice, and every view of the base follows.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import backend as B
from . import hooks
from . import errors as E
from . import diagnose as D
from . import versions
from . import views
from .eager import _mix_error
from .registry import registry
from .tensor import Tensor, _grad_enabled

_SYMBOL = {"add": "+=", "subtract": "-=", "multiply": "*=", "divide": "/="}
_WRITE = {"add": operator.iadd, "subtract": operator.isub, "multiply": operator.imul,
          "divide": operator.itruediv}


def update(t: Tensor, other: Any, op: str) -> Tensor:
    """``t += other`` (or ``-=``, ``*=``, ``/=``, by ``op``); returns ``t``."""
    what = f"{op} (in place, {_SYMBOL[op]})"
    _refuse_leaf(t, what)
    if _out_of_place(t, other):
        return _take_result(t, registry[op](t, other), what)
    value = _value(t, other, what)
    shape = tuple(getattr(value, "shape", ()))
    why = D.broadcast_problem([t.shape, shape])
    if why is None and D.broadcast_shape([t.shape, shape]) != t.shape:
        why = (f"the result would have shape {E.show(D.broadcast_shape([t.shape, shape]))}, "
               f"but an in-place update keeps the Tensor's shape")
    if why is not None:
        raise E.OpError(E.at(f"{what}: shapes {E.show(t.shape)} and {E.show(shape)}: {why}"))
    data = t.data
    try:
        out = _WRITE[op](data, value)
    except (ValueError, TypeError) as exc:
        raise E.OpError(E.at(f"{what}: {exc} (Tensor {D.describe(data)}, other "
                             f"{D.describe(value)})")) from exc
    if out is data:
        versions.wrote(t, data, E.call_site())
    else:  # a backend without in-place operators gave a new array
        _take_result(t, Tensor(out, xp=t.xp), what)
    return t


def setitem(t: Tensor, key: Any, value: Any) -> None:
    """``t[key] = value``."""
    what = "setitem (t[key] = value)"
    _refuse_leaf(t, what)
    key = _unwrap_key(key)
    if getattr(key, "_gpugrad_symbolic", False) or getattr(value, "_gpugrad_symbolic", False):
        raise TypeError(E.at(
            f"{what}: a graph Symbol cannot be written into a Tensor (the Symbol has a value "
            "only when its graph runs); build the result instead, e.g. "
            "gpugrad.where(mask, value, x)"))
    mask = _mask(t, key)
    if mask is not None:
        if _out_of_place(t, value):
            _take_result(t, registry["setitem_mask"](t, value, mask), what)
            return
        if mask.ndim > len(t.shape) or tuple(mask.shape) != t.shape[:mask.ndim]:
            raise E.OpError(E.at(
                f"{what}: mask of shape {E.show(mask.shape)} does not cover the leading dims "
                f"of the Tensor {E.show(t.shape)}; a mask needs mask.shape == "
                "t.shape[:mask.ndim]"))
        key = mask
    elif _out_of_place(t, value):
        _take_result(t, _recorded_setitem(t, key, value), what)
        return
    value = _value(t, value, what)
    data = t.data
    try:
        data[key] = value
    except (ValueError, TypeError, IndexError) as exc:
        raise E.OpError(E.at(f"{what}: {exc} (Tensor {D.describe(data)}, key {key!r}, value "
                             f"{D.describe(value)})")) from exc
    versions.wrote(t, data, E.call_site())


def _refuse_leaf(t: Tensor, what: str) -> None:
    if getattr(t, "_view", None) is not None:
        views.refuse(t, what)
    if t.requires_grad and t._node is None and _grad_enabled.get():
        name = f" {t.name!r}" if t.name else ""
        raise E.GradientError(E.at(
            f"{what}: {type(t).__name__}{name} {E.show(t.shape)} requires gradients, so it "
            "cannot be changed in place while gradients are recorded; update it inside "
            "`with gpugrad.no_grad():` (as optimizers do), or compute a new Tensor instead"))


def _out_of_place(t: Tensor, value: Any) -> bool:
    """Must the update run out of place (recorded)? Yes for a Tensor with history or a
    value that requires gradients; for a view, also when its base has history (the write
    becomes a copy into the base, see gpugrad.views); a view of a constant or of a leaf
    that is written without recording goes into the shared memory."""
    info = getattr(t, "_view", None)
    if info is None:
        return t._node is not None or _tracked(value)
    if _grad_enabled.get() and (t.requires_grad or _tracked(value)):
        return True
    return info.base._node is not None


def _tracked(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad and _grad_enabled.get()


def _take_result(t: Tensor, new: Tensor, what: str) -> Tensor:
    """``t`` becomes ``new`` (out of place): new array and, under grad mode, new history."""
    if new.shape != t.shape:
        raise E.OpError(E.at(
            f"{what}: the result has shape {E.show(new.shape)}, but an in-place update keeps "
            f"the Tensor's shape {E.show(t.shape)}"))
    if new.dtype != t.dtype:
        raise E.DtypeError(E.at(
            f"{what}: the result has dtype {B.dtype_name(new.dtype)}, but an in-place update "
            f"keeps the Tensor's dtype {B.dtype_name(t.dtype)}"))
    if getattr(t, "_view", None) is not None:
        views.write_through(t, new)  # the base takes the write, and t is recomputed from it
        return t
    views.rebase(t, new)  # (its views, if any, follow)
    return t


def _value(t: Tensor, v: Any, what: str) -> Any:
    """``v`` as something the backend can write into ``t.data``: a scalar, or an array on
    ``t``'s backend and device whose dtype does not silently change precision."""
    if type(v) is complex and not B.is_complex(t.xp, t.dtype):
        raise E.DtypeError(E.at(
            f"{what}: a complex value would lose its imaginary part in the "
            f"{B.dtype_name(t.dtype)} Tensor {E.show(t.shape)}; convert the Tensor first"))
    if type(v) in (int, float, bool, complex):
        if isinstance(v, float) and not B.is_inexact(t.xp, t.dtype):
            raise E.DtypeError(E.at(
                f"{what}: a float value would be truncated into the "
                f"{B.dtype_name(t.dtype)} Tensor {E.show(t.shape)}; convert the Tensor first"))
        return v
    if isinstance(v, Tensor):
        arr = v.data
        if v.xp is not t.xp or (t.xp is not np and B.device_of(arr) != B.device_of(t.data)):
            raise _mix_error(what, t, v)
    elif B.is_backend_array(v):
        arr = v
        same = t.xp is np if isinstance(v, np.ndarray) else (
            B.name_of(B.namespace_of(v)) == B.name_of(t.xp) and B.device_of(v) == t.device)
        if not same:
            raise _mix_error(what, t, v)
    else:  # host data such as a list
        arr = B.namespace_of(t.data).asarray(v, dtype=t.dtype, device=B.device_of(t.data)) \
            if t.xp is not np else np.asarray(v, dtype=t.dtype)
    fa, ft = B.is_inexact(t.xp, arr.dtype), B.is_inexact(t.xp, t.dtype)
    if (fa and ft and arr.dtype != t.dtype) or (fa and not ft):
        how = "truncated" if not ft else (
            "downcast" if D._bits(arr.dtype) > D._bits(t.dtype) else "upcast")
        raise E.DtypeError(E.at(
            f"{what}: a {B.dtype_name(arr.dtype)} value would be silently {how} into the "
            f"{B.dtype_name(t.dtype)} Tensor {E.show(t.shape)}; convert it first, e.g. "
            f"value.astype({B.dtype_name(t.dtype)!r})"))
    return arr


def _unwrap_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key.data if isinstance(key, Tensor) else key


def _mask(t: Tensor, key: Any) -> Any:
    """A boolean mask key as an array on ``t``'s backend and device; None for other keys."""
    if isinstance(key, list) and key and all(type(k) is bool for k in key):
        key = np.asarray(key)
    if not B.is_backend_array(key) or "bool" not in str(key.dtype):
        return None
    if isinstance(key, np.ndarray) and t.xp is not np:  # a host mask crosses once
        return t.xp.asarray(key, device=t.device)
    return key


def _recorded_setitem(t: Tensor, key: Any, value: Any) -> Tensor:
    parts = key if isinstance(key, tuple) else (key,)
    if not all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in parts):
        raise TypeError(E.at(
            f"setitem: index {key!r} on a Tensor with recorded history must be basic (ints, "
            "slices, None, ...) or a boolean mask of its leading dims; use gpugrad.where for "
            "other selections"))
    return registry["setitem"](t, value, key=key)


hooks.setitem, hooks.update = setitem, update  # t[k] = v, t += u, ... on Tensors
