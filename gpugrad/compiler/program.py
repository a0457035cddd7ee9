"""A whole run as one planned program: forward, backward and (for a training step) the
optimizer update, for one input signature.

``build(sched, shapes, grads, opt)`` turns a schedule and the shapes and dtypes its first
run saw into a list of instructions (``gpugrad.compiler.plan.Instr``): lowered steps write
into planned buffers, every other step calls its registered rules as the generic code does.
``plan.assign`` gives the buffers and ``emit`` writes one Python function.

A value handed back (the output, the gradients of ``gg.gradients``) is never planned, so no
later run overwrites it.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from typing import Any

import numpy as np

from .. import fpstate
from ..eager import as_array, fit
from ..registry import gradient_tuple
from . import (
    batch,
    cuda_program,
    listing,
    lower,
    native_calls,
    plan,
    rewrite,
    stack,
    tier,
    update,
)
from .emit import program as emitted

GUARDED = "numpy-overflow-raises"  # fast-path key: rules run under errstate(over="raise")


def _acc(xp: Any, *cs: Any) -> Any:
    """Sum of the contributions that are not None (None if all are)."""
    got = [c for c in cs if c is not None] or [None]
    return functools.reduce(lambda total, c: as_array(xp, total + c), got)


class Program:
    """One compiled, planned run; call it with the vals list (feeds filled in).
    ``tier``: "numpy", or "native" once its fusion groups run as compiled kernels
    (gpugrad.compiler.tier switches it; ``kernels``: its groups, ``(name, Group)``).

    A program independent of the batch size (``frames``, gpugrad.compiler.batch) reads
    its buffers and batch-sized values from the frame of the batch size fed (the leading
    dim of feed ``frames.sizing.lead``), made the first time that size comes."""

    def __init__(self, fn: Any, buffers: list | None, source: str, xp: Any,
                 frames: batch.Frames | None = None, kernels: list = ()) -> None:
        self.fn = fn
        self.buffers = buffers
        self.source = source
        self.xp = xp
        self.kernels = list(kernels)
        self.tier = "numpy"
        self.busy = threading.Lock()  # the buffers serve one run at a time
        self.runs = 0
        self.first: float | None = None
        self.remake: Any = None  # builds the native tier (see gpugrad.compiler.tier)
        self.frames = frames
        self.lead = frames.sizing.lead if frames is not None else 0
        self.rebuild: Any = None  # build(...) again with this program's arguments

    def fused(self) -> Program:
        """This program with its fusion groups, as its native tier has them, built without
        compiling or loading a kernel (numba need not be installed): ``.kernels`` are the
        groups ``(name, Group)``, ``.source`` calls them. What gpugrad.compiler.cuda_group
        writes CUDA kernels from, and counts the launches of."""
        return self.rebuild(native=True)

    def __call__(self, feeds: list, datas: list, opt: Any) -> tuple | None:
        """``feeds``: the Placeholders' values, ``datas``: the Tensors' arrays, in the
        schedule's order. None when another thread is running this program (the caller
        then runs the generic code, which keeps nothing between runs)."""
        if not self.busy.acquire(False):
            return None
        try:
            self.runs += 1
            if not self.runs & 63 and self.remake is not None:
                tier.tick(self)
            bufs, frames = self.buffers, self.frames
            if frames is not None:
                n = feeds[self.lead].shape[0]
                bufs = frames.last if n == frames.last_n else frames.get(n)
                if bufs is None:  # a size the program does not fit: the generic code runs
                    return None
            return self.fn(self.xp, feeds, datas, bufs, None, opt)
        finally:
            self.busy.release()


def build(sched: Any, shapes: list, grads: bool, opt: Any = None, seeded: bool = False,
          value: bool = True, sizing: batch.Sizing | None = None,
          native: bool | str = False, device: Any = None, ruled: frozenset = frozenset()
          ) -> Program:
    """The program for ``sched`` at the signature whose slot shapes are ``shapes``.
    ``seeded``: the caller passes the seed gradient (else the program starts from ones, or
    from ``opt.lr`` for plain SGD). ``value=False``: only the gradients are wanted, so the
    steps that only the value needs are left out (the program then returns None for it).
    ``sizing``: ``shapes`` are at the probe batch size, and the program is made independent
    of the batch size (gpugrad.compiler.batch; raises ``batch.Specialise`` where it cannot
    be). ``native``: the native tier's program (gpugrad.compiler.tier): each fusion group
    of elementwise steps (gpugrad.compiler.fuse) runs as one kernel ("numba": any length).
    ``device``: a CuPy program's, by default (gpugrad.compiler.cuda_program; False: none);
    ``ruled``: the steps that run their rules on it (cuda_program.left_out)."""
    xp = sched.xp  # lowering is for real values; a complex one runs the rules (they conjugate)
    dev = cuda_program.choose(xp, device, shapes, native)  # its groups: CUDA kernels
    numpy = xp is np and dev is None and cuda_program.real(shapes)  # errstate, lowered update
    lowers = numpy or dev is not None
    steps = sched.steps
    env: dict[str, Any] = {"np": np, "asarray": np.asarray, "ndarray": np.ndarray, "fit": fit,
                           "isfinite": math.isfinite,
                           "as_array": as_array, "check": gradient_tuple, "acc": _acc,
                           "fp_state": fpstate.state_with, "fp_enter": fpstate.ENTER,
                           "fp_leave": fpstate.LEAVE, "OVER_RAISED": fpstate.OVER_RAISED,
                           "UNDER_IGNORED": fpstate.UNDER_IGNORED, **lower.TYPED}
    prog: list = []
    out = sched.out
    keep = {out, *sched.wrt}
    readers: dict = {}
    for _, ins, _, _ in steps:
        for i in ins:
            readers[i] = readers.get(i, 0) + 1
    in_back = {k for k, *_ in sched.back}
    needs_of = {k: needs for k, _, _, _, _, _, needs in sched.back}
    neg_producers = rewrite.negated_producers(steps, readers, keep, shapes) \
        if numpy and not native else set()  # a kernel negates for free
    negated: set = set()  # outputs of those producers, once lowered (they hold minus it)
    kernel_made: set = set()  # values an op's own device kernel makes (cuda_program.lowered)
    in_groups: set = set()  # steps a device keeps lowered only as fusion-group members
    # the seed is exactly 1 unless the caller passes one or the learning rate is folded in
    unit = grads and not seeded and not update.folds(opt, numpy)
    if dev:
        env["DEVICE"] = True  # (a kernel folds a mean in whole: gpugrad.compiler.native_fold)

    def own_kernel(kernel: Any, value: str) -> str | None:
        """The program's name of an op's own kernel for ``value``, where it has one for the
        tier (a device: ``NativeKernel.cuda``)."""
        if native or dev and cuda_program.has_kernel(kernel):
            return native_calls.op_kernel(env, kernel, value)
        return None

    def info_of(ins: list) -> list:
        return [shapes[i] if shapes[i] is not None or type(sched.template[i]) not in
                (int, float) else lower.SCALAR for i in ins]

    def lowered(k: int, neg: bool) -> Any:
        """Step ``k``'s lowered forward, if it and the backward it needs lower."""
        op, ins, params, o = steps[k]
        if not lowers or shapes[o] is None:
            return None
        names, info = [f"v{i}" for i in ins], info_of(ins)
        low = lower.forward(op, names, info, shapes[o], params, negated=neg)
        saved = tuple(f"s{j}_" for j in range(len(low.saved))) if low is not None else ()
        one = bool(dev) and unit and o == out  # (a device's mean: its gradient a host number)
        backs = [lower.backward(op, pos, "g", names, info, "o", shapes[o], params, saved=saved,
                                one=one)
                 for pos, need in enumerate(needs_of[k]) if need] if low and k in in_back else []
        if None in backs or k in ruled:
            return None
        how = cuda_program.lowered(low, backs, dev, kernel_made) if low and dev else "code"
        if not how:
            return None
        if how == "groups":
            in_groups.add(k)
        if low and dev and cuda_program.has_kernel(low.native):
            if readers.get(o) != 1 or o in keep:
                return None  # (an op's own device kernel: for a value a mean reads alone)
            kernel_made.add(f"v{o}")
        return low

    # forward
    low_f: dict = {}
    saved_of: dict = {}  # step -> names of the values its lowered forward saves
    fwd_lines: list = []  # instructions of the forward block
    tags = listing.Tags(sched)
    for k, (op, ins, params, o) in enumerate(steps):
        ftag = tags.step(k)
        low = lowered(k, ins[0] in negated if ins else False)
        if low is not None and k in neg_producers and lowered(neg_producers[k], True):
            got = op.lowering.negated([f"v{i}" for i in ins], info_of(ins), shapes[o],
                                      params, lower.CTX)  # it writes minus its value
            low = got if isinstance(got, lower.Forward) else lower.Forward(*got, ())
            negated.add(o)
        if low is not None and (native or dev) and low.epilogue is not None:
            low_f[k] = low  # the product, then its elementwise epilogue (a fusion member)
            fwd_lines += native_calls.split(low.epilogue, [f"v{i}" for i in ins], o, shapes[o],
                                            ftag)
            continue
        if low is not None:
            low_f[k] = low
            over = [f"v{ins[j]}" for j in low.over if shapes[ins[j]] == shapes[o]]
            saved = [f"s{k}_{j}" for j in range(len(low.saved))]
            saved_of[k] = tuple(saved)

            def emit(outs, temps, em=low.emit, o=o, saved=saved, kept=low.saved,
                     own=own_kernel(low.native, f"v{o}")):
                made = []  # (on a device, its values made where not planned: no NumPy code)
                if own is not None and dev:
                    outs, made = cuda_program.allocated(outs, [(f"v{o}", *shapes[o]), *[
                        (n, *sv) for n, sv in zip(saved, kept)]], env)
                if own is not None and "None" not in (outs[:1 + len(saved)] if dev else outs):
                    return made + native_calls.op_call(env, own, f"v{o}", outs[0], saved,
                                                       outs[1:])
                if saved:
                    return em(f"v{o}", outs[0], saved, outs[1:], temps)
                return em(f"v{o}", outs[0], *temps)
            fwd_lines.append(plan.Instr([f"v{i}" for i in ins], [
                (f"v{o}", *shapes[o]), *[(n, *sv) for n, sv in zip(saved, low.saved)]],
                emit, not low.view, inplace={f"v{o}": over}, temps=low.temps, tag=ftag,
                scalar=None if saved else low.scalar, total=low.total, part=low.part,
                product=low.product))
            continue
        fwd = sched.fsteps[k][0]
        if numpy:
            fwd = op.fast_forward.get(GUARDED) or fwd
        env[f"F{k}"] = fwd
        kw = ""
        if params:
            env[f"P{k}"] = params
            kw = f", **P{k}"
        r = f"r{k}" if (grads and k in in_back) else "_"
        args = ", ".join(f"v{i}" for i in ins)

        def emit(outs, temps, k=k, o=o, r=r, args=args, kw=kw):
            fix = f"v{o} = o_ if type(o_) is ndarray else asarray(o_)" if numpy \
                else f"v{o} = o_"
            return [f"o_, {r} = F{k}(xp, {args}{kw})", fix]
        defines = [(f"v{o}", None, None)] + ([(r, None, None)] if r != "_" else [])
        fwd_lines.append(plan.Instr([f"v{i}" for i in ins], defines, emit, False, tag=ftag))
    prog += fwd_lines
    n_forward = len(prog)

    # backward
    contrib: dict = {}  # slot -> [(value name, maybe None)]
    gname: dict = {}

    def grad_of(slot: int) -> tuple[str, bool]:
        """The finished gradient of ``slot``: its contributions summed (an instruction when
        there are several). Returns (name, may be None)."""
        if slot in gname:
            return gname[slot]
        cs = contrib.get(slot, [])
        if len(cs) > 1:
            cs = [(full(c, slot), maybe) for c, maybe in cs]
        if not cs:
            gname[slot] = (None, True)
        elif len(cs) == 1:
            gname[slot] = cs[0]
        else:
            name = f"g{slot}"
            if all(not maybe for _, maybe in cs) and lowers and shapes[slot] is not None:
                names = [c for c, _ in cs]

                def emit(outs, temps, names=names, name=name):
                    lines = [f"{name} = np.add({names[0]}, {names[1]}, {outs[0]})"]
                    lines += [f"np.add({name}, {c}, {name})" for c in names[2:]]
                    return lines
                total: tuple = ("name", names[0])
                for c in names[1:]:
                    total = ("add", total, ("name", c))
                prog.append(plan.Instr(names, [(name, *shapes[slot])], emit, True,
                                       scalar=total, tag=tags.value(slot, "gradient sum")))
                gname[slot] = (name, False)
            else:
                names = ", ".join(c for c, _ in cs)
                prog.append(plan.Instr([c for c, _ in cs], [(name, None, None)],
                                       lambda outs, temps, name=name, names=names:
                                       [f"{name} = acc(xp, {names})"], False,
                                       tag=tags.value(slot, "gradient sum")))
                gname[slot] = (name, any(m for _, m in cs))
        return gname[slot]

    scalar: set = set()  # 0-d gradients standing for their broadcast (a full sum's)

    def full(g: str, slot: int) -> str:
        """``g`` as a gradient of ``slot``'s shape (a 0-d stand-in broadcast)."""
        if g not in scalar or shapes[slot] is None or shapes[slot][0] == ():
            return g
        name = f"b{len(prog)}"
        env[f"S_{name}"] = shapes[slot][0]
        # (a view, not planned; its formula, the 0-d read at every element, joins a group)
        prog.append(plan.Instr([g], [(name, *shapes[slot])], lambda outs, temps, g=g,
                               name=name: [f"{name} = xp.broadcast_to({g}, S_{name})"], False,
                               scalar=("name", g) if lowers else None))
        return name

    if grads:
        contrib[out] = [("seed_", False)]
        vjp_tag, start = "", len(prog)
        for k, o, _, op, params, ins, needs in sched.back:
            listing.label(prog, start, vjp_tag)  # the previous step's instructions
            vjp_tag, start = tags.step(k, "vjp"), len(prog)
            g, maybe = grad_of(o)
            if g is None:
                continue
            if not (k in low_f and lower.takes_scalar_g(op)):
                g = full(g, o)
            if k in low_f:
                if maybe:
                    g = _guard(prog, g, shapes[o])
                info = [shapes[i] if shapes[i] is not None else lower.SCALAR for i in ins]
                for pos, need in enumerate(needs):
                    if not need:
                        continue
                    got = lower.backward(
                        op, pos, g, [f"v{i}" for i in ins], info, f"v{o}", shapes[o],
                        params, one=unit and g == "seed_", saved=saved_of.get(k, ()),
                        scalar_g=g in scalar)
                    reads, em, alias, temps = got[:4]
                    c = f"c{k}_{pos}"
                    if alias == "scalar":  # a 0-d gradient standing for its broadcast
                        if em is not None:  # computed from g (a mean's g / n)
                            prog.append(plan.Instr(reads, [(c, None, None)],
                                                   lambda outs, tmps, em=em, c=c: em(
                                                       c, None, tmps), True))
                        else:
                            c = g
                        scalar.add(c)
                        contrib.setdefault(ins[pos], []).append((c, False))
                        continue
                    own = own_kernel(got.native, c)
                    prog.append(plan.Instr(
                        reads, [(c, *shapes[ins[pos]])],
                        lambda outs, tmps, em=em, c=c, own=own, sh=shapes[ins[pos]]: (
                            _own_call(env, own, c, sh, outs, dev) if own and (
                                outs[0] != "None" or dev) else em(c, outs[0], tmps)), True,
                        alias={c: g} if alias else {}, temps=temps, product=got.product,
                        scalar=("name", g) if alias else got.scalar, rows=got.rows))
                    contrib.setdefault(ins[pos], []).append((c, False))
                continue
            prog.append(_generic_backward(env, k, o, g, maybe, op, params, ins, needs, shapes,
                                          sched.backend, numpy, contrib))
        listing.label(prog, start, vjp_tag)
    results = [f"v{out}"]
    if grads:
        for s in sched.wrt:
            start = len(prog)
            g, maybe = grad_of(s)
            if g is not None:
                g = full(g, s)
            if g is None or maybe:
                g = _guard(prog, g, shapes[s], zeros=True)
            listing.label(prog, start, tags.value(s, "gradient"))
            results.append(g)
    escapes = {f"v{out}", "seed_"}
    if opt is None:
        escapes |= set(results)
    else:
        start = len(prog)
        prog += update.instructions(opt, sched, results[1:], shapes, env, numpy, native, dev)
        listing.label(prog, start, listing.tag(f"{type(opt).__name__} update"))
    if shapes[out] is not None:
        env["SEED_SHAPE"], env["SEED_DTYPE"] = shapes[out]
    if grads and not value and lowers and shapes[out] is not None:
        prog, n_forward = _prune(prog, n_forward, results[1:])
        results[0] = "None"
    prog, n_forward = stack.rewrite(prog, n_forward) if numpy else (prog, n_forward)
    if native or dev:
        prog, n_forward = native_calls.replaced(prog, n_forward, sched, shapes, scalar,
                                               escapes | set(results), env, native == "numba",
                                               dev and cuda_program.instruction)
    left = dev and cuda_program.left_out(prog, dev, in_groups, {o: k for k, (*_, o) in
                                                                enumerate(steps)})
    if left:  # (a step kept for a group that none took: its rules, never its NumPy lines)
        return build(sched, shapes, grads, opt, seeded, value, sizing, native, dev,
                     ruled | left)
    where, buffers = plan.assign(prog, escapes)
    env["PLANNED"] = where
    made = Program(*emitted(prog, n_forward, where, buffers, results, sched, env, numpy, xp,
                            grads, opt, seeded, sizing))
    made.rebuild = functools.partial(_rebuild, weakref.ref(sched), shapes, grads, opt, seeded,
                                     value, sizing)  # no cycle through the schedule's programs
    made = cuda_program.bind(made, dev, buffers) if dev else made  # its kernels compiled
    if numpy and not native:
        tier.offer(made, functools.partial(tier.switch, functools.partial(made.rebuild,
                                                                          native="numba")))
    return made


