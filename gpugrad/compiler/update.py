"""The optimizer update as the last instructions of a compiled training step.

On NumPy, an optimizer that declares its update (gpugrad.optim_rule: SGD with or without
momentum, Nesterov and weight decay, Adam, AdamW, RMSprop, Adagrad) hands over a lowering
(``type(opt).lowering(opt)``, see gpugrad.optim_in_place.Lowering): each parameter and its
state are updated in place through scratch buffers by the code generated from the
optimizer's formula, the same the eager step runs. Hyperparameters are read from the
optimizer on every step (an LR schedule that changes ``lr`` is honoured). Any other
optimizer (none is imported here: the lowering is asked for, by protocol), and every other
backend (CuPy's generated kernels included), runs ``opt._apply`` itself. Either way each
parameter's version is bumped, so a graph that saved the old values refuses to backward.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import versions
from . import cuda_update, native_update, plan, rewrite


def bump(opt: Any, site: str, stepping: list | None = None) -> None:
    """Count the step and record its writes (``stepping``: the program's flag, then 2)."""
    opt.steps += 1
    versions.wrote_many(opt.params, site)
    if stepping is not None:
        stepping[0] = 2


class OptionsChanged(Exception):
    """The optimizer's options (``opt.options()``: momentum turned on, a weight decay, ...)
    are not those a program folded the learning rate in for (its update is ``p - g``, the
    backward started from ``lr``): the schedule drops its programs and runs the step
    generically, and the next run plans anew (gpugrad.compiler.schedule)."""


def folded_lr(opt: Any, options: dict) -> float:
    """``opt.lr``, the seed of a program that folds it in, where ``opt``'s options are still
    ``options``; else :class:`OptionsChanged` (before anything is written: the backward has
    not started).

    >>> from gpugrad import Variable, optim
    >>> import numpy as np
    >>> opt = optim.SGD([Variable(np.zeros(2))], lr=0.5)
    >>> folded_lr(opt, opt.options())
    0.5
    >>> opt.momentum = 0.9
    >>> folded_lr(opt, {"decay": False, "momentum": False, "nesterov": False})
    Traceback (most recent call last):
    ...
    gpugrad.compiler.update.OptionsChanged: SGD's options changed since its step was planned
    """
    if opt.options() != options:
        raise OptionsChanged(f"{type(opt).__name__}'s options changed since its step was planned")
    return opt.lr


def lowering(opt: Any) -> Any:
    """The optimizer's in-place lowering, or None. Looked up on the class, so a wrapper
    that forwards attributes (DistributedOptimizer) is not mistaken for what it wraps."""
    ask = getattr(type(opt), "lowering", None)
    return ask(opt) if ask is not None else None


def folds(opt: Any, numpy: bool) -> bool:
    """Does the program start its backward from ``opt.lr`` (see gpugrad.compiler.rewrite)?"""
    return numpy and opt is not None and rewrite.fold_lr(lowering(opt))


def instructions(opt: Any, sched: Any, grads: list, shapes: list, env: dict,
                 numpy: bool, native: bool = False, dev: Any = None) -> list:
    """The update of every parameter of ``opt`` from the gradients named ``grads`` (in the
    order of ``sched.wrt``, which is ``opt.params``). ``native``: every parameter in one
    kernel call (gpugrad.compiler.native_update.Update), where they share a real float dtype;
    ``dev``: a device program's, every parameter in one CUDA kernel
    (gpugrad.compiler.cuda_update) where they do."""
    env["PARAMS"] = opt.params
    env["SITE"] = f"{type(opt).__name__} step (compiled)"
    # from here on parameters are written (flag 1, then 2 once recorded): an error is the
    # user's, never a reason to run the step again generically (it would step twice);
    # gpugrad.compiler.schedule reads the flag, and records the writes where it is 1
    env["STEPPING_"] = stepping = [0]
    env["bump"] = functools.partial(bump, stepping=stepping)
    return [plan.Instr([], [], lambda outs, temps: ["STEPPING_[0] = 1"], False),
            *_writes(opt, sched, grads, shapes, env, numpy, native, dev)]


def _writes(opt: Any, sched: Any, grads: list, shapes: list, env: dict, numpy: bool,
            native: bool, dev: Any = None) -> list:
    low = lowering(opt) if numpy or dev is not None else None
    dtypes = {str(shapes[slot][1]) if shapes[slot] else None for slot in sched.wrt}
    one = len(dtypes) == 1 and dtypes <= {"float32", "float64"}
    if dev is not None and low is not None and one:
        kernel = cuda_update.Update.of_form(
            low.later, cuda_update.sizes_of([shapes[s][0] for s in sched.wrt]), dtypes.pop())
        if kernel.fits():
            kernel.form, kernel.low = low.later, low  # (what cuda_update.Step runs it by)
            env["KERNELS_UPDATE"] = [("NU", kernel)]
            call = "".join(f", v{s}, {g}" for s, g in zip(sched.wrt, grads))
            return [plan.Instr([*grads, *(f"v{s}" for s in sched.wrt)], [],
                               lambda outs, temps: [f"NU(opt{call})"], False)]
    if low is None or not numpy:  # (a device program that keeps an update per parameter)
        env["apply"] = lambda o, ps, gs: o._apply(list(zip(ps, gs)))
        names = ", ".join(grads)
        return [plan.Instr(list(grads), [], lambda outs, temps: [
            f"apply(opt, PARAMS, [{names}])"], False)]
    fold = rewrite.fold_lr(low)
    if fold:  # the program's seed is the learning rate while the options keep it p - lr * g
        env["FOLDED_LR"] = functools.partial(folded_lr, options=opt.options())
    env["LOW"] = low
    if native and one:
        return _native(low, fold, sched, grads, shapes, env)
    # this step's code, state arrays and scalars of each parameter (Lowering.begin)
    out = [] if fold else [plan.Instr([], [], lambda outs, temps: [
        "UF_, US_, UH_ = LOW.begin()"], False)]
    for i, (slot, g) in enumerate(zip(sched.wrt, grads)):
        P = f"v{slot}"
        if fold:
            out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P: [
                f"np.subtract({P}, {g}, out={P})"], True))
            continue
        out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P, i=i: [
            f"UF_[{i}]({P}, {g}, US_[{i}], ({''.join(t + ', ' for t in temps)}), UH_[{i}])"],
            True,
            temps=[shapes[slot]] * low.temps))
    out.append(plan.Instr([], [], lambda outs, temps: ["bump(opt, SITE)"], False))
    return out


