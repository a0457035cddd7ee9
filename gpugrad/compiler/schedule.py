"""A graph compiled once into a flat schedule, then run per feed.

Slots hold every value. The forward steps run in topological order; each intermediate is
dropped after its last forward use (only its shape and dtype are kept for backward). The
backward steps are the ones on a path to a gradient target, reversed, each with its VJP
rules already picked for the backend and for the inputs that need a gradient.
"""

from __future__ import annotations

from operator import attrgetter, is_
from typing import Any, Mapping

import numpy as np

from .. import backend as B
from .. import eager
from .. import errors as E
from ..eager import _scalars_to_arrays, backend_name, seed_gradient
from ..fpstate import quiet
from ..tensor import no_grad
from . import batch, codegen, program, update
from .interpret import checked_backward, checked_forward
from .trace import trace


class FeedError(ValueError):
    """A feed is missing, or does not match its Placeholder's shape or dtype."""


class Schedule:
    """The compiled form of one output and one list of gradient targets (``wrt``)."""

    def __init__(self, root: Any, wrt: tuple) -> None:
        tr = trace(root, wrt)
        template, steps = tr.template, tr.steps
        self.placeholders, self.tensors, self.sites = tr.placeholders, tr.tensors, tr.sites
        self.leaves = [t for _, t in self.tensors]  # the Tensors, in the order of ``tensors``
        self.out, self.wrt = tr.out, tr.wrt
        self.template = template
        self.ops = [op for op, *_ in steps]
        self.steps = steps
        self.programs: dict = {}  # planned programs, per signature (gpugrad.compiler.program)
        self.builds = 0  # programs planned so far (one serves every batch size: batch.py)
        self.marks = batch.batched(self.placeholders)  # which feeds' leading dim is the batch
        self.lead = self.marks.index(True) if any(self.marks) else -1
        self._specialised: set = set()  # keys whose program is built per batch size
        # the last lookup: (opt, grads, value, feeds' and tensors' (shape, dtype), program,
        # the feeds and the tensors' arrays themselves, as tuples)
        self._last: tuple = _NONE
        self.minimizer: Any = None  # the SGD that gpugrad.minimize steps with

        leaf = self.tensors[0][1] if self.tensors else None
        b = B.current()
        self.xp = leaf.xp if leaf is not None else b.xp
        self.device = leaf.device if leaf is not None else b.device
        self.backend = backend_name(self.xp)
        for _, t in self.tensors:
            if t.xp is not self.xp or (self.xp is not np and t.device != self.device):
                raise B.BackendError(E.at(
                    f"graph: Variables live on different backends or devices "
                    f"({B.describe_device(self.xp, self.device)} and "
                    f"{B.describe_device(t.xp, t.device)}); move them to one with "
                    "gpugrad.asarray under the backend you want"))

        # backward: the steps on a path from a target, with their rules chosen now
        needs_grad = [False] * len(template)
        for s in self.wrt:
            needs_grad[s] = True
        back = []
        for k, (op, ins, params, out) in enumerate(steps):
            needs = tuple(needs_grad[i] for i in ins)
            if op.differentiable and any(needs):
                needs_grad[out] = True
                back.append((k, out, out not in self.wrt, op, params, ins, needs))
        back.reverse()
        self.back = back
        self.keep_res = [False] * len(steps)
        for k, *_ in back:
            self.keep_res[k] = True

        # forward: drop each intermediate after its last forward use
        last_use = {}
        for k, (_, ins, _, _) in enumerate(steps):
            for i in ins:
                last_use[i] = k
        keep = {self.out, *self.wrt}
        frees: list[list[int]] = [[] for _ in steps]
        intermediates = {out for *_, out in steps}
        for i, k in last_use.items():
            if i in intermediates and i not in keep:
                frees[k].append(i)
        self.fsteps = [
            (op.fast_forward.get(self.backend, op.forward), ins, params, out, tuple(frees[k]))
            for k, (op, ins, params, out) in enumerate(steps)
        ]
        numpy = self.xp is np
        labels = [(op.name, site) for op, site in zip(self.ops, self.sites)]
        fsrc, fenv = codegen.forward_source([f[:4] for f in self.fsteps], self.keep_res,
                                            frees, numpy, labels)
        bsrc, benv = codegen.backward_source(back, self.backend, numpy,
                                             {i for f in frees for i in f}, labels)
        self.source = fsrc + "\n\n" + bsrc
        self._forward = codegen.build(fsrc, fenv, "forward")
        # NumPy: a variant run entirely inside errstate(over="raise"), whose rules may skip
        # their own overflow guards (one errstate per run instead of one per sigmoid)
        self._forward_guarded = None
        guarded = [op.fast_forward.get(program.GUARDED) for op in self.ops] if numpy else []
        if any(guarded):
            steps = [(g or f[0], *f[1:4]) for g, f in zip(guarded, self.fsteps)]
            gsrc, genv = codegen.forward_source(steps, self.keep_res, frees, numpy, labels)
            self._forward_guarded = codegen.build(gsrc, genv, "forward")
        self._backward = codegen.build(bsrc, benv, "backward")
        self.scalars_pending = [k for k, (_, ins, _, _) in enumerate(steps)
                                if any(type(template[i]) in (int, float, bool) for i in ins)]
        self.checked = False  # the first run goes step by step (gpugrad.interpret)

    def _convert_scalars(self, vals: list, k: int) -> None:
        """First run: step ``k``'s scalars that its rule needs as arrays become 0-d arrays of
        its inputs' dtype, once (Placeholders fix their dtypes, so this holds for later runs).
        Called just before step ``k`` runs, when its array inputs (an earlier step's output
        too) have values: a scalar is weak, so its dtype comes from them."""
        _, ins, _, _, _ = self.fsteps[k]
        args = [vals[i] for i in ins]
        ref = next((a for a in args if hasattr(a, "dtype")), None)
        _scalars_to_arrays(self.ops[k], args, ref, self.xp)
        for i, a in zip(ins, args):
            if type(self.template[i]) in (int, float, bool) and a is not vals[i]:
                self.template[i] = vals[i] = a

    def _feeds(self, feed: Mapping, vals: list) -> None:
        for s, ph in self.placeholders:
            try:
                value = feed[ph]
            except KeyError:
                raise FeedError(E.at(ph.not_fed(feed))) from None
            vals[s] = ph.check(value, self.xp, self.device)
        for s, t in self.tensors:
            vals[s] = t.data

    def forward(self, feed: Mapping, grads: bool) -> tuple[Any, "Saved"]:
        """One forward sweep: ``(value, saved)``. ``saved`` holds what :meth:`backward`
        needs (the values, the residuals, and shapes of freed intermediates); it is empty
        when ``grads`` is False."""
        hook = eager._anomaly
        if hook is not None and not hook.enabled():
            hook = None
        if hook is not None or not self.checked:
            vals, res = checked_forward(self, feed, grads, hook)
            self.checked = True
            return vals[self.out], Saved(vals, res, {}, True, hook, grads)
        xp = self.xp
        vals = self.template[:]
        self._feeds(feed, vals)
        res: list = [None] * len(self.fsteps) if grads else []
        meta: dict = {}
        try:
            if self._forward_guarded is not None:
                start = vals[:]
                try:
                    with np.errstate(over="raise"):
                        self._forward_guarded(xp, vals, res, meta, grads)
                except FloatingPointError:  # rare: rerun with every op's own handling
                    vals = start
                    self._forward(xp, vals, res, meta, grads)
            else:
                self._forward(xp, vals, res, meta, grads)
        except (ValueError, TypeError, IndexError):
            # step through again: the checked run names the op, its inputs and where the
            # graph's op was built (the error is deterministic, so it raises there)
            checked_forward(self, feed, False, None)
            raise
        return vals[self.out], Saved(vals, res, meta, False, None, grads)

    def backward(self, saved: "Saved", seed: Any = None) -> list:
        """The VJP sweep, once, from what :meth:`forward` saved: one gradient per ``wrt``."""
        if not saved.grads:
            raise RuntimeError("backward: the forward sweep ran with grads=False, so it saved "
                               "nothing to differentiate; run forward(feed, grads=True)")
        if saved.vals is None:
            raise RuntimeError("backward: this forward sweep's saved values were already "
                               "used by one backward; run forward again")
        xp = self.xp
        vals = saved.vals
        saved.vals = None
        gv: list = [None] * len(vals)
        gv[self.out] = seed_gradient(vals[self.out], xp, seed, "gradients")
        with no_grad(), quiet(xp):  # a tiny gradient is not an error (see gpugrad.fpstate)
            if saved.checked:
                checked_backward(self, vals, saved.res, gv, saved.hook)
            else:
                self._backward(xp, vals, saved.res, saved.meta, gv)
        return [gv[s] if gv[s] is not None else xp.zeros_like(vals[s]) for s in self.wrt]

    def run(self, feed: Mapping, grads: bool, seed: Any = None,
            value: bool = True) -> tuple[Any, list]:
        """One forward sweep, and a backward sweep if ``grads``: (value, [gradients]).

        After a first run at an input signature, later runs at that signature go through
        one planned program (``gpugrad.compiler.program``). ``value=False`` (gradients
        only): that program leaves out the forward steps only the value needs, and the
        value returned may then be None."""
        want = value or not grads
        if seed is None:
            got = self._run_program(feed, grads, None, want)
            if got is not None:
                return got
        value, saved = self.forward(feed, grads)
        if seed is not None:
            return value, self.backward(saved, seed) if grads else []
        vals, shapes = saved.vals, _shapes(saved)
        out = (value, self.backward(saved, seed) if grads else [])
        self._add_program(vals, shapes, grads, None, want)  # (present: that run overflowed)
        return out

    def train_step(self, opt: Any, feed: Mapping) -> Any:
        """Forward, backward and ``opt``'s update of ``wrt`` (``opt.params``) as one compiled
        program per input signature; returns the loss value."""
        got = self._run_program(feed, True, opt)
        if got is not None:
            return got[0]
        value, saved = self.forward(feed, True)
        if self._add_program(saved.vals, _shapes(saved), True, opt, True):
            # the checked forward settled the signature; the step itself runs as the
            # program, as every later step at this signature does, so a training run gives
            # the same bits whichever step a process starts at (a resumed run, say)
            got = self._run_program(feed, True, opt)
            if got is not None:
                return got[0]
        grads = self.backward(saved)
        opt._apply(list(zip(opt.params, grads)))
        return value

    def forget(self) -> None:
        """Drop the planned programs: the next runs plan anew (with the tier that
        ``GPUGRAD_JIT`` says then)."""
        self.programs.clear()
        self._specialised.clear()
        self._last = _NONE

    def numpy_program(self, feeds: list, datas: list, grads: bool, opt: Any,
                      value: bool = True) -> Any:
        """The planned program filed for these feeds and Variable arrays (and mode), or
        None: the one lookup :meth:`_run_program` and gg.compile's direct path share. The
        feeds' batch dims are not part of the key (gpugrad.compiler.batch), unless the
        graph's program had to be built for its batch size. The same arrays as the last
        call's (the same objects: their shapes and dtypes were checked then) are not checked
        again, but for the feeds' shapes and dtypes (see :func:`_same`)."""
        last = self._last
        if last[0] is opt and last[1] is grads and last[2] is value:  # as the last call?
            if _same(feeds, datas, last):
                return last[5]
            for v, (shape, dtype) in zip(feeds, last[3]):
                if v.shape != shape or v.dtype is not dtype:
                    break
            else:
                for d, (shape, dtype) in zip(datas, last[4]):
                    if d.shape != shape or d.dtype is not dtype:
                        break
                else:
                    self._last = (*last[:6], tuple(feeds), tuple(datas))
                    return last[5]
        tensors = tuple([(d.shape, d.dtype) for d in datas])
        prog = self.programs.get(((batch.key(feeds, self.marks, self.lead), tensors), grads,
                                  opt, value))
        if prog is None and self._specialised:
            prog = self.programs.get(((tuple([(v.shape, v.dtype) for v in feeds]), tensors),
                                      grads, opt, value))
        if prog is not None:
            self._last = (opt, grads, value, tuple([(v.shape, v.dtype) for v in feeds]),
                          tensors, prog, tuple(feeds), tuple(datas))
        return prog

    def program_for(self, feed: Mapping, grads: bool, opt: Any = None,
                    value: bool = True) -> Any:
        """The planned program that runs at ``feed``'s signature in this mode (as
        :meth:`run` or :meth:`train_step` file it): the one filed, else one built the same
        way from a forward sweep over ``feed`` (run once, step by step, for the shapes; no
        gradient, no update) and not filed, so later runs go as they would have."""
        prog, feeds, datas = self._filed(feed, grads, opt, value)
        if prog is None:
            vals, _ = checked_forward(self, feed, False, None)
            shapes = _shapes(Saved(vals, [], {}, True, None, False))
            specialised = set(self._specialised)
            prog = self._plan(feeds, datas, shapes, grads, opt, value)[1]
            self._specialised = specialised  # (nothing filed)
        return prog

    def _filed(self, feed: Mapping, grads: bool, opt: Any, value: bool) -> tuple:
        """``(program or None, feeds, datas)``: ``feed`` checked and converted, and the
        program filed for it."""
        vals = self.template[:]
        self._feeds(feed, vals)
        feeds = [vals[s] for s, _ in self.placeholders]
        datas = [vals[s] for s, _ in self.tensors]
        return self.numpy_program(feeds, datas, grads, opt, value), feeds, datas

    def _add_program(self, vals: list, shapes: list, grads: bool, opt: Any,
                     value: bool) -> bool:
        """Plan the program of the signature of ``vals`` (a run's values, whose shapes and
        dtypes are ``shapes``), unless there is one already. Returns whether it did: one
        program for every batch size where the graph's shapes follow the batch, else one
        for this batch size."""
        feeds = [vals[s] for s, _ in self.placeholders]
        datas = [vals[s] for s, _ in self.tensors]
        if self.numpy_program(feeds, datas, grads, opt, value) is not None:
            return False
        if len(self.programs) >= MAX_PROGRAMS:
            self.programs.pop(next(iter(self.programs)))
        key, prog = self._plan(feeds, datas, shapes, grads, opt, value)
        self.programs[key] = prog
        self.builds += 1
        return True

    def _plan(self, feeds: list, datas: list, shapes: list, grads: bool, opt: Any,
              value: bool) -> tuple:
        """``(key, program)``: the program for these feeds, independent of the batch size
        where it can be (then filed under a key without it), else for this batch size."""
        tensors = tuple([(tuple(d.shape), d.dtype) for d in datas])
        fed = batch.key(feeds, self.marks, self.lead)
        key = ((fed, tensors), grads, opt, value)
        prog = None
        if key not in self._specialised:
            marks = tuple(bool(f[0]) and f[0][0] is None for f in fed)
            probed = batch.probe(self, shapes, marks)
            try:
                prog = probed and program.build(self, probed[0], grads, opt, value=value,
                                                sizing=probed[1])
            except batch.Specialise:
                prog = None
        if prog is None:  # planned for this batch size, as its exact signature
            if fed != (exact := tuple([(tuple(v.shape), v.dtype) for v in feeds])):
                self._specialised.add(key)
                key = ((exact, tensors), grads, opt, value)
            prog = program.build(self, shapes, grads, opt, value=value)
        return key, prog

    def _run_program(self, feed: Mapping, grads: bool, opt: Any,
                     value: bool = True) -> tuple | None:
        """The planned program's result, or None where there is none yet (or it must not
        run: anomaly mode, a run that overflowed in the forward sweep)."""
        if not self.programs or not self.checked:
            return None
        hook = eager._anomaly
        if hook is not None and hook.enabled():
            return None
        feeds: list = []
        if self.xp is np:  # a feed of a shape and dtype seen before passed its checks then
            plain = type(feed) is dict
            for _, ph in self.placeholders:
                v = feed.get(ph) if plain else None
                if type(v) is not np.ndarray:
                    feeds = []
                    break
                feeds.append(v)
            else:
                datas = list(map(_DATA, self.leaves))
                last = self._last
                if last[0] is opt and last[1] is grads and last[2] is value and \
                        _same(feeds, datas, last):
                    # the same arrays as the last call: its tuples, which a table kernel
                    # (gpugrad.compiler.native_table) knows by identity
                    prog, feeds, datas = last[5:]
                else:
                    prog = self.numpy_program(feeds, datas, grads, opt, value)
        if len(feeds) != len(self.placeholders) or self.xp is not np:
            prog, feeds, datas = self._filed(feed, grads, opt, value)
        if prog is None:
            return None
        try:
            return prog(feeds, datas, opt)
        except update.OptionsChanged:  # its learning rate folded in no longer holds
            self.forget()
            return None
        except FloatingPointError:  # overflow under the forward's errstate: run generically
            env = prog.fn.__globals__
            stepping = env.get("STEPPING_")
            if stepping is not None and stepping[0]:  # in the update: its writes stand (a
                if stepping[0] == 1:  # run again would step twice), recorded
                    env["bump"](opt, env["SITE"])
                raise
            return None
        except (ValueError, TypeError, IndexError):
            checked_forward(self, feed, False, None)  # names the op, as the generic run does
            raise


