"""A graph compiled once into a flat schedule, then run per feed.

Slots hold every value. The forward steps run in topological order; each intermediate is
dropped after its last forward use (only its shape and dtype are kept for backward). The
backward steps are the ones on a path to a gradient target, reversed, each with its VJP
rules already picked for the backend and for the inputs that need a gradient.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from . import backend as B
from .eager import _describe, _scalars_to_arrays, as_array, backend_name, fit, seed_gradient
from .tensor import OpError, Tensor, no_grad


class FeedError(ValueError):
    """A feed is missing, or does not match its Placeholder's shape or dtype."""


def _grad_fn(op: Any, params: dict, ins: tuple, needs: tuple, backend: str) -> Callable:
    """``fn(xp, g, res) -> [(slot, gradient), ...]`` for the inputs that need one."""
    targets = [(pos, ins[pos]) for pos, need in enumerate(needs) if need]
    fast = op.fast_vjp.get(backend) if op.fast_vjp else None
    if fast is None and op.vjps is not None:
        rules = [(op.vjps[pos], slot) for pos, slot in targets]
        if params:
            return lambda xp, g, r: [(slot, rule(xp, g, r, **params)) for rule, slot in rules]
        return lambda xp, g, r: [(slot, rule(xp, g, r)) for rule, slot in rules]
    rule = fast or op.vjp
    name = op.name

    def all_then_pick(xp: Any, g: Any, r: Any) -> list:
        gs = rule(xp, g, r, **params)
        if not isinstance(gs, (tuple, list)):
            raise TypeError(f"op {name!r}: its VJP rule returned a {type(gs).__name__}; it "
                            "must return a tuple with one gradient per input")
        return [(slot, gs[pos]) for pos, slot in targets]

    return all_then_pick


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
                raise B.BackendError(
                    f"graph: Variables live on different backends or devices "
                    f"({B.describe_device(self.xp, self.device)} and "
                    f"{B.describe_device(t.xp, t.device)})")

        # backward: the steps on a path from a target, with their rules chosen now
        needs_grad = [False] * len(template)
        for s in self.wrt:
            needs_grad[s] = True
        back = []
        for k, (op, ins, params, out) in enumerate(steps):
            needs = tuple(needs_grad[i] for i in ins)
            if op.differentiable and any(needs):
                needs_grad[out] = True
                back.append((k, out, out not in self.wrt,
                             _grad_fn(op, params, ins, needs, self.backend)))
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
        self.scalars_pending = [k for k, (_, ins, _, _) in enumerate(steps)
                                if any(type(template[i]) in (int, float, bool) for i in ins)]

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
                raise FeedError(
                    f"Placeholder {ph._label()} was not fed; pass feed={{placeholder: array}} "
                    "for every Placeholder the graph uses") from None
            vals[s] = ph.check(value, self.xp, self.device)
        for s, t in self.tensors:
            vals[s] = t.data

    def run(self, feed: Mapping, grads: bool, seed: Any = None) -> tuple[Any, list]:
        """One forward sweep, and a backward sweep if ``grads``: (value, [gradients])."""
        xp = self.xp
        vals = self.template[:]
        self._feeds(feed, vals)
        if self.scalars_pending:
            self._convert_scalars(vals)
        keep_res = self.keep_res if grads else None
        res: list = [None] * len(self.forward) if grads else []
        meta: dict = {}
        is_np = xp is np
        ndarray = np.ndarray
        k = -1
        try:
            for k, (fwd, ins, params, out, frees) in enumerate(self.forward):
                o, r = fwd(xp, *[vals[i] for i in ins], **params)
                if is_np and type(o) is not ndarray:
                    o = np.asarray(o)
                vals[out] = o
                if keep_res is not None and keep_res[k]:
                    res[k] = r
                for i in frees:
                    v = vals[i]
                    meta[i] = (v.shape, v.dtype)
                    vals[i] = None
        except (ValueError, TypeError, IndexError) as exc:
            _, ins, *_ = self.forward[k]
            shapes = ", ".join(_describe(vals[i]) if vals[i] is not None else "(freed)"
                               for i in ins)
            raise OpError(f"{self.ops[k].name}: {exc} (inputs: {shapes})") from exc
        value = vals[self.out]
        if not grads:
            return value, []
        gv: list = [None] * len(vals)
        gv[self.out] = seed_gradient(value, xp, seed, "gradients")
        with no_grad():
            for k, out, drop, grad_fn in self.back:
                g = gv[out]
                if g is None:
                    continue
                if drop:
                    gv[out] = None
                r = res[k]
                res[k] = None
                for slot, gi in grad_fn(xp, g, r):
                    if gi is None:
                        continue
                    v = vals[slot]
                    shape, dtype = (v.shape, v.dtype) if v is not None else meta[slot]
                    if not (is_np and type(gi) is ndarray and gi.shape == shape
                            and gi.dtype == dtype):
                        gi = fit(xp, gi, shape, dtype)
                        if gi is None:
                            continue
                    prev = gv[slot]
                    gv[slot] = gi if prev is None else as_array(xp, prev + gi)
        return value, [gv[s] if gv[s] is not None else xp.zeros_like(vals[s]) for s in self.wrt]
