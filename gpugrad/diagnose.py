"""Messages that explain why an op refused its inputs: shapes that do not broadcast or
align, a static parameter the op's signature rejects, a dtype promotion that would silently
change precision. Built only after the backend has refused an op, so checking costs nothing
on the fast path. (The exceptions themselves and the call site live in ``gpugrad.errors``.)

>>> from gpugrad.diagnose import shape_problem
>>> print(shape_problem("matmul", [(2, 3), (4,)], {}))
matmul: shapes (2, 3) and (4,) are not aligned: 3 (dim -1 of the first) != 4 (dim 0 of the second)
"""

from __future__ import annotations

from typing import Any, Sequence

from . import backend as B
from .binding import static_problem
from .errors import OpError, OpIndexError, at, call_site, show


def describe(a: Any) -> str:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{show(a.shape)} {B.dtype_name(a.dtype)}"
    return repr(a)


_ORDINAL = ("first", "second", "third", "fourth")

BROADCASTING = frozenset({
    "add", "subtract", "multiply", "divide", "pow", "maximum", "minimum", "where", "logaddexp",
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
})
"""Ops whose inputs broadcast against each other elementwise."""


def _nth(i: int) -> str:
    return _ORDINAL[i] if i < len(_ORDINAL) else f"input {i}"