def _native(low: Any, fold: bool, sched: Any, grads: list, shapes: list, env: dict) -> list:
    """One instruction updating every parameter through one kernel, ``NU``: for plain SGD
    (the learning rate folded into the gradient) ``P - G``; else the optimizer form's own
    element update, run where every parameter has its state and the form is the one the
    kernel was made from (else each parameter's NumPy update runs, as on the NumPy tier)."""
    params = [f"v{slot}" for slot in sched.wrt]
    ndims = [len(shapes[slot][0]) for slot in sched.wrt]
    dtype = shapes[sched.wrt[0]][1]
    if fold:
        kernel = native_update.Update("T n0 = (P - G);\nP = n0;", [], 0, ndims, dtype)
        call = ", ".join(f"{P}, {g}" for P, g in zip(params, grads))
        env["KERNELS_UPDATE"] = [("NU", kernel)]
        return [plan.Instr([*grads, *params], [], lambda outs, temps: [f"over_ = NU({call})"],
                           True),
                plan.Instr([], [], lambda outs, temps: [
                    "bump(opt, SITE)", "if over_:", "    overflow('multiply')"], False)]
    f = low.later
    kernel = native_update.Update.of_form(f, ndims, dtype)
    env["KERNELS_UPDATE"] = [("NU", kernel)]
    env["UFORM"], env["UTEMPS"] = f, _temps
    n = len(params)
    call = ", ".join(f"{P}, {g}, *US_[{i}], *UH_[{i}]"
                     for i, (P, g) in enumerate(zip(params, grads)))
    each = [f"    UF_[{i}]({P}, {g}, US_[{i}], UTEMPS({P}, {low.temps}), UH_[{i}])"
            for i, (P, g) in enumerate(zip(params, grads))]
    lines = ["UF_, US_, UH_ = LOW.begin()",
             f"if LOW.later is UFORM and UF_.count(UFORM.fn) == {n}:", f"    over_ = NU({call})",
             "else:  # a first update (it makes the state), or the options changed",
             "    over_ = 0", *each, "bump(opt, SITE)",
             "if over_:  # (the writes are recorded first)", "    overflow('multiply')"]
    return [plan.Instr([*grads, *params], [], lambda outs, temps: lines, False)]


def _temps(P: Any, k: int) -> tuple:
    """Scratch arrays for one parameter's NumPy update (the native program's rare path)."""
    return tuple(np.empty_like(P) for _ in range(k))