_NONE = (False, None, None, (), (), None, (), ())


def _same(feeds: list, datas: list, last: tuple) -> bool:
    """Whether ``feeds`` and ``datas`` are the very arrays of the last lookup ``last``, the
    feeds still of the shapes and dtypes they had then: a fed array is the user's, who may
    set its ``shape`` or ``dtype`` in place between runs (a few feeds, so this costs little;
    a Variable's array is gpugrad's, and a graph may hold a hundred)."""
    return all(map(is_, datas, last[7])) and all(map(is_, feeds, last[6])) and all(
        v.shape == shape and v.dtype is dtype for v, (shape, dtype) in zip(feeds, last[3]))
_DATA = attrgetter("data")

MAX_PROGRAMS = 8
"""Planned programs kept per schedule (signatures and modes); the oldest goes first."""


class Saved:
    """What a forward sweep keeps for its backward sweep (opaque to callers)."""

    __slots__ = ("checked", "grads", "hook", "meta", "res", "vals")

    def __init__(self, vals: list, res: list, meta: dict, checked: bool, hook: Any,
                 grads: bool) -> None:
        self.vals, self.res, self.meta = vals, res, meta
        self.checked, self.hook, self.grads = checked, hook, grads


def _shapes(saved: Saved) -> list:
    """(shape, dtype) of every slot a forward sweep saw (None for non-arrays)."""
    out: list = []
    for i, v in enumerate(saved.vals):
        if i in saved.meta:
            out.append(saved.meta[i])
        elif hasattr(v, "shape") and hasattr(v, "dtype"):
            out.append((tuple(v.shape), v.dtype))
        else:
            out.append(None)
    return out
