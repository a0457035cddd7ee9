"""DistributedOptimizer: any gpugrad optimizer, with gradients averaged over the ranks."""

from __future__ import annotations

from typing import Any, Mapping

from ..graph import train_step, value_and_gradients
from ..optim import WRAPPED, Optimizer
from .buckets import GradientAverager
from .collectives import check_same_parameters
from .group import Group, init
from .overlap import Overlap
from .sharded import _CLOSED, sharded_update

DEFAULT_OVERLAP = False
"""Whether ``DistributedOptimizer(overlap=None)`` overlaps in groups of more than one."""


class DistributedOptimizer:
    """Wrap ``optimizer`` so that each update uses the mean of the ranks' gradients.

    - At creation, the ranks check that they hold the same parameters (count, shapes,
      dtypes, in order); a mismatch raises the same ``DistributedError`` on every rank,
      naming the first differing parameter and both ranks' shapes.
    - Gradients travel in buckets of at most ``bucket_mb`` MiB per dtype, one allreduce each.
    - ``overlap=True`` starts each bucket's allreduce from inside eager ``loss.backward()``
      as soon as the bucket's gradients are final; ``step()`` waits for them. Until
      ``step()`` (or ``synchronize()``), ``.grad`` holds this rank's own gradients: to edit
      gradients (clipping), call ``synchronize()`` first. With the sharded update (below),
      once every rank's backward has ended the other ranks may already be updating their
      chunks of the shared parameters: read ``.data`` before backward or after ``step()``.
      The default (``overlap=None``) is off: MPI moves a non-blocking message only while a
      rank is inside an MPI call, and with one core per rank there is no spare core to move
      it on, so on the machines
      measured (docs/distributed.md) the allreduces after backward
      were as fast or faster. A group of one never overlaps: it has nothing to send, and its
      ``step()`` is the optimizer's own at the cost of one shape check per parameter.
    - Ranks on one machine (NumPy, MPI shared memory; an optimizer that declares its update,
      as gg.optim's SGD, Adam, AdamW, RMSprop and Adagrad do) share
      one copy of the parameters and of the optimizer state, and each rank sums and updates
      its own chunk of them (gpugrad.distributed.sharded): each ``.data`` is then a view of
      shared memory, holding rank 0's values from here on. Update only through this
      wrapper (``step``/``minimize``), which every rank calls. Eager backward then writes
      each gradient straight into this rank's shared buffer: ``.grad`` is a view of it,
      holding this rank's own gradient (as in one process), which ``step()`` leaves as it is;
      the next backward reuses that memory, so copy an array from ``.grad`` to keep it.
      ``close()`` (collective) frees the shared memory, after moving parameters, state and
      gradients to private copies; what is still open at exit is closed then.
      ``shard=False`` keeps a copy per rank instead: every rank gets the whole averaged
      gradient and runs the whole update.
    - A parameter with no gradient on a rank counts as zero there. Every parameter is then
      updated on every rank, with the averaged gradient (zero if no rank had one).
    - ``minimize(loss, feed)`` does the same for Placeholder graphs: one compiled program per
      input signature runs forward, backward, the bucketed average and the update (in a
      group of one, the optimizer's own compiled step).

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.array([1.0, 2.0]))
    >>> opt = gg.distributed.DistributedOptimizer(gg.optim.SGD([w], lr=0.5))
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> gg.to_numpy(w.data)
    array([0., 0.])
    """

    def __init__(self, optimizer: Optimizer, bucket_mb: float = 25.0, *,
                 group: Group | None = None, overlap: bool | None = None,
                 shard: bool = True) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"DistributedOptimizer: expected a gg.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.group = group or init()
        check_same_parameters(optimizer.params, self.group, "DistributedOptimizer")
        self.average = GradientAverager(optimizer.params, self.group, bucket_mb)
        """The allreduce hook: ``average(grads) -> averaged grads`` (see GradientAverager);
        a compiled step can call it between backward and update."""
        self.sharded = sharded_update(optimizer, self.average) if (
            shard and self.group.size > 1) else None
        """The same-machine sharded update (gpugrad.distributed.sharded), or None."""
        if self.sharded is not None:
            WRAPPED[optimizer] = (
                f"its parameters live in memory shared by the {self.group.size} ranks of a "
                "DistributedOptimizer (the sharded update), so stepping it directly would "
                "write each rank's own update over the others'; call step() or minimize() "
                "on the DistributedOptimizer instead")
        if overlap is None:
            overlap = DEFAULT_OVERLAP
        overlap = overlap and self.group.size > 1
        self.overlap = Overlap(self.average) if overlap else None
        """The eager backward hook (None when off)."""
        if self.overlap is not None:
            self.overlap.on_start = self._unsync
        self._synced = False
        self._closed = False

    @property
    def params(self) -> list:
        return self.optimizer.params

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:  # so LR schedules work on the wrapper too
        self.optimizer.lr = value

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def _unsync(self) -> None:
        self._synced = False

    def zero_grad(self) -> None:
        if self.overlap is not None:
            self.overlap.discard()
        self._synced = False
        self.optimizer.zero_grad()

    def _averaged(self) -> list:
        got = self.overlap.take() if self.overlap is not None else None
        if got is None:
            got = self.average([p.grad for p in self.params])
        return got

    def synchronize(self) -> None:
        """Finish the allreduces and store the averaged gradients in each ``.grad`` (new
        arrays: the buffer a sharded update's ``.grad`` viewed then holds the mean too)."""
        if self._synced:
            return
        for p, g in zip(self.params, self._averaged()):
            # a copy: the averager's results are views of buffers that the next step reuses
            p.grad = g if self.group.size == 1 else p.xp.asarray(g, copy=True)
        self._synced = True

    def close(self) -> None:
        """Free what this wrapper holds across the ranks: the shared memory of the sharded
        update (parameters, state and gradients move to private copies first, equal on every
        rank) and the backward hook. Collective: every rank calls it after its last step;
        later steps raise, and the wrapped optimizer can step on its own again. Idempotent.

        >>> import numpy as np, gpugrad as gg
        >>> w = gg.Variable(np.ones(2))
        >>> opt = gg.distributed.DistributedOptimizer(gg.optim.SGD([w], lr=0.5))
        >>> opt.close()
        >>> opt.optimizer.step()  # no gradient: nothing to do
        """
        if self.overlap is not None:
            self.overlap.close()
            self.overlap = None
        if self.sharded is not None:
            self.sharded.close()
            WRAPPED.pop(self.optimizer, None)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(_CLOSED)

    def step(self) -> None:
        """Average the gradients over the ranks, then apply one update."""
        self._check_open()
        if self.sharded is not None and not self._synced:
            started = self.overlap.claim() if self.overlap is not None else None
            self.sharded.step([p.grad for p in self.params], started)
            return
        grads = [p.grad for p in self.params] if self._synced else self._averaged()
        self._synced = False
        if self.sharded is not None:
            self.sharded.apply(grads)
            return
        self.optimizer._apply(list(zip(self.params, grads)))

    def _apply(self, pairs: list) -> None:
        """The update a compiled step calls after backward: average, then apply."""
        self._check_open()
        if len(pairs) == len(self.params):
            grads = [g for _, g in pairs]
        else:  # some parameters without a gradient: they count as zero
            by = {id(p): g for p, g in pairs}
            grads = [by.get(id(p)) for p in self.params]
        if self.sharded is not None:
            self.sharded.step(grads)
            return
        grads = self.average(grads)
        self.optimizer._apply(list(zip(self.params, grads)))

    def minimize(self, loss: Any, feed: Mapping | None = None, compiled: bool = True) -> Any:
        """Graph front end: forward and backward, average the gradients over the ranks,
        update; returns this rank's loss as a 0-d device array.

        ``compiled=True``: one planned program per input signature (see
        ``gpugrad.graph.train_step``) whose last instruction is the average and the update
        (:meth:`_apply`); in a group of one, the optimizer's own compiled step.
        ``compiled=False``: the gradients first (``value_and_gradients``), then the same
        average and update; the same numbers."""
        self._check_open()
        if self.overlap is not None:
            self.overlap.discard()
        if compiled:
            if self.group.size == 1:
                return self.optimizer.minimize(loss, feed)
            return train_step(loss, self, feed)
        value, grads = value_and_gradients(loss, self.params, feed)
        self._apply(list(zip(self.params, grads)))
        return value

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, sd: Mapping) -> None:
        self.optimizer.load_state_dict(sd)
