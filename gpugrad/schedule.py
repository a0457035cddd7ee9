"""A graph compiled once into a flat schedule, then run per feed.

Slots hold every value. The forward steps run in topological order; each intermediate is
dropped after its last forward use (only its shape and dtype are kept for backward). The
backward steps are the ones on a path to a gradient target, reversed, each with its VJP
rules already picked for the backend and for the inputs that need a gradient.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import backend as B
from . import codegen, eager
from . import errors as E
from .eager import _scalars_to_arrays, backend_name, seed_gradient
from .fpstate import quiet
from .interpret import run_checked
from .tensor import Tensor, no_grad

GUARDED = "numpy-overflow-raises"
"""Fast-path key for NumPy rules that rely on running inside errstate(over="raise")."""


class FeedError(ValueError):
    """A feed is missing, or does not match its Placeholder's shape or dtype."""


class Schedule:
    """The compiled form of one output and one list of gradient targets (``wrt``)."""

    def __init__(self, root: Any, wrt: tuple) -> None:
        from .graph import Placeholder, Symbol

        if isinstance(root, Placeholder):
            raise ValueError("a Placeholder on its own is not a graph to run")
        slot_of: dict = {}
        template: list = []
        self.placeholders: list = []
        self.tensors: list = []
        steps: list = []
        self.sites: list = []  # where each step's op was built, for error messages

        def leaf_slot(a: Any) -> int:
            if isinstance(a, (Symbol, Tensor)):
                s = slot_of.get(a)
                if s is None:
                    s = slot_of[a] = len(template)
                    template.append(None)
                    (self.tensors if isinstance(a, Tensor) else self.placeholders).append((s, a))
                return s
            template.append(a)  # a Python scalar or None: a constant slot of its own
            return len(template) - 1

        stack: list = [(root, False)]
        while stack:
            sym, expanded = stack.pop()
            if sym in slot_of:
                continue
            if sym.op is None:
                leaf_slot(sym)
                continue
            if not expanded:
                stack.append((sym, True))
                stack.extend((a, False) for a in sym.args
                             if isinstance(a, Symbol) and a not in slot_of)
                continue
            ins = tuple(slot_of[a] if isinstance(a, Symbol) and a.op is not None
                        else leaf_slot(a) for a in sym.args)
            out = slot_of[sym] = len(template)
            template.append(None)
            steps.append((sym.op, ins, sym.params, out))
            self.sites.append(sym.site)
        self.template = template
        self.out = slot_of[root]
        self.ops = [op for op, *_ in steps]
        self.wrt = []
        for w in wrt:
            s = slot_of.get(w)
            if s is None:
                raise ValueError(f"gradients: {w!r} is not used by the graph of {root!r}")
            if isinstance(w, Tensor) and not w.requires_grad:
                raise ValueError(f"gradients: {w!r} does not require gradients")
            self.wrt.append(s)

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
        self.forward = [
            (op.fast_forward.get(self.backend, op.forward), ins, params, out, tuple(frees[k]))
            for k, (op, ins, params, out) in enumerate(steps)
        ]
        numpy = self.xp is np
        fsrc, fenv = codegen.forward_source([f[:4] for f in self.forward], self.keep_res,
                                            frees, numpy)
        bsrc, benv = codegen.backward_source(back, self.backend, numpy,
                                             {i for f in frees for i in f})
        self.source = fsrc + "\n\n" + bsrc
        self._forward = codegen.build(fsrc, fenv, "forward")
        # NumPy: a variant run entirely inside errstate(over="raise"), whose rules may skip
        # their own overflow guards (one errstate per run instead of one per sigmoid)
        self._forward_guarded = None
        guarded = [op.fast_forward.get(GUARDED) for op in self.ops] if numpy else []
        if any(guarded):
            steps = [(g or f[0], *f[1:4]) for g, f in zip(guarded, self.forward)]
            gsrc, genv = codegen.forward_source(steps, self.keep_res, frees, numpy)
            self._forward_guarded = codegen.build(gsrc, genv, "forward")
        self._backward = codegen.build(bsrc, benv, "backward")
        self.scalars_pending = [k for k, (_, ins, _, _) in enumerate(steps)
                                if any(type(template[i]) in (int, float, bool) for i in ins)]
        self.checked = False  # the first run goes step by step (gpugrad.interpret)

    def _convert_scalars(self, vals: list) -> None:
        """First run: scalars that rules need as arrays become 0-d arrays of the inputs'
        dtype, once (Placeholders fix their dtypes, so this holds for later runs)."""
        for k in self.scalars_pending:
            _, ins, _, _, _ = self.forward[k]
            args = [vals[i] for i in ins]
            ref = next((a for a in args if hasattr(a, "dtype")), None)
            _scalars_to_arrays(self.ops[k], args, ref, self.xp)
            for i, a in zip(ins, args):
                if type(self.template[i]) in (int, float, bool) and a is not vals[i]:
                    self.template[i] = vals[i] = a
        self.scalars_pending = []

    def _feeds(self, feed: Mapping, vals: list) -> None:
        for s, ph in self.placeholders:
            try:
                value = feed[ph]
            except KeyError:
                raise FeedError(E.at(
                    f"Placeholder {ph._label()} was not fed; pass feed={{placeholder: array}} "
                    "for every Placeholder the graph uses")) from None
            vals[s] = ph.check(value, self.xp, self.device)
        for s, t in self.tensors:
            vals[s] = t.data

    def run(self, feed: Mapping, grads: bool, seed: Any = None) -> tuple[Any, list]:
        """One forward sweep, and a backward sweep if ``grads``: (value, [gradients])."""
        hook = eager._anomaly
        if hook is not None and not hook.enabled():
            hook = None
        if hook is not None or not self.checked:
            out = run_checked(self, feed, grads, seed, hook)
            self.checked = True
            return out
        xp = self.xp
        vals = self.template[:]
        self._feeds(feed, vals)
        if self.scalars_pending:
            self._convert_scalars(vals)
        res: list = [None] * len(self.forward) if grads else []
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
            run_checked(self, feed, False, None, None)
            raise
        value = vals[self.out]
        if not grads:
            return value, []
        gv: list = [None] * len(vals)
        gv[self.out] = seed_gradient(value, xp, seed, "gradients")
        with no_grad(), quiet(xp):  # a tiny gradient is not an error (see gpugrad.fpstate)
            self._backward(xp, vals, res, meta, gv)
        return value, [gv[s] if gv[s] is not None else xp.zeros_like(vals[s]) for s in self.wrt]
