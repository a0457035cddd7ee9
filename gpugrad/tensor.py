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
from typing import Any, Callable, Sequence

import numpy as np

from . import backend as B
from .operators import ArrayOps
from .registry import Op, set_dispatcher

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


class _Freed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<freed>"


FREED = _Freed()


class Node:
    """What backward needs about one recorded op application."""

    __slots__ = ("op", "params", "args", "parents", "needs", "res", "backend")

    def __init__(self, op: Op, params: dict, args: tuple, parents: tuple, needs: tuple,
                 res: Any, backend: str) -> None:
        self.op = op
        self.args = args
        self.params = params
        self.parents = parents
        self.needs = needs
        self.res = res
        self.backend = backend


_XP_NAMES: dict[Any, str] = {np: "numpy"}


def backend_name(xp: Any) -> str:
    name = _XP_NAMES.get(xp)
    if name is None:
        name = _XP_NAMES[xp] = B.name_of(xp)
    return name


class Tensor(ArrayOps):
    """A backend array plus what autodiff needs: ``data``, ``grad``, ``requires_grad``.

    ``.xp`` is the array-API namespace of ``data`` (cached, so ops never look it up).
    Use ``gpugrad.asarray`` for constants and ``gpugrad.Variable`` for trainable values.
    """

    __slots__ = ("data", "grad", "requires_grad", "xp", "_node", "name", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = False, *, name: str | None = None,
                 xp: Any = None, _node: Node | None = None) -> None:
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

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Propagate gradients from this Tensor back to every leaf that requires them.

        Leaf gradients accumulate into ``.grad``. Saved arrays are freed afterwards unless
        ``retain_graph=True``.
        """
        backward(self, grad, retain_graph)


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


# --- the eager dispatcher ----------------------------------------------------------------

_symbolic_builder: Callable[..., Any] | None = None


def set_symbolic_builder(fn: Callable[..., Any]) -> None:
    """Installed by the graph module: how an op applied to a Symbol builds a graph node."""
    global _symbolic_builder
    _symbolic_builder = fn


def _describe(a: Any) -> str:
    if isinstance(a, Tensor):
        return f"{a.shape} {B.dtype_name(a.dtype)}"
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{tuple(a.shape)} {B.dtype_name(a.dtype)}"
    return repr(a)


def _mix_error(op: Op, a: Any, b: Any) -> Exception:
    da = B.describe_device(a.xp, a.device)
    db = B.describe_device(b.xp, b.device) if isinstance(b, Tensor) else B.describe_device(
        B.namespace_of(b), B.device_of(b))
    return B.BackendError(
        f"{op.name}: inputs live on different backends or devices ({da} and {db}); "
        "move them to one with gpugrad.asarray under the backend you want"
    )


def apply(op: Op, args: Sequence[Any], params: dict) -> Any:
    """Run ``op`` now on Tensors, backend arrays and scalars, recording it if needed."""
    n = len(args)
    arrays = list(args)
    ref: Tensor | None = None
    xp: Any = None
    record = False
    grad_on = _grad_enabled.get()
    has_scalar = False
    for i in range(n):
        a = args[i]
        if isinstance(a, Tensor):
            if xp is None:
                xp, ref = a.xp, a
            elif a.xp is not xp or (xp is not np and a.data.device != ref.data.device):
                raise _mix_error(op, ref, a)
            arrays[i] = a.data
            if a.requires_grad and grad_on:
                record = True
        elif isinstance(a, (float, int)):
            has_scalar = True
        elif getattr(a, "_gpugrad_symbolic", False):
            return _symbolic_builder(op, args, params)
        elif a is None:
            continue
        elif B.is_backend_array(a):
            t = Tensor(a)
            if xp is None:
                xp, ref = t.xp, t
            elif t.xp is not xp or (xp is not np and a.device != ref.data.device):
                raise _mix_error(op, ref, a)
        else:
            raise TypeError(
                f"{op.name}: argument {i} is a {type(a).__name__}; pass Tensors, backend "
                "arrays or Python scalars (wrap host data with gpugrad.asarray)"
            )
    if xp is None:
        b = B.current()
        xp = b.xp
        arrays = [B.to_backend(a, None, b) if isinstance(a, (int, float)) else a
                  for a in arrays]
        has_scalar = False
    if has_scalar:
        _scalars_to_arrays(op, arrays, None if ref is None else ref.data, xp)
    name = backend_name(xp)
    forward = op.fast_forward.get(name, op.forward) if op.fast_forward else op.forward
    try:
        out, res = forward(xp, *arrays, **params)
    except (ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, (OpError, B.BackendError)):
            raise
        shapes = ", ".join(_describe(a) for a in args)
        raise OpError(f"{op.name}: {exc} (inputs: {shapes})") from exc
    if xp is np and type(out) is not np.ndarray:
        out = np.asarray(out)
    if record and op.differentiable and B.is_floating(xp, out.dtype):
        parents = tuple(a if isinstance(a, Tensor) and a.requires_grad else None for a in args)
        needs = tuple(p is not None for p in parents)
        node = Node(op, params, tuple(args), parents, needs, res, name)
        return Tensor(out, True, xp=xp, _node=node)
    return Tensor(out, xp=xp)


def _scalars_to_arrays(op: Op, arrays: list, ref: Any, xp: Any) -> None:
    """Python scalars become 0-d arrays of ``ref``'s dtype and device, where the op's rule
    needs arrays (a float scalar never upcasts a float32 input)."""
    for a in arrays:  # prefer a floating input's dtype: where(mask, 0.5, x32) stays float32
        if hasattr(a, "dtype") and B.is_floating(xp, a.dtype):
            ref = a
            break
    for i, a in enumerate(arrays):
        if isinstance(a, (int, float)) and i not in op.scalar_ok:
            if ref is None:
                arrays[i] = B.to_backend(a)
            elif xp is np:
                arrays[i] = np.asarray(a, dtype=ref.dtype if (
                    not isinstance(a, bool) and ref.dtype.kind == "f") else None)
            elif not isinstance(a, bool) and B.is_floating(xp, ref.dtype):
                arrays[i] = xp.asarray(a, dtype=ref.dtype, device=ref.device)
            else:
                arrays[i] = xp.asarray(a, device=ref.device)


set_dispatcher(apply)


# --- backward ------------------------------------------------------------------------------

def unbroadcast(xp: Any, g: Any, shape: tuple) -> Any:
    """Sum ``g`` down to ``shape``, undoing broadcasting (the one place this happens)."""
    gshape = tuple(g.shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead < 0:
        return xp.broadcast_to(g, shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and gshape[lead + i] != 1
    )
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
        if xp is np and type(g) is not np.ndarray:
            g = np.asarray(g)
    if tuple(g.shape) != shape:
        g = xp.reshape(g, shape) if _numel(g.shape) == _numel(shape) else xp.broadcast_to(
            g, shape)
    return g


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _topological(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through recorded ops, parents first (no recursion)."""
    order: list[Tensor] = []
    seen = {root}
    stack: list[tuple[Tensor, int]] = [(root, 0)]
    while stack:
        t, i = stack[-1]
        node = t._node
        parents = node.parents if node is not None else ()
        while i < len(parents):
            p = parents[i]
            i += 1
            if p is not None and p not in seen:
                seen.add(p)
                stack[-1] = (t, i)
                stack.append((p, 0))
                break
        else:
            stack.pop()
            order.append(t)
    return order


