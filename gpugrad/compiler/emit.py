"""Pass 4 of a planned program (gpugrad.compiler.program): its instructions written as
the text of one Python function, each line tagged with the op and the user's line that made
it (gpugrad.compiler.listing), and compiled (gpugrad.compiler.codegen).

>>> within("OVER_RAISED", ["        x = 1"])[:2]
['    tok_ = fp_enter(fp_state(OVER_RAISED))', '    try:']
"""

from __future__ import annotations

from typing import Any

from . import batch, formula, listing, lower, plan, update
from .codegen import build as build_function
from .codegen import used_buffers


def program(prog: list, n_forward: int, where: dict, buffers: list, results: list, sched: Any,
            env: dict, numpy: bool, xp: Any, grads: bool, opt: Any, seeded: bool,
            sizing: Any) -> tuple:
    """The function of the planned instructions ``prog`` (the first ``n_forward`` the
    forward sweep), their values in the buffers ``where`` assigns (gpugrad.compiler.plan),
    handing back ``results`` (the value, then the gradients): ``(fn, buffers, source, xp,
    frames, kernels)``, a :class:`gpugrad.compiler.program.Program`'s fields. Values left
    to ordinary allocation are dropped after their last reader; on NumPy the forward runs
    under ``over="raise"`` and the backward with underflow ignored (gpugrad.fpstate)."""
    env["DEV"] = sched.device
    lines = ["def program(xp, P, D, B, seed_, opt):"]  # STEPPING_: see compiler.update
    lines += ["    STEPPING_[0] = 0"] if "STEPPING_" in env else []
    where_leaf = {f"v{s}": f"P[{j}]" for j, (s, _) in enumerate(sched.placeholders)}
    where_leaf.update({f"v{s}": f"D[{j}]" for j, (s, _) in enumerate(sched.tensors)})
    used = sorted({i for ins in prog for i in ins.reads if i.startswith("v") and int(i[1:])
                   < len(sched.template)} - {n for ins in prog for n, *_ in ins.defines})
    for name in used:
        if name not in where_leaf:
            env[f"K{name[1:]}"] = sched.template[int(name[1:])]
        lines.append(f"    {name} = {where_leaf.get(name, 'K' + name[1:])}")
    lines += [f"    B{b} = B[{b}]" for b in range(len(buffers))]
    head = len(lines)

    # values left to ordinary allocation are dropped after their last reader, as the
    # generic code frees intermediates, so peak memory stays where it was
    last: dict = {}
    for k, ins in enumerate(prog):
        for n in ins.reads:
            last[n] = k
        for n, *_ in ins.defines:
            last.setdefault(n, k)
    kept = set(results) | {"seed_", "_"} | set(used)
    drops: dict = {}
    for n, k in last.items():
        if n not in where and n not in kept:
            drops.setdefault(k, []).append(n)

    def block(instrs, start, ind):
        out = []
        for j, ins in enumerate(instrs):
            k = start + j
            outs = [f"B{where[n]}" if n in where else "None" for n, *_ in ins.defines]
            temps = [f"B{where[f'~{k}.{t}']}" for t in range(len(ins.temps))]
            env.update(getattr(ins, "env", {}))
            out += [ind + line for line in listing.tagged(ins.emit(outs, temps), ins.tag)]
            if k in drops:
                out.append(ind + " = ".join(sorted(drops[k])) + " = None")
        return out
    if numpy:  # np.errstate(over="raise"), in the cheap form of gpugrad.fpstate
        lines += within("OVER_RAISED", block(prog[:n_forward], 0, "        "))
    else:
        lines += block(prog[:n_forward], 0, "    ")
    if grads and not seeded and any("seed_" in ins.reads for ins in prog):
        seed = "FOLDED_LR(opt)" if update.folds(opt, numpy) else "1.0"  # (lr: compiler.update)
        r = results[0]
        known = "SEED_DTYPE" in env  # the value's shape and dtype (it may be left out)
        dt, sh = ("SEED_DTYPE", "SEED_SHAPE") if known else (f"{r}.dtype", f"{r}.shape")
        reshape = "" if known and env["SEED_SHAPE"] == () else f".reshape({sh})"
        line = (f"    seed_ = np.array({seed}, {dt}){reshape}" if numpy
                else f"    seed_ = xp.full_like({r}, {seed})")  # NumPy: no Python layers
        lines += listing.tagged([line], "backward seed" + (" (the learning rate)"
                                                           if seed != "1.0" else ""))
    if numpy:  # a tiny gradient or update is not an error (see gpugrad.fpstate)
        lines += within("UNDER_IGNORED", block(prog[n_forward:], n_forward, "        "))
    else:
        lines += block(prog[n_forward:], n_forward, "    ")
    lines.append(f"    return {results[0]}, [{', '.join(results[1:])}]")
    source, head = used_buffers(lines, head)
    frames = None
    if sizing is not None:  # the batch-sized parts are read from the frame of a size
        sizing.buffers = buffers
        source = batch.symbolic_source(source, env, head, sizing)
        frames = batch.Frames(sizing, xp, numpy)
    code = listing.untagged(source)  # (a tag never adds a name)
    env.update(lower.vectors_in(code))
    env.update(formula.constants_in(code))
    fn = build_function(source, env, "program")
    bufs = None if frames is not None else [
        plan.empty(xp, shape, dtype) if numpy else None for shape, dtype in buffers]
    return fn, bufs, source, xp, frames, env.get("KERNELS", [])


def within(flags: str, body: list) -> list:
    """``body`` (indented for it) under the error state ``flags`` names, restored after."""
    if not body:
        return []
    return [f"    tok_ = fp_enter(fp_state({flags}))", "    try:", *body, "    finally:",
            "        fp_leave(tok_)"]
