"""Scalar formulas (``Op.defscalar``) parsed once, and written as CUDA C expressions.

One parser for every consumer: the planned program's NumPy ``out=`` chains
(gpugrad.compiler.formula) and the CuPy kernels generated for each op (gpugrad.ops.cuda)
read the same tree. A tree is ``("name", n)``, ``("const", v)`` or ``(ufunc, *operands)``,
with NumPy's ufunc names. This module imports nothing from gpugrad, so every layer may use it.

:func:`cuda` writes a tree as a C expression over a type ``T`` (float or double) with NumPy's
semantics: ``maximum``/``minimum`` propagate NaN and return the second operand on a tie (C's
``fmax`` drops a NaN), ``sign`` is 0 at ±0 and NaN at NaN, a comparison is 1 or 0,
``where(c, a, b)`` is ``a`` where ``c`` is not 0 (NaN counts as true, as NumPy's bool does)
else ``b``, and each number is a constant of type ``T``. Besides NumPy's ufuncs a formula may
call ``erf`` (the error function; NumPy has none: the planned program calls
gpugrad.ops.activations.erf_value) and ``where``. ``isinf(x)`` is 1 or 0 like a comparison;
``logaddexp(a, b)`` is NumPy's (each tier writes out NumPy's own steps).

>>> cuda(parse("g * (out * (1 - out))"))
'(v_g * (v_out * ((T)1.0 - v_out)))'
>>> cuda(parse("maximum(x, 0)"))
'((v_x > (T)0.0 || v_x != v_x) ? v_x : (T)0.0)'
"""

from __future__ import annotations

import ast
import functools
from typing import Callable

UFUNCS = {"exp", "log", "log1p", "sqrt", "tanh", "sign", "maximum", "minimum", "square",
          "reciprocal", "abs", "erf", "where", "logaddexp", "isinf"}
ARITY = {"maximum": 2, "minimum": 2, "where": 3, "logaddexp": 2}
"""How many operands a function of :data:`UFUNCS` takes, where not one."""
BINOPS = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}
COMPARES = {ast.Gt: "greater", ast.GtE: "greater_equal", ast.Lt: "less",
            ast.LtE: "less_equal", ast.Eq: "equal", ast.NotEq: "not_equal"}


@functools.cache
def parse(formula: str) -> tuple | None:
    """``formula`` as a tree: ``("name", n)``, ``("const", v)`` or ``(ufunc, *operands)``;
    None where it uses a function not in :data:`UFUNCS`, or with another number of operands
    (the op's rules run there).

    >>> parse("maximum(x, 0)"), parse("hypot(x, 1)"), parse("where(x > 0, x, 0)")[0]
    (('maximum', ('name', 'x'), ('const', 0.0)), None, 'where')
    """
    try:
        return _node(ast.parse(formula, mode="eval").body)
    except (SyntaxError, _Unsupported):
        return None


class _Unsupported(Exception):
    pass


def _node(e: ast.AST) -> tuple:
    if isinstance(e, ast.Name):
        return ("name", e.id)
    if isinstance(e, ast.Constant) and type(e.value) in (int, float):
        return ("const", float(e.value))
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
        a = _node(e.operand)
        return ("const", -a[1]) if a[0] == "const" else ("negative", a)
    if isinstance(e, ast.BinOp) and type(e.op) in BINOPS:
        return (BINOPS[type(e.op)], _node(e.left), _node(e.right))
    if isinstance(e, ast.Compare) and len(e.ops) == 1 and type(e.ops[0]) in COMPARES:
        return (COMPARES[type(e.ops[0])], _node(e.left), _node(e.comparators[0]))
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in UFUNCS \
            and not e.keywords and len(e.args) == ARITY.get(e.func.id, 1):
        name = "absolute" if e.func.id == "abs" else e.func.id
        return (name, *(_node(a) for a in e.args))
    raise _Unsupported(ast.dump(e))


def leaves(node: tuple) -> set:
    """The names a formula tree reads."""
    if node[0] == "name":
        return {node[1]}
    if node[0] == "const":
        return set()
    return set().union(*(leaves(a) for a in node[1:]))


