"""``opt.step()``: the one loop over the parameters, and the paths a declared update takes.

An optimizer that declares its update (see gpugrad.optim_rule) updates each parameter by
the first path that fits it:

- NumPy, a real floating parameter and a gradient of its shape and dtype: the formula's
  generated in-place code, written into the parameter and its state through the
  optimizer's scratch buffers (no temporaries);
- CuPy, the same conditions and ``opt.fused``: one generated ElementwiseKernel launch;
- anything else (array_api_strict, complex values, a gradient of another dtype): the
  formula evaluated on the array's namespace, written back into the same arrays.

An optimizer whose ``update`` was overridden (by a subclass, or on the instance) runs that
``update`` for every parameter instead. The compiled training step
(gpugrad.compiler.update) and the sharded distributed update take the in-place path through
:class:`Lowering`.

The scratch is one flat array per dtype, as large as the largest parameter of that dtype
times the number of buffers the formula needs; each parameter gets views of it. Two
threads stepping one optimizer at once do not share it: the second runs the portable path.

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
import functools
import operator
import sys
import threading
import weakref
from typing import Any

import numpy as np

from . import versions
from .compiler import native_calls, native_update, tier
from .errors import call_site, ours
from .fpstate import quiet
from .fpstate import quiet_unless_ignored as _loud
from .optim_rule import cupy_kernel, form, portable
from .tensor import no_grad


def declared(opt: Any) -> bool:
    """Does ``opt`` step by its declared formula (its ``update`` is not replaced)?"""
    cls = type(opt)
    return cls.formula is not None and getattr(cls.update, "declared", False) \
        and "update" not in opt.__dict__


class Scratch:
    """The scratch arrays of one optimizer (never pickled or copied: a copy starts empty)."""

    __slots__ = ("bases", "busy", "first", "native", "plan", "remake", "runs", "site", "views")

    def __init__(self) -> None:
        self.bases: dict = {}  # dtype -> flat array
        self.views: dict = {}  # parameter -> (weak reference to its array, views of the base)
        self.busy = threading.Lock()
        self.plan: tuple | None = None  # what the last step did, if step_planned can redo it
        self.runs = 0  # planned steps, and the time of the first (gpugrad.compiler.tier)
        self.first: float | None = None
        self.native: Any = None  # (kernel, form) once the planned step runs natively
        self.remake: Any = None  # makes it (gpugrad.compiler.tier)
        self.site: tuple | None = None  # the last step's caller, and its text (_site)

    def __reduce__(self) -> tuple:
        return (Scratch, ())

    def view(self, p: Any, P: np.ndarray, k: int, params: list) -> tuple:
        """``k`` scratch arrays of ``P``'s shape and dtype for parameter ``p``."""
        dt, n = P.dtype, P.size
        base = self.bases.get(dt)
        if base is None or base.size < k * n:
            sizes = [q.data.size for q in params
                     if type(q.data) is np.ndarray and q.data.dtype == dt]
            base = self.bases[dt] = np.empty(k * max([n, *sizes]), dt)
            self.views.clear()
        T = tuple(base[j * n:(j + 1) * n].reshape(P.shape) for j in range(k))
        self.views[p] = (weakref.ref(P), T)
        return T


def _options(opt: Any) -> tuple:
    return tuple(opt.options().items())  # (each class builds its dict in one order)


def _states(opt: Any, f: Any, p: Any, P: Any, st: dict) -> list:
    """``p``'s state arrays in ``f``'s order, created (with their initial values) where
    missing."""
    try:
        return list(map(st.__getitem__, f.names))  # (no comprehension's frame per call)
    except KeyError:
        start = opt.initial()
        xp = p.xp
        for k in f.names:
            if k not in st:
                v = start.get(k, 0.0)
                st[k] = xp.zeros_like(P) if v == 0.0 else xp.full_like(P, v)
        return [st[k] for k in f.names]


def _scalars(opt: Any, fixed: Any, p: Any) -> dict:
    if fixed is not None:
        return fixed
    t = opt.param_steps[p] = opt.param_steps.get(p, 0) + 1  # per parameter
    return opt.scalars(t)


