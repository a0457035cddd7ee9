"""Pass 1, trace: a graph of Symbols becomes a flat list of steps over numbered slots.

Every value gets a slot: each Placeholder, each Tensor (Variables and constants), each
Python scalar (a constant slot of its own) and each op's output. The steps come out in
topological order, each ``(op, input slots, params, output slot)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tensor import Tensor


@dataclass
class Trace:
    """What the later passes start from."""

    template: list  # one entry per slot: a constant, or None for values made per run
    steps: list  # (op, input slots, params, output slot), topologically ordered
    sites: list  # where each step's op was built, for error messages
    out: int  # the slot of the root
    wrt: list  # the slots of the gradient targets
    placeholders: list = field(default_factory=list)  # (slot, Placeholder)
    tensors: list = field(default_factory=list)  # (slot, Tensor)


def _symbolic(a: Any) -> bool:
    """Is ``a`` a graph value (a Symbol; a Placeholder is one whose ``op`` is None)? Asked by
    marker, since gpugrad.graph builds on this package."""
    return getattr(a, "_gpugrad_symbolic", False)


def trace(root: Any, wrt: tuple) -> Trace:
    """Number the slots of the graph of ``root`` and list its steps in topological order."""
    if _symbolic(root) and root.op is None:  # a Placeholder
        raise ValueError("a Placeholder on its own is not a graph to run")
    slot_of: dict = {}
    template: list = []
    placeholders: list = []
    tensors: list = []
    steps: list = []
    sites: list = []

    def leaf_slot(a: Any) -> int:
        if _symbolic(a) or isinstance(a, Tensor):
            s = slot_of.get(a)
            if s is None:
                s = slot_of[a] = len(template)
                template.append(None)
                (tensors if isinstance(a, Tensor) else placeholders).append((s, a))
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
                         if _symbolic(a) and a not in slot_of)
            continue
        ins = tuple(slot_of[a] if _symbolic(a) and a.op is not None
                    else leaf_slot(a) for a in sym.args)
        out = slot_of[sym] = len(template)
        template.append(None)
        steps.append((sym.op, ins, sym.params, out))
        sites.append(sym.site)
    wrt_slots = []
    for w in wrt:
        s = slot_of.get(w)
        if s is None:
            raise ValueError(f"gradients: {w!r} is not used by the graph of {root!r}")
        if isinstance(w, Tensor) and not w.requires_grad:
            raise ValueError(f"gradients: {w!r} does not require gradients")
        wrt_slots.append(s)
    return Trace(template, steps, sites, slot_of[root], wrt_slots, placeholders, tensors)