def _own_call(env: dict, own: str, c: str, shape: tuple, outs: list, dev: Any) -> list:
    """The lines calling an op's own kernel ``own`` for the gradient ``c`` (of ``shape``,
    (shape, dtype)): on a device, into a new array where ``c`` is not planned."""
    made = []
    if dev:
        outs, made = cuda_program.allocated(outs, [(c, *shape)], env)
    return made + native_calls.op_call(env, own, c, *outs)


def _rebuild(sched: Any, shapes: list, grads: bool, opt: Any, seeded: bool, value: bool,
             sizing: Any, native: bool | str = False, device: Any = None) -> Program:
    """``build`` again for the schedule ``sched()`` (a weak reference), with a sizing of its
    own (gpugrad.compiler.batch)."""
    got = sched()
    if got is None:
        raise ReferenceError("this program's graph is gone: nothing can rebuild it")
    return build(got, shapes, grads, opt, seeded, value, sizing and sizing.renewed(),
                 native=native, device=device)


def _prune(prog: list, n_forward: int, roots: list) -> tuple[list, int]:
    """``prog`` without the instructions whose values nothing needed reads (those with no
    values, the optimizer's update, are kept), and the new length of its forward block."""
    need = set(roots)
    kept = []
    for k in range(len(prog) - 1, -1, -1):
        ins = prog[k]
        if not ins.defines or any(n in need for n, *_ in ins.defines):
            kept.append(k)
            need.update(ins.reads)
    kept.reverse()
    return [prog[k] for k in kept], sum(k < n_forward for k in kept)


