"""The shape rule of every built-in op, for graphs built from declared shapes.

A rule maps the input shapes (None for a size known only when the graph runs) and the op's
static parameters to the output shape, or raises ShapeError naming the op and the shapes.
gpugrad.shapes applies them; tests/test_shapes.py checks each against the shape an op case
really computes, and fails for a built-in op without one.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

from .diagnose import broadcast_problem, matmul_problem
from .errors import show
from .ops.indexing import normalize_key


class ShapeError(ValueError):
    """A shape rule's verdict: these input shapes cannot work (the message says why)."""


class Unknown(ShapeError):
    """A rule cannot tell the output shape before the graph runs: it stays unknown."""


RULES: dict[str, Callable[[list, dict], tuple]] = {}


def _rule(*names: str) -> Callable:
    def register(fn: Callable) -> Callable:
        for name in names:
            RULES[name] = lambda shapes, params, fn=fn, name=name: fn(name, shapes, params)
        return fn
    return register


def data_dependent(op: str) -> str:
    """Why an op whose output shape depends on the data cannot be in a graph."""
    return (f"{op}: a boolean mask selects a number of elements that depends on the data, so "
            "it has no shape in a graph (Placeholders, gg.compile); keep the shape with "
            "gg.where(mask, x, 0.0), or index with the mask eagerly on Tensors")


# --- dims ------------------------------------------------------------------------------------

def _listed(shapes: list) -> str:
    return " and ".join([", ".join(show(s) for s in shapes[:-1]), show(shapes[-1])])


def _merge(dims: list) -> int | None:
    """One dim from dims that broadcast together: a known size other than 1 wins over None."""
    known = [d for d in dims if d is not None and d != 1]
    if known:
        return known[0]
    return None if any(d is None for d in dims) else 1


def broadcast(op: str, shapes: list) -> tuple:
    first = shapes[0]
    if all(s == first for s in shapes) and None not in first:  # the common case: no work
        return first
    why = broadcast_problem(shapes)
    if why is not None:
        raise ShapeError(f"{op}: shapes {_listed(shapes)} cannot be broadcast together: {why}")
    ndim = max((len(s) for s in shapes), default=0)
    return tuple(_merge([s[-k] for s in shapes if k <= len(s)]) for k in range(ndim, 0, -1))


def _axis(op: str, axis: Any, shape: tuple, ndim: int | None = None, what: str = "axis") -> int:
    ndim = len(shape) if ndim is None else ndim
    try:
        ax = operator.index(axis)
    except TypeError:
        raise ShapeError(f"{op}: {what} must be an int, got {axis!r}") from None
    if not -ndim <= ax < ndim:
        raise ShapeError(f"{op}: {what} {axis} is out of range for shape {show(shape)} "
                         f"({ndim} dims)")
    return ax % ndim


def _axes(op: str, axis: Any, shape: tuple) -> list:
    if axis is None:
        return list(range(len(shape)))
    axes = [_axis(op, a, shape) for a in (axis if isinstance(axis, (tuple, list)) else (axis,))]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: axis {axis} names an axis twice (shape {show(shape)})")
    return axes


# --- rules -----------------------------------------------------------------------------------

@_rule("negative", "exp", "log", "log1p", "sqrt", "square", "abs", "tanh", "sigmoid", "relu",
       "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
       "expm1", "clip", "astype", "conj", "real", "imag")
def _same(op: str, shapes: list, params: dict) -> tuple:
    return shapes[0]


@_rule("add", "subtract", "multiply", "divide", "pow", "maximum", "minimum", "where",
       "logaddexp", "atan2", "equal", "not_equal", "less", "less_equal", "greater",
       "greater_equal")
def _elementwise(op: str, shapes: list, params: dict) -> tuple:
    return broadcast(op, shapes)


@_rule("sum", "mean", "max", "min", "logsumexp")
def _reduce(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    axes = _axes(op, params.get("axis"), shape)
    keep = params.get("keepdims", False)
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes)


@_rule("softmax", "log_softmax")
def _along(op: str, shapes: list, params: dict) -> tuple:
    _axes(op, params.get("axis", -1), shapes[0])
    return shapes[0]


@_rule("softmax_cross_entropy")
def _softmax_cross_entropy(op: str, shapes: list, params: dict) -> tuple:
    logits, targets = shapes
    ax = _axes(op, params.get("axis", -1), logits)[0]
    out = logits[:ax] + logits[ax + 1:]
    if len(targets) != len(out) or any(
            a is not None and b is not None and a != b for a, b in zip(out, targets)):
        raise ShapeError(f"{op}: logits {show(logits)} need targets of shape {show(out)} "
                         f"(one class per row along axis {ax}), got {show(targets)}")
    return tuple(a if a is not None else b for a, b in zip(out, targets))


