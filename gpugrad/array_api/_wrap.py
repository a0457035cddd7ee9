"""Plumbing for gpugrad.array_api: Tensors in and out, the backend namespace a call runs on,
and the wrappers for functions that have no gradient.

Every function of the namespace is marked with how it differentiates (``fn.gradient``):

- ``"op"``: a registered op; differentiable, and twice where the op's rule allows;
- ``"composite"``: written here from registered ops, so differentiable as they are;
- ``"zero"``: piecewise constant (floor, sign, ...); its gradient is 0, so its result is a
  constant and that is the right derivative;
- ``"none"``: its result is boolean, integer, a dtype fact or a new array; nothing to
  differentiate;
- ``"constants"``: runs on constants, and raises NotImplementedError when an input requires
  a gradient (a gradient rule is missing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend as B
from ..ops.elementwise import astype
from ..tensor import Tensor, is_grad_enabled

CREATION = frozenset({"arange", "asarray", "empty", "eye", "full", "linspace", "ones", "zeros"})
"""Creation functions without an array argument: they go to the current backend's device."""

_compat_numpy: Any = None


def native(xp: Any) -> Any:
    """The namespace whose functions follow the standard: NumPy goes through array-api-compat
    (``sort(descending=...)``, ``unique_values``, 0-d arrays instead of scalars), the others
    are used as they are."""
    global _compat_numpy
    if xp is np:
        if _compat_numpy is None:
            import array_api_compat.numpy as compat

            _compat_numpy = compat
        return _compat_numpy
    return xp


def mark(kind: str) -> Callable[[Callable], Callable]:
    """Decorator: record how a namespace function differentiates (see the module docstring)."""

    def decorate(fn: Callable) -> Callable:
        fn.gradient = kind
        return fn

    return decorate


def _items(args: Any):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def namespace_for(*args: Any) -> Any:
    """The backend namespace of the first Tensor or backend array among ``args`` (one level
    into sequences), else the current backend's."""
    for a in _items(args):
        if isinstance(a, Tensor):
            return a.xp
        if B.is_backend_array(a) and not isinstance(a, type):  # NumPy scalar types look alike
            return B.namespace_of(a)
    return B.current().xp


def requires_grad(*args: Any) -> bool:
    """Whether any Tensor among ``args`` (one level into sequences) requires a gradient."""
    return any(isinstance(a, Tensor) and a.requires_grad for a in _items(args))


