"""How a user's call binds to an op's rule: static parameters checked by name, and an error
that names the parameter when a call does not fit the op's signature.

An op's signature (``inspect.signature(gg.sum)``) is the call users make: the forms the
array-API standard allows plus the positional forms NumPy and PyTorch users type
(``gg.sum(x, 0)``). Its rule takes the static parameters as keywords. The op maps one to the
other once (``gpugrad.ops.signatures``); this module checks the static values on that path.

>>> import gpugrad as gg
>>> x = gg.asarray([[1.0, 2.0], [3.0, 4.0]])
>>> gg.to_numpy(gg.sum(x, 0))
array([4., 6.])
>>> gg.sum(x, x)
Traceback (most recent call last):
...
TypeError: `sum`: `axis` must be an int or a tuple of ints (or None), got a Tensor of shape (2, 2); ...
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

from . import errors as E

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def what(value: Any) -> str:
    """A short description of a value for an error message: ``a Tensor``, ``a str ('a')``."""
    kind = type(value).__name__
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {kind} of shape {E.show(value.shape)}" if value.shape else f"a 0-d {kind}"
    if hasattr(value, "_gpugrad_symbolic") or hasattr(value, "requires_grad"):
        return f"a {kind}"
    if isinstance(value, (list, tuple)):
        odd = [v for v in value if _int(v) is _BAD]
        if odd:
            return f"a {kind} holding {what(odd[0])}"
    text = repr(value)
    return f"a {kind} ({text if len(text) <= 40 else text[:37] + '...'})"


_BAD = object()
"""What a normaliser returns for a value that does not fit."""


def _int(value: Any) -> Any:
    """``value`` as a Python int if it is an integer (not a bool), else _BAD: anything with
    ``__index__`` as NumPy takes it (NumPy integer scalars, 0-d integer arrays and Tensors);
    not a bool, an array with axes, or a graph symbol."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or hasattr(value, "_gpugrad_symbolic"):
        return _BAD
    if hasattr(value, "shape") and (tuple(value.shape) != () or "bool" in str(value.dtype)):
        return _BAD
    try:
        return operator.index(value)
    except TypeError:
        return _BAD


def _ints(value: Any) -> Any:
    if not isinstance(value, (tuple, list)):
        return _BAD
    out = tuple(_int(v) for v in value)
    return _BAD if _BAD in out else out


def _axis(value: Any) -> Any:
    if value is None:
        return None
    single = _int(value)
    return single if single is not _BAD else _ints(value)


def _shape(value: Any) -> Any:
    single = _int(value)
    return (single,) if single is not _BAD else _ints(value)


def _flag(value: Any) -> Any:
    return bool(value) if type(value).__name__ in ("bool", "bool_") else _BAD


def _optional_flag(value: Any) -> Any:
    return None if value is None else _flag(value)


CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "axis": (_axis, "an int or a tuple of ints (or None)"),
    "shape": (_shape, "a tuple of ints"),
    "axes": (_ints, "a tuple of ints (one per axis)"),
    "keepdims": (_flag, "True or False"),
    "include_initial": (_flag, "True or False"),
    "copy": (_optional_flag, "True, False or None"),
}
"""Static parameter name -> (normalise: the value, or _BAD if it does not fit; what fits)."""


def check_params(op: str, params: dict) -> dict:
    """``params`` with each known static value normalised (``[2, 3]`` -> ``(2, 3)``, NumPy
    integers -> int); a TypeError naming ``op`` and the parameter for a value that does not
    fit."""
    out = dict(params)
    for name, value in params.items():
        check = CHECKS.get(name)
        if check is None:
            continue
        normalise, fits = check
        fixed = normalise(value)
        if fixed is _BAD:
            raise TypeError(E.at(f"`{op}`: `{name}` must be {fits}, got {what(value)}"))
        out[name] = fixed
    return out


