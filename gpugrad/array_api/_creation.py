"""Creation and data-type functions of gpugrad.array_api.

New arrays are constants (no gradient). ``asarray`` of a Tensor returns it with its graph
(converted by the differentiable ``astype`` if a dtype is asked for), so array-API code that
starts with ``x = xp.asarray(x)`` keeps differentiating.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend as B
from ..errors import at
from ..ops import elementwise
from ..ops import shape as shape_ops
from ..tensor import Tensor
from ..tensor import asarray as _host_asarray
from . import _wrap as W
from ._wrap import mark, standard


@standard("none")
def arange(start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None,
           device: Any = None) -> Tensor:
    """Evenly spaced values in the half-open interval [start, stop), ``step`` apart."""


@standard("none")
def empty(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` with unspecified contents."""


@standard("none")
def empty_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of x's shape with unspecified contents."""


@standard("none")
def eye(n_rows: Any, n_cols: Any = None, /, *, k: int = 0, dtype: Any = None,
        device: Any = None) -> Tensor:
    """Ones on the ``k``-th diagonal, zeros elsewhere."""


@standard("none")
def full(shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with ``fill_value``."""


@standard("none")
def full_like(x: Any, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of x's shape filled with ``fill_value``."""


@standard("none")
def linspace(start: Any, stop: Any, /, num: int, *, dtype: Any = None, device: Any = None,
             endpoint: bool = True) -> Tensor:
    """``num`` evenly spaced values from ``start`` to ``stop``."""


@standard("none")
def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with ones.

    >>> import gpugrad as gg
    >>> gg.to_numpy(gg.ones(2, dtype="float32"))
    array([1., 1.], dtype=float32)
    """


@standard("none")
def ones_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of x's shape filled with ones."""


@standard("none")
def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with zeros."""


@standard("none")
def zeros_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of x's shape filled with zeros."""


@mark("none")  # any producer; shares memory where it can
def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> Any:
    """A constant Tensor on the backend, from any DLPack producer.

    ``x`` is a NumPy, array_api_strict, PyTorch, JAX or CuPy array, or a Tensor. Memory is
    shared where the producer's device is the backend's (``copy=None``, the default);
    ``copy=True`` always copies, ``copy=False`` raises rather than copy. ``device`` picks
    the backend device (default: the backend's own). Edits made through the producer after
    sharing are not tracked by version counters: copy if you will change it. A read-only
    producer (a JAX array) gives a read-only Tensor; ``copy=True`` gives one you can update
    in place. (Export is ``Tensor.__dlpack__``: ``np.from_dlpack(t)`` shares the Tensor's
    array where the devices allow; no gradient travels.)

    >>> import numpy as np, gpugrad as gg
    >>> with gg.use_backend("numpy"):
    ...     host = np.arange(3.0)
    ...     t = gg.from_dlpack(host)
    ...     np.shares_memory(gg.to_numpy(t), host), np.from_dlpack(t)
    (True, array([0., 1., 2.]))
    >>> with gg.use_backend("numpy"):
    ...     gg.to_numpy(gg.from_dlpack(np.array([1.0, 2.0]), copy=True))
    array([1., 2.])
    """
    if isinstance(x, Tensor):
        x = x.data
    if not hasattr(x, "__dlpack__"):
        raise TypeError(at(f"from_dlpack: a {type(x).__name__} is not a DLPack producer (it "
                           "has no __dlpack__); use gg.asarray for lists, scalars and buffers"))
    b = B.current()
    if device is not None:
        b = B.make_backend(b, device)
    return Tensor(B.import_array(x, b, copy))


def _holds_tensor(obj: Any) -> bool:
    return any(isinstance(o, Tensor) or (isinstance(o, (list, tuple)) and _holds_tensor(o))
               for o in obj)


@mark("none")
def asarray(obj: Any, /, dtype: Any = None, *, device: Any = None,
            copy: bool | None = None) -> Tensor:
    """``obj`` as a Tensor (``gpugrad.asarray`` is this function).

    - A Tensor comes back with its graph; another ``dtype``, or ``copy=True``, goes through
      the differentiable ``astype``.
    - A list or tuple holding Tensors is stacked, so it stays differentiable.
    - Anything else is a constant: host data crosses to the current backend once, and a
      NumPy array is copied unless ``copy=False`` (see ``gpugrad.tensor.asarray``).
      ``device=`` puts it on that device of the backend.

    >>> import gpugrad as gg
    >>> x = gg.Variable([1.0, 2.0])
    >>> gg.array_api.asarray(x) is x, gg.asarray is gg.array_api.asarray
    (True, True)
    >>> gg.asarray([1, 2], "float32").dtype
    dtype('float32')
    """
    if isinstance(obj, Tensor):
        want = W.dtype_for(obj.xp, dtype)
        if want is not None and want != obj.dtype:
            return elementwise.astype(obj, dtype=want)
        return elementwise.astype(obj, dtype=obj.dtype) if copy else obj
    if isinstance(obj, (list, tuple)) and _holds_tensor(obj):
        return shape_ops.stack([asarray(o, dtype=dtype) for o in obj], axis=0)
    out = _host_asarray(obj, dtype, copy=copy)
    if device is not None and device != out.device:
        out = Tensor(out.xp.asarray(out.data, device=device))
    return out


# the registered op: a dtype by name or any backend's, ``copy=``, ``device=`` (see
# gpugrad.ops.signatures)
astype = elementwise.astype


def _dtype_or_array(xp: Any, v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.data
    if (B.is_backend_array(v) and not isinstance(v, type)) or isinstance(
            v, (bool, int, float, complex)):
        return v
    return W.dtype_for(xp, v)


@mark("none")
def can_cast(from_: Any, to: Any, /) -> bool:
    """Whether ``from_`` (a dtype or an array) can be cast to ``to`` by the promotion rules."""
    xp = W.namespace_for(from_)
    return W.native(xp).can_cast(_dtype_or_array(xp, from_), W.dtype_for(xp, to))


class FInfo(NamedTuple):
    """Machine limits of a floating dtype, as Python numbers (the standard's ``finfo_object``)."""

    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: Any


@mark("none")
def finfo(type: Any, /) -> Any:
    """Machine limits of a floating dtype (or of an array's dtype), as Python numbers.

    >>> import gpugrad as gg
    >>> gg.finfo("float32").eps == 2.0 ** -23, gg.finfo("float64").bits
    (True, 64)
    """
    xp = W.namespace_for(type)
    info = W.native(xp).finfo(_dtype_or_array(xp, type))
    return FInfo(int(info.bits), float(info.eps), float(info.max), float(info.min),
                 float(info.smallest_normal), info.dtype)


@mark("none")
def iinfo(type: Any, /) -> Any:
    """Machine limits of an integer dtype (or of an array's dtype)."""
    xp = W.namespace_for(type)
    return W.native(xp).iinfo(_dtype_or_array(xp, type))


@mark("none")
def isdtype(dtype: Any, kind: Any) -> bool:
    """Whether ``dtype`` is of ``kind`` (a dtype, a kind name such as ``"real floating"``,
    or a tuple of them)."""
    xp = B.current().xp
    kinds = kind if isinstance(kind, tuple) else (kind,)
    kinds = tuple(k if isinstance(k, str) else W.dtype_for(xp, k) for k in kinds)
    return W.native(xp).isdtype(W.dtype_for(xp, dtype), kinds)


@mark("none")
def result_type(*arrays_and_dtypes: Any) -> Any:
    """The dtype the standard's promotion rules give for these arrays, dtypes and scalars."""
    xp = W.namespace_for(*arrays_and_dtypes)
    return W.native(xp).result_type(*(_dtype_or_array(xp, a) for a in arrays_and_dtypes))
