"""Static shapes of graph nodes: each op's output shape (and dtype) from its inputs', at build.

A Placeholder declares its shape, with None for a size fed later (``(None, 3)``: any batch of 3
features). Each built-in op has a shape rule (gpugrad.shape_rules), applied here, so every
Symbol built from declared shapes knows its own; a dim that depends on a None stays None. A
shape that cannot work raises :class:`gpugrad.OpError` at the line that builds the graph,
naming the op and the shapes. A None dim that must equal a known size (``None`` broadcast
against 5) takes that size; the fed value is checked when the graph runs, as before.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Placeholder((None, 3), "float64", name="x")
>>> W = gg.Variable(np.ones((3, 2)), name="W")
>>> (x @ W).shape, gg.sum(x, axis=0).shape, (x + np.ones(3)).T.shape
((None, 2), (3,), (3, None))

A user op has no shape rule until it declares one (its Symbols' shapes are then unknown until
they run); :func:`defshape` declares one, and :func:`evaluated` is a generic rule that runs
the op's forward on zero-strided inputs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from . import errors as E
from . import diagnose as D
from . import backend as B
from .shape_rules import RULES, ShapeError, Unknown, broadcast, data_dependent  # noqa: F401

DTYPES: dict[str, Callable[[list, dict], Any]] = {}
"""Each built-in op's dtype rule: ``(facts, params) -> dtype name or None``."""


def defshape(op: Any, rule: Callable[..., tuple] | None = None) -> Any:
    """Declare the shape rule of a user op: ``rule(shapes, params) -> output shape``.

    ``shapes`` holds each input's shape (a Python scalar counts as ``()``; None dims are
    sizes only known when the graph runs); raise :class:`ShapeError` for shapes that
    cannot work. Usable as a decorator. Returns the rule.

    >>> import gpugrad as gg
    >>> @gg.ops.defop("double_example")
    ... def double_example(xp, x):
    ...     "2x; d/dx = 2"
    ...     return 2.0 * x, None
    >>> _ = gg.shapes.defshape(double_example, lambda shapes, params: shapes[0])
    >>> double_example(gg.Placeholder((None, 4))).shape
    (None, 4)
    >>> gg.ops.unregister("double_example")
    """
    if rule is None:
        return lambda fn: defshape(op, fn)
    op.shape_rule = rule
    return rule


def rule_of(op: Any) -> Callable[..., tuple] | None:
    """The op's shape rule: gpugrad's own for a built-in op, else one from :func:`defshape`."""
    own = op.__dict__.get("shape_rule")
    if own is not None:
        return own
    if op.forward.__module__.startswith("gpugrad.ops"):
        # an elementwise op declared by its scalar formulas broadcasts its inputs
        return RULES.get(op.name) or (functools.partial(_broadcast_rule, op.name)
                                      if op.scalar is not None else None)
    return None


def _broadcast_rule(name: str, shapes: list, params: dict) -> tuple:
    return broadcast(name, shapes)


_CHECKED_BY_RULE = frozenset(D.BROADCASTING)  # their rule explains a mismatch itself


def infer(op: Any, facts: Sequence[tuple], params: dict) -> tuple:
    """``(shape, dtype name)`` of ``op`` applied to inputs with these ``(shape, dtype, weak)``
    facts (shape None: unknown; weak: a Python scalar). Either may come back None (unknown).
    Raises OpError, at the caller's line outside gpugrad, for shapes that cannot work."""
    shapes = [f[0] for f in facts]
    dtype = _dtype(op, facts, params)
    rule = rule_of(op)
    if rule is None or any(s is None for s in shapes):
        return None, dtype
    try:
        why = None if op.name in _CHECKED_BY_RULE else D.shape_problem(op.name, shapes, params)
        if why is None:
            return tuple(rule(shapes, params)), dtype
    except Unknown:
        return None, dtype
    except ShapeError as exc:
        why = str(exc)
    except (TypeError, ValueError, KeyError, IndexError):  # arguments the op will refuse
        return None, dtype  # when it runs, with the backend's own words
    raise E.OpError(E.at(why))


def dtype_rule_of(op: Any) -> Callable[..., Any] | None:
    """A built-in op's dtype rule: its own in :data:`DTYPES`, else, for an elementwise op
    declared by scalar formulas (erf, gelu, ...), the floating type of its inputs."""
    if not op.forward.__module__.startswith("gpugrad.ops"):
        return None
    own = op.__dict__.get("dtype_rule")  # declared with the op (gpugrad.ops.fft)
    if own is not None:
        return own
    return DTYPES.get(op.name) or (_floating if op.scalar is not None else None)


