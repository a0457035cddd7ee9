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

import inspect
import types
from typing import Any, Callable

from . import binding, hooks
from . import errors as E

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
        "fast_vjps",
        "differentiable",
        "variadic",
        "scalar_ok",
        "twice_differentiable",
        "nin",
        "nbare",
        "nkw",
        "statics",
        "front_only",
        "front",
        "scalar",
        "lowering",
        "view",
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
        self.fast_vjps: dict[str, tuple[Callable[..., Any], ...]] = {}
        self.differentiable = differentiable
        self.variadic = variadic
        self.scalar_ok = frozenset(scalar_ok)
        self.twice_differentiable = twice_differentiable
        self.__doc__ = forward.__doc__
        self.__wrapped__ = forward
        # the user-facing call: the rule's form until a signature is declared (defsignature)
        self.__signature__ = binding.rule_signature(forward, variadic)
        sig = self.__signature__
        self.nin = -1 if sig is None else len(binding.positional_names(sig))
        self.statics = frozenset(() if sig is None else (
            p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY))
        # keywords only the declared signature knows (sum's dtype): such a call is mapped
        self.front_only: frozenset[str] = frozenset()
        self.nkw = self.nin  # arguments of a call with keywords in the rule's form
        # how many arguments a call without keywords has in the rule's form: none if the rule
        # has a static parameter without a default (reshape's shape)
        self.nbare = -1 if sig is None or any(
            p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in sig.parameters.values()
        ) else self.nin
        self.front: Callable[..., Any] | None = None
        # an elementwise op's scalar formulas: (forward, (vjp of each input, ...)); see
        # defscalar. The planned program's NumPy code (and kernel fusion) derive from them
        self.scalar: tuple[str, tuple[str | None, ...]] | None = None
        # a non-elementwise op's own NumPy lowering for planned programs (see deflower)
        self.lowering: Any = None
        # a view op's write-back rule, or why its result cannot be written through (defview)
        self.view: Callable[..., Any] | str | None = None

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

    def def_fast_path(self, backend: str, *, forward: Any = None, vjp: Any = None,
                      vjps: Any = None) -> None:
        """Register an optional per-backend override, tested against the portable rule.

        ``vjp`` replaces a single VJP rule; ``vjps`` replaces an op's rules given one per
        input (a tuple in the order of :meth:`defvjp`'s), so that the eager sweep still
        computes only the gradients somebody needs.
        """
        if forward is not None:
            self.fast_forward[backend] = forward
        if vjp is not None:
            self.fast_vjp[backend] = vjp
        if vjps is not None:
            if self.vjps is None or len(vjps) != len(self.vjps):
                raise TypeError(
                    f"{self.name}.def_fast_path: vjps needs one rule per input, as the op's "
                    f"own per-input rules (defvjp(rule_0, rule_1, ...)) give")
            self.fast_vjps[backend] = tuple(vjps)

    def defscalar(self, forward: str, *vjps: str | None) -> None:
        """Declare an elementwise op's scalar formulas: ``forward`` in the inputs (named as
        the rule's parameters; the rule's static parameters by their names) and one VJP per
        input in ``g``, the inputs and ``out``, or None for an input without a gradient.

        A formula is a Python expression over scalars: ``+ - * /``, comparisons (1 where
        true, else 0), numbers and the functions ``exp log log1p sqrt tanh abs sign maximum
        minimum erf`` and ``where(cond, a, b)``; a static parameter they do not name is
        taken at the rule's default (at another value the rules run). It states the op's
        arithmetic in the order the op's NumPy rule computes it, so code derived from it (the
        planned program's ``out=`` steps, fused kernels) gives the rule's numbers; the op's
        CuPy kernels are generated from it too (gpugrad.ops.cuda). A formula naming anything
        else is kept, but not derived from: the op then runs its rules there.

        >>> import gpugrad as gg
        >>> gg.ops.registry["tanh"].scalar
        ('tanh(x)', ('g * (1 - out * out)',))
        """
        self.scalar = (forward, tuple(vjps))
        if hooks.scalar_declared is not None:
            hooks.scalar_declared(self)

    def deflower(self, lowering: Any) -> Any:
        """Declare a non-elementwise op's NumPy lowering for planned programs: an object with
        ``forward(ins, info, out, params, ctx)`` returning ``emit(o, dst) -> lines`` (or
        None where it does not apply) and ``backward(pos, g, ins, info, o, out, params,
        ctx)`` returning ``(reads, emit(c, C, T), alias, temps)``, a scalar formula in ``g``
        and the inputs whose value at ``g``'s shape summed down to the input's shape is the
        gradient, or None (see gpugrad.compiler.lower). It may also give ``negated``, the
        forward of minus the op's value (an exact rewrite for a consumer whose formula
        starts by negating its input). Returns ``lowering``."""
        self.lowering = lowering
        return lowering

    def defview(self, write_back: Callable[..., Any] | str) -> Any:
        """Declare that the op's result may be a view of its first input (share its memory),
        and how an in-place write into that view goes back to the input: ``write_back(src,
        value, **params)`` returns the op call ``(op, args, params)`` that gives ``src`` with
        ``self(src, **params)`` replaced by ``value`` (a ``setitem`` for a slice, the inverse
        permutation for a transpose). A str instead says why the result cannot be written
        through (writes into it are refused with that reason). The engine links such a result
        to its base when the arrays do share memory (see gpugrad.views). Returns
        ``write_back``.

        >>> import gpugrad as gg
        >>> x = gg.asarray([[[1.0, 2.0, 3.0]]])
        >>> op, args, params = gg.ops.registry["reshape"].view(x, "new", shape=(3,))
        >>> op.name, args, params
        ('reshape', ('new',), {'shape': (1, 1, 3)})
        >>> op, args, params = gg.ops.registry["permute_dims"].view(x, "new", axes=(2, 0, 1))
        >>> op.name, args, params
        ('permute_dims', ('new',), {'axes': (1, 2, 0)})
        >>> gg.ops.registry["broadcast_to"].view
        'several of its elements are one element of its input'
        """
        self.view = write_back
        return write_back

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

    def defsignature(self, fn: Callable[..., Any] | None = None, *,
                     direct: bool = True) -> Any:
        """Declare the op's user-facing call: ``fn`` has the signature users call (the
        array-API standard's, plus the positional forms NumPy users type) and maps it to the
        rule's form with ``self.run(*arrays, **params)``. A call already in the rule's form
        (the arrays by position, the rule's static parameters by keyword) skips ``fn``
        unless ``direct=False``. Usable as a decorator, with or without arguments; returns
        ``fn``.

        >>> import gpugrad as gg
        >>> @gg.ops.defop("scale_example")
        ... def scale_example(xp, x, *, k=2.0):
        ...     "k x;  d/dx = k"
        ...     return x * k, None
        >>> @scale_example.defvjp
        ... def _(xp, g, res, *, k=2.0):
        ...     return (g * k,)
        >>> @scale_example.defsignature
        ... def _(x, /, k=2.0):
        ...     return scale_example.run(x, k=k)
        >>> float(scale_example(gg.asarray(1.5), 3.0)), str(gg.ops.registry["scale_example"]
        ...                                                .__signature__)
        (4.5, '(x, /, k=2.0)')
        >>> gg.ops.unregister("scale_example")
        """

        def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.front = fn
            self.__signature__ = binding.plain(inspect.signature(fn))
            self.front_only = frozenset(self.__signature__.parameters) - self.statics
            if not direct:
                self.nkw = -1
            return fn

        return declare if fn is None else declare(fn)

    def __call__(self, *args: Any, **params: Any) -> Any:
        # the rule's own form goes straight to the engine; any other form is mapped by the
        # op's signature (a length check, and a key check when there are keywords)
        if params:
            if len(args) != self.nkw or not self.front_only.isdisjoint(params):
                return self._call_front(args, params)
        elif len(args) != self.nbare:
            return self._call_front(args, params)
        if self.variadic:
            seq = args[0]
            if type(seq) is not list and type(seq) is not tuple:
                return self._call_front(args, params)
            args = tuple(seq)
        out = _dispatch(self, args, params)
        if self.view is None:
            return out
        return hooks.view(self, args, params, out)

    def pair(self, a: Any, b: Any) -> Any:
        """``self(a, b)`` without the signature check, for an op whose rule takes exactly two
        arrays (the Python operators: ``a * b`` is ``multiply.pair(a, b)``)."""
        return _dispatch(self, (a, b), {})

    def run(self, *args: Any, **params: Any) -> Any:
        """Run the op on arrays in the rule's form, its static parameters checked by name
        (``[2, 3]`` becomes ``(2, 3)``; a Tensor given as ``axis`` is refused by name)."""
        if self.variadic:
            args = binding.check_sequence(self.name, args[0] if len(args) == 1 else args)
        if params:
            params = binding.check_params(self.name, params)
        out = _dispatch(self, args, params)
        if self.view is None:
            return out
        return hooks.view(self, args, params, out)

    def _call_front(self, args: tuple, params: dict) -> Any:
        front = self.front
        if front is None:
            sig = self.__signature__
            if sig is not None:
                try:
                    sig.bind(*args, **params)
                except TypeError:
                    raise TypeError(E.at(binding.misfit(
                        self.name, sig, args, params, self.variadic))) from None
            return self.run(*args, **params)
        try:
            return front(*args, **params)
        except TypeError as exc:
            if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
                raise  # raised inside the call, not by binding its arguments
            raise TypeError(E.at(binding.misfit(
                self.name, self.__signature__, args, params, self.variadic))) from None

    def __reduce__(self) -> tuple:  # by registered name: ops are shared, never copied
        if _ops.get(self.name) is not self:
            raise TypeError(E.at(f"pickle: op {self.name!r} is not the registered op of that "
                                 "name, so another process could not find it"))
        return (op_named, (self.name,))

    def __copy__(self) -> "Op":
        return self

    def __deepcopy__(self, memo: dict) -> "Op":
        return self

    def __repr__(self) -> str:
        doc = (self.__doc__ or "").strip().splitlines()
        return f"<gpugrad op {self.name}: {doc[0] if doc else ''}>"


def op_named(name: str) -> Op:
    """The registered op called ``name`` (how an Op unpickles)."""
    try:
        return _ops[name]
    except KeyError:
        raise KeyError(f"unpickling a graph: no op named {name!r} is registered here; "
                       "register it (gg.ops.defop) before loading") from None


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
