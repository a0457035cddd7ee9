"""Sharded updates for ranks that share one machine: one copy of the parameters and of the
optimizer state, in shared memory, and each rank updates its own chunk of it.

Where every rank of the group is on one machine (NumPy arrays, MPI shared memory allowed:
see gpugrad.distributed.shm) and the optimizer declares an elementwise update (gg.optim's
SGD, Adam, AdamW, RMSprop, Adagrad: see gpugrad.optim_rule), :class:`ShardedUpdate` makes a
training step:

1. eager backward has written each rank's gradients straight into its bucket buffers (each
   parameter is registered in gpugrad.eager.grad_sinks, with its slot of this rank's buffer:
   see below); a gradient that is not there yet (the compiled step's, an accumulated one, one
   set by hand) is copied in, a missing one is zeroed; then a barrier;
2. rank r sums chunk r of every rank's buffers, scaled by 1/size, into a private array (a
   reduce-scatter: nothing is copied back, the buffers are left as they are) and runs the
   optimizer's declared update (its lowering: the in-place code the compiled step runs) on
   chunk r of the flat parameters and state;
3. a barrier, after which every rank reads the new parameters where they are.

So the gradients are never packed after backward, the averaged gradient never travels back
and the update pass is split over the ranks. Each parameter's ``.data`` (and each state
array in ``optimizer.state``) is a view of a shared window, shaped like the parameter: rank
0's values when the optimizer was wrapped. A parameter or state array that the user rebinds
(``load_state_dict``) is copied back into the shared memory at the next step, each rank its
own chunk.

What ``.grad`` holds: after a backward that found ``.grad`` None (the usual ``zero_grad``,
backward, ``step``), each parameter's ``.grad`` is its slot of this rank's buffer, holding
this rank's own gradient, the same values a single process would hold; ``step()`` reads it
and leaves it so. The slot is reused: the next backward after ``zero_grad`` writes the next
gradient into it, and a backward that accumulates onto it (no ``zero_grad``) gives ``.grad``
a private array with the sum, which the step (or, with ``overlap``, backward) then copies
into the slot. So an array kept from ``.grad`` changes after the next backward, where one
process's would not: copy it to keep it.

:meth:`ShardedUpdate.close` (collective) frees the shared memory: parameters, state and
gradients move to private copies first. Windows still open at exit are freed then, before
MPI finalizes.
"""

from __future__ import annotations

import atexit
from typing import Any, Sequence

import numpy as np

from .. import eager, versions
from ..fpstate import quiet
from ..optim import Optimizer
from ..tensor import no_grad
from . import shm
from .buckets import Bucket, GradientAverager


def state_keys(optimizer: Optimizer) -> list[str] | None:
    """The state arrays (shaped like each parameter) of an optimizer that declares an
    elementwise update, or None where a sharded update is not known to be exact (its
    ``update`` or ``_apply`` was replaced).

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.zeros(2))
    >>> state_keys(gg.optim.SGD([w], momentum=0.9)), state_keys(gg.optim.Adam([w]))
    (['momentum'], ['m', 'v'])
    """
    low = optimizer.lowering()
    return None if low is None else list(low.names)


class _Piece:
    """A parameter's slice inside one rank's chunk, as the optimizer's ``update`` sees it:
    ``data`` is a 1-D view of the shared parameter, ``state`` of the shared state."""

    __slots__ = ("data", "dtype", "hi", "index", "lo", "param", "pos", "scratch", "state",
                 "xp")

    def __init__(self, param: Any, index: int, lo: int, hi: int, pos: int, data: Any,
                 state: dict, temps: int) -> None:
        self.param, self.index, self.lo, self.hi, self.pos = param, index, lo, hi, pos
        self.data, self.state = data, state
        self.xp, self.dtype = np, data.dtype
        # scratch for the in-place update, which takes real values only
        self.scratch = tuple(np.empty_like(data) for _ in range(temps)) \
            if data.dtype.kind == "f" else None