def _hoisted(opt: Any, f: Any, fixed: Any, p: Any, known: dict) -> tuple:
    """What ``f``'s code reads of this update's scalars (the step count's own, worked out
    once per step for each count in ``known``)."""
    if fixed is not None:
        return f.prologue(fixed)
    t = opt.param_steps[p] = opt.param_steps.get(p, 0) + 1  # per parameter
    key = (f, t)
    h = known.get(key)
    if h is None:
        h = known[key] = f.prologue(opt.scalars(t))
    return h


def _run(opt: Any, options: tuple, later: Any, fixed: Any, p: Any, g: Any,
         scratch: Any) -> None:
    """One parameter's declared update, by the first path that fits it (``later``: the
    form of a parameter that has state already)."""
    P = p.data
    if later.names:
        st = opt.state[p]
        f = later if st else form(type(opt).formula, options, True)
        S = _states(opt, f, p, P, st)
    else:  # no state: nothing to look up or create
        f, st, S = later, None, ()
    c = _scalars(opt, fixed, p)
    tp = type(P)
    if tp is type(g) and g.shape == P.shape and (g.dtype is P.dtype or g.dtype == P.dtype):
        kind = getattr(P.dtype, "kind", "")
        if tp is np.ndarray and scratch and kind == "f":
            e = scratch.views.get(p)
            T = e[1] if e is not None and e[0]() is P and len(e[1]) >= f.temps else \
                scratch.view(p, P, f.temps, opt.params)
            f.fn(P, g, S, T, f.prologue(c))
            return
        if kind == "f" and opt.fused and tp.__module__.startswith("cupy"):
            dt = P.dtype.type
            cupy_kernel(f)(g, *(dt(v) for v in f.prologue(c)), P, *S)
            return
    _portable(opt, options, f, p.xp, P, g, opt.state[p] if st is None else st, c)


def _portable(opt: Any, options: tuple, f: Any, xp: Any, P: Any, g: Any, st: dict,
              c: dict) -> None:
    new = portable(type(opt).formula, options, f.first, xp, P, g, st, f.names, c)
    P[...] = new["p"]
    for k in f.names:
        st[k][...] = new[k]


def portable_update(opt: Any, p: Any, g: Any, state: dict) -> None:
    """``Optimizer.update``: the formula on ``p``'s namespace, written into its arrays."""
    options = _options(opt)
    P = p.data
    f = form(type(opt).formula, options, not state)
    _states(opt, f, p, P, state)
    c = _scalars(opt, None if opt.counts_steps else opt.scalars(0), p)
    with quiet(p.xp):  # tiny moments underflow quietly
        _portable(opt, options, f, p.xp, P, g, state, c)


def apply(opt: Any, pairs: list) -> None:
    """``opt.step()``'s update of the (parameter, gradient) pairs: the one loop. Each
    parameter's version is bumped (an in-place write that a graph recorded before the step
    must see), also for the writes made before a failure."""
    opt.steps += 1
    if not pairs:
        return
    written: list = []
    done = written.append
    if declared(opt):
        options = _options(opt)
        later = form(type(opt).formula, options, False)
        fixed = None if opt.counts_steps else opt.scalars(0)
        scratch = opt.__dict__.get("_scratch")
        if scratch is None:
            scratch = opt._scratch = Scratch()
        if not scratch.busy.acquire(False):  # another thread is stepping this optimizer
            scratch = None
        fn, names, temps, views = later.fn, later.names, later.temps, \
            scratch.views if scratch else {}
        state, ndarray, known = opt.state, np.ndarray, {}
        h = later.prologue(fixed) if fixed is not None else None
    else:
        later = None
    refs: list = []  # the write log's reference to each written array
    try:
        with _quiet(pairs[0][0].xp, later is None):
            for p, g in pairs:
                P = p.data
                if later is None:
                    opt.update(p, g, opt.state[p])
                else:
                    e = views.get(p)  # a parameter that took the in-place path before
                    st = state[p] if names else None
                    if e is not None and e[0]() is P and type(g) is ndarray \
                            and g.dtype is P.dtype and g.shape == P.shape \
                            and len(e[1]) >= temps and (st or not names):
                        fn(P, g, _states(opt, later, p, P, st) if names else (), e[1],
                           h if h is not None else _hoisted(opt, later, None, p, known))
                        done(p)
                        refs.append(e[0])
                        continue
                    # the first time, or another path (gpugrad.optim_rule)
                    _run(opt, options, later, fixed, p, g, scratch)
                if p.data is P:
                    done(p)
                    refs.append(versions.refs((P,))[0])
                else:
                    versions.rebound(p)
        if later is not None and scratch:
            scratch.plan = _plan(opt, pairs, later, options, views)
    finally:  # the writes made before any failure still count
        if later is not None and scratch:
            scratch.busy.release()
        if written:
            versions.wrote_arrays(written, refs,
                                  f"{type(opt).__name__} step called at {call_site()}")