def _same(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def broadcast_problem(shapes: Sequence[tuple]) -> str | None:
    """Why ``shapes`` do not broadcast together (None dims match anything), or None."""
    ndim = max((len(s) for s in shapes), default=0)
    for k in range(1, ndim + 1):
        seen: tuple[int, int] | None = None
        for i, s in enumerate(shapes):
            d = s[-k] if k <= len(s) else 1
            if d is None or d == 1:
                continue
            if seen is None:
                seen = (i, d)
            elif seen[1] != d:
                j, e = seen
                return (f"{e} (dim -{k} of the {_nth(j)}) != {d} (dim -{k} of the {_nth(i)})")
    return None


def broadcast_shape(shapes: Sequence[tuple]) -> tuple:
    """The broadcast shape of ``shapes`` (which must broadcast)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim, 0, -1):
        dims = [s[-k] for s in shapes if k <= len(s)]
        big = [d for d in dims if d != 1]
        out.append(big[0] if big else 1)
    return tuple(out)


def matmul_problem(a: tuple, b: tuple) -> str | None:
    if not a or not b:
        return "matmul needs operands with at least one dimension"
    if len(b) == 1:
        k_b, where_b = b[0], "dim 0 of the second"
    else:
        k_b, where_b = b[-2], "dim -2 of the second"
    if not _same(a[-1], k_b):
        return f"are not aligned: {a[-1]} (dim -1 of the first) != {k_b} ({where_b})"
    batch = broadcast_problem([a[:-2], b[:-2]])
    if batch is not None:
        return f"have batch dimensions that do not broadcast: {batch}"
    return None


def _join(op: str, shapes: list, axis: Any) -> str | None:
    if not shapes:
        return f"{op} needs at least one array"
    first = shapes[0]
    if op == "concat" and axis is None:  # every array is flattened first: any shapes join
        return None
    for i, s in enumerate(shapes[1:], 1):
        if len(s) != len(first):
            return (f"arrays must have the same number of dimensions, but input 0 has "
                    f"{len(first)} and input {i} has {len(s)}")
    if op == "stack":
        for i, s in enumerate(shapes[1:], 1):
            bad = [k for k, (x, y) in enumerate(zip(first, s)) if not _same(x, y)]
            if bad:
                return (f"arrays must all have the same shape, but input 0 is {show(first)} "
                        f"and input {i} is {show(s)}")
        if not -len(first) - 1 <= axis <= len(first):
            return f"axis {axis} is out of range for a result with {len(first) + 1} dimensions"
        return None
    if axis is None:
        return None
    if not first:
        return "0-d arrays cannot be concatenated (use stack, or concat with axis=None)"
    if not -len(first) <= axis < len(first):
        return f"axis {axis} is out of range for arrays with {len(first)} dimensions"
    ax = axis % len(first)
    for i, s in enumerate(shapes[1:], 1):
        bad = [k for k, (x, y) in enumerate(zip(first, s)) if k != ax and not _same(x, y)]
        if bad:
            k = bad[0]
            return (f"arrays must match except along axis {axis}, but input 0 has "
                    f"{first[k]} and input {i} has {s[k]} in dim {k}")
    return None


def _reshape(shape: tuple, new: Any) -> str | None:
    new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
    if any(d is None for d in shape):
        return None
    n = 1
    for d in shape:
        n *= d
    if list(new).count(-1) > 1:
        return f"cannot reshape {show(shape)} into {show(new)}: only one dimension can be -1"
    known = 1
    for d in new:
        if d != -1:
            known *= d
    if -1 in new:
        if known == 0 or n % known:
            return (f"cannot reshape {show(shape)} ({n} elements) into {show(new)}: "
                    f"{n} is not a multiple of {known}")
        return None
    if known != n:
        return (f"cannot reshape {show(shape)} ({n} elements) into {show(new)} "
                f"({known} elements)")
    return None


def shape_problem(op: str, shapes: list, params: dict) -> str | None:
    """Why ``op`` cannot take inputs of these shapes (None dims match anything), or None.

    The message starts with the op name and both shapes. Only the ops whose shape rules
    gpugrad knows are explained: broadcasting ops, matmul, concat, stack and reshape.
    """
    if op in BROADCASTING:
        why = broadcast_problem(shapes)
        if why is not None:
            listed = " and ".join([", ".join(show(s) for s in shapes[:-1]), show(shapes[-1])])
            return f"{op}: shapes {listed} cannot be broadcast together: {why}"
    elif op == "matmul" and len(shapes) == 2:
        why = matmul_problem(shapes[0], shapes[1])
        if why is not None:
            return f"matmul: shapes {show(shapes[0])} and {show(shapes[1])} {why}"
    elif op in ("concat", "stack"):
        why = _join(op, shapes, params.get("axis", 0))
        if why is not None:
            listed = ", ".join(show(s) for s in shapes)
            return f"{op}: shapes {listed}: {why}"
    elif op in ("max", "min") and len(shapes) == 1:
        shape = shapes[0]
        axis = params.get("axis")
        axes = range(len(shape)) if axis is None else (
            (axis,) if isinstance(axis, int) else axis)
        empty = [a for a in axes if -len(shape) <= a < len(shape) and shape[a] == 0]
        if empty or (axis is None and 0 in shape):
            return (f"{op}: shape {show(shape)} has no elements to take the {op} of along "
                    f"axis {axis}; the {op} of an empty array is undefined")
    elif op == "reshape" and len(shapes) == 1 and "shape" in params:
        why = _reshape(shapes[0], params["shape"])
        if why is not None:
            return f"reshape: {why}"
    return None


def shapes_of(arrays: Sequence[Any]) -> list:
    """Each array's shape; a Python scalar counts as 0-d; None (an absent input) is skipped."""
    return [tuple(a.shape) if hasattr(a, "shape") else () for a in arrays if a is not None]


def op_error(op: str, signature: Any, arrays: Sequence[Any], params: dict, exc: Exception,
             site: str | None = None) -> OpError:
    """The OpError for a backend exception raised by ``op``'s forward rule (``signature``:
    the op's user-facing signature, to blame a static parameter first)."""
    msg = static_problem(op, signature, params) or shape_problem(op, shapes_of(arrays), params)
    if msg is None:
        msg = f"{op}: {exc} (inputs: {', '.join(describe(a) for a in arrays)})"
    kind = OpIndexError if isinstance(exc, IndexError) else OpError
    return kind(at(msg, site or call_site(2)))


def promotion_problem(op: str, arrays: Sequence[Any], out_dtype: Any, xp: Any) -> str | None:
    """Why ``op``'s result dtype silently changed a floating input's precision, or None.

    Python scalars are weak: they never count (they are not in ``arrays`` as arrays).
    """
    typed = [a for a in arrays if hasattr(a, "dtype")]
    if len(typed) < 2:  # one array changing dtype is the op's own business (astype)
        return None
    floats = [a for a in typed if B.is_inexact(xp, a.dtype)]
    # complex64 is float32 precision: float32 meeting complex64 changes no precision
    changed = [a for a in floats if _precision(a.dtype) != _precision(out_dtype)]
    if not changed:
        return None
    names = [B.dtype_name(a.dtype) for a in typed]
    got = B.dtype_name(out_dtype)
    low = changed[0]
    which = "upcast" if _bits(out_dtype) > _bits(low.dtype) else "downcast"
    return (f"{op}: {' and '.join(names)} inputs give a {got} result, so the "
            f"{B.dtype_name(low.dtype)} input {show(low.shape)} would be silently {which} to "
            f"{got}; convert one side explicitly first, e.g. x.astype({got!r}) or "
            f"y.astype({B.dtype_name(low.dtype)!r})")


def _precision(dtype: Any) -> int:
    bits = _bits(dtype)
    return bits // 2 if "complex" in B.dtype_name(dtype) else bits


def _bits(dtype: Any) -> int:
    digits = "".join(c for c in B.dtype_name(dtype) if c.isdigit())
    return int(digits) if digits else 0
