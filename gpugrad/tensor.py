"""Eager front end: Tensors that record ops on a tape, and the backward pass over it.

>>> import gpugrad as gg
>>> W = gg.Variable([[1.0, 2.0], [3.0, 4.0]])
>>> y = (W * W).sum()
>>> y.backward()
>>> gg.to_numpy(W.grad)
array([[2., 4.],
       [6., 8.]])
"""

from __future__ import annotations

import contextvars
import functools
import warnings
from typing import Any, Callable

import numpy as np

from . import backend as B
from . import hooks
from .errors import DtypeError, GradientError, OpError, TracedValueWarning, at  # noqa: F401
from .fpstate import quiet
from .operators import ArrayOps
from .serialize import copy_tensor, deepcopy_tensor, reduce_tensor
from .versions import version_of

transform_depth: contextvars.ContextVar[int] = contextvars.ContextVar(
    "gpugrad_transforms", default=0)
"""How many transforms (gg.grad, gg.jacobian, ...) are evaluating their function here;
gpugrad.functional counts them."""


def leaving(t: "Tensor", how: str, stacklevel: int = 3) -> None:
    """Warn (once per user line) when ``how`` (``float()``, ``.item()``, ``gg.to_numpy``)
    takes a differentiated value out of gpugrad inside a transform: what the function
    computes from the number has no gradient, as in PyTorch."""
    if t.requires_grad and transform_depth.get() > 0:
        warnings.warn(
            f"{how} of a Tensor that depends on a differentiated input, inside a transform: "
            "the result is a plain number or array, so nothing computed from it has a "
            "gradient; keep the computation in gpugrad ops (gg.sum, gg.mean, ...)",
            TracedValueWarning, stacklevel=stacklevel)


_grad_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gpugrad_grad_enabled", default=True
)


class no_grad:
    """Context manager and decorator: ops inside record nothing. Per thread and per task.

    >>> import gpugrad as gg
    >>> W = gg.Variable([1.0])
    >>> with gg.no_grad():
    ...     (W * 2.0).requires_grad
    False
    """

    def __enter__(self) -> "no_grad":
        self._token = _grad_enabled.set(False)
        return self

    def __exit__(self, *exc: Any) -> None:
        _grad_enabled.reset(self._token)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return fn(*args, **kwargs)

        return wrapped


_whole_sweeps = hooks.whole_sweeps  # gpugrad.jit.whole fills it (a global: read per backward)


def is_grad_enabled() -> bool:
    """Whether ops record a tape here (False inside ``no_grad``)."""
    return _grad_enabled.get()