def _guard(prog: list, g: str | None, info: Any, zeros: bool = False) -> str:
    """A gradient that may be None becomes zeros of its input's shape."""
    name = f"z{len(prog)}"
    shape, dtype = info
    src = g or "None"
    prog.append(plan.Instr([g] if g else [], [(name, None, None)],
                           lambda outs, temps: [
                               f"{name} = {src} if {src} is not None else "
                               f"xp.zeros(SH_{name}, dtype=DT_{name}, device=DEV)"], False))
    prog[-1].env = {f"DT_{name}": dtype, f"SH_{name}": shape}
    return name


def _generic_backward(env, k, o, g, maybe, op, params, ins, needs, shapes, backend, numpy,
                      contrib) -> plan.Instr:
    """A backward step through the registered VJP rules, as the generic code does."""
    kw = f", **P{k}" if params else ""
    if params:
        env[f"P{k}"] = params
    fast = op.fast_vjp.get(backend) if op.fast_vjp else None
    wanted = [(pos, ins[pos]) for pos, need in enumerate(needs) if need]
    lines: list = []
    ind = "    " if maybe else ""
    if maybe:
        lines.append(f"if {g} is not None:")
    if fast is None and op.vjps is not None:
        for pos, _ in wanted:
            env[f"R{k}_{pos}"] = op.vjps[pos]
            lines.append(f"{ind}c{k}_{pos} = R{k}_{pos}(xp, {g}, r{k}{kw})")
    else:
        env[f"R{k}"] = fast or op.vjp
        env[f"N{k}"] = op.name
        lines.append(f"{ind}gs_ = check(R{k}(xp, {g}, r{k}{kw}), N{k})")
        lines += [f"{ind}c{k}_{pos} = gs_[{pos}]" for pos, _ in wanted]
    defines = []
    for pos, slot in wanted:
        c = f"c{k}_{pos}"
        shape, dtype = shapes[slot]
        env[f"S{k}_{pos}"], env[f"D{k}_{pos}"] = shape, dtype
        same = (f"type({c}) is ndarray and {c}.shape == S{k}_{pos} and {c}.dtype is "
                f"D{k}_{pos}") if numpy else "False"
        lines += [f"{ind}if {c} is not None and not ({same}):",
                  f"{ind}    {c} = fit(xp, {c}, S{k}_{pos}, D{k}_{pos})"]
        defines.append((c, None, None))
        contrib.setdefault(slot, []).append((c, True))
    if maybe:
        lines = [f"c{k}_{pos} = None" for pos, _ in wanted] + lines
    return plan.Instr([g, f"r{k}"], defines, lambda outs, temps, lines=lines: lines, False)