def _plan(opt: Any, pairs: list, later: Any, options: tuple, views: dict) -> tuple | None:
    """What :func:`step_planned` needs to redo this step, or None where some parameter did
    not take the in-place path (or had no gradient)."""
    params = opt.params
    if len(pairs) != len(params):
        return None
    refs, T = [], []
    for q, (p, _) in zip(params, pairs):
        e = views.get(p)
        if p is not q or e is None or e[0]() is not p.data or len(e[1]) < later.temps:
            return None
        refs.append(e[0])
        T.append(e[1])
    cls = type(opt)
    return list(params), tuple(refs), T, later, dict(options), cls, cls.update


def step_planned(opt: Any) -> bool:
    """``opt.step()`` the way the last step went, when nothing it depends on changed: the
    same parameters, arrays and options, NumPy gradients of their shape and dtype, state
    already made, the same ``update``. The hyperparameters are read again (a schedule may
    change ``lr``). False (and nothing done) otherwise: then :func:`apply` runs. Once hot,
    one native kernel call updates every parameter (:func:`_native_step`)."""
    scratch = opt.__dict__.get("_scratch")
    plan = scratch.plan if scratch is not None else None
    if plan is None:
        return False
    params, refs, views, later, options, cls, update = plan
    if type(opt) is not cls or cls.update is not update or "update" in opt.__dict__ \
            or len(opt.params) != len(params) or opt.options() != options:
        return False
    nat = scratch.native
    if nat and nat[1] is later and _native_step(nat[0], opt, later, scratch):
        return True
    names, state, ndarray = later.names, opt.state, np.ndarray
    arrays, grads, states = [], [], []
    for p, q, ref in zip(opt.params, params, refs):
        P, g = p.data, p.grad
        if p is not q or ref() is not P or type(g) is not ndarray or g.dtype is not P.dtype \
                or g.shape != P.shape:
            return False
        if names:
            try:
                states.append(list(map(state[p].__getitem__, names)))
            except KeyError:  # no state yet (or some of it was removed)
                return False
        else:
            states.append(())
        arrays.append(P)
        grads.append(g)
    if not scratch.busy.acquire(False):  # another thread is stepping this optimizer
        return False
    n = 0
    try:
        opt.steps += 1
        fixed = None if opt.counts_steps else opt.scalars(0)
        h = later.prologue(fixed) if fixed is not None else None
        fn, known = later.fn, {}
        scratch.runs += 1
        if scratch.native is None:  # the first planned step: the native tier is offered
            scratch.native = False
            tier.offer(scratch, functools.partial(_go_native, later, arrays))
        elif not scratch.runs & 63 and scratch.remake is not None:
            tier.tick(scratch)
        with _loud() or _NOTHING:  # tiny moments underflow quietly
            for p, P, g, S, T in zip(params, arrays, grads, states, views):
                fn(P, g, S, T, h if h is not None else _hoisted(opt, later, None, p, known))
                n += 1
    finally:  # the writes made before any failure still count
        scratch.busy.release()
        if n:
            versions.wrote_arrays(params[:n] if n < len(params) else params,
                                  refs[:n] if n < len(refs) else refs, _site(opt, scratch, 3))
    return True


