"""The native tier's program (gpugrad.compiler.program ``build(..., native=True)``): each
fusion group's run of instructions (gpugrad.compiler.fuse) replaced by a call of its kernel
(gpugrad.compiler.native), the optimizer's update and the ops' own kernels added to the
kernels the program calls (compiled and bound by gpugrad.compiler.tier)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import scalar_formula
from . import formula, fuse, lower, native, native_fold, native_table, plan


def names(node: tuple) -> list:
    """The value names a formula reads, in order."""
    return sorted(formula.leaves(node))


def replaced(prog: list, n_forward: int, sched: Any, shapes: list, scalar: set, keep: set,
           env: dict, long: bool = False, instruction: Any = None) -> tuple[list, int]:
    """``prog`` with each fusion group's run of instructions replaced by a call of its
    compiled kernel (gpugrad.compiler.native), and the new length of its forward block.
    ``long``: a run longer than ``fuse.MAX_MEMBERS`` is one group, whose kernel takes a
    table of data pointers (gpugrad.compiler.native_table). ``instruction``: writes each
    group's call in place of ``native.instruction`` (a device's, gpugrad.compiler.cuda_program:
    every group a plain one)."""
    info: dict = {}
    numbers: dict = {}  # a Python number in the graph is a constant of the program
    for i, s in enumerate(shapes):
        if s is not None:
            info[f"v{i}"] = s
        elif type(sched.template[i]) in (int, float):
            numbers[f"v{i}"] = ("const", float(sched.template[i]))
    for ins in prog:
        if ins.scalar is not None and numbers:
            for name in set(names(ins.scalar)) & numbers.keys():
                ins.scalar = scalar_formula.substitute(ins.scalar, name, numbers[name])
    if shapes[sched.out] is not None:
        info["seed_"] = ((), shapes[sched.out][1])
        info.update((c, ((), shapes[sched.out][1])) for c in scalar)
    found = fuse.runs(prog, info, keep, breaks={n_forward}, long=long)
    # (native_table) the feeds' and Tensors' values: the program's P[j], (0, j), and D[j], (1, j)
    env["LEAVES"] = {f"v{s}": (k, j) for k, leaves in enumerate((sched.placeholders, sched.tensors))
                     for j, (s, _) in enumerate(leaves)}
    kernels = [(f"N{j}", native_table.Table(g) if instruction is None and native_table.wanted(g)
                else g) for j, (_, _, g, _) in enumerate(found)]
    kernels += env.pop("KERNELS_UPDATE", []) + env.pop("KERNELS_OP", [])
    env["KERNELS"] = kernels  # compiled and bound by gpugrad.compiler.tier
    env["overflow"] = overflow
    absorbed = {j for *_, taken in found for j in taken}
    out, k, fwd = [], 0, n_forward - sum(j < n_forward for j in absorbed)
    for (start, stop, g, _), (name, kernel) in zip(found, kernels):
        out += [ins for j, ins in enumerate(prog[k:start], k) if j not in absorbed]
        out.append((instruction or native.instruction)(g, name, env)
                   if isinstance(kernel, fuse.Group) else kernel.instruction(name, env))
        tags = list(dict.fromkeys(ins.tag for ins in prog[start:stop] if ins.tag))
        out[-1].tag = f"fused {stop - start}: " + " | ".join(tags[:4]) + \
            (f" | +{len(tags) - 4}" if len(tags) > 4 else "")
        if start < n_forward:
            fwd -= stop - start - 1
        k = stop
    out += [ins for j, ins in enumerate(prog[k:], k) if j not in absorbed]
    out, fwd = native_fold.fold(out, fwd, info, keep, env)  # (steps into the ops' own kernels)
    # (native_table) the values read by name: a table kernel reads its planned arrays in B
    env["READ"] = {n for ins in out for n in getattr(ins, "named", ins.reads)}
    return out, fwd


def op_kernel(env: dict, kernel: Any, value: str) -> str | None:
    """The name an op's own native kernel (``lower.NativeKernel``) gets in the program,
    whose step writes ``value`` (first)."""
    if kernel is None:
        return None
    made = env.setdefault("KERNELS_OP", [])
    made.append((f"NX{len(made)}", kernel))
    env.setdefault("OP_VALUES", {})[made[-1][0]] = value
    return made[-1][0]


op_call = native_fold.call


def overflow(where: str = "exp") -> None:
    """What NumPy's error state says of an overflow in ``where`` (a kernel saw one): "exp",
    or "multiply" (an optimizer's update that made an infinity or NaN of finite numbers)."""
    if where == "exp":
        np.exp(np.full(1, 1000.0))
    else:
        np.multiply(np.full(1, np.finfo(np.float64).max), 2.0)


def split(epilogue: tuple, reads: list, o: int, info: tuple, tag: str) -> list:
    """A lowered step with an elementwise epilogue (``lower.Forward.epilogue``: a linear
    layer's bias add) as two instructions: the product into ``p<o>``, then ``v<o>`` as a
    formula over it, which a fusion group may take."""
    product, tail = epilogue
    p = f"p{o}"
    tail = lower.resolve(tail, {n: n for n in names(tail)} | {"o": p}, {})
    return [plan.Instr(reads, [(p, *info)], lambda outs, temps: product(p, outs[0]), True,
                       tag=tag),
            plan.Instr(names(tail), [(f"v{o}", *info)], lambda outs, temps: formula.emit(
                tail, {n: n for n in names(tail)}, None, {}, f"v{o}", outs[0], []),
                True, inplace={f"v{o}": [p]}, scalar=tail, tag=tag)]
