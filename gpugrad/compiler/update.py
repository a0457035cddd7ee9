"""The optimizer update as the last instructions of a compiled training step.

On NumPy, SGD (with or without momentum, Nesterov and weight decay), Adam and AdamW update
each parameter and its state in place through one scratch buffer, with the same arithmetic in
the same order as ``Optimizer.update``. Hyperparameters are read from the optimizer on every
step (an LR schedule that changes ``lr`` is honoured). Any other optimizer, and every other
backend (CuPy's fused kernels included), runs ``Optimizer._apply`` itself. Either way each
parameter's version is bumped, so a graph that saved the old values refuses to backward.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import versions
from . import plan, rewrite


def sgd_step(opt: Any, p: Any, P: Any, g: Any, T: Any) -> None:
    """SGD.update on NumPy through the scratch buffer ``T`` (``g`` is only read)."""
    if opt.weight_decay:
        g = g + np.multiply(P, opt.weight_decay, out=T)
    if opt.momentum:
        st = opt.state[p]
        buf = st.get("momentum")
        if buf is None:
            buf = st["momentum"] = np.array(g, copy=True)
        else:
            buf *= opt.momentum
            buf += g
        if opt.nesterov:
            g = g + np.multiply(buf, opt.momentum, out=T)
        else:
            g = buf
    np.multiply(g, opt.lr, out=T)
    np.subtract(P, T, out=P)


def adam_step(opt: Any, p: Any, P: Any, g: Any, T: Any) -> None:
    """Adam.update (and AdamW's) on NumPy through the scratch buffer ``T``."""
    b1, b2 = opt.betas
    lr = opt.lr
    if opt.weight_decay:
        if opt.decoupled:
            P *= 1.0 - lr * opt.weight_decay
        else:
            g = g + np.multiply(P, opt.weight_decay, out=T)
    st = opt.state[p]
    m = st.get("m")
    if m is None:
        m = st["m"] = np.zeros_like(P)
        st["v"] = np.zeros_like(P)
    v = st["v"]
    t = opt.param_steps[p] = opt.param_steps.get(p, 0) + 1
    m *= b1
    np.multiply(g, 1.0 - b1, out=T)
    m += T
    v *= b2
    np.multiply(g, g, out=T)
    np.multiply(T, 1.0 - b2, out=T)
    v += T
    step_size = lr / (1.0 - b1**t)
    np.sqrt(v, out=T)
    np.divide(T, math.sqrt(1.0 - b2**t), out=T)
    np.add(T, opt.eps, out=T)
    np.divide(m, T, out=T)
    np.multiply(T, step_size, out=T)
    np.subtract(P, T, out=P)


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
    from ..optim import SGD

    env["PARAMS"] = opt.params
    env["SITE"] = f"{type(opt).__name__} step (compiled)"
    env["bump"] = bump
    kind = type(opt)
    if not numpy or not lowerable(opt):
        env["apply"] = lambda o, ps, gs: o._apply(list(zip(ps, gs)))
        names = ", ".join(grads)
        return [plan.Instr(list(grads), [], lambda outs, temps: [
            f"apply(opt, PARAMS, [{names}])"], False)]
    out = []
    fold = folds(opt, numpy)
    env["sgd_step"], env["adam_step"] = sgd_step, adam_step
    for i, (slot, g) in enumerate(zip(sched.wrt, grads)):
        P = f"v{slot}"
        if fold:
            out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P: [
                f"np.subtract({P}, {g}, out={P})"], True))
            continue
        fn = "sgd_step" if kind is SGD else "adam_step"
        out.append(plan.Instr([g, P], [], lambda outs, temps, g=g, P=P, i=i, fn=fn: [
            f"{fn}(opt, PARAMS[{i}], {P}, {g}, {temps[0]})"], True, temps=[shapes[slot]]))
    out.append(plan.Instr([], [], lambda outs, temps: ["bump(opt, SITE)"], False))
    return out