class Tensor(ArrayOps):
    """A backend array plus what autodiff needs: ``data``, ``grad``, ``requires_grad``.

    ``.xp`` is the array-API namespace of ``data`` (cached, so ops never look it up).
    Use ``gpugrad.asarray`` for constants and ``gpugrad.Variable`` for trainable values.
    ``Tensor(array)`` wraps ``array`` without copying it.

    In-place updates (``t[key] = v``, ``t += u``, ``-=``, ``*=``, ``/=``) bump ``t.version``.
    On a Variable they are refused under grad mode (do them under ``no_grad``, as optimizers
    do). On a Tensor that an op computed under grad mode they run out of place and are
    recorded, so arrays saved for backward are never overwritten. Elsewhere (a constant, or a
    Variable under ``no_grad``) they write into ``data``; if an op saved that array for
    backward, backward then raises and names the op and both versions. Writes made directly
    into ``.data`` or into an array wrapped with ``Tensor(array)`` are not tracked. A view
    (basic slice, ``.T``, ``.mT``, ``reshape``, ``expand_dims``, ``squeeze``) shares memory
    and the version counter with its base, and in-place writes reach the base through it, as
    in PyTorch (see gpugrad.views).

    >>> import gpugrad as gg
    >>> c = gg.asarray([1.0, 2.0])
    >>> c += 1.0
    >>> c[0] = 5.0
    >>> c.version, gg.to_numpy(c)
    (2, array([5., 3.]))
    """

    # _view / _views (gpugrad.views): set on a view and on a base that has views only
    __slots__ = ("data", "grad", "requires_grad", "xp", "_node", "name", "_vlog", "_view",
                 "_views", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = False, *, name: str | None = None,
                 xp: Any = None, _node: Any = None) -> None:
        if xp is None:
            xp = B.namespace_of(data)
            if xp is np and not isinstance(data, np.ndarray):
                data = np.asarray(data)
        self.data = data
        self.xp = xp
        self.grad: Any = None
        self.name = name
        self._node = _node
        if requires_grad and not B.is_inexact(xp, data.dtype):
            who = f"{type(self).__name__} {name!r}" if name else type(self).__name__
            raise DtypeError(at(
                f"{who}: only floating or complex dtypes can require gradients, got "
                f"{B.dtype_name(data.dtype)} {tuple(data.shape)}; convert the value first, "
                "e.g. value.astype('float32')"))
        self.requires_grad = requires_grad

    # --- array facts -------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def device(self) -> Any:
        return B.device_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        n = 1
        for d in self.data.shape:
            n *= d
        return n

    def _xp_for_dtype(self) -> Any:
        return self.xp

    def __len__(self) -> int:
        if not self.data.shape:
            raise TypeError("len() of a 0-d Tensor")
        return self.data.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __float__(self) -> float:
        leaving(self, "float()")
        return float(self.data)

    def __int__(self) -> int:
        leaving(self, "int()")
        return int(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __complex__(self) -> complex:
        return complex(self.data)

    def __index__(self) -> int:
        """A 0-d integer Tensor is a Python index: ``xs[t]``, ``range(t)``, ``x[t:]``."""
        if self.data.ndim != 0 or not B.is_integral(self.xp, self.data.dtype):
            raise TypeError(at(
                f"only a 0-d integer Tensor can be used as an index, got "
                f"{B.dtype_name(self.data.dtype)} {tuple(self.data.shape)}; use int(t) for a "
                "one-element Tensor, or t.astype('int64') to truncate floats first"))
        return int(self.data)

    def leaving_as(self, how: str) -> None:
        """See :func:`leaving` (for gpugrad.backend.to_numpy, below this module)."""
        leaving(self, how, stacklevel=4)

    def item(self) -> float:
        """The value of a one-element Tensor as a Python number (a device-to-host copy)."""
        leaving(self, ".item()")
        return B.to_numpy(self.data).item()

    def __repr__(self) -> str:
        kind = type(self).__name__
        label = f", name={self.name!r}" if self.name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"{kind}({self.data!r}{grad}{label})"

    @property
    def version(self) -> int:
        """How many in-place updates this Tensor's array has had (shared with ``detach()``)."""
        v = getattr(self, "_vlog", None)
        return 0 if v is None else v.count

    def detach(self) -> "Tensor":
        """The same data with no graph and no gradient (and the same version counter, so an
        in-place write through either one is seen by backward)."""
        out = Tensor(self.data, xp=self.xp)
        out._vlog = version_of(self)
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        hooks.setitem(self, key, value)

    def __iadd__(self, other: Any) -> "Tensor":
        return hooks.update(self, other, "add")

    def __isub__(self, other: Any) -> "Tensor":
        return hooks.update(self, other, "subtract")

    def __imul__(self, other: Any) -> "Tensor":
        return hooks.update(self, other, "multiply")

    def __itruediv__(self, other: Any) -> "Tensor":
        return hooks.update(self, other, "divide")

    def numpy(self) -> np.ndarray:
        """Host copy of the data (see gpugrad.to_numpy)."""
        return B.to_numpy(self.data)

    def backward(self, grad: Any = None, retain_graph: bool = False,
                 create_graph: bool = False) -> None:
        """Propagate gradients from this Tensor back to every leaf that requires them.

        Leaf gradients accumulate into ``.grad``. Saved arrays are freed afterwards unless
        ``retain_graph=True``. With ``create_graph=True`` the VJP rules run on Tensors
        (gpugrad.higher), so each ``.grad`` is a Tensor with a graph of its own and can be
        differentiated again; nothing is freed then.
        """
        node = self._node
        if _whole_sweeps and node is not None and grad is None and not create_graph:
            whole = _whole_sweeps.get(type(node.op))
            if whole is not None and whole(self, retain_graph):
                return
        with quiet(self.xp):  # a tiny gradient is not an error (see gpugrad.fpstate)
            if create_graph:
                hooks.sweep_with_graph(self, grad)
            else:
                hooks.sweep(self, grad, retain_graph)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        """The array-API namespace of Tensors: ``gpugrad.array_api``, whose functions
        differentiate."""
        ns = hooks.namespace
        if api_version is not None and api_version not in ("2023.12", "2024.12", "2025.12"):
            raise ValueError(f"gpugrad.array_api implements array-API version "
                             f"{ns.__array_api_version__}, not {api_version!r}")
        return ns

    def to_device(self, device: Any, /, *, stream: Any = None) -> Tensor:
        """This Tensor on ``device`` of its backend: itself where it is there already, else a
        constant copy there (a graph stays on one device, so a Tensor that requires a
        gradient cannot move while gradients are recorded: detach it first).

        >>> import gpugrad as gg
        >>> x = gg.asarray([1.0, 2.0])
        >>> x.to_device(x.device) is x
        True
        """
        if device == self.device:
            return self
        if self.requires_grad and is_grad_enabled():
            raise NotImplementedError(at(
                f"to_device: moving a Tensor that requires a gradient from {self.device!r} to "
                f"{device!r} is not differentiable (a graph stays on one device); call "
                "t.detach().to_device(...)"))
        move = getattr(self.data, "to_device", None)
        kwargs = {} if stream is None else {"stream": stream}
        data = move(device, **kwargs) if move is not None else self.xp.asarray(
            self.data, device=device)
        return Tensor(data, xp=self.xp)

    # --- pickle, copy (see gpugrad.serialize) and DLPack ----------------------------------
    def __reduce_ex__(self, protocol: int) -> tuple:
        return reduce_tensor(self)

    def __copy__(self) -> "Tensor":
        return copy_tensor(self)

    def __deepcopy__(self, memo: dict) -> "Tensor":
        return deepcopy_tensor(self, memo)

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[Any, int] | None = None, copy: bool | None = None) -> Any:
        """Export the data through DLPack (``np.from_dlpack(t)``, ``torch.from_dlpack(t)``):
        the consumer shares its memory where the device allows; no gradient travels. The
        standard's keywords go to the array's own ``__dlpack__``."""
        kwargs: dict[str, Any] = {"stream": stream}
        for key, value in (("max_version", max_version), ("dl_device", dl_device),
                           ("copy", copy)):
            if value is not None:
                kwargs[key] = value
        try:
            return self.data.__dlpack__(**kwargs)
        except TypeError:
            old = len(kwargs) > 1 and max_version is not None and dl_device is None
            if old and copy is None:  # a producer older than DLPack 1.0 (the old capsule)
                return self.data.__dlpack__(stream=stream)
            raise

    def __dlpack_device__(self) -> tuple[Any, int]:
        return self.data.__dlpack_device__()


