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

import threading
from typing import Any

import numpy as np

from . import versions
from .errors import call_site
from .fpstate import quiet
from .optim_rule import cupy_kernel, form, portable
from .tensor import no_grad


def declared(opt: Any) -> bool:
    """Does ``opt`` step by its declared formula (its ``update`` is not replaced)?"""
    cls = type(opt)
    return cls.formula is not None and getattr(cls.update, "declared", False) \
        and "update" not in opt.__dict__


class Scratch:
    """The scratch arrays of one optimizer (never pickled or copied: a copy starts empty)."""

    __slots__ = ("bases", "busy", "views")

    def __init__(self) -> None:
        self.bases: dict = {}  # dtype -> flat array
        self.views: dict = {}  # parameter -> its views of the base of its dtype
        self.busy = threading.Lock()

    def __reduce__(self) -> tuple:
        return (Scratch, ())

    def view(self, p: Any, P: np.ndarray, k: int, params: list) -> tuple:
        """``k`` scratch arrays of ``P``'s shape and dtype for parameter ``p``."""
        T = self.views.get(p)
        if T is not None and len(T) >= k and T[0].dtype is P.dtype and T[0].shape == P.shape:
            return T
        dt, n = P.dtype, P.size
        base = self.bases.get(dt)
        if base is None or base.size < k * n:
            sizes = [q.data.size for q in params
                     if type(q.data) is np.ndarray and q.data.dtype == dt]
            base = self.bases[dt] = np.empty(k * max([n, *sizes]), dt)
            self.views.clear()
        T = self.views[p] = tuple(base[j * n:(j + 1) * n].reshape(P.shape) for j in range(k))
        return T


def _options(opt: Any) -> tuple:
    return tuple(sorted(opt.options().items()))


def _prepare(opt: Any, options: tuple, fixed: Any, p: Any, P: Any, st: dict) -> tuple:
    """The form of ``p``'s update (its first if ``p`` has no state yet), its state arrays
    (created where missing) and its scalars (``fixed``, or those of its next update)."""
    f = form(type(opt).formula, options, not st)
    if len(st) < len(f.names) or any(k not in st for k in f.names):
        start = opt.initial()
        xp = p.xp
        for k in f.names:
            if k not in st:
                v = start.get(k, 0.0)
                st[k] = xp.zeros_like(P) if v == 0.0 else xp.full_like(P, v)
    if fixed is not None:
        return f, fixed
    t = opt.param_steps[p] = opt.param_steps.get(p, 0) + 1  # per parameter
    return f, opt.scalars(t)


def _run(opt: Any, options: tuple, fixed: Any, p: Any, g: Any, scratch: Any) -> None:
    """One parameter's declared update, by the first path that fits it."""
    P = p.data
    st = opt.state[p]
    f, c = _prepare(opt, options, fixed, p, P, st)
    tp = type(P)
    if tp is type(g) and g.shape == P.shape and g.dtype == P.dtype:
        kind = getattr(P.dtype, "kind", "")
        if tp is np.ndarray and scratch is not None and kind == "f":
            f.fn(P, g, tuple(st[k] for k in f.names), scratch.view(p, P, f.temps, opt.params),
                 c)
            return
        if kind == "f" and opt.fused and tp.__module__.startswith("cupy"):
            dt = P.dtype.type
            cupy_kernel(f)(g, *(dt(v) for v in f.kernel[3](c)), P, *(st[k] for k in f.names))
            return
    _portable(opt, options, f, p.xp, P, g, st, c)


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
    f, c = _prepare(opt, options, None if opt.counts_steps else opt.scalars(0), p, P, state)
    _portable(opt, options, f, p.xp, P, g, state, c)


def apply(opt: Any, pairs: list) -> None:
    """``opt.step()``'s update of the (parameter, gradient) pairs: the one loop. Each
    parameter's version is bumped (an in-place write that a graph recorded before the step
    must see), also for the writes made before a failure."""
    opt.steps += 1
    if not pairs:
        return
    written: list = []
    scratch = None
    if declared(opt):
        options = _options(opt)
        fixed = None if opt.counts_steps else opt.scalars(0)
        scratch = opt.__dict__.get("_scratch")
        if scratch is None:
            scratch = opt._scratch = Scratch()
        if not scratch.busy.acquire(False):  # another thread is stepping this optimizer
            scratch = False
    try:
        with no_grad(), quiet(pairs[0][0].xp):  # tiny moments underflow quietly
            for p, g in pairs:
                before = p.data
                if scratch is None:
                    opt.update(p, g, opt.state[p])
                else:
                    _run(opt, options, fixed, p, g, scratch or None)
                if p.data is before:
                    written.append(p)
                else:
                    versions.rebound(p)
    finally:  # the writes made before any failure still count
        if scratch:
            scratch.busy.release()
        if written:
            versions.wrote_many(written, f"{type(opt).__name__} step called at {call_site()}")


class Lowering:
    """An optimizer's declared update as the compiled training step
    (gpugrad.compiler.update) and the sharded distributed update take it: ``names`` (its
    state arrays), ``temps`` (scratch arrays it needs), ``fold_lr`` (it is ``p - lr * g``, so
    a program may start backward from ``lr`` and subtract the gradient), ``counts_steps``,
    and :meth:`update`, in place on one NumPy parameter."""

    __slots__ = ("counts_steps", "fold_lr", "names", "opt", "temps")

    def __init__(self, opt: Any) -> None:
        f = form(type(opt).formula, _options(opt), False)
        self.opt, self.names, self.temps, self.fold_lr = opt, f.names, f.temps, f.fold
        self.counts_steps = opt.counts_steps

    def initial(self, name: str) -> float:
        return self.opt.initial().get(name, 0.0)

    def update(self, p: Any, P: Any, g: Any, *T: Any) -> None:
        """``p``'s update (``P``: its real floating NumPy array; ``g`` of its shape and
        dtype, only read; ``T``: scratch arrays of its shape and dtype, more are made if
        the formula needs more), reading the hyperparameters now."""
        opt = self.opt
        fixed = None if opt.counts_steps else opt.scalars(0)
        f, c = _prepare(opt, _options(opt), fixed, p, P, opt.state[p])
        if len(T) < f.temps:
            T = T + tuple(np.empty_like(P) for _ in range(f.temps - len(T)))
        f.fn(P, g, tuple(opt.state[p][k] for k in f.names), T, c)
