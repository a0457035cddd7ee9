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
from typing import Any, Callable

import numpy as np

from . import backend as B
from .operators import ArrayOps

_grad_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gpugrad_grad_enabled", default=True
)


class GradientError(RuntimeError):
    """backward() was asked for something it cannot do."""


class OpError(ValueError):
    """An op's forward rule rejected its inputs; the message names the op and the inputs."""


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


def is_grad_enabled() -> bool:
    """Whether ops record a tape here (False inside ``no_grad``)."""
    return _grad_enabled.get()


class Tensor(ArrayOps):
    """A backend array plus what autodiff needs: ``data``, ``grad``, ``requires_grad``.

    ``.xp`` is the array-API namespace of ``data`` (cached, so ops never look it up).
    Use ``gpugrad.asarray`` for constants and ``gpugrad.Variable`` for trainable values.
    """

    __slots__ = ("data", "grad", "requires_grad", "xp", "_node", "name", "__weakref__")

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
        if requires_grad and not B.is_floating(xp, data.dtype):
            who = f"{type(self).__name__} {name!r}" if name else type(self).__name__
            raise TypeError(
                f"{who}: only floating dtypes can require gradients, got "
                f"{B.dtype_name(data.dtype)}; convert the value first, e.g. "
                "value.astype('float32')"
            )
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
        return float(self.data)

    def __int__(self) -> int:
        return int(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def item(self) -> float:
        """The value of a one-element Tensor as a Python number (a device-to-host copy)."""
        return B.to_numpy(self.data).item()

    def __repr__(self) -> str:
        kind = type(self).__name__
        label = f", name={self.name!r}" if self.name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"{kind}({self.data!r}{grad}{label})"

    def detach(self) -> "Tensor":
        """The same data with no graph and no gradient."""
        return Tensor(self.data, xp=self.xp)

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
        from .eager import backward

        backward(self, grad, retain_graph, create_graph)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        """The array-API namespace of Tensors: ``gpugrad.array_api``, whose functions
        differentiate."""
        from . import array_api

        if api_version is not None and api_version not in ("2023.12", "2024.12"):
            raise ValueError(f"gpugrad.array_api implements array-API version "
                             f"{array_api.__array_api_version__}, not {api_version!r}")
        return array_api


class Variable(Tensor):
    """A trainable value: gradient descent moves it (``W``, ``b`` in the tutorial).

    The value is copied onto the backend's device once. Only floating dtypes are allowed.

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


def asarray(data: Any, dtype: Any = None) -> Tensor:
    """A constant Tensor on the backend's device (host data crosses once).

    An array already on the backend keeps its device; a Tensor is returned as it is.

    >>> import gpugrad as gg
    >>> gg.asarray([1, 2, 3]).shape
    (3,)
    """
    if isinstance(data, Tensor):
        return data if dtype is None else data.astype(dtype)
    arr = B.to_backend(data, dtype)
    return Tensor(arr)