def made(data: Any, xp: Any, node: Any = None) -> Tensor:
    """The one constructor of a Tensor that gpugrad computed (an op's result, a compiled
    call's output): ``data`` of namespace ``xp``, recorded by the tape ``node`` (None: a
    constant). It checks nothing, so the engine's hot path pays only the slot writes.

    >>> import numpy as np
    >>> t = made(np.ones(2), np)
    >>> t.requires_grad, t.grad, t.name
    (False, None, None)
    """
    t = _alloc(Tensor)
    t.data = data
    t.xp = xp
    t.grad = t.name = None
    t._node = node
    t.requires_grad = node is not None
    return t


_alloc = object.__new__


class Variable(Tensor):
    """A trainable value: gradient descent moves it (``W``, ``b`` in the tutorial).

    The value is copied onto the backend's device once. Only floating and complex dtypes are
    allowed (a complex value's ``.grad`` is dL/dx + i dL/dy, see docs/complex.md).

    >>> import gpugrad as gg
    >>> gg.Variable([1.0, 2.0], name="b").requires_grad
    True
    """

    __slots__ = ()

    def __init__(self, value: Any, name: str | None = None, *, dtype: Any = None) -> None:
        value = value.data if isinstance(value, Tensor) else value
        data = B.to_backend(value, dtype)
        xp = B.namespace_of(data)
        if data is value or (isinstance(value, np.ndarray) and xp is not np):
            # a host array may be wrapped without a copy (array_api_strict does): copy it
            data = xp.asarray(data, copy=True)
        super().__init__(data, requires_grad=True, name=name, xp=xp)


def asarray(data: Any, dtype: Any = None, *, copy: bool | None = None) -> Tensor:
    """A constant Tensor on the backend's device (host data crosses once).

    A NumPy array is copied (on every backend, the NumPy one included), so later edits to
    it cannot reach arrays that ops saved for backward. ``copy=False`` shares its memory
    instead (then edits are not tracked); ``copy=True`` copies a device array too. An array
    already on a device backend keeps its device; a Tensor is returned as it is. An array of
    another library (PyTorch, JAX, CuPy, array_api_strict) comes through DLPack and is copied
    like a NumPy array; ``copy=False`` shares its memory where the device allows (see
    ``gpugrad.from_dlpack``).

    >>> import numpy as np, gpugrad as gg
    >>> host = np.array([1.0, 2.0])
    >>> t = gg.asarray(host)
    >>> host[0] = 9.0
    >>> gg.to_numpy(t)
    array([1., 2.])
    """
    if isinstance(data, Tensor):
        return data if dtype is None else data.astype(dtype)
    if hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray):
        b = B.current()
        if B.is_foreign(data, b):  # torch, JAX, ...: through DLPack, copied unless copy=False
            arr = B.import_array(data, b, copy=True if copy is None else copy)
            return Tensor(arr if dtype is None else B.to_backend(arr, dtype, b))
    arr = B.to_backend(data, dtype)
    if copy is None:
        copy = isinstance(data, np.ndarray)
    if copy and _may_alias(arr, data):
        arr = np.array(arr) if isinstance(arr, np.ndarray) else B.namespace_of(arr).asarray(
            arr, copy=True)
    return Tensor(arr)


def _may_alias(arr: Any, data: Any) -> bool:
    if arr is data:
        return True
    if isinstance(arr, np.ndarray):
        return isinstance(data, np.ndarray) and np.may_share_memory(arr, data)
    return isinstance(data, np.ndarray) and "cupy" not in type(arr).__module__


