"""The eager ``opt.step()`` on NumPy parameters: each optimizer's ``update_in_place``.

SGD, Adam and AdamW keep, beside their portable ``update`` (the definition), an
``update_in_place`` for NumPy arrays: the same arithmetic in the same order, written into the
parameter, its state and one scratch buffer instead of fresh temporaries (the compiled
training step of ``gpugrad.compiler.update`` uses it too). ``Optimizer._apply`` calls
:func:`apply_in_place` first; a pair it cannot take (another backend, a complex parameter, a
gradient whose shape or dtype differs from the parameter's) goes through ``update`` as before.

The scratch is one flat array per dtype, as large as the largest parameter of that dtype;
each parameter gets a view of it. Two threads stepping one optimizer at once do not share it:
the second runs the portable update.

>>> import numpy as np, gpugrad as gg
>>> w = gg.Variable(np.array([1.0, 2.0]))
>>> opt = gg.optim.SGD([w], lr=0.5)
>>> (w * w).sum().backward()
>>> before = w.data
>>> opt.step()
>>> w.data is before, gg.to_numpy(w.data)
(True, array([0., 0.]))
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .fpstate import quiet

try:  # NumPy 2 keeps its floating-point error state in a context variable
    from numpy._core._ufunc_config import _extobj_contextvar as _ERRSTATE
except ImportError:  # pragma: no cover
    _ERRSTATE = None
_IGNORING: list = [None]  # the last error state seen that already ignores underflow
_OWNERS: dict = {}  # optimizer class -> (its update function, does it own update_in_place)


def has_in_place(opt: Any) -> bool:
    """Does ``opt``'s ``update`` come with an ``update_in_place`` of the same class (so a
    subclass that overrides ``update`` alone, or an instance whose ``update`` was replaced,
    runs its own ``update``)?"""
    cls = type(opt)
    fn = getattr(cls, "update", None)
    known = _OWNERS.get(cls)
    if known is None or known[0] is not fn:
        if len(_OWNERS) >= 256:  # classes made on the fly: keep the table small
            _OWNERS.clear()
        known = _OWNERS[cls] = (fn, _owner(cls, "update") is _owner(cls, "update_in_place")
                                is not None)
    return known[1] and "update" not in opt.__dict__


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


class Scratch:
    """The scratch arrays of one optimizer (never pickled or copied: a copy starts empty)."""

    __slots__ = ("bases", "busy", "views")

    def __init__(self) -> None:
        self.bases: dict = {}  # dtype -> flat array
        self.views: dict = {}  # parameter -> its view of the base of its dtype
        self.busy = threading.Lock()

    def __reduce__(self) -> tuple:
        return (Scratch, ())

    def view(self, p: Any, P: np.ndarray, params: list) -> np.ndarray:
        """A scratch array of ``P``'s shape and dtype for parameter ``p``."""
        dt = P.dtype
        base = self.bases.get(dt)
        if base is None or base.size < P.size:
            sizes = [q.data.size for q in params
                     if type(q.data) is np.ndarray and q.data.dtype == dt]
            base = self.bases[dt] = np.empty(max([P.size, *sizes]), dt)
            self.views.clear()
        T = self.views[p] = base[:P.size].reshape(P.shape)
        return T


def apply_in_place(opt: Any, pairs: list, written: list) -> list:
    """Update, with ``opt.update_in_place``, every (parameter, gradient) pair whose arrays are
    real floating NumPy arrays of one shape and dtype; append those parameters to ``written``
    and return the other pairs (for the portable ``update``)."""
    scratch = opt.__dict__.get("_scratch")
    if scratch is None:
        scratch = opt._scratch = Scratch()
    if not scratch.busy.acquire(False):  # another thread is stepping this optimizer
        return pairs
    try:
        loud = _loud()
        if loud is None:
            return _update(opt, scratch, pairs, written)
        with loud:  # tiny moments underflow quietly
            return _update(opt, scratch, pairs, written)
    finally:
        scratch.busy.release()


def _update(opt: Any, scratch: Scratch, pairs: list, written: list) -> list:
    rest = []
    views = scratch.views
    ndarray = np.ndarray
    update, done = opt.update_in_place, written.append
    for p, g in pairs:
        P = p.data
        if type(P) is not ndarray or type(g) is not ndarray:
            rest.append((p, g))
            continue
        shape, dt, gt = P.shape, P.dtype, g.dtype
        if g.shape != shape or (gt is not dt and gt != dt):
            rest.append((p, g))
            continue
        T = views.get(p)
        if T is None or T.dtype is not dt or T.shape != shape:
            if dt.kind != "f":  # complex (or integer): the portable update
                rest.append((p, g))
                continue
            T = scratch.view(p, P, opt.params)
        update(p, P, g, T)
        done(p)
    return rest


def _loud() -> Any:
    """None when NumPy's current error state already ignores underflow (the usual case;
    checked once per state object), else ``quiet(np)``."""
    if _ERRSTATE is None:  # pragma: no cover
        return quiet(np)
    state = _ERRSTATE.get()
    if state is _IGNORING[0]:
        return None
    if np.geterr()["under"] == "ignore":
        _IGNORING[0] = state
        return None
    return quiet(np)
