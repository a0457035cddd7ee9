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

from operator import attrgetter, is_, itemgetter
from typing import Any, Sequence

import numpy as np

from .. import eager, hooks, versions
from ..eager import FREED, Node
from ..sinks import grad_sinks
from ..registry import Op
from ..tensor import Tensor, made
from ..compiler.schedule import Schedule


class Direct:
    """A schedule's planned NumPy program, called without the schedule's lookup: the
    signature already fixed the arguments' shapes and dtypes, and the Tensors' (closed-over
    Variables can be rebound) are compared here against the ones it was learnt with."""

    __slots__ = ("prog", "tensors", "shapes", "dtypes", "feed_at", "kept_data", "kept_feeds",
                 "last", "fits")

    def __init__(self, sched: Schedule, prog: Any, tensors: list, placeholders: list,
                 arrays: list, whole: tuple, inputs: tuple, grads: list) -> None:
        self.prog, self.tensors = prog, tuple(tensors)
        self.shapes = tuple(t.data.shape for t in tensors)
        self.dtypes = tuple(t.data.dtype for t in tensors)
        # the Tensors' arrays the last call found to fit (the same arrays fit again; an
        # array rebound since is kept alive only until the next call)
        self.last = tuple([t.data for t in tensors])
        # the schedule's feeds, as positions among the call's arguments (``arrays[j]``:
        # where the argument of Placeholder j is)
        position = {id(ph): arrays[j] for j, ph in enumerate(placeholders)}
        self.feed_at = tuple(position[id(ph)] for _, ph in sched.placeholders)
        # what the node keeps for the version check: positions among datas and feeds
        variables, phs = whole
        self.kept_data = _picks(k for k, t in enumerate(tensors)
                                if any(t is v for v in variables))
        self.kept_feeds = _picks(k for k, (_, ph) in enumerate(sched.placeholders)
                                 if any(ph is q for q in phs))
        # whether the gradients (those of the first run, as every run's: the same shapes
        # and dtypes in, the same out) are the shapes and dtypes of the node's inputs (the
        # trace's Variables), and those are the Tensors, in order: then loss.backward()
        # hands them over where it finds each Variable with the array of the call
        self.fits = len(inputs) == len(tensors) and all(
            v is t and type(g) is np.ndarray and g.shape == t.data.shape
            and g.dtype == t.data.dtype for v, t, g in zip(inputs, tensors, grads))

    def call(self, leaves: Sequence) -> tuple | None:
        """(value, gradients, the arrays the node keeps) for the call's arguments ``leaves``,
        or None when the schedule must decide (a Tensor rebound to another shape or dtype, a
        feed that is not a NumPy array, another thread in the program, a run that failed:
        the schedule then runs generically or names the op)."""
        datas = list(map(_DATA, self.tensors))
        if all(map(is_, datas, self.last)):  # the last call's tuple, which a table kernel
            datas = self.last  # knows by identity (gpugrad.compiler.native_table)
        elif not self.refit(datas):
            return None
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
        return got[0], got[1], self.keep(datas, feeds), datas

    def keep(self, datas: list, feeds: list) -> tuple:
        """The arrays a call's node keeps for the version check (those backward reads), of
        the Tensors' arrays ``datas`` and the feeds ``feeds``."""
        return self.kept_data(datas) + self.kept_feeds(feeds)

    def refit(self, datas: list) -> bool:
        """Do the Tensors' arrays ``datas``, some rebound since the last call, still fit the
        program (their shapes and dtypes)? If so they are the ones the next call compares."""
        for d, shape, dtype in zip(datas, self.shapes, self.dtypes):
            if type(d) is not np.ndarray or d.shape != shape or (d.dtype is not dtype
                                                                 and d.dtype != dtype):
                return False
        self.last = tuple(datas)
        return True


MISS = object()
"""What :meth:`Quick.call` returns for a call that does not match its signature."""