def _native_step(kernel: Any, opt: Any, later: Any, scratch: Scratch) -> bool:
    """The planned step as one call of the kernel :func:`_go_native` made: every parameter's
    array, gradient and state arrays, then the step's scalars, once for all (the parameters
    have had as many updates). The kernel checks the arrays (numba: their dtype, number of
    dimensions and C order; the kernel itself: each gradient's and state's shape against its
    parameter's) before it writes anything; False, with nothing written or counted, where
    they do not fit (the NumPy code then decides)."""
    params = opt.params
    names = later.names
    k, n = 2 + len(names), len(params)
    args: list = [None] * (k * n)  # per parameter: P, G, S0, S1, ...
    arrays = args[0::k] = list(map(_DATA, params))
    args[1::k] = map(_GRAD, params)
    if names:
        try:
            st = list(map(opt.state.__getitem__, params))
            for j, name in enumerate(names):
                args[2 + j::k] = map(operator.itemgetter(name), st)
        except KeyError:  # no state yet (or some of it was removed)
            return False
    t = 0
    if opt.counts_steps:  # this update's count, where every parameter is at the same one
        ts = list(map(opt.param_steps.get, params))
        if ts.count(ts[0]) != n:
            return False
        t = (ts[0] or 0) + 1
    h = later.prologue(opt.scalars(t))
    if not scratch.busy.acquire(False):  # another thread is stepping this optimizer
        return False
    try:
        try:
            done = kernel(*args, *h)
        except TypeError:  # numba found no signature for these arrays: nothing ran
            return False
        if done == native_update.REFUSED:  # a shape that does not fit: nothing was written
            return False
        opt.steps += 1
        if t:
            opt.param_steps.update(zip(params, [t] * n))
    finally:
        scratch.busy.release()
    versions.wrote_arrays(params, versions.refs(arrays), _site(opt, scratch, 4))
    if done == native_update.OVERFLOWED:  # every parameter was written: then as NumPy would
        native_calls.overflow("multiply")
    return True


def _site(opt: Any, scratch: Scratch, depth: int) -> str:
    """``SGD step called at file.py:line``; ``depth`` frames up is the caller of
    ``Optimizer.step``: outside gpugrad, its text is kept with its code and bytecode offset
    (the next step from that line finds it without walking the stack)."""
    frame = sys._getframe(depth)
    last, code, at = scratch.site, frame.f_code, frame.f_lasti
    if last is None or last[0] is not code or last[1] != at:
        last = (code, at, f"{type(opt).__name__} step called at {call_site(depth + 1)}")
        if not ours(code):
            scratch.site = last
    return last[2]


_DATA = operator.attrgetter("data")
_GRAD = operator.attrgetter("grad")
_NOTHING = contextlib.nullcontext()


def _go_native(later: Any, arrays: list, scratch: Scratch) -> None:
    """Make the kernel that updates every parameter at once (gpugrad.compiler.native), from
    the optimizer's form, for a planned step that is hot: then :func:`step_planned` calls
    it (:func:`_native_step`). Only where every parameter is C-contiguous and of one
    real float dtype."""
    dtypes = {P.dtype for P in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)).name not in ("float32", "float64") \
            or not all(P.flags.c_contiguous for P in arrays):
        return
    kernel = native_update.Update.of_form(later, [P.ndim for P in arrays], next(iter(dtypes)),
                                          eager=True)
    module = tier.compiled([("NU", kernel)])
    if module is not None:
        scratch.native = (module.NU, later)


def _quiet(xp: Any, general: bool) -> Any:
    """Tiny moments underflow quietly (a context only where one is needed); ``general``
    (an overridden ``update``): under no_grad as well."""
    q = (_loud() or _NOTHING) if xp is np else quiet(xp)
    if not general:
        return q
    both = contextlib.ExitStack()
    both.enter_context(q)
    both.enter_context(no_grad())
    return both


