"""Views: Tensors that share memory with a base Tensor, with PyTorch's semantics under autograd.

Basic slicing (``t[1:3]``, ``t[0, ...]``), ``.T``/``.mT``/``permute_dims``, ``reshape`` where the
backend gives a view, ``expand_dims`` and ``squeeze`` return a view: a Tensor whose array
shares memory with its base's, which remembers its base (the root one: a view of a view
points at the first base) and the ops that made it from that base. A view shares its base's
version counter.

In-place writes then behave as in PyTorch, with or without history (see gpugrad.inplace):

- without history (a constant, or a Variable under ``no_grad``), the write goes into the
  shared memory, so the base and all its views see it, as in NumPy;
- with history (or writing a value that requires gradients), a write into a view is recorded
  as a copy into a slice of the base, as torch's CopySlices: the base gets the new history
  ``base = base_old with view replaced by new_view`` (``setitem``, or the view's inverse for
  ``reshape``/transposes), and every live view of that base is recomputed from the new base,
  so each sees the write and its history goes through the copy;
- a write into the base itself (out of place under autograd) is seen by its views the same
  way.

Which ops make views, and how a write goes back through each, is part of the op's own
declaration (``op.defview`` in its family's file); this module is the mechanism that honours
it (the registry hands it each such op's result through ``hooks.view``).

Results that share memory but cannot be written through exactly (``real``/``imag`` of a
complex Tensor, ``broadcast_to``, and any view of those) refuse in-place writes with an error
that says what to do. In a graph (a Placeholder graph, or a ``gg.compile`` trace) values are
never written in place: ``s += u`` builds ``s + u``, and is refused where ``s`` is a view or a
view was taken of it, since eager code would have written through.

>>> import gpugrad as gg
>>> x = gg.Variable([1.0, 2.0, 3.0])
>>> y = x * 2.0
>>> v = y[0:2]
>>> v += 10.0
>>> gg.to_numpy(y)
array([12., 14.,  6.])
>>> gg.sum(y * y).backward()
>>> gg.to_numpy(x.grad)
array([48., 56., 24.])
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from . import hooks, versions
from . import errors as E
from . import registry as R
from .tensor import Tensor, _grad_enabled
from .versions import version_of


class View:
    """What a view Tensor keeps (its ``_view`` slot): the root ``base`` and the ``steps``
    ((op, params) pairs) that make the view from it."""

    __slots__ = ("base", "steps")

    def __init__(self, base: Tensor, steps: tuple) -> None:
        self.base = base
        self.steps = steps


class Opaque:
    """``_view`` of a result that shares memory with its input but cannot be written through
    exactly (``real``, ``imag``, ``broadcast_to``, and views of those)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _shares(src: Any, out: Any) -> bool:
    """Do the arrays share memory? NumPy and array_api_strict (through its NumPy array)
    exactly; CuPy by bounds; other libraries never."""
    if type(src) is np.ndarray:
        if type(out) is not np.ndarray:
            return False
        owner = out.base  # a NumPy view's base is the array that owns the memory
        if owner is None:
            return False
        return owner is src or owner is src.base or np.may_share_memory(src, out)
    a, b = getattr(src, "_array", None), getattr(out, "_array", None)
    if type(a) is np.ndarray and type(b) is np.ndarray:  # array_api_strict
        return np.may_share_memory(a, b)
    if type(src).__module__.startswith("cupy") and type(out).__module__.startswith("cupy"):
        import cupy

        return bool(cupy.may_share_memory(src, out))
    return False


def link(op: Any, args: tuple, params: dict, out: Any) -> Any:
    """After view op ``op`` (one that declared ``op.defview``) ran on ``args[0]``: make
    ``out`` a view of its base if their arrays share memory, or mark it :class:`Opaque` if
    the op said its result cannot be written through; returns ``out``."""
    src = args[0] if args else None
    if not isinstance(out, Tensor) or not isinstance(src, Tensor) or not _shares(
            src.data, out.data):
        if getattr(out, "_gpugrad_symbolic", False):  # a graph (or gg.compile trace) value
            _alias(out)
            if getattr(src, "_gpugrad_symbolic", False) and type(op.view) is not str:
                _alias(src)
        return out
    if type(op.view) is str:
        out._view = Opaque(f"{op.view} ({op.name} of a Tensor)")
        return out
    info = getattr(src, "_view", None)
    if type(info) is Opaque:
        out._view = info
        return out
    if info is None:
        base, steps = src, ((op, params),)
    else:
        base, steps = info.base, info.steps + ((op, params),)
    out._view = View(base, steps)
    out._vlog = version_of(base)
    views = getattr(base, "_views", None)
    if views is None:
        base._views = [weakref.ref(out)]
    else:
        views.append(weakref.ref(out))
        if not len(views) & 63:  # now and then, forget the views that are gone
            views[:] = [r for r in views if r() is not None]
    return out


hooks.view = link  # what the registry calls after an op that declared itself a view op


_aliased: dict = {}
"""id -> weak reference, of the graph Symbols that are views or that views were taken of (by
id: a Symbol's ``==`` builds a graph node, so it cannot go in a set)."""


