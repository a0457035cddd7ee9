"""Pass 3b, lower: NumPy code for common ops that writes into planned buffers (``out=``).

Each entry writes the same arithmetic as the op's NumPy rule, in the same order, so it gives
the same numbers (tests/test_compiler_rewrites.py checks every lowering against the portable rules).
An op, or a case of it, without an entry here runs its registered rules as before.

``forward(op, ins, info, params)`` returns ``emit(o, dst)`` (``o``: the output's name, ``dst``:
its ``out=`` expression) or None. ``backward(...)`` returns ``(reads, emit, alias, temps)``
for the gradient of one input, or None. A full float ``sum``'s gradient is its 0-d incoming
gradient, kept 0-d (``alias == "scalar"``): the program passes it to the backward steps in
``SCALAR_G``, which broadcast it in their product, and broadcasts it for any other reader.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np


def const(value: float, dtype: Any) -> str:
    """The literal ``value`` (1.0 or 0.0) for an array of ``dtype``: the name of a NumPy
    scalar of that dtype (in :data:`TYPED`) where it is a real float, else the Python float.
    NumPy converts a Python float to the array's dtype on every call; the scalar is that
    same value, converted once, so the numbers do not change.

    >>> import numpy as np
    >>> const(1.0, np.dtype(np.float32)), const(1.0, np.dtype(np.int64))
    ('ONE_float32', '1.0')
    """
    name = getattr(dtype, "name", "")
    if f"ONE_{name}" not in TYPED:
        return repr(float(value))
    return f"{'ONE' if value == 1.0 else 'ZERO'}_{name}"


TYPED = {f"{word}_{np.dtype(t).name}": t(value) for t in (np.float16, np.float32, np.float64)
         for word, value in (("ONE", 1.0), ("ZERO", 0.0))}
"""The typed constants that :func:`const` names (every planned program's env holds them)."""


def column_sum(g: str, gshape: tuple, dtype: Any, c: str, C: str) -> list:
    """Lines writing ``sum(g, axis=0)`` of a 2-D float32 or float64 ``g`` into ``c``: the
    matrix-vector product ``ones @ g``, one BLAS call, where it applies (the bias gradient
    of a linear layer; 0.7 against 1.9 µs at 32x64, 12 against 25 µs at 256x512 float32,
    on 2026-12-02). The sum is the same up to rounding (BLAS adds in another order); other
    shapes and dtypes use ``add.reduce``. The vector of ones is named by its length and
    dtype (``ONES32_float32``) and made for each program's own env (:func:`vectors_in`), so
    what a program computes never depends on what the process compiled before."""
    if len(gshape) != 2 or getattr(dtype, "char", "") not in ("f", "d"):
        return [f"{c} = np.add.reduce({g}, axis=0, out={C})"]
    return [f"{c} = np.dot(ONES{gshape[0]}_{dtype.name}, {g}, {C})"]


_VECTOR = re.compile(r"\bONES(\d+)_(float32|float64)\b")


def vectors_in(source: str) -> dict:
    """The read-only vectors of ones that a program's ``source`` names, made for its env.

    >>> vectors_in("c = np.dot(ONES3_float64, g, C)")["ONES3_float64"].tolist()
    [1.0, 1.0, 1.0]
    """
    out = {}
    for name, n, dtype in {(m.group(0), *m.groups()) for m in _VECTOR.finditer(source)}:
        ones = np.ones(int(n), dtype)
        ones.flags.writeable = False
        out[name] = ones
    return out


SCALAR = ((), "scalar")
"""The info of a Python scalar operand (weak: it takes the array operand's dtype)."""

BINARY = ("add", "subtract", "multiply")

ELEMENTWISE = ("add", "subtract", "multiply", "negative", "tanh", "relu", "sigmoid")
"""Forward lowerings that may write over an input of the output's shape (each element is
read before it is written): the planner gives the output that input's buffer when the input
is read for the last time there (sigmoid in place on its pre-activation, say)."""

SCALAR_G = ("sigmoid", "tanh", "relu")
"""Backward lowerings that take a 0-d ``g`` standing for its broadcast to the output's shape
(a full sum's gradient): ``g`` is only a factor of a product written into the full-shape
gradient, so NumPy broadcasts it there and no array of ones is made."""


def _same(info: list, dtype: Any, scalars: bool) -> bool:
    return all(i is not None and (i[1] == dtype or (scalars and i is SCALAR)) for i in info) \
        and any(i is not SCALAR for i in info)


def forward(name: str, ins: list, info: list, out: tuple, params: dict) -> Callable | None:
    """``emit(o, dst) -> lines`` computing op ``name`` into ``dst``, or None."""
    shape, dtype = out
    if name == "sum" and _full_sum(info, out, params):
        a = ins[0]  # np.sum's own reduce (pairwise), without its Python layers
        return lambda o, dst: [f"{o} = np.add.reduce({a}, axis=None, out={dst})"] \
            if dst != "None" else [f"{o} = asarray(np.add.reduce({a}, axis=None))"]
    if not _same(info, dtype, name in BINARY) or not shape:
        return None
    a = ins[0]
    if name in ("add", "subtract", "multiply") and len(ins) == 2:
        b = ins[1]
        return lambda o, dst: [f"{o} = np.{name}({a}, {b}, {dst})"]
    if name == "negative":
        return lambda o, dst: [f"{o} = np.negative({a}, {dst})"]
    if name == "tanh":
        return lambda o, dst: [f"{o} = np.tanh({a}, {dst})"]
    if name == "relu":
        zero = const(0.0, dtype)
        return lambda o, dst: [f"{o} = np.maximum({a}, {zero}, out={dst})"]
    if name == "sigmoid":  # as the NumPy fast path; the forward block raises on overflow
        one = const(1.0, dtype)
        return lambda o, dst: [f"{o} = np.negative({a}, {dst})", f"np.exp({o}, {o})",
                             f"np.add({o}, {one}, {o})", f"np.reciprocal({o}, {o})"]
    if name == "matmul" and len(info[0][0]) == 2 and len(info[1][0]) == 2:
        b = ins[1]
        return lambda o, dst: [f"{o} = np.dot({a}, {b}, {dst})"]
    if name == "matmul" and _batched(info):
        b = ins[1]
        return lambda o, dst: [f"{o} = np.matmul({a}, {b}, out={dst})"]
    if name == "linear" and len(info[0][0]) == 2 and len(info[1][0]) == 2 \
            and len(info[2][0]) == 1:
        w, b = ins[1], ins[2]  # bias added in place: no broadcast temporary
        return lambda o, dst: [f"{o} = np.dot({a}, {w}, {dst})",
                               f"np.add({o}, {b}, {o})"]
    return None


def _full_sum(info: list, out: tuple, params: dict) -> bool:
    """A float sum over every axis to a 0-d value of the input's dtype."""
    x = info[0]
    return params.get("axis") is None and not params.get("keepdims") and x is not None \
        and x is not SCALAR and bool(x[0]) and x[1] == out[1] and out[0] == () \
        and getattr(out[1], "kind", "") == "f"


def _batched(info: list) -> bool:
    """Two operands of 3 or more dimensions with the same batch shape (no broadcasting)."""
    a, b = info[0][0], info[1][0]
    return len(a) >= 3 and len(b) == len(a) and a[:-2] == b[:-2]


def _reduce_axes(gshape: tuple, shape: tuple) -> tuple | None:
    """Axes to sum ``g`` over to get ``shape`` in one reduce (leading axes only), () when
    the shapes match, None when one reduce cannot do it."""
    if gshape == shape:
        return ()
    lead = len(gshape) - len(shape)
    if lead > 0 and shape and gshape[lead:] == shape:
        return tuple(range(lead))
    if lead == 0 and shape:
        axes = tuple(i for i, (d, e) in enumerate(zip(shape, gshape)) if d == 1 and e != 1)
        if all(d == e for i, (d, e) in enumerate(zip(shape, gshape)) if i not in axes):
            return axes
    return None


def backward(name: str, pos: int, g: str, ins: list, info: list, o: str,
             out: tuple, params: dict, one: bool = False) -> tuple | None:
    """``(reads, emit(c, C, T), alias, temps)`` for d/d(input ``pos``) given ``g``, or None.
    ``T`` is a list of temp expressions. ``alias`` is True when the gradient is ``g`` itself,
    and ``"scalar"`` when it is the 0-d ``g`` standing for its broadcast (a full sum).
    ``one``: ``g`` is exactly 1, so the last product by it is left out (exact)."""
    gshape, dtype = out
    shape = info[pos][0]
    if name in ("add", "subtract", "negative") or (name == "multiply"):
        axes = _reduce_axes(gshape, shape)
        if axes is None:
            return None
        keep = bool(axes) and len(shape) == len(gshape)
        red = f"axis={axes}, keepdims={keep}"
        neg = (name == "subtract" and pos == 1) or name == "negative"
        if name == "multiply":
            other = ins[1 - pos]
            if not axes:
                return ([g, other], lambda c, C, T: [f"{c} = np.multiply({g}, {other}, {C})"],
                        False, [])
            return ([g, other], lambda c, C, T: [f"np.multiply({g}, {other}, {T[0]})",
                                                 f"{c} = np.add.reduce({T[0]}, {red}, out={C})"],
                    False, [(gshape, dtype)])
        if not axes:
            if neg:
                return [g], lambda c, C, T: [f"{c} = np.negative({g}, {C})"], False, []
            return [g], lambda c, C, T: [f"{c} = {g}"], True, []

        def total(c: str, C: str) -> list:
            if axes == (0,) and len(gshape) == 2 and len(shape) == 1:  # a bias: one BLAS call
                return column_sum(g, gshape, dtype, c, C)
            return [f"{c} = np.add.reduce({g}, {red}, out={C})"]
        if neg:
            return [g], lambda c, C, T: [*total(c, C), f"np.negative({c}, {c})"], False, []
        return [g], lambda c, C, T: total(c, C), False, []
    if name == "tanh":
        times_g = [] if one else [f"np.multiply({g}, {{c}}, {{c}})"]
        unit = const(1.0, dtype)
        return ([g, o], lambda c, C, T: [f"{c} = np.multiply({o}, {o}, {C})",
                                         f"np.subtract({unit}, {c}, {c})",
                                         *[t.format(c=c) for t in times_g]], False, [])
    if name == "relu":  # as the NumPy fast path: g times the 0/1 mask
        x, zero = ins[0], const(0.0, info[0][1])
        return ([g, x], lambda c, C, T: [f"{c} = np.multiply({g}, np.greater({x}, {zero}), {C})"],
                False, [])
    if name == "sigmoid":
        times_g = [] if one else [f"np.multiply({{c}}, {g}, {{c}})"]
        unit = const(1.0, dtype)
        return ([g, o], lambda c, C, T: [f"{c} = np.subtract({unit}, {o}, {C})",
                                         f"np.multiply({c}, {o}, {c})",
                                         *[t.format(c=c) for t in times_g]], False, [])
    if name == "sum":  # g stands for itself broadcast to the input's shape (see SCALAR_G)
        if not _full_sum(info, out, params):
            return None
        return [g], None, "scalar", []
    if name == "matmul" and _batched(info):  # as the rule: g @ b^T and a^T @ g, batched
        a, b = ins[0], ins[1]
        if pos == 0:
            return ([g, b], lambda c, C, T: [
                f"{c} = np.matmul({g}, np.swapaxes({b}, -1, -2), out={C})"], False, [])
        return ([g, a], lambda c, C, T: [
            f"{c} = np.matmul(np.swapaxes({a}, -1, -2), {g}, out={C})"], False, [])
    if name in ("matmul", "linear"):
        a, b = ins[0], ins[1]
        if pos == 0:
            return [g, b], lambda c, C, T: [f"{c} = np.dot({g}, {b}.T, {C})"], False, []
        if pos == 1:
            return [g, a], lambda c, C, T: [f"{c} = np.dot({a}.T, {g}, {C})"], False, []
        if shape != gshape[-1:] or len(gshape) != 2:
            return None
        return [g], lambda c, C, T: column_sum(g, gshape, dtype, c, C), False, []
    return None
