"""Scalar formulas (``Op.defscalar``) as NumPy code that writes into planned buffers.

A formula such as ``g * ((1 - out) * out)`` is parsed once into a tree of NumPy ufuncs
(:func:`parse`) and written as a chain of ``out=`` calls (:func:`emit`): the first operation
writes into the destination and the next ones update it in place, an operand that is
itself a computation gets a scratch buffer, and a comparison is inlined (its 0/1 mask
multiplies). Numbers become scalars of the array's dtype (:func:`const`), made once per
program (:func:`constants_in`), so the arithmetic is the formula's, in its order. ``erf``
has no ufunc: it is :data:`CALLS`' function, the op rule's own arithmetic; ``where(c, a,
b)`` writes ``b`` and copies ``a`` over it where ``c`` holds.

>>> lines = emit(parse("g * ((1 - out) * out)"), {"g": "g1", "out": "o2"}, None, {},
...              "c", "C", [])
>>> print("\\n".join(lines))
c = np.subtract(1.0, o2, C)
np.multiply(c, o2, c)
np.multiply(g1, c, c)
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

from ..ops.activations import erf_value
from ..scalar_formula import (  # noqa: F401  (one parser: re-exported here)
    BINOPS, COMPARES, UFUNCS, is_leaf, leaves, parse)

MASKS = set(COMPARES.values()) | {"isinf"}
G = ("name", "g")

TYPED = {f"{word}_{np.dtype(t).name}": t(value) for t in (np.float16, np.float32, np.float64)
         for word, value in (("ONE", 1.0), ("ZERO", 0.0))}
"""The typed constants 1 and 0 that :func:`const` names (every planned program's env holds
them)."""


def const(value: float, dtype: Any) -> str:
    """The literal ``value`` for an array of ``dtype``: the name of a NumPy scalar of that
    dtype where it is a real float (NumPy would convert a Python float to the array's dtype
    on every call; the scalar is that same value, converted once), else the Python float.

    >>> import numpy as np
    >>> const(1.0, np.dtype(np.float32)), const(1.0, np.dtype(np.int64))
    ('ONE_float32', '1.0')
    >>> const(0.5, np.dtype(np.float64))
    'K_float64_3fe0000000000000'
    """
    name = getattr(dtype, "name", "")
    if f"ONE_{name}" not in TYPED:
        return repr(float(value))
    if value == 1.0:
        return f"ONE_{name}"
    if value == 0.0 and not str(value).startswith("-"):
        return f"ZERO_{name}"
    return f"K_{name}_{struct.pack('>d', float(value)).hex()}"


def _erf_into(x: Any, out: Any) -> Any:
    """``out[...] = erf(x)`` by the erf op's rule (gpugrad.ops.activations.erf_value); a
    new array where ``out`` is None (a program's unplanned buffer)."""
    value = erf_value(np, np.asarray(x))
    if out is None:
        return value
    np.copyto(out, value)
    return out


def _logaddexp_into(a: Any, b: Any, out: Any) -> Any:
    """NumPy's ``logaddexp(a, b, out)``, quiet where an input is NaN, as the op's rule is
    (NumPy calls that result invalid; other ufuncs pass NaN on quietly)."""
    with np.errstate(invalid="ignore"):
        return np.logaddexp(a, b, out=out)


CALLS = {"erf": "ERF_INTO", "logaddexp": "LOGADDEXP_INTO"}
"""The functions of a formula that NumPy has no ufunc for: the name a program calls as
``NAME(x, out)``, its value made by :func:`constants_in` (``ERF_INTO``: erf by the op's
rule, so that a program computes the eager op's numbers)."""
FUNCTIONS = {"ERF_INTO": _erf_into, "LOGADDEXP_INTO": _logaddexp_into}

_CONST = re.compile(r"\bK_(float16|float32|float64)_([0-9a-f]{16})\b")


def constants_in(source: str) -> dict:
    """The typed scalars (:func:`const`) that a program's ``source`` names, and the
    functions of :data:`CALLS` it calls, for its env.

    >>> constants_in("np.multiply(x, K_float32_3fe0000000000000, o)")
    {'K_float32_3fe0000000000000': np.float32(0.5)}
    """
    env = {m.group(0): np.dtype(m.group(1)).type(
        struct.unpack(">d", bytes.fromhex(m.group(2)))[0]) for m in _CONST.finditer(source)}
    env.update({k: f for k, f in FUNCTIONS.items() if re.search(rf"\b{k}\(", source)})
    return env


def emit(node: tuple, names: dict, dtype: Any, params: dict, c: str, C: str, temps: list,
         *, skip_g: bool = False, negated: str | None = None) -> list:
    """Lines computing ``node`` into ``c`` (its first write is ``c = np.f(..., C)``).
    ``names`` maps the formula's names to expressions, ``params`` gives the numbers of the
    others; ``temps``: scratch buffers, as many as :func:`count_temps` says. ``skip_g``: the
    gradient ``g`` is exactly 1, so a product by it is left out. ``negated``: the input of
    that name holds minus its value, so the formula's ``-name`` reads it as it is."""
    e = _Emitter(names, dtype, params, c, C, list(temps), skip_g, negated)
    e.value(node, c)
    return e.lines


def count_temps(node: tuple, names: dict, dtype: Any, params: dict, **kw: Any) -> int:
    """How many scratch buffers :func:`emit` needs for ``node``."""
    spare = [f"T{j}_" for j in range(32)]
    lines = emit(node, names, dtype, params, "c", "C", spare, **kw)
    return sum(any(re.search(rf"\b{t}\b", line) for line in lines) for t in spare)


class _Emitter:
    def __init__(self, names, dtype, params, c, C, temps, skip_g, negated):
        self.names, self.dtype, self.params = names, dtype, params
        self.c, self.C, self.temps = c, C, temps
        self.skip_g, self.negated = skip_g, negated
        self.lines: list = []
        self.first = True

    def leaf(self, n: tuple) -> str:
        if n[0] == "const":
            return const(n[1], self.dtype)
        if n[1] in self.names:
            return self.names[n[1]]
        value = self.params[n[1]]  # a static parameter: a number (KeyError: not lowered)
        if type(value) not in (int, float):
            raise KeyError(n[1])
        return const(float(value), self.dtype)

    def value(self, n: tuple, dest: str | None) -> str:
        if is_leaf(n):
            return self.leaf(n)
        if self.negated is not None and n == ("negative", ("name", self.negated)):
            return self.names[self.negated]
        fn, args = n[0], n[1:]
        if fn in MASKS:  # inline: the 0/1 mask NumPy makes, converted where it is used
            if not all(is_leaf(a) for a in args):
                raise KeyError(fn)
            return f"np.{fn}({', '.join(self.leaf(a) for a in args)})"
        if fn == "where":
            return self.where(*args, dest)
        if self.skip_g and fn == "multiply" and G in args:
            other = args[1] if args[0] == G else args[0]
            if not is_leaf(other) and other[0] not in MASKS:
                return self.value(other, dest)
        vals, mine = [], False
        for a in args:
            if is_leaf(a) or a[0] in MASKS:
                vals.append(self.value(a, None))
            elif not mine:
                vals.append(self.value(a, dest))
                mine = True
            else:
                vals.append(self.value(a, self.temps.pop(0)))
        # (NumPy deprecates a positional output for maximum and minimum)
        call = f"{CALLS[fn]}(" if fn in CALLS else f"np.{fn}("
        return self.put(call + f"{', '.join(vals)}, " + (
            "out=" if fn in ("maximum", "minimum") else ""), dest)

    def put(self, call: str, dest: str) -> str:
        """The line ``call`` + its output ``dest`` (the first write makes ``c``)."""
        if dest == self.c and self.first:
            self.first = False
            self.lines.append(f"{dest} = {call}{self.C})")
        else:
            self.lines.append(f"{call}{dest})")
        return dest

    def where(self, cond: tuple, a: tuple, b: tuple, dest: str) -> str:
        """``b`` into ``dest`` (a copy of a name or number), then ``a`` copied over it where
        ``cond`` holds (a comparison whose operands may be computations)."""
        if is_leaf(b):
            self.put(f"np.positive({self.leaf(b)}, ", dest)
        else:
            self.value(b, dest)
        got = self.leaf(a) if is_leaf(a) else self.value(a, self.temps.pop(0))
        if cond[0] not in MASKS:
            cond = ("not_equal", cond, ("const", 0.0))
        ops = [self.leaf(x) if is_leaf(x) else self.value(x, self.temps.pop(0))
               for x in cond[1:]]
        self.lines.append(f"np.copyto({dest}, {got}, where=np.{cond[0]}({', '.join(ops)}))")
        return dest
