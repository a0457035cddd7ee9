"""The optimizer update as the last instructions of a compiled training step.

On NumPy, SGD (with or without momentum, Nesterov and weight decay), Adam and AdamW update
each parameter and its state in place through one scratch buffer, with their own
``update_in_place`` (beside ``update`` in gpugrad.optim: the same arithmetic in the same
order). Hyperparameters are read from the optimizer on every step (an LR schedule that
changes ``lr`` is honoured). Any other optimizer, and every other backend (CuPy's fused
kernels included), runs ``Optimizer._apply`` itself. Either way each
parameter's version is bumped, so a graph that saved the old values refuses to backward.
"""

from __future__ import annotations

from typing import Any

from .. import versions
from . import plan, rewrite


def bump(opt: Any, site: str) -> None:
    opt.steps += 1
    versions.wrote_many(opt.params, site)


def lowerable(opt: Any) -> bool:
    """SGD, Adam and AdamW themselves (not subclasses, nor an instance whose ``update`` or
    ``_apply`` was replaced, as a wrapper might) get the in-place NumPy update."""
    from ..optim import SGD, Adam, AdamW

    return type(opt) in (SGD, Adam, AdamW) and "update" not in vars(opt) \
        and "_apply" not in vars(opt)


def folds(opt: Any, numpy: bool) -> bool:
    """Does the program start its backward from ``opt.lr`` (see gpugrad.compiler.rewrite)?"""
    return numpy and opt is not None and lowerable(opt) and rewrite.fold_lr(opt)


def instructions(opt: Any, sched: Any, grads: list, shapes: list, env: dict,
                 numpy: bool) -> list:
    """The update of every parameter of ``opt`` from the gradients named ``grads`` (in the
    order of ``sched.wrt``, which is ``opt.params``)."""
    env["PARAMS"] = opt.params
    env["SITE"] = f"{type(opt).__name__} step (compiled)"
    env["bump"] = bump
    if not numpy or not lowerable(opt):
        env["apply"] = lambda o, ps, gs: o._apply(list(zip(ps, gs)))
        names = ", ".join(grads)
        return [plan.Instr(list(grads), [], lambda outs, temps: [
            f"apply(opt, PARAMS, [{names}])"], False)]
    out = []
    fold = folds(opt, numpy)
    for i, (slot, g) in enumerate(zip(sched.wrt, grads)):
        P = f"v{slot}"
        if fold:
            out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P: [
                f"np.subtract({P}, {g}, out={P})"], True))
            continue
        out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P, i=i: [
            f"opt.update_in_place(PARAMS[{i}], {P}, {g}, {temps[0]})"], True,
            temps=[shapes[slot]]))
    out.append(plan.Instr([], [], lambda outs, temps: ["bump(opt, SITE)"], False))
    return out