def _dtype(op: Any, facts: Sequence[tuple], params: dict) -> str | None:
    how = dtype_rule_of(op)
    if how is None:
        return None
    try:
        return how(facts, params)
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def evaluated(forward: Callable[..., Any], *, sizes: tuple[int, int] = (2, 3)) -> Callable:
    """A generic shape rule for a user op: run ``forward`` on NumPy zeros of the input shapes
    (zero-strided: no memory per element), once with every None dim set to ``sizes[0]`` and
    once to ``sizes[1]``; an output dim that differs between the two runs is None.

    Exact for ops whose every output dim is either fixed or changes with the None sizes
    (elementwise ops, matmul, reductions, reshapes). Not for a slice of a None dim, whose
    length can agree at two sizes and differ at others: gpugrad's own ops have rules of
    their own. It really runs the forward, at the declared static sizes, so it is as cheap
    as one run of the op. Inputs whose None dims must equal a known size (a None broadcast
    against 5) fail to run; the shape is then unknown.

    >>> import gpugrad as gg
    >>> @gg.ops.defop("outer_example")
    ... def outer_example(xp, a, b):
    ...     "a[:, None] * b[None, :]"
    ...     return a[:, None] * b[None, :], (a, b)
    >>> _ = gg.shapes.defshape(outer_example, gg.shapes.evaluated(outer_example.forward))
    >>> outer_example(gg.Placeholder((None,)), gg.Placeholder((4,))).shape
    (None, 4)
    >>> gg.ops.unregister("outer_example")
    """
    def run(shapes: list, params: dict, n: int) -> tuple | None:
        arrays = [np.broadcast_to(np.zeros((), np.float64), tuple(n if d is None else d
                                                                  for d in s)) for s in shapes]
        with np.errstate(all="ignore"):
            out = forward(np, *arrays, **params)[0]
        return tuple(np.shape(out))

    def rule(shapes: list, params: dict) -> tuple:
        try:
            a, b = (run(shapes, params, n) for n in sizes)
        except Exception as exc:  # noqa: BLE001 - any failure means "not known statically"
            raise Unknown from exc
        if len(a) != len(b):
            raise Unknown
        return tuple(x if x == y else None for x, y in zip(a, b))

    return rule


# --- dtypes: a dtype name, or None where it is not known before the graph runs ------------

_WEAK = {bool: False, int: 0, float: 0.0, complex: 0j}  # NumPy 2 promotes these weakly


@functools.lru_cache(maxsize=512)
def _result_type(key: tuple) -> str:
    return str(np.result_type(*(_WEAK[k] if isinstance(k, type) else np.dtype(k)
                                for k in key)))


def _promote(facts: list, params: dict, skip: int = 0) -> str | None:
    key = []
    for _, dtype, weak in facts[skip:]:
        if dtype is None:
            return None
        key.append(type(dtype) if weak else dtype)
    return _result_type(tuple(key))


def _floating(facts: list, params: dict) -> str | None:
    out = _promote(facts, params)
    return out if out is not None and out.startswith(("float", "complex")) else None


def _first(facts: list, params: dict) -> str | None:
    return facts[0][1]


for _name in ("negative", "abs", "square", "relu", "clip", "max", "min", "take",
              "take_along_axis", "getitem", "setitem", "getitem_mask", "setitem_mask",
              "reshape", "expand_dims", "squeeze", "broadcast_to", "permute_dims",
              "matrix_transpose"):
    DTYPES[_name] = _first
for _name in ("add", "subtract", "multiply", "maximum", "minimum", "matmul", "linear", "concat",
              "stack", "pow"):
    DTYPES[_name] = _promote
for _name in ("divide", "exp", "log", "log1p", "sqrt", "tanh", "sigmoid", "sin", "cos", "tan",
              "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh",
              "expm1", "logaddexp", "sum", "mean", "cumulative_sum", "logsumexp", "softmax",
              "log_softmax"):
    DTYPES[_name] = _floating
for _name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
    DTYPES[_name] = lambda facts, params: "bool"
DTYPES["where"] = lambda facts, params: _promote(facts, params, skip=1)
DTYPES["softmax_cross_entropy"] = _first
for _name in ("linalg_inv", "linalg_det", "linalg_slogdet", "linalg_cholesky", "linalg_eigh",
              "linalg_svd", "linalg_qr"):
    DTYPES[_name] = _first
DTYPES["linalg_solve"] = _promote
DTYPES["conj"] = _first
_REAL_PART = {"complex64": "float32", "complex128": "float64"}
DTYPES["real"] = DTYPES["imag"] = lambda facts, params: (
    None if facts[0][1] is None else _REAL_PART.get(facts[0][1], facts[0][1]))
DTYPES["astype"] = lambda facts, params: B.dtype_name(params["dtype"])