class ShardedUpdate:
    """Gradient averaging and the optimizer update as one sharded step (see the module
    docstring). Collective: every rank creates it, with the same parameters, in order.

    ``step(grads)`` takes this rank's gradient per parameter (None counts as zero);
    ``apply(grads)`` takes gradients that are already averaged (equal on every rank)."""

    def __init__(self, optimizer: Optimizer, averager: GradientAverager, node: Any,
                 keys: list[str]) -> None:
        self.optimizer, self.averager, self.keys = optimizer, averager, keys
        self.lowering = low = optimizer.lowering()
        self.group = averager.group
        self.node = node
        self.rank = node.Get_rank()
        self.windows: list = []
        self.views: list = [None] * len(averager.params)   # each parameter's shared array
        self.states: list = [None] * len(averager.params)  # {key: shared state array}
        self.pieces: list[list[_Piece]] = []                # per bucket, this rank's pieces
        self.sums: list = []                                # per bucket, the averaged chunk
        params = averager.params
        for b in averager.buckets:
            averager.allocate(b)  # now, not in the first step
            flat, state_flat = self._allocate(b, keys)
            lo_r, hi_r = b.numel * self.rank // node.Get_size(), \
                b.numel * (self.rank + 1) // node.Get_size()
            self.sums.append(np.empty(hi_r - lo_r, dtype=b.dtype))
            pieces = []
            for i, off, shape in zip(b.members, b.offsets, b.shapes):
                n = int(np.prod(shape, dtype=np.int64))
                self.views[i] = flat[off:off + n].reshape(shape)
                self.states[i] = {k: a[off:off + n].reshape(shape) for k, a in state_flat.items()}
                lo, hi = max(off, lo_r), min(off + n, hi_r)
                if lo < hi:
                    pieces.append(_Piece(params[i], i, lo - off, hi - off, lo, flat[lo:hi],
                                         {k: a[lo:hi] for k, a in state_flat.items()},
                                         low.temps))
            self.pieces.append(pieces)
        # rank 0's parameters and state are everyone's start
        if self.rank == 0:
            for i, p in enumerate(params):
                self.views[i][...] = p.data
                st = optimizer.state[p]
                for k, a in self.states[i].items():
                    a[...] = st[k] if st.get(k) is not None else low.initial(k)
        self._barrier("start")
        for i, p in enumerate(params):
            self._bind(i, p)
        self.counts_steps = low.counts_steps
        # backward writes each gradient into its slot of this rank's shared buffer
        self.sinks = {}
        for b in averager.buckets:
            if b.shared is not None:
                b.shared.release_now = True  # a full allreduce must not outlive its call
                for i, view in zip(b.members, b.views):
                    self.sinks[params[i]] = view
        if any(p in eager.grad_sinks for p in self.sinks):
            self.sinks = {}  # another sharded update holds a parameter: no sinks for this one
        eager.grad_sinks.update(self.sinks)
        # close() synchronises on a communicator of its own: a rank that closes (at exit)
        # while another still steps waits for it, and never completes that step's barriers
        with self.group.blocking("sharded update set-up (communicator)"):
            self.closing = node.Dup()
        self.closed = False
        _OPEN.append(self)

    def _allocate(self, b: Bucket, keys: list[str]) -> tuple[Any, dict]:
        def make() -> Any:
            if b.numel == 0:
                return np.zeros(0, dtype=b.dtype)
            sa = shm.SharedArray(self.group, self.node, b.numel, b.dtype)
            self.windows.append(sa)
            return sa.array
        flat = make()
        return flat, {k: make() for k in keys}

    def _bind(self, i: int, p: Any) -> None:
        p.data = self.views[i]
        versions.rebound(p)
        self.optimizer.state[p] = dict(self.states[i])

    def _barrier(self, label: str, comm: Any = None) -> None:
        for w in self.windows:
            w.sync()
        comm = self.node if comm is None else comm
        self.group.wait(comm.Ibarrier(), f"sharded update ({label})")
        for w in self.windows:
            w.sync()

    def _adopt(self) -> None:
        """Copy into the shared memory (this rank's chunk) any parameter or state array that
        was rebound since the last step, and bind the shared ones again."""
        params = self.averager.params
        st = self.optimizer.state
        for pieces in self.pieces:
            for pc in pieces:
                p = params[pc.index]
                if p.data is not self.views[pc.index]:
                    pc.data[...] = np.reshape(p.data, (-1,))[pc.lo:pc.hi]
                mine = st.get(p)
                for k, a in pc.state.items():
                    theirs = mine.get(k) if mine is not None else None
                    if theirs is not self.states[pc.index][k]:
                        a[...] = self.lowering.initial(k) if theirs is None else \
                            np.reshape(theirs, (-1,))[pc.lo:pc.hi]
        for i, p in enumerate(params):
            if p.data is not self.views[i]:
                self._bind(i, p)
            elif any(st.get(p, {}).get(k) is not a for k, a in self.states[i].items()):
                st[p] = dict(self.states[i])

    def step(self, grads: Sequence[Any], started: list | None = None) -> None:
        """Average this rank's gradients over the ranks and update (collective).
        ``started``: the buckets' allreduces, already started (by the overlap with
        backward), in place of packing ``grads`` now."""
        if self.closed:
            raise RuntimeError(_CLOSED)
        avg = self.averager
        pending = started if started is not None else [
            avg.start(b, grads) for b in avg.buckets]  # copy in what backward did not write
        work = []
        for b, pend, pieces, sums in zip(avg.buckets, pending, self.pieces, self.sums):
            if b.shared is None:  # an empty bucket: nothing to update
                pend.finish()
                continue
            req, pend.req = pend.req, None
            chunk = b.shared.reduce_scatter(req, sums)  # this rank's chunk of the mean
            base = b.shared.bounds[b.shared.rank]
            work += [(pc, chunk[pc.pos - base:pc.pos - base + pc.hi - pc.lo]) for pc in pieces]
        self._adopt()
        self._update(work)

    def apply(self, grads: Sequence[Any]) -> None:
        """Update with gradients already averaged over the ranks (collective)."""
        if self.closed:
            raise RuntimeError(_CLOSED)
        self._barrier("averaged")  # no rank still reads the parameters (backward)
        self._adopt()
        work = []
        for pieces in self.pieces:
            for pc in pieces:
                g = grads[pc.index]
                if g is None:
                    g = np.zeros(pc.hi - pc.lo, dtype=pc.dtype)
                else:
                    g = np.reshape(np.asarray(g), (-1,))[pc.lo:pc.hi]
                work.append((pc, g))
        self._update(work)

    def _update(self, work: list) -> None:
        opt = self.optimizer
        steps, state = opt.param_steps, opt.state
        # the in-place NumPy form the compiled step uses (same arithmetic, no temporaries)
        low = self.lowering
        low.start()  # this step's hyperparameters
        opt.steps += 1
        try:
            with no_grad(), quiet(np):
                for pc, g in work:
                    if self.counts_steps:
                        steps[pc] = steps.get(pc.param, 0)
                    try:
                        state[pc] = pc.state
                        if pc.scratch is not None and g.dtype == pc.dtype:
                            low.update(pc, pc.data, g, *pc.scratch)
                        else:  # complex values: the portable form
                            opt.update(pc, g, pc.state)
                    finally:
                        steps.pop(pc, None)
                        state.pop(pc, None)
        finally:
            if self.counts_steps:
                for p in self.averager.params:
                    steps[p] = steps.get(p, 0) + 1
            for b in self.averager.buckets:
                if b.shared is not None:
                    b.shared.ready()  # complete a full allreduce's release, if any: the
                    # barrier below releases the buffers
            self._barrier("updated")
            versions.wrote_many(self.averager.params, f"{type(opt).__name__} step (sharded)")

    def close(self) -> None:
        """Move the parameters, the optimizer state and any gradient that is a slot of a
        shared buffer to private copies (equal on every rank), then free the shared windows.
        Collective: every rank calls it, after its last step. Later steps raise; the wrapped
        optimizer, no longer sharing memory, can step directly again."""
        if self.closed:
            return
        self.closed = True
        if self in _OPEN:
            _OPEN.remove(self)
        self._barrier("closing", self.closing)  # every rank has finished its last step
        for p, view in self.sinks.items():
            if eager.grad_sinks.get(p) is view:
                del eager.grad_sinks[p]
        params, st = self.averager.params, self.optimizer.state
        views = self.views
        for i, p in enumerate(params):
            if p.data is views[i]:
                p.data = np.array(views[i], copy=True)
                versions.rebound(p)
            if p.grad is not None and self.sinks.get(p) is p.grad:
                p.grad = np.array(p.grad, copy=True)
            mine = st.get(p)
            if mine:
                for k, a in self.states[i].items():
                    if mine.get(k) is a:
                        mine[k] = np.array(a, copy=True)
        self.views, self.states, self.pieces, self.sinks = [], [], [], {}
        self._barrier("closing: copied", self.closing)  # no rank reads the shared memory
        windows, self.windows = self.windows, []
        for w in windows:
            w.free()
        for b in self.averager.buckets:
            if b.shared is not None:
                b.shared.free()
                b.shared, b.flat, b.views = None, None, []
        self.closing.Free()


_CLOSED = ("DistributedOptimizer: closed (its shared memory is freed); make a new one to go on "
           "training on many ranks")
_OPEN: list = []  # sharded updates not yet closed, oldest first


@atexit.register
def _close_all() -> None:
    """At exit, before MPI finalizes (mpi4py finalizes after Python's atexit functions):
    close what is still open, in the order it was opened, which every rank shares."""
    while _OPEN:
        group = _OPEN[0].group
        if group.aborting or group._mpi.Is_finalized():  # nothing may run collectives now
            _OPEN.clear()
            return
        _OPEN[0].close()


def sharded_update(optimizer: Optimizer, averager: GradientAverager) -> ShardedUpdate | None:
    """A :class:`ShardedUpdate` where every rank shares this machine, the parameters are
    NumPy arrays and the optimizer is elementwise (the same answer on every rank); else
    None. Collective."""
    group = averager.group
    keys = state_keys(optimizer)
    ok = keys is not None and all(p.xp is np for p in averager.params)
    every = group.allgather(ok)  # every rank must take the same path
    if not all(every):
        return None
    node = shm.node_comm(group)
    if node is None:
        return None
    return ShardedUpdate(optimizer, averager, node, keys)