class Lowering:
    """An optimizer's declared update as the compiled training step
    (gpugrad.compiler.update) and the sharded distributed update take it: ``names`` (its
    state arrays), ``temps`` (scratch arrays it needs), ``fold_lr`` (it is ``p - lr * g``, so
    a program may start backward from ``lr`` and subtract the gradient), ``counts_steps``;
    each step calls :meth:`start` (which reads the hyperparameters), then :meth:`update` for
    each parameter, in place on NumPy arrays."""

    __slots__ = ("counts_steps", "fixed", "fold_lr", "hoisted", "known", "later", "names",
                 "opt", "options", "temps")

    def __init__(self, opt: Any) -> None:
        self.opt, self.counts_steps = opt, opt.counts_steps
        self.start()
        f = self.later
        self.names, self.temps, self.fold_lr = f.names, f.temps, f.fold

    def start(self) -> None:
        """Read the options and the hyperparameters for this step's updates."""
        opt = self.opt
        self.options = _options(opt)
        self.later = form(type(opt).formula, self.options, False)
        self.fixed = None if self.counts_steps else opt.scalars(0)
        # what the code of a parameter with state reads, where it is the same for each one
        self.hoisted = None if self.fixed is None else self.later.prologue(self.fixed)
        self.known: dict = {}

    def initial(self, name: str) -> float:
        return self.opt.initial().get(name, 0.0)

    def begin(self) -> tuple:
        """:meth:`start`, then for each of ``opt.params`` what its update is called with:
        three lists ``fns, S, h``, so that ``fns[i](P, g, S[i], T, h[i])`` updates the
        ``i``-th parameter (``P``, ``g``, ``T`` as for :meth:`update`, with ``temps`` scratch
        arrays). A parameter without state yet gets :meth:`update` itself."""
        self.start()
        opt, f = self.opt, self.later
        params, names, n = opt.params, f.names, len(opt.params)
        sts = list(map(opt.state.__getitem__, params))
        if names and not all(sts):  # some first update (it makes the state)
            return self._begin_each(sts)
        try:
            if len(names) > 1:
                S = list(map(operator.itemgetter(*names), sts))
            else:  # (one name: the getter gives the array itself; no state: nothing)
                S = list(zip(map(operator.itemgetter(*names), sts))) if names else [()] * n
        except KeyError:  # some state array is missing
            return self._begin_each(sts)
        h = self.hoisted
        if h is not None:
            return [f.fn] * n, S, [h] * n
        steps = opt.param_steps  # each parameter counts its own updates
        ts = list(map(steps.get, params))
        t = ts[0]
        if t is not None and ts.count(t) == n:  # (as they do unless some were skipped)
            steps.update(zip(params, [t + 1] * n))
            return [f.fn] * n, S, [f.prologue(opt.scalars(t + 1))] * n
        known, fixed = self.known, self.fixed
        return [f.fn] * n, S, [_hoisted(opt, f, fixed, p, known) for p in params]

    def _begin_each(self, sts: list) -> tuple:
        opt, f = self.opt, self.later
        fns: list = []
        S: list = []
        H: list = []
        for p, st in zip(opt.params, sts):
            if f.names and not st:
                fns.append(functools.partial(self._first, p))
                S.append(None)
                H.append(None)
                continue
            fns.append(f.fn)
            S.append(_states(opt, f, p, p.data, st))
            H.append(self.hoisted if self.hoisted is not None else
                     _hoisted(opt, f, self.fixed, p, self.known))
        return fns, S, H

    def _first(self, p: Any, P: Any, g: Any, S: Any, T: tuple, h: Any) -> None:
        self.update(p, P, g, *T)

    def update(self, p: Any, P: Any, g: Any, *T: Any) -> None:
        """``p``'s update (``P``: its real floating NumPy array; ``g`` of its shape and
        dtype, only read; ``T``: scratch arrays of its shape and dtype, more are made if
        the formula needs more)."""
        opt, f = self.opt, self.later
        st = opt.state[p]
        if not st and f.names:
            f = form(type(opt).formula, self.options, True)
        S = _states(opt, f, p, P, st)
        h = self.hoisted if f is self.later and self.hoisted is not None else \
            _hoisted(opt, f, self.fixed, p, self.known)
        if len(T) < f.temps:
            T = T + tuple(np.empty_like(P) for _ in range(f.temps - len(T)))
        f.fn(P, g, S, T, h)