class Quick:
    """The signature of a compiled function's last call where every argument was a NumPy
    Tensor, so the next call need not work its signature out: a call whose arguments have
    the same shapes, dtypes and ``requires_grad`` (under the same grad mode, its guards
    holding) runs its trace at once. A loss whose gradients come with its forward, known
    (``Entry.quick``, and its :class:`Direct` learnt), runs whole in :meth:`call` itself,
    which makes its node: the usual training step's call."""

    __slots__ = ("entry", "grad", "specs", "n", "hit")

    def __init__(self, entry: Any, grad: bool, args: tuple, hits: Any) -> None:
        self.entry, self.grad, self.n = entry, grad, len(args)
        self.specs = tuple((a.data.shape, a.data.dtype, a.requires_grad) for a in args)
        self.hit = hits.__next__  # (an itertools.count: counts without a lock)

    def call(self, args: tuple) -> Any:
        """The compiled function's output for ``args`` (as many as its signature has, under
        its grad mode), or MISS where they do not match the signature."""
        for a, (shape, dtype, grad) in zip(args, self.specs):
            if not isinstance(a, Tensor):
                return MISS
            x = a.data
            if type(x) is not _NDARRAY or a.xp is not np or x.shape != shape \
                    or x.dtype is not dtype or a.requires_grad is not grad:
                return MISS
        entry = self.entry
        if entry.guard is not None and not entry.guard():
            return MISS
        self.hit()
        direct = entry.direct
        if direct is None or not entry.quick or eager._anomaly is not None and anomaly_on():
            return entry.run(args)
        got = direct.call(args)  # the whole run (the arguments are NumPy Tensors)
        if got is None:  # (the schedule decides: runs generically, or names the op)
            return entry.run(args)
        value, grads, kept, datas = got
        return made(value, np, Node(
            entry.op, NO_PARAMS, entry.variables, entry.needs,
            (Done(grads, datas if direct.fits else None), kept), "numpy",
            value.shape, value.dtype))


def _picks(positions: Any) -> Any:
    """A function that picks the items at ``positions`` of a list, as a tuple."""
    positions = tuple(positions)
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        k = positions[0]
        return lambda items: (items[k],)
    return lambda items: ()


_DATA = attrgetter("data")
_NDARRAY = np.ndarray


def anomaly_on() -> bool:
    hook = eager._anomaly
    return hook is not None and hook.enabled()


class Done:
    """Gradients computed with the forward sweep, for a seed of one; ``datas``: the arrays
    of the node's inputs (Variables) at the call, where each gradient is its Variable's shape
    and dtype (else None)."""

    __slots__ = ("grads", "datas")

    def __init__(self, grads: tuple, datas: list | None = None) -> None:
        self.grads = grads
        self.datas = datas


class CompiledCall(Op):
    """The op a compiled call is recorded as on the tape (one per trace)."""


def whole_sweep(root: Tensor, retain_graph: bool) -> bool:
    """``root.backward()`` from a compiled call's scalar output whose gradients were computed
    with its forward: hand them to the leaves' ``.grad`` (adding to a gradient already there),
    as the general sweep would, without its walk. False (the general sweep then runs) when
    an input is not a leaf (the gradient goes on through the tape), a gradient's shape or
    dtype is not its input's, a backward hook, a gradient sink or anomaly mode is on, or the
    saved arrays are gone (the general sweep names that error)."""
    node = root._node
    res = node.res
    if type(res) is not tuple:
        return False
    done = res[0]
    if type(done) is not Done or eager.backward_hooks or grad_sinks \
            or eager._anomaly is not None and anomaly_on():
        return False
    grads = done.grads
    inputs = node.inputs
    datas = done.datas  # (each Variable still with the array of the call: the shapes fit)
    if datas is None or not all(map(is_, map(_DATA, inputs), datas)):
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
    eager.hand_over(root.xp, inputs, grads)
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
