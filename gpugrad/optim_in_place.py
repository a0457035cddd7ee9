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

import contextlib
import threading
from typing import Any

import numpy as np

from . import versions
from .errors import call_site
from .fpstate import quiet_unless_ignored as _loud

_NOTHING = contextlib.nullcontext()
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
    """The scratch arrays of one optimizer (never pickled or copied: a copy starts empty),
    and the :class:`Plan` its last step left."""

    __slots__ = ("bases", "busy", "views", "plan")

    def __init__(self) -> None:
        self.bases: dict = {}  # dtype -> flat array
        self.views: dict = {}  # parameter -> its view of the base of its dtype
        self.busy = threading.Lock()
        self.plan: Plan | None = None

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
        scratch.plan = None
        loud = _loud()
        if loud is None:
            rest = _update(opt, scratch, pairs, written)
        else:
            with loud:  # tiny moments underflow quietly
                rest = _update(opt, scratch, pairs, written)
        if not rest and len(written) == len(opt.params) and all(
                p is q for p, q in zip(written, opt.params)):
            scratch.plan = Plan(written, scratch.views)
        return rest
    finally:
        scratch.busy.release()


class Plan:
    """What a step that updated every parameter in place found: each parameter, its array
    and its scratch view. The next step reuses it while each parameter keeps that array and
    has a gradient of its shape and dtype (:func:`step_planned`); any other step goes the
    long way and leaves a new plan (or none)."""

    __slots__ = ("params", "views", "refs")

    def __init__(self, params: list, views: dict) -> None:
        self.params = tuple(params)
        self.views = tuple(views[p] for p in params)
        # weak: a plan outlived by its arrays (a parameter given a new one) keeps none alive
        self.refs = versions.refs([p.data for p in params])


def step_planned(opt: Any) -> bool:
    """``opt.step()`` by the plan the last step left: True when it ran, False when something
    changed (a parameter without a gradient, or with another array, shape or dtype; another
    thread stepping; a replaced ``update``); then ``Optimizer._apply`` runs as before."""
    scratch = opt.__dict__.get("_scratch")
    plan = scratch.plan if scratch is not None else None
    if plan is None or not has_in_place(opt):
        return False
    params = opt.params
    if len(params) != len(plan.params):
        return False
    arrays, grads = [], []
    ndarray = np.ndarray
    for p, q, ref in zip(params, plan.params, plan.refs):
        P, g = p.data, p.grad
        if p is not q or type(ref) is int or ref() is not P or type(g) is not ndarray \
                or g.shape != P.shape or g.dtype is not P.dtype:
            return False
        arrays.append(P)
        grads.append(g)
    if not scratch.busy.acquire(False):
        return False
    n = 0
    try:
        opt.steps += 1
        update = opt.update_in_place
        with _loud() or _NOTHING:  # tiny moments underflow quietly
            for p, P, g, T in zip(params, arrays, grads, plan.views):
                update(p, P, g, T)
                n += 1
    finally:  # the writes made before any failure still count
        scratch.busy.release()
        if n:
            site = f"{type(opt).__name__} step called at {call_site()}"
            versions.wrote_arrays(params[:n], plan.refs[:n], site)
    return True


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
