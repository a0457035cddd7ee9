"""A compiled call whose gradients come with its forward (``gg.compile`` of a loss).

- :class:`Direct`: a schedule's learnt NumPy program, called with the arguments directly;
- :func:`done_node`: the tape node of its output, one node of the op :class:`CompiledCall`,
  holding the gradients already computed (:class:`Done`);
- :func:`whole_sweep`: ``loss.backward()`` from it, which hands those gradients to the
  leaves' ``.grad`` without the general sweep's walk (``Tensor.backward``'s hook).

``gpugrad.jit.tape`` decides when a call may take this way; every other call, and
every surprise here (a rebound Variable, anomaly mode, a hook, a failed run), takes the
general one.
"""

from __future__ import annotations

from operator import attrgetter, is_
from typing import Any, Sequence

import numpy as np

from .. import eager, hooks, versions
from ..eager import FREED, Node
from ..registry import Op
from ..tensor import Tensor, _grad_enabled
from ..compiler.schedule import Schedule


class Direct:
    """A schedule's planned NumPy program, called without the schedule's lookup: the
    signature already fixed the arguments' shapes and dtypes, and the Tensors' (closed-over
    Variables can be rebound) are compared here against the ones it was learnt with."""

    __slots__ = ("prog", "tensors", "shapes", "dtypes", "feed_at", "kept_data", "kept_feeds",
                 "last")

    def __init__(self, sched: Schedule, prog: Any, tensors: list, placeholders: list,
                 arrays: list, whole: tuple) -> None:
        self.prog, self.tensors = prog, tuple(tensors)
        self.shapes = tuple(t.data.shape for t in tensors)
        self.dtypes = tuple(t.data.dtype for t in tensors)
        # the Tensors' arrays the last call found to fit (the same arrays fit again; an
        # array rebound since is kept alive only until the next call)
        self.last = [t.data for t in tensors]
        # the schedule's feeds, as positions among the call's arguments (``arrays[j]``:
        # where the argument of Placeholder j is)
        position = {id(ph): arrays[j] for j, ph in enumerate(placeholders)}
        self.feed_at = tuple(position[id(ph)] for _, ph in sched.placeholders)
        # what the node keeps for the version check: positions among datas and feeds
        variables, phs = whole
        self.kept_data = tuple(k for k, t in enumerate(tensors)
                               if any(t is v for v in variables))
        self.kept_feeds = tuple(k for k, (_, ph) in enumerate(sched.placeholders)
                                if any(ph is q for q in phs))

    def call(self, leaves: Sequence) -> tuple | None:
        """(value, gradients, the arrays the node keeps) for the call's arguments ``leaves``,
        or None when the schedule must decide (a Tensor rebound to another shape or dtype, a
        feed that is not a NumPy array, another thread in the program, a run that failed:
        the schedule then runs generically or names the op)."""
        datas = list(map(_DATA, self.tensors))
        if not all(map(is_, datas, self.last)):
            for d, shape, dtype in zip(datas, self.shapes, self.dtypes):
                if type(d) is not np.ndarray or d.shape != shape or (d.dtype is not dtype
                                                                     and d.dtype != dtype):
                    return None
            self.last = datas
        feeds = []
        for i in self.feed_at:
            a = leaves[i]
            if isinstance(a, Tensor):
                a = a.data
            elif type(a) is np.ndarray:  # the caller's memory: copied, so that later edits
                a = np.array(a)          # to it cannot reach the version check
            if type(a) is not np.ndarray:  # (as the schedule's own lookup)
                return None
            feeds.append(a)
        try:
            got = self.prog(feeds, datas, None)
        except (FloatingPointError, ValueError, TypeError, IndexError):
            return None
        if got is None:
            return None
        kept = list(map(datas.__getitem__, self.kept_data))
        if self.kept_feeds:
            kept += map(feeds.__getitem__, self.kept_feeds)
        return got[0], got[1], kept


_DATA = attrgetter("data")


def anomaly_on() -> bool:
    hook = eager._anomaly
    return hook is not None and hook.enabled()


class Done:
    """Gradients computed with the forward sweep, for a seed of one."""

    __slots__ = ("grads",)

    def __init__(self, grads: list) -> None:
        self.grads = grads


class CompiledCall(Op):
    """The op a compiled call is recorded as on the tape (one per trace)."""


def whole_sweep(root: Tensor, retain_graph: bool) -> bool:
    """``root.backward()`` from a compiled call's scalar output whose gradients were computed
    with its forward: hand them to the leaves' ``.grad`` (adding to a gradient already there),
    as the general sweep would, without its walk. False (the general sweep then runs) when
    an input is not a leaf (the gradient goes on through the tape), a gradient's shape or
    dtype is not its input's, a backward hook or anomaly mode is on, or the saved arrays
    are gone (the general sweep names that error)."""
    node = root._node
    res = node.res
    if type(res) is not tuple or type(res[0]) is not Done or eager.backward_hooks \
            or eager._anomaly is not None and anomaly_on():
        return False
    grads = res[0].grads
    inputs = node.inputs
    for p, g in zip(inputs, grads):
        if type(p) is Node:
            return False
        data = p.data
        if g.shape != data.shape or (g.dtype is not data.dtype and g.dtype != data.dtype):
            return False
    if versions.last_event >= node.seq:  # something was written since: stale saved arrays?
        versions.check([node], FREED)
    if not retain_graph:
        node.res = FREED
    token = _grad_enabled.set(False)  # (no_grad, as the general sweep adds)
    try:
        eager.accumulate(root.xp, zip(inputs, grads))
    finally:
        _grad_enabled.reset(token)
    return True


hooks.whole_sweeps[CompiledCall] = whole_sweep


def never(xp: Any, *args: Any, **params: Any) -> Any:
    raise RuntimeError("a compiled call runs through its schedule, not through apply")


def done_node(op: Op, backend: str, value: Any, grads: list, inputs: tuple,
              kept: list) -> Node:
    """The tape node of a whole run's output ``value``: ``op`` on ``inputs``, holding their
    gradients, already computed, and the arrays ``kept`` for the version check."""
    n = len(inputs)
    return Node(op, NO_PARAMS, inputs, ALL[n] if n < 16 else (True,) * n,
                (Done(tuple(grads[:n])), kept), backend, tuple(value.shape), value.dtype)


NO_PARAMS: dict = {}
ALL = [(True,) * n for n in range(16)]
"""``needs`` of a node whose n inputs all need gradients."""