def is_leaf(node: tuple) -> bool:
    return node[0] in ("name", "const")


def substitute(node: tuple, name: str, value: tuple) -> tuple:
    """``node`` with every leaf ``name`` replaced by the tree ``value``.

    >>> substitute(parse("g * out"), "out", parse("exp(x)"))
    ('multiply', ('name', 'g'), ('exp', ('name', 'x')))
    """
    if node == ("name", name):
        return value
    if is_leaf(node):
        return node
    return (node[0], *(substitute(a, name, value) for a in node[1:]))


BINARY = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}
COMPARE_OPS = {"greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<=",
               "equal": "==", "not_equal": "!="}
"""The operators of the arithmetic and comparison ufuncs, the same in C and in Python."""


def write(node: tuple, spell: dict, leaf: Callable) -> str:
    """``node`` as an expression of a target language: ``leaf(node)`` writes a name or a
    number; ``spell[ufunc]`` is a template over the operands' expressions (``{0}``,
    ``{1}``) or a function of them. KeyError where the language has no spelling.

    >>> write(parse("x * 2 + 1"), {"multiply": "{0}*{1}", "add": "({0}+{1})"},
    ...       lambda n: str(n[1]))
    '(x*2.0+1.0)'
    """
    if is_leaf(node):
        return leaf(node)
    args = [write(a, spell, leaf) for a in node[1:]]
    how = spell[node[0]]
    return how(*args) if callable(how) else how.format(*args)


_C_CALL = {"exp": "exp", "log": "log", "log1p": "log1p", "sqrt": "sqrt", "tanh": "tanh",
           "absolute": "fabs", "erf": "erf"}
CUDA = {**{k: f"({{0}} {op} {{1}})" for k, op in BINARY.items()},
        **{k: f"({{0}} {op} {{1}} ? (T)1.0 : (T)0.0)" for k, op in COMPARE_OPS.items()},
        **{k: f"{fn}({{0}})" for k, fn in _C_CALL.items()},
        "negative": "(-{0})", "square": "({0} * {0})", "reciprocal": "((T)1.0 / {0})",
        # NumPy's maximum and minimum: a NaN wins, a tie gives the second; its sign: +0 at
        # ±0, NaN at NaN
        "maximum": "(({0} > {1} || {0} != {0}) ? {0} : {1})",
        "minimum": "(({0} < {1} || {0} != {0}) ? {0} : {1})",
        "where": "({0} != (T)0.0 ? {1} : {2})",
        "isinf": "(isinf({0}) ? (T)1.0 : (T)0.0)",
        # NumPy's logaddexp: equal operands (two infinities of one sign too) give the
        # operand plus log 2; a NaN difference gives it; else the larger plus log1p(exp(-|d|))
        "logaddexp": "({0} == {1} ? {0} + (T)0.6931471805599453 : (({0} - {1}) != ({0} - {1})"
                     " ? ({0} - {1}) : ({0} > {1} ? {0} : {1}) + log1p(exp(-fabs({0} - {1})))))",
        "sign": "({0} > (T)0.0 ? (T)1.0 : ({0} < (T)0.0 ? (T)(-1.0) : "
                "({0} == (T)0.0 ? (T)0.0 : {0})))"}
"""How :func:`cuda` spells each ufunc, with NumPy's semantics, in C over a type ``T``."""


CTYPES = {"float32": "float", "float64": "double"}
"""The C type of a kernel's ``T``, by NumPy dtype name (every CUDA kernel runs one of these)."""


def c_name(name: str) -> str:
    """The C identifier of a formula's name (prefixed: clear of CuPy's own ``i``, ``_ind``)."""
    return f"v_{name}"


def cuda(node: tuple) -> str:
    """``node`` as a fully parenthesised CUDA C expression of type ``T``; names become
    :func:`c_name`'s identifiers (a static parameter's name too: the caller declares it)."""
    return write(node, CUDA, _c_leaf)


def _c_leaf(node: tuple) -> str:
    if node[0] == "name":
        return c_name(node[1])
    return f"(T){node[1]!r}" if node[1] >= 0 else f"(T)({node[1]!r})"