def _alias(s: Any) -> None:
    key = id(s)
    _aliased[key] = weakref.ref(s, lambda _, key=key: _aliased.pop(key, None))


def refuse_symbol(s: Any, what: str) -> Any:
    """``s`` (a graph Symbol, about to take ``s += u``), if no view is involved: a graph
    cannot write through views as eager code does, so that is refused."""
    ref = _aliased.get(id(s))
    if ref is not None and ref() is s:
        raise TypeError(E.at(
            f"{what} on a graph value that is a view of another, or that a view was taken of "
            "(inside gg.compile, or a Placeholder graph): the write cannot reach the other "
            "one as it would in eager code; compute the new value out of place, e.g. "
            "y = gpugrad.setitem(y, y[1:] * 2.0, key=(slice(1, None),)) in place of "
            "y[1:] *= 2.0"))
    return s


# --- writing through a view ----------------------------------------------------------------

def _raw(op: Any, x: Any, params: dict) -> Any:
    """``op`` on ``x`` without linking a view (the engine's dispatcher itself)."""
    return R._dispatch(op, (x,), params)


def _put(op: Any, params: dict, src: Tensor, value: Tensor) -> Tensor:
    """``src`` with ``op(src, **params)`` replaced by ``value`` (a recorded op): the op call
    that ``op``'s declared write-back rule gives (``op.defview``)."""
    back, args, kw = op.view(src, value, **params)
    return R._dispatch(back, args, kw)


def refuse(t: Tensor, what: str) -> None:
    """Raise if ``t`` is a view that cannot be written in place here."""
    info = t._view
    if type(info) is Opaque:
        raise E.OpError(E.at(
            f"{what}: this Tensor {E.show(t.shape)} shares memory with another Tensor, but "
            f"{info.why}; write into a copy instead (t = t + 0 makes one), or compute the "
            "new value out of place"))
    base = info.base
    if base.requires_grad and base._node is None and _grad_enabled.get():
        name = f" {base.name!r}" if base.name else ""
        raise E.GradientError(E.at(
            f"{what}: this Tensor {E.show(t.shape)} is a view of the {type(base).__name__}"
            f"{name} {E.show(base.shape)}, which requires gradients, so it cannot be changed "
            "in place while gradients are recorded; update it inside "
            "`with gpugrad.no_grad():`, or take a copy first (v = v + 0)"))
    if base.requires_grad and not t.requires_grad and _grad_enabled.get():
        raise E.GradientError(E.at(
            f"{what}: this Tensor {E.show(t.shape)} is a view made under no_grad of a Tensor "
            "that requires gradients, so a recorded write through it would be ambiguous; "
            "take the view again under grad mode, or make the change inside "
            "`with gpugrad.no_grad():`"))


def write_through(t: Tensor, new: Tensor) -> None:
    """View ``t`` takes the value ``new``: its base gets ``base with t replaced by new`` (out
    of place, recorded under grad mode) and every view of the base is recomputed from it."""
    info = t._view
    base = info.base
    chain = [base]
    for op, params in info.steps[:-1]:
        chain.append(_raw(op, chain[-1], params))
    value = new
    for (op, params), src in zip(reversed(info.steps), reversed(chain)):
        value = _put(op, params, src, value)
    rebase(base, value)


def rebase(base: Tensor, new: Tensor) -> None:
    """``base`` takes ``new``'s value (and history, if it has one); its views follow."""
    views = getattr(base, "_views", None)
    base.data = _like(base.xp, base.data, new.data) if views else new.data
    if new._node is not None:
        base._node = new._node
        base.requires_grad = True
    versions.rebound(base)  # (which recomputes its views: see refresh)


def _like(xp: Any, old: Any, arr: Any) -> Any:
    """``arr``, laid out in memory as ``old`` was (so a reshape that was a view stays one)."""
    if _strides(old) == _strides(arr):
        return arr
    out = xp.empty_like(old)
    out[...] = arr
    return out


def _strides(a: Any) -> Any:
    s = getattr(a, "strides", None)
    if s is None:
        s = getattr(getattr(a, "_array", None), "strides", None)
    return s


def refresh(base: Tensor) -> None:
    """Recompute every live view of ``base`` from its current value; under grad mode each
    view's history becomes its view ops on the base's."""
    views = getattr(base, "_views", None)
    if not views:
        return
    record = _grad_enabled.get()
    vlog = base._vlog
    live = [v for v in (r() for r in views) if v is not None and type(v._view) is View]
    views[:] = [weakref.ref(v) for v in live]
    for v in live:
        cur = base
        for op, params in v._view.steps:
            cur = _raw(op, cur, params)
        v.data = cur.data
        if not _shares(base.data, cur.data):  # the new array's layout made this one a copy
            v._view = Opaque("its base was given a new array in which this view is a copy "
                             "(take the view again from the base)")
        if record or v._node is None:
            v._node = cur._node
            v.requires_grad = cur.requires_grad
        v._vlog = vlog


hooks.follow = refresh  # a Tensor that got a new array (versions.rebound): its views follow
