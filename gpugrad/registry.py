"""The op registry: ``name -> Op`` holding a forward rule, VJP rules and fast paths.

A forward rule is ``forward(xp, *arrays, **params) -> (out, residuals)``.
A VJP rule is ``vjp(xp, g, residuals, **params) -> one gradient per input`` (None where an
input has no gradient). An op may instead give one rule per input,
``vjp_i(xp, g, residuals, **params) -> gradient``, so that the engine computes only the
gradients somebody needs (``dx`` of ``x @ W`` is skipped when ``x`` is data).

Static parameters (axis, shape, keepdims) are keyword-only and never differentiated. Rules
never mutate their inputs or ``g``, never import numpy or cupy, and leave broadcasting to the
engine.

>>> import gpugrad as gg
>>> @gg.ops.defop("cube_example")
... def cube_example(xp, x):
...     "x**3; d/dx = 3 x**2"
...     return x * x * x, (x,)
>>> @cube_example.defvjp
... def _(xp, g, res):
...     (x,) = res
...     return (g * 3.0 * x * x,)
>>> float(cube_example(gg.asarray(2.0)))
8.0
>>> gg.ops.unregister("cube_example")
"""

from __future__ import annotations

import types
from typing import Any, Callable

_ops: dict[str, "Op"] = {}
registry = types.MappingProxyType(_ops)
"""Read-only view of every registered op, by name."""

_dispatch: Callable[..., Any] | None = None


def set_dispatcher(fn: Callable[..., Any]) -> None:
    """Installed once by the tensor module: how calling an op runs it (eager or symbolic)."""
    global _dispatch
    _dispatch = fn


class Op:
    """One differentiable operation. Calling it runs it on Tensors, arrays and scalars."""

    __slots__ = (
        "name",
        "forward",
        "vjp",
        "vjps",
        "fast_forward",
        "fast_vjp",
        "differentiable",
        "variadic",
        "scalar_ok",
        "twice_differentiable",
        "__dict__",
    )

    def __init__(
        self,
        name: str,
        forward: Callable[..., Any],
        *,
        differentiable: bool = True,
        variadic: bool = False,
        scalar_ok: tuple[int, ...] = (),
        twice_differentiable: bool = True,
    ) -> None:
        self.name = name
        self.forward = forward
        self.vjp: Callable[..., Any] | None = None
        self.vjps: tuple[Callable[..., Any] | None, ...] | None = None
        self.fast_forward: dict[str, Callable[..., Any]] = {}
        self.fast_vjp: dict[str, Callable[..., Any]] = {}
        self.differentiable = differentiable
        self.variadic = variadic
        self.scalar_ok = frozenset(scalar_ok)
        self.twice_differentiable = twice_differentiable
        self.__doc__ = forward.__doc__
        self.__wrapped__ = forward

    def defvjp(self, *rules: Callable[..., Any] | None) -> Any:
        """Register the VJP: one rule returning all gradients, or one rule per input.

        Usable as a decorator with a single rule. Returns the (first) rule.
        """
        if not rules:
            raise TypeError(f"{self.name}.defvjp: give at least one rule")
        if len(rules) == 1:
            self.vjp = rules[0]
            self.vjps = None
        else:
            self.vjps = tuple(rules)
            self.vjp = None
        return rules[0]

    def def_fast_path(self, backend: str, *, forward: Any = None, vjp: Any = None) -> None:
        """Register an optional per-backend override, tested against the portable rule."""
        if forward is not None:
            self.fast_forward[backend] = forward
        if vjp is not None:
            self.fast_vjp[backend] = vjp

    def grads(self, xp: Any, g: Any, res: Any, needs: tuple[bool, ...], params: dict) -> Any:
        """Gradients for the inputs flagged in ``needs`` (others may be None)."""
        if self.vjps is not None:
            return [
                rule(xp, g, res, **params) if need and rule is not None else None
                for rule, need in zip(self.vjps, needs)
            ]
        if self.vjp is None:
            raise TypeError(f"op {self.name!r} has no gradient (it is not differentiable)")
        return gradient_tuple(self.vjp(xp, g, res, **params), self.name)

    def __call__(self, *args: Any, **params: Any) -> Any:
        if self.variadic:
            if len(args) != 1:
                raise TypeError(f"{self.name}() takes one sequence of arrays, got {len(args)} args")
            args = tuple(args[0])
        return _dispatch(self, args, params)

    def __reduce__(self) -> tuple:  # by registered name: ops are shared, never copied
        from .serialize import reduce_op

        return reduce_op(self)

    def __copy__(self) -> "Op":
        return self

    def __deepcopy__(self, memo: dict) -> "Op":
        return self

    def __repr__(self) -> str:
        doc = (self.__doc__ or "").strip().splitlines()
        return f"<gpugrad op {self.name}: {doc[0] if doc else ''}>"


def gradient_tuple(out: Any, name: str) -> Any:
    """``out`` if a single VJP rule returned one gradient per input; a TypeError naming the
    op otherwise (a bare array would be spread over the inputs: a silently wrong gradient)."""
    if not isinstance(out, (tuple, list)):
        raise TypeError(
            f"op {name!r}: its VJP rule returned a {type(out).__name__}; a single rule "
            "must return a tuple with one gradient per input, e.g. (g * x,)"
        )
    return out


def defop(
    name: str,
    *,
    differentiable: bool = True,
    variadic: bool = False,
    scalar_ok: tuple[int, ...] = (),
    twice_differentiable: bool = True,
) -> Callable:
    """Decorator: register ``forward(xp, *arrays, **params) -> (out, residuals)`` as op ``name``.

    ``scalar_ok`` lists the argument positions whose rules accept Python scalars as they are;
    elsewhere the engine turns a scalar into a 0-d array of the other inputs' dtype and device.
    ``variadic`` ops take one sequence of arrays (``concat``, ``stack``).
    ``twice_differentiable=False`` says the op's portable VJP rule cannot itself be
    differentiated (it writes in place, or calls something that is not an array-API function);
    ``backward(create_graph=True)`` then raises an error naming the op. Raises ValueError if
    the name is taken. The returned Op is callable like the op itself.
    """

    def register(forward: Callable[..., Any]) -> Op:
        if name in _ops:
            raise ValueError(f"defop: an op named {name!r} is already registered")
        op = Op(
            name, forward, differentiable=differentiable, variadic=variadic,
            scalar_ok=scalar_ok, twice_differentiable=twice_differentiable,
        )
        _ops[name] = op
        return op

    return register


def unregister(name: str) -> None:
    """Remove a user op (mainly for tests and notebooks)."""
    _ops.pop(name)