def check_sequence(op: str, arrays: Any) -> tuple:
    """The arrays of a variadic op (``concat``, ``stack``) as a tuple: a list, a tuple or a
    generator of arrays; a TypeError naming ``op`` for anything else (a single array)."""
    if isinstance(arrays, (list, tuple)):
        return tuple(arrays)
    if hasattr(arrays, "__iter__") and not (
            isinstance(arrays, (str, bytes)) or hasattr(arrays, "shape")
            or hasattr(arrays, "_gpugrad_symbolic")):
        return tuple(arrays)
    raise TypeError(E.at(
        f"`{op}`: `arrays` must be a list or tuple of arrays, got {what(arrays)}; call "
        f"{op}([a, b], axis=0)"))


def rule_signature(forward: Callable, variadic: bool) -> inspect.Signature | None:
    """The user-facing signature a rule implies: its arrays positional-only (one sequence
    ``arrays`` for a variadic op), its static parameters keyword-only, ``xp`` left out; None
    when the rule takes ``*args`` or ``**params`` (no check then)."""
    try:
        params = list(inspect.signature(forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    P = inspect.Parameter
    arrays = [P(p.name, P.POSITIONAL_ONLY) for p in params if p.kind in _POSITIONAL]
    if variadic:
        arrays = [P("arrays", P.POSITIONAL_ONLY)]
    elif any(p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in params):
        return None  # a rule taking *args or **params: calls go to it as they are
    statics = [P(p.name, P.KEYWORD_ONLY, default=p.default) for p in params
               if p.kind is P.KEYWORD_ONLY]
    return inspect.Signature(arrays + statics)


def plain(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without annotations, as users read it: ``(x, /, axis=None, *, ...)``."""
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty)


def static_problem(op: str, known: inspect.Signature | None, params: dict) -> str | None:
    """Why a static parameter of a call to ``op`` (whose signature is ``known``) does not
    fit (an unknown keyword, a value of the wrong kind), or None. Asked after a rule failed,
    so it costs nothing before."""
    if known is not None and any(name not in known.parameters for name in params):
        return misfit(op, known, (), params)
    try:
        check_params(op, params)
    except TypeError as exc:
        return str(exc).rsplit("; called at ", 1)[0]
    return None


def positional_names(signature: inspect.Signature) -> list[str]:
    """The names of the parameters of ``signature`` that can be given by position."""
    return [p.name for p in signature.parameters.values() if p.kind in _POSITIONAL]


def misfit(op: str, signature: inspect.Signature | None, args: tuple, params: dict,
           variadic: bool = False) -> str:
    """Why a call to ``op`` does not fit its signature, naming the parameter at fault."""
    shown = f"{op}{signature}" if signature is not None else op
    if signature is None:
        return f"`{op}`: cannot take these arguments; call {shown}"
    known = signature.parameters
    for name in params:
        if name not in known or known[name].kind is inspect.Parameter.POSITIONAL_ONLY:
            names = ", ".join(p for p in known)
            hint = " (pass it by position)" if name in known else ""
            return (f"`{op}`: no keyword parameter `{name}`{hint}; its parameters are "
                    f"{names}: call {shown}")
    names = positional_names(signature)
    most = len(names)
    if variadic and len(args) > 1 and not isinstance(args[0], (list, tuple)):
        return (f"`{op}`: takes one list of arrays, got {len(args)} separate arguments; call "
                f"{op}([a, b, ...], axis=...)")
    if len(args) > most:
        rest = [p.name for p in known.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        extra = f"; pass {', '.join(rest)} by keyword" if rest else ""
        return (f"`{op}`: takes at most {most} positional argument"
                f"{'s' if most != 1 else ''} ({', '.join(names)}), got {len(args)}{extra}: "
                f"call {shown}")
    given = set(names[:len(args)]) | set(params)
    missing = [p.name for p in known.values()
               if p.default is inspect.Parameter.empty and p.name not in given]
    if missing:
        return f"`{op}`: `{missing[0]}` is missing: call {shown}"
    return f"`{op}`: cannot take these arguments; call {shown}"