def seed_gradient(out: Any, xp: Any, grad: Any, what: str) -> Any:
    """The starting gradient for ``out``: ones for a scalar, else the checked ``grad``."""
    if grad is None:
        if _numel(out.shape) != 1:
            raise GradientError(
                f"{what}: the output has shape {tuple(out.shape)}, not a scalar; pass a seed "
                "gradient of that shape, e.g. backward(grad=ones), or reduce it first with "
                ".sum() or .mean()"
            )
        return xp.ones_like(out)
    g = grad.data if isinstance(grad, Tensor) else grad
    if not B.is_backend_array(g) or (xp is not np and B.namespace_of(g) is not xp):
        g = xp.asarray(g, dtype=out.dtype, device=B.device_of(out))
    if tuple(g.shape) != tuple(out.shape):
        raise GradientError(
            f"{what}: seed gradient has shape {tuple(g.shape)} but the output has shape "
            f"{tuple(out.shape)}; they must match"
        )
    if g.dtype != out.dtype:
        g = xp.astype(g, out.dtype)
    return g


def backward(root: Tensor, grad: Any = None, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from ``root``; see Tensor.backward."""
    if not root.requires_grad:
        raise GradientError(
            "backward: this Tensor does not require gradients (no Variable led to it, or it "
            "was computed under no_grad)"
        )
    xp = root.xp
    grads = {root: seed_gradient(root.data, xp, grad, "backward")}
    with no_grad():
        for t in reversed(_topological(root)):
            g = grads.pop(t, None)
            if g is None:
                continue
            node = t._node
            if node is None:
                t.grad = g if t.grad is None else _as_array(xp, t.grad + g)
                continue
            res = node.res
            if res is FREED:
                raise GradientError(
                    f"backward: the saved arrays of {node.op.name} were already freed by an "
                    "earlier backward; call backward(retain_graph=True) the first time if you "
                    "need to go backward through the graph twice"
                )
            gs = _vjp(node.op, xp, g, res, node.needs, node.params, node.backend)
            for p, gi in zip(node.parents, gs):
                if p is None or gi is None:
                    continue
                gi = _fit(p.xp, gi, p.data)
                if gi is None:
                    continue
                prev = grads.get(p)
                grads[p] = gi if prev is None else _as_array(p.xp, prev + gi)
            if not retain_graph:
                node.res = FREED


def _as_array(xp: Any, x: Any) -> Any:
    """NumPy turns a 0-d result into a NumPy scalar; wrap it back into an array."""
    return np.asarray(x) if xp is np and type(x) is not np.ndarray else x


def _vjp(op: Op, xp: Any, g: Any, res: Any, needs: tuple, params: dict, name: str) -> Any:
    fast = op.fast_vjp.get(name) if op.fast_vjp else None
    if fast is not None:
        return fast(xp, g, res, **params)
    return op.grads(xp, g, res, needs, params)


def _fit(xp: Any, g: Any, like: Any) -> Any:
    """Gradient with ``like``'s shape and dtype (broadcasting undone, dtype kept); None for
    an integer or boolean input, which never has a gradient."""
    if xp is np and type(g) is not np.ndarray:
        g = np.asarray(g)
    if tuple(g.shape) != tuple(like.shape):
        g = unbroadcast(xp, g, tuple(like.shape))
    if g.dtype != like.dtype:
        if not B.is_floating(xp, like.dtype):
            return None
        g = xp.astype(g, like.dtype)
    return g