def unwrap(a: Any) -> Any:
    """Tensors become their backend arrays (also inside lists, tuples and dicts' values)."""
    if isinstance(a, Tensor):
        return a.data
    if isinstance(a, dict):
        return {k: unwrap(v) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(unwrap(v) for v in a)
    return a


def wrap(out: Any) -> Any:
    """Backend arrays become constant Tensors (also inside tuples and lists); other values
    (Python scalars, dtype facts) stay as they are."""
    if isinstance(out, (np.ndarray, np.generic)):
        return Tensor(np.asarray(out))
    if isinstance(out, (list, tuple)):
        items = [wrap(v) for v in out]
        return type(out)(*items) if hasattr(type(out), "_fields") else type(out)(items)
    if B.is_backend_array(out) and not isinstance(out, type):
        return Tensor(out)
    return out


def as_tensor(x: Any) -> Tensor:
    """``x`` as a Tensor: Tensors as they are, backend arrays and scalars as constants."""
    if isinstance(x, Tensor):
        return x
    if B.is_backend_array(x):
        return Tensor(x)
    return Tensor(B.to_backend(x))


def dtype_for(xp: Any, dtype: Any) -> Any:
    """``dtype`` (a name, or a dtype of any backend) as ``xp``'s dtype of the same name.

    Dtype attributes of gpugrad.array_api follow the current backend, so a Tensor made under
    another one still gets its own backend's dtype.
    """
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else B.dtype_name(dtype)
    try:
        return getattr(xp, name)
    except AttributeError:
        raise TypeError(f"unknown dtype {dtype!r} for backend {B.name_of(xp)}") from None


def no_gradient_error(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"gpugrad.array_api.{name}: no gradient rule yet; gpugrad runs {name} on constants "
        "only, and an input here requires a gradient. Pass x.detach() if it is meant as a "
        "constant, or register the op with its VJP (gpugrad.ops.defop)"
    )


def passthrough(name: str, kind: str, arrays: tuple[str, ...] = ()) -> Callable:
    """A namespace function that runs the backend's ``name`` on plain arrays and returns
    constant Tensors. ``kind`` is ``"none"``, ``"zero"`` or ``"constants"`` (which raises
    when an input requires a gradient). ``arrays`` names its positional-only parameters
    (``("x",)``, ``("x1", "x2")``) for its signature, as the standard writes them."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        if kind == "constants" and is_grad_enabled() and (
                requires_grad(*args) or requires_grad(*kwargs.values())):
            raise no_gradient_error(name)
        xp = namespace_for(*args, *kwargs.values())
        if "dtype" in kwargs:
            kwargs["dtype"] = dtype_for(xp, kwargs["dtype"])
        if name in CREATION and kwargs.get("device") is None:
            device = B.current().device
            if device is not None and xp is B.current().xp:
                kwargs["device"] = device
        out = getattr(native(xp), name)(*unwrap(args), **unwrap(kwargs))
        return wrap(out)

    fn.__name__ = fn.__qualname__ = name
    what = {"none": "no gradient: the result is boolean, integer, or a new constant",
            "zero": "piecewise constant: its gradient is 0 wherever it exists, so the result is "
                    "a constant",
            "constants": "runs on constants only; raises NotImplementedError if an input "
                         "requires a gradient"}[kind]
    fn.__doc__ = f"The array-API ``{name}`` on the backend's arrays ({what})."
    fn.gradient = kind
    if arrays:
        fn.__signature__ = inspect.Signature(
            [inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a in arrays])
    return fn


def standard(kind: str) -> Callable[[Callable], Callable]:
    """Decorator: a function declared by its signature as the standard writes it (the def
    holds its docstring only), run by ``passthrough``: positional-only arguments go to the
    backend's function of the same name by position, the others by their standard names.
    A call the signature does not take raises a TypeError naming the function."""

    def decorate(declared: Callable) -> Callable:
        name = declared.__name__
        run = passthrough(name, kind)
        sig = inspect.signature(declared)
        positional = [p.name for p in sig.parameters.values()
                      if p.kind is inspect.Parameter.POSITIONAL_ONLY]

        def fn(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"gpugrad.array_api.{name}: {exc}") from None
            given = bound.arguments
            return run(*(given[n] for n in positional if n in given),
                       **{n: v for n, v in given.items() if n not in positional})

        fn.__name__ = fn.__qualname__ = name
        fn.__module__ = declared.__module__
        fn.__doc__ = declared.__doc__
        fn.__signature__ = sig
        fn.gradient = kind
        return fn

    return decorate


def promote(*args: Any) -> tuple:
    """``args`` with mixed floating precisions converted to the wider one, as the standard's
    promotion rules say (``float32`` and ``float64`` give ``float64``). gpugrad's own ops
    refuse to do this silently; array-API code expects it. The conversion is the
    differentiable ``astype``, so the gradient goes back in each input's own dtype."""
    floats = [a for a in args if hasattr(a, "dtype") and B.is_inexact(namespace_for(a), a.dtype)]
    if len({B.dtype_name(a.dtype) for a in floats}) < 2:
        return args
    wide = native(namespace_for(*floats)).result_type(*(a.dtype for a in floats))
    return tuple(astype(a, dtype=wide) if any(a is f for f in floats) and a.dtype != wide
                 else a for a in args)


def promoting(op: Any, *, sequence: bool = False) -> Callable:
    """``op`` after the standard's promotion of mixed float precisions (``promote``) among
    its array arguments (the list, for ``concat`` and ``stack``), with the op's own
    signature: any other call goes to the op as it is, which maps it or names the parameter
    that does not fit."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        if sequence:
            if args and isinstance(args[0], (list, tuple)):
                args = (list(promote(*args[0])), *args[1:])
        elif len(args) == op.nin:
            args = promote(*args)
        return op(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = op.name
    fn.__signature__ = op.__signature__
    fn.__doc__ = (f"{(op.__doc__ or '').strip().splitlines()[0]}  (op ``{op.name}``; float32 "
                  "meeting float64 is promoted to float64, as the standard says)")
    fn.gradient = "op"
    return fn
