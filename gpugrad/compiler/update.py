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

from typing import Any

from .. import versions
from . import plan, rewrite


def bump(opt: Any, site: str) -> None:
    opt.steps += 1
    versions.wrote_many(opt.params, site)


def lowering(opt: Any) -> Any:
    """The optimizer's in-place lowering, or None. Looked up on the class, so a wrapper
    that forwards attributes (DistributedOptimizer) is not mistaken for what it wraps."""
    ask = getattr(type(opt), "lowering", None)
    return ask(opt) if ask is not None else None


def folds(opt: Any, numpy: bool) -> bool:
    """Does the program start its backward from ``opt.lr`` (see gpugrad.compiler.rewrite)?"""
    return numpy and opt is not None and rewrite.fold_lr(lowering(opt))


def instructions(opt: Any, sched: Any, grads: list, shapes: list, env: dict,
                 numpy: bool) -> list:
    """The update of every parameter of ``opt`` from the gradients named ``grads`` (in the
    order of ``sched.wrt``, which is ``opt.params``)."""
    env["PARAMS"] = opt.params
    env["SITE"] = f"{type(opt).__name__} step (compiled)"
    env["bump"] = bump
    low = lowering(opt) if numpy else None
    if low is None:
        env["apply"] = lambda o, ps, gs: o._apply(list(zip(ps, gs)))
        names = ", ".join(grads)
        return [plan.Instr(list(grads), [], lambda outs, temps: [
            f"apply(opt, PARAMS, [{names}])"], False)]
    fold = rewrite.fold_lr(low)
    env["LOW"] = low
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
