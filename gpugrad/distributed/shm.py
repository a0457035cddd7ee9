"""Bucket allreduce through MPI shared memory, for ranks that share one machine.

Each rank's bucket buffer is its slice of an MPI-3 shared window
(``MPI.Win.Allocate_shared``), so every rank can read every other rank's packed gradients.
One allreduce is then three barriers and two passes over the data instead of MPI's own
copies through its message cells:

1. each rank packs its gradients into its own buffer (or backward wrote them there: see
   gpugrad.distributed.sharded), then a barrier;
2. rank r sums chunk r of all the buffers, scaled by 1/size (the mean), into chunk r of its
   own buffer, then a barrier;
3. each rank copies chunk q from rank q's buffer, for every other q: every rank then holds
   the whole sum, computed once, in the same order, so the ranks agree bit for bit. A
   barrier (waited on before the next pack) keeps the next pack from overwriting a chunk
   that another rank is still copying.

The sharded update (gpugrad.distributed.sharded) stops after step 2
(:meth:`SharedBuffer.reduce_scatter`, into a private array, so the buffers keep each rank's
own gradients): rank r updates chunk r of parameters that live in shared windows too
(:class:`SharedArray`), so nothing is copied back.

Windows are freed by ``free()`` (collective), which gpugrad.distributed's ``close()`` calls.

The barriers are non-blocking MPI barriers waited on with the group's timeout (see
:meth:`gpugrad.distributed.group.Group.wait`). Used by
:class:`~gpugrad.distributed.buckets.GradientAverager` on NumPy when every rank of the group
is on one machine; ``GPUGRAD_DIST_SHM=0`` turns it off (MPI's ``Iallreduce`` then).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .group import Group


def node_comm(group: Group) -> Any:
    """A communicator of the group's ranks if they all share this machine (and shared
    memory is allowed), else None. Collective on first call; cached on the group."""
    if group.size == 1 or group.comm is None or group.nccl is not None:
        return None
    cached = getattr(group, "_shm_node", False)
    if cached is not False:
        return cached
    MPI = group._mpi
    with group.blocking("shared-memory set-up (split)"):
        node = group.comm.Split_type(MPI.COMM_TYPE_SHARED)
    # every rank must take the same path: one machine for all, and allowed on all
    mine = int(node.Get_size() == group.size and os.environ.get("GPUGRAD_DIST_SHM") != "0")
    flag = np.asarray([mine], np.int64)
    group.wait(group.comm.Iallreduce(MPI.IN_PLACE, flag, op=MPI.MIN), "shared-memory check")
    if not int(flag[0]):
        node.Free()
        node = None
    group._shm_node = node
    return node


class SharedBuffer:
    """A flat buffer of ``numel`` values of ``dtype`` per rank, in one shared window;
    ``mine`` is this rank's, which the caller packs before :meth:`start`."""

    def __init__(self, group: Group, node: Any, numel: int, dtype: str) -> None:
        MPI = group._mpi
        self.group, self.node, self.MPI = group, node, MPI
        itemsize = np.dtype(dtype).itemsize
        with group.blocking(f"shared-memory set-up ({numel} {np.dtype(dtype).name} values)"):
            self.win = MPI.Win.Allocate_shared(numel * itemsize, itemsize, comm=node)
        self.bufs = []
        for r in range(node.Get_size()):
            mem, _ = self.win.Shared_query(r)
            self.bufs.append(np.ndarray(buffer=mem, dtype=dtype, shape=(numel,)))
        self.win.Lock_all(MPI.MODE_NOCHECK)  # one passive epoch: Sync() orders the stores
        self.rank, self.size = node.Get_rank(), node.Get_size()
        self.bounds = [numel * r // self.size for r in range(self.size + 1)]
        self.mine = self.bufs[self.rank]
        self.released: Any = None  # the barrier after the last copy (step 3)
        self.release_now = False  # wait for that barrier at once (backward writes ``mine``)
        self.scale = 1.0 / self.size  # exact for a power of two
        self.what = f"shared-memory allreduce of {numel} {np.dtype(dtype).name} values"

    def _barrier(self, label: str) -> None:
        self.win.Sync()
        self.group.wait(self.node.Ibarrier(), f"{self.what} ({label})")
        self.win.Sync()

    def ready(self) -> None:
        """Wait until no rank still reads this rank's buffer (call before packing it)."""
        if self.released is not None:
            req, self.released = self.released, None
            self.group.wait(req, f"{self.what} (previous step)")
            self.win.Sync()

    def start(self) -> SharedPending:
        """The buffer is packed: announce it (non-blocking) and return the handle."""
        self.win.Sync()
        return SharedPending(self, self.node.Ibarrier())

    def reduce_scatter(self, arrived: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Wait until every rank has packed, then put the mean of this rank's chunk of all
        the buffers (summed in rank order, then scaled by 1/size) into ``out`` (an array of
        the chunk's size; by default the same chunk of this rank's own buffer, which no other
        rank reads) and return it. The caller must end the step with a barrier before the
        next :meth:`ready` (other ranks still read this rank's buffer): ``released`` stays
        None."""
        self.group.wait(arrived, f"{self.what} (packing)")
        self.win.Sync()
        lo, hi = self.bounds[self.rank], self.bounds[self.rank + 1]
        part = self.mine[lo:hi] if out is None else out
        bufs = self.bufs
        np.add(bufs[0][lo:hi], bufs[1][lo:hi], out=part)
        for q in range(2, self.size):
            np.add(part, bufs[q][lo:hi], out=part)
        np.multiply(part, self.scale, out=part)
        return part

    def reduce(self, arrived: Any) -> np.ndarray:
        self.reduce_scatter(arrived)
        self._barrier("summing")
        for q in range(self.size):
            if q != self.rank:
                lo, hi = self.bounds[q], self.bounds[q + 1]
                self.mine[lo:hi] = self.bufs[q][lo:hi]
        self.win.Sync()
        self.released = self.node.Ibarrier()
        if self.release_now:
            self.ready()
        return self.mine

    def free(self) -> None:
        """Free the window (collective: every rank of the node, in the same order). The
        arrays from it must not be used afterwards."""
        if self.win is None:
            return
        self.ready()
        self.bufs = []
        self.mine = None
        _free_window(self)


class SharedArray:
    """One flat array of ``numel`` values of ``dtype`` that every rank of ``node`` maps: a
    shared window whose memory is all allocated by the node's rank 0 (so it is one
    contiguous block). ``array`` is the NumPy view; ``sync()`` orders this rank's stores
    and loads (call it on both sides of a barrier)."""

    def __init__(self, group: Group, node: Any, numel: int, dtype: str) -> None:
        MPI = group._mpi
        itemsize = np.dtype(dtype).itemsize
        mine = numel * itemsize if node.Get_rank() == 0 else 0
        with group.blocking(f"shared-memory set-up ({numel} {np.dtype(dtype).name} values)"):
            self.win = MPI.Win.Allocate_shared(mine, itemsize, comm=node)
        mem, _ = self.win.Shared_query(0)
        self.array = np.ndarray(buffer=mem, dtype=dtype, shape=(numel,))
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.group = group
        self.what = f"shared array of {numel} {np.dtype(dtype).name} values"

    def sync(self) -> None:
        self.win.Sync()

    def free(self) -> None:
        """Free the window (collective, as :meth:`SharedBuffer.free`)."""
        if self.win is None:
            return
        self.array = None
        _free_window(self)


def _free_window(owner: Any) -> None:
    """Unlock and free ``owner.win`` (collective), under the group's timeout, and forget it."""
    win, owner.win = owner.win, None
    win.Unlock_all()
    with owner.group.blocking(f"{owner.what} (freeing the window)"):
        win.Free()


class SharedPending:
    """The :class:`~gpugrad.distributed.group.Pending` of a shared-memory allreduce."""

    __slots__ = ("buf", "req")

    def __init__(self, buf: SharedBuffer, req: Any) -> None:
        self.buf, self.req = buf, req

    def test(self) -> bool:
        return self.req is None or bool(self.req.Test())

    def finish(self) -> np.ndarray:
        if self.req is None:
            return self.buf.mine
        req, self.req = self.req, None
        return self.buf.reduce(req)

    def cancel(self) -> None:
        """Complete the announcement without summing (every rank cancels it alike): the
        buffers, each rank's own gradients, are left as they are."""
        if self.req is not None:
            req, self.req = self.req, None
            self.buf.group.wait(req, f"{self.buf.what} (cancelled)")
