"""Gradient buckets: the gradients of many parameters flattened into a few contiguous
buffers per dtype, one allreduce each, then averaged and split back.

:class:`GradientAverager` is the hook a training step calls between backward and update:
``averaged = averager(grads)`` takes one gradient per parameter (None counts as zero) and
returns the mean over the ranks, with every bucket's allreduce started before the first is
waited on.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import backend as B
from . import shm
from .group import Group, Pending, init


class Bucket:
    """Parameters (by index) packed into one flat buffer of one dtype.

    On NumPy the buffer is persistent (``flat``, allocated at the first allreduce) and
    ``views[k]`` is member k's slice of it, shaped like the parameter: the allreduce runs in
    place on it (through shared memory where all ranks share one machine: see
    gpugrad.distributed.shm) and the averaged gradients handed out are those views."""

    __slots__ = ("dtype", "flat", "members", "nbytes", "numel", "offsets", "shapes", "shared",
                 "views")

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.members: list[int] = []
        self.offsets: list[int] = []
        self.shapes: list[tuple] = []
        self.numel = 0
        self.nbytes = 0
        self.flat: Any = None
        self.views: list = []
        self.shared: Any = None  # a shm.SharedBuffer when the ranks share one machine

    def add(self, index: int, shape: tuple, numel: int, nbytes: int) -> None:
        self.members.append(index)
        self.offsets.append(self.numel)
        self.shapes.append(shape)
        self.numel += numel
        self.nbytes += nbytes

    def __repr__(self) -> str:
        return f"<Bucket {self.dtype} x{len(self.members)} {self.nbytes} bytes>"


def plan_buckets(params: Sequence[Any], bucket_mb: float = 25.0) -> list[Bucket]:
    """Group parameters into buckets of one dtype and at most ``bucket_mb`` MiB (a larger
    parameter gets a bucket of its own). Parameters are taken last first, the order in
    which backward usually finishes their gradients, so the first bucket is ready first.

    >>> import numpy as np, gpugrad as gg
    >>> ps = [gg.Variable(np.zeros(4, "float32")), gg.Variable(np.zeros(3)),
    ...       gg.Variable(np.zeros(2, "float32"))]
    >>> [(b.dtype, b.members) for b in plan_buckets(ps)]
    [('float32', [2, 0]), ('float64', [1])]
    """
    if bucket_mb <= 0:
        raise ValueError(f"bucket_mb must be positive, got {bucket_mb}")
    cap = max(1, int(bucket_mb * (1 << 20)))
    current: dict[str, Bucket] = {}
    buckets: list[Bucket] = []
    for i in reversed(range(len(params))):
        p = params[i]
        dtype = B.dtype_name(p.dtype)
        shape = tuple(p.shape)
        numel = int(np.prod(shape, dtype=np.int64))
        nbytes = numel * np.dtype(dtype).itemsize
        b = current.get(dtype)
        if b is None or (b.members and b.nbytes + nbytes > cap):
            b = current[dtype] = Bucket(dtype)
            buckets.append(b)
        b.add(i, shape, numel, nbytes)
    return buckets


class GradientAverager:
    """``averager(grads) -> averaged``: the mean over the group's ranks of one gradient per
    parameter, in a few bucketed allreduces. A None gradient counts as zero, on every rank
    alike. Results are backend arrays on each parameter's device, with its shape and dtype.

    - A group of one: the gradients themselves (checked; None becomes zeros), no copy.
    - NumPy: each gradient is copied into its bucket's persistent buffer (one pass, no
      allocation; scaled by 1/size on the way in for MPI's allreduce, which sums in place with
      ``MPI.IN_PLACE``; where all ranks share one machine the buffer is shared memory and the
      sum is scaled instead, gpugrad.distributed.shm) and the results are views of the
      buffers. They stay valid until the next call, which overwrites them: copy one to keep
      it. A gradient that already is its slot of the buffer (backward wrote it there, see
      gpugrad.distributed.sharded) is not copied.
    - Other backends: the gradients are concatenated into a new buffer per bucket, summed,
      divided by the size and split again.

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.ones((2, 2)))
    >>> avg = GradientAverager([w])
    >>> [gg.to_numpy(g).tolist() for g in avg([np.full((2, 2), 3.0)])]
    [[[3.0, 3.0], [3.0, 3.0]]]
    """

    def __init__(self, params: Sequence[Any], group: Group | None = None,
                 bucket_mb: float = 25.0) -> None:
        self.params = list(params)
        self.group = group or init()
        self.buckets = plan_buckets(self.params, bucket_mb)

    def __call__(self, grads: Sequence[Any]) -> list:
        if len(grads) != len(self.params):
            raise ValueError(f"GradientAverager: got {len(grads)} gradients for "
                             f"{len(self.params)} parameters")
        if self.group.size == 1:
            return [self._checked(i, g) for i, g in enumerate(grads)]
        pending = [self.start(b, grads) for b in self.buckets]
        out: list = [None] * len(self.params)
        for b, pend in zip(self.buckets, pending):
            self.finish(b, pend, out)
        return out

    def _checked(self, i: int, g: Any) -> Any:
        p = self.params[i]
        if g is None:
            return p.xp.zeros(p.shape, dtype=p.dtype, device=p.device)
        if tuple(g.shape) != p.shape or g.dtype != p.dtype:
            raise ValueError(f"gradient for parameter {i} has shape {tuple(g.shape)} "
                             f"{B.dtype_name(g.dtype)}, the parameter has {p.shape} "
                             f"{B.dtype_name(p.dtype)}")
        return g

    def start(self, bucket: Bucket, grads: Any) -> Pending:
        """Flatten the bucket's gradients (``grads[i]`` for parameter i) and start its
        allreduce."""
        xp = self.params[bucket.members[0]].xp
        if xp is np:
            return self._start_numpy(bucket, grads)
        parts = [xp.reshape(self._checked(i, grads[i]), (-1,)) for i in bucket.members]
        flat = xp.concat(parts) if len(parts) > 1 else xp.asarray(parts[0], copy=True)
        return self.group.start_allreduce(flat, "sum")

    def allocate(self, bucket: Bucket) -> None:
        """Make the bucket's persistent NumPy buffer (collective where the ranks share
        memory); done by its first allreduce if not before."""
        if bucket.flat is not None:
            return
        node = shm.node_comm(self.group) if bucket.numel else None
        if node is not None:
            bucket.shared = shm.SharedBuffer(self.group, node, bucket.numel, bucket.dtype)
            bucket.flat = bucket.shared.mine
        else:
            bucket.flat = np.empty(bucket.numel, dtype=bucket.dtype)
        bucket.views = [bucket.flat[off:off + int(np.prod(shape, dtype=np.int64))]
                        .reshape(shape) for off, shape in zip(bucket.offsets, bucket.shapes)]

    def _start_numpy(self, bucket: Bucket, grads: Any) -> Any:
        self.allocate(bucket)
        shared = bucket.shared
        if shared is not None:
            shared.ready()  # no rank still reads the previous step's sums
        # exact for a power of two: the sum is the mean (shared memory scales the sum)
        scale = 1.0 / self.group.size if shared is None else None
        for i, view in zip(bucket.members, bucket.views):
            g = grads[i]
            if g is view:  # backward wrote it in place
                continue
            if g is None:
                view.fill(0)
                continue
            if g.shape != view.shape or g.dtype != view.dtype:
                self._checked(i, g)  # raises, naming the parameter
            if scale is None:
                np.copyto(view, g)
            else:
                np.multiply(g, scale, out=view)
        if shared is not None:
            return shared.start()
        return self.group.start_allreduce(bucket.flat, "sum")

    def finish(self, bucket: Bucket, pending: Pending, out: list) -> None:
        """Wait for the bucket's allreduce and put each member's mean into ``out``."""
        flat = pending.finish()
        xp = self.params[bucket.members[0]].xp
        if xp is np:  # summed in place; scaled on the way in
            for i, view in zip(bucket.members, bucket.views):
                out[i] = view
            return
        if self.group.size > 1:
            flat = flat / float(self.group.size)
        for i, off, shape in zip(bucket.members, bucket.offsets, bucket.shapes):
            n = int(np.prod(shape, dtype=np.int64))
            out[i] = xp.reshape(flat[off:off + n], shape)