@_rule("cumulative_sum")
def _cumulative_sum(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    axis = params.get("axis")
    if axis is None:
        if len(shape) != 1:
            raise ShapeError(f"cumulative_sum: axis is required for shape {show(shape)} (only "
                             "1-d arrays may omit it)")
        axis = 0
    ax = _axis(op, axis, shape)
    grow = 1 if params.get("include_initial", False) else 0
    return tuple(d if i != ax or d is None else d + grow for i, d in enumerate(shape))


def _matmul(a: tuple, b: tuple) -> tuple:
    left = (1,) + a if len(a) == 1 else a
    right = b + (1,) if len(b) == 1 else b
    out = broadcast("matmul", [left[:-2], right[:-2]]) + (left[-2], right[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@_rule("matmul")
def _matmul_rule(op: str, shapes: list, params: dict) -> tuple:
    return _matmul(*shapes)


@_rule("linear")
def _linear(op: str, shapes: list, params: dict) -> tuple:
    x, weight, bias = shapes
    why = matmul_problem(x, weight)
    if why is not None:
        raise ShapeError(f"linear: x {show(x)} and weight {show(weight)} {why}")
    y = _matmul(x, weight)
    if broadcast_problem([y, bias]) is not None:
        raise ShapeError(f"linear: bias {show(bias)} cannot be broadcast against x @ weight "
                         f"{show(y)} (x {show(x)}, weight {show(weight)}): "
                         f"{broadcast_problem([y, bias])}")
    return broadcast(op, [y, bias])


@_rule("matrix_transpose")
def _matrix_transpose(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    if len(shape) < 2:
        raise ShapeError(f"matrix_transpose: shape {show(shape)} has fewer than 2 dims")
    return shape[:-2] + (shape[-1], shape[-2])


@_rule("permute_dims")
def _permute_dims(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    axes = tuple(params["axes"])
    norm = [_axis(op, a, shape, what="axes entry") for a in axes] if len(axes) == len(
        shape) else None
    if norm is None or sorted(norm) != list(range(len(shape))):
        raise ShapeError(f"permute_dims: axes {axes} are not a permutation of the "
                         f"{len(shape)} dims of shape {show(shape)}")
    return tuple(shape[a] for a in norm)


def _given_shape(op: str, params: dict, what: str, instead: str) -> tuple:
    """The ``shape`` parameter as a tuple; None in it (a size known only at run time) is
    refused, because the op's output shape must not depend on the data."""
    given = params["shape"]
    given = tuple(given) if isinstance(given, (tuple, list)) else (given,)
    if any(d is None for d in given):
        raise ShapeError(f"{op}: {what} {show(given)} holds None; {instead}")
    return given


@_rule("reshape")
def _reshape(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    new = _given_shape("reshape", params, "the new shape",
                       "use -1 for the one dim that follows from the others")
    if any(d is None for d in shape):  # static dims are checked by diagnose.shape_problem
        known = math.prod(1 if d is None else d for d in shape)
        if new.count(-1) > 1:
            raise ShapeError(f"reshape: cannot reshape {show(shape)} into {show(new)}: only "
                             "one dimension can be -1")
        if -1 not in new:
            total = math.prod(new)
            if known and total % known:
                raise ShapeError(f"reshape: cannot reshape {show(shape)} into {show(new)}: "
                                 f"{total} elements is not a multiple of {known}")
        return tuple(None if d == -1 else d for d in new)
    rest = math.prod(1 if d == -1 else d for d in new)
    return tuple(math.prod(shape) // rest if d == -1 else d for d in new)


@_rule("expand_dims")
def _expand_dims(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    axis = params.get("axis", 0)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = len(shape) + len(axes)
    where = sorted(_axis(op, a, shape, ndim) for a in axes)
    if len(set(where)) != len(where):
        raise ShapeError(f"expand_dims: axis {axis} names an axis twice (shape {show(shape)})")
    dims = iter(shape)
    return tuple(1 if i in where else next(dims) for i in range(ndim))


@_rule("squeeze")
def _squeeze(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    axes = _axes(op, params["axis"], shape)
    for a in axes:
        if shape[a] not in (1, None):
            raise ShapeError(f"squeeze: axis {a} of shape {show(shape)} has size {shape[a]}, "
                             "not 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


@_rule("broadcast_to")
def _broadcast_to(op: str, shapes: list, params: dict) -> tuple:
    (shape,) = shapes
    target = _given_shape("broadcast_to", params, "the target shape", "give every size")
    ok = len(shape) <= len(target) and all(
        d in (None, 1, t) for d, t in zip(shape[::-1], target[::-1]))
    if not ok:
        raise ShapeError(f"broadcast_to: shape {show(shape)} cannot be broadcast to "
                         f"{show(target)}")
    return target


@_rule("concat")
def _concat(op: str, shapes: list, params: dict) -> tuple:  # errors: diagnose.shape_problem
    axis = params.get("axis", 0)
    if axis is None:
        sizes = [_numel(s) for s in shapes]
        return (None if None in sizes else sum(sizes),)
    ax = axis % len(shapes[0])
    along = [s[ax] for s in shapes]
    merged = [_merge([s[i] for s in shapes]) for i in range(len(shapes[0]))]
    merged[ax] = None if None in along else sum(along)
    return tuple(merged)


@_rule("stack")
def _stack(op: str, shapes: list, params: dict) -> tuple:  # errors: diagnose.shape_problem
    merged = [_merge([s[i] for s in shapes]) for i in range(len(shapes[0]))]
    ax = params.get("axis", 0) % (len(merged) + 1)
    return tuple(merged[:ax] + [len(shapes)] + merged[ax:])


def _numel(shape: tuple) -> int | None:
    n = 1
    for d in shape:
        if d is None:
            return None
        n *= d
    return n


@_rule("take")
def _take(op: str, shapes: list, params: dict) -> tuple:
    shape, idx = shapes
    axis = params.get("axis")
    if axis is None:
        return idx
    if not shape:
        raise ShapeError(f"take: a 0-d array (shape {show(shape)}) needs axis=None")
    ax = _axis(op, axis, shape)
    return shape[:ax] + idx + shape[ax + 1:]


@_rule("take_along_axis")
def _take_along_axis(op: str, shapes: list, params: dict) -> tuple:
    shape, idx = shapes
    if len(shape) != len(idx):
        raise ShapeError(f"take_along_axis: shapes {show(shape)} and {show(idx)}: the indices "
                         "need as many dims as the array")
    ax = _axis(op, params.get("axis", -1), shape)
    others = [(d, e) for i, (d, e) in enumerate(zip(shape, idx)) if i != ax]
    why = broadcast_problem([tuple(d for d, _ in others), tuple(e for _, e in others)])
    if why is not None:
        raise ShapeError(f"take_along_axis: shapes {show(shape)} and {show(idx)} do not "
                         f"broadcast outside axis {ax}: {why}")
    return tuple(idx[i] if i == ax else _merge([d, e])
                 for i, (d, e) in enumerate(zip(shape, idx)))


def indexed(op: str, shape: tuple, key: Any) -> tuple:
    """The shape of ``x[key]`` for a basic key, where x has ``shape``."""
    try:
        key = normalize_key(key, len(shape))
    except (TypeError, IndexError) as exc:
        raise ShapeError(f"{op}: shape {show(shape)}: {exc}") from None
    out, dims = [], iter(shape)
    for k in key:
        if k is None:
            out.append(1)
            continue
        n = next(dims)
        if isinstance(k, slice):
            out.append(None if n is None else len(range(*k.indices(n))))
        elif n is not None and not -n <= k < n:
            raise ShapeError(f"{op}: index {k} is out of range for a dim of size {n} (shape "
                             f"{show(shape)}, key {key!r})")
    return tuple(out)


@_rule("getitem")
def _getitem(op: str, shapes: list, params: dict) -> tuple:
    return indexed(op, shapes[0], params["key"])


@_rule("setitem")
def _setitem(op: str, shapes: list, params: dict) -> tuple:
    shape, value = shapes
    picked = indexed(op, shape, params["key"])
    _value_fits(op, value, picked, f"x[key] of shape {show(picked)} (x {show(shape)})")
    return shape


def _value_fits(op: str, value: tuple, target: tuple, what: str) -> None:
    extra = len(value) - len(target)  # leading 1s are dropped, as NumPy does
    fits = (extra <= 0 or all(d in (1, None) for d in value[:extra])) and all(
        d in (None, 1, t) or t is None for d, t in zip(value[::-1], target[::-1]))
    if not fits:
        raise ShapeError(f"{op}: value of shape {show(value)} cannot be broadcast to {what}")


@_rule("getitem_mask")
def _getitem_mask(op: str, shapes: list, params: dict) -> tuple:
    raise ShapeError(data_dependent(op))


@_rule("setitem_mask")
def _setitem_mask(op: str, shapes: list, params: dict) -> tuple:
    shape, value, mask = shapes
    if len(mask) > len(shape) or any(
            m is not None and d is not None and m != d for m, d in zip(mask, shape)):
        raise ShapeError(f"{op}: mask of shape {show(mask)} does not match the leading dims of "
                         f"x {show(shape)}")
    return shape
