"""Overlap of the gradient allreduces with eager backward.

As a sweep starts, :class:`Overlap` finds, for each of its parameters, the last Node on the
tape that sends it a gradient. A bucket is ready once the sweep has passed the last such
Node of all its members; its allreduce (non-blocking) then starts while the sweep goes on.
Buckets start strictly in plan order on every rank, which MPI requires of non-blocking
collectives, even where a parameter gets no gradient on some rank (it then counts as zero).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from .. import eager
from .buckets import GradientAverager
from .group import Pending


class Overlap:
    """Starts bucket allreduces from inside eager backward; ``take()`` finishes them."""

    def __init__(self, averager: GradientAverager) -> None:
        self.averager = averager
        self.index = {p: i for i, p in enumerate(averager.params)}
        self.pending: list[Pending] = []
        self.started = 0   # buckets started for the latest backward
        self.on_start: Callable[[], None] | None = None
        ref = weakref.ref(self)

        def hook(nodes: list, leaves: list, grads: dict) -> Any:
            me = ref()
            return None if me is None else me.begin(nodes, leaves, grads)

        eager.backward_hooks.append(hook)
        self._unhook = weakref.finalize(self, _remove_hook, hook)

    def begin(self, nodes: list, leaves: list, grads: dict) -> Callable[[], None] | None:
        index = self.index
        if not any(leaf in index for leaf in leaves):
            return None  # a backward that reaches none of our parameters
        self.discard()   # a second backward before step(): start again with the sums
        if self.on_start is not None:
            self.on_start()
        last: dict = {}
        for pos, v in enumerate(nodes):
            for p, need in zip(v.inputs, v.needs):
                if need and p in index:
                    last[p] = pos
        params = self.averager.params
        ready = [max(last.get(params[i], -1) for i in b.members)
                 for b in self.averager.buckets]
        state = {"done": 0}
        buckets = self.averager.buckets

        def tick() -> None:
            done = state["done"]
            state["done"] = done + 1
            while self.started < len(buckets) and ready[self.started] < done:
                b = buckets[self.started]
                self.pending.append(self.averager.start(b, _Current(self, b, grads)))
                self.started += 1
            if self.pending and self.started < len(buckets):
                self.pending[-1].test()  # MPI moves messages only inside MPI calls

        return tick

    def take(self) -> list | None:
        """The averaged gradients of the latest backward, or None if it started none."""
        buckets = self.averager.buckets
        if self.started < len(buckets):
            self.discard()
            return None
        out: list = [None] * len(self.averager.params)
        for b, pend in zip(buckets, self.pending):
            self.averager.finish(b, pend, out)
        self.pending, self.started = [], 0
        return out

    def claim(self) -> list | None:
        """The in-flight allreduces of the latest backward, one per bucket, handed over
        unfinished (a sharded update finishes them); None, with nothing in flight, if the
        sweep did not start them all."""
        if self.started < len(self.averager.buckets):
            self.discard()
            return None
        out, self.pending, self.started = self.pending, [], 0
        return out

    def close(self) -> None:
        """Complete what is in flight and remove the backward hook."""
        self.discard()
        self._unhook()

    def discard(self) -> None:
        """Complete and drop what is in flight (collectives must be completed; a
        shared-memory one is cancelled, which leaves the gradients where they are)."""
        for pend in self.pending:
            cancel = getattr(pend, "cancel", None)
            if cancel is not None:
                cancel()
            else:
                pend.finish()
        self.pending, self.started = [], 0


class _Current:
    """``grads[i]`` for a bucket's members: the sweep's gradient plus any ``.grad`` that
    earlier backwards left (the sum eager backward is about to store)."""

    __slots__ = ("ov", "grads")

    def __init__(self, ov: Overlap, bucket: Any, grads: dict) -> None:
        self.ov, self.grads = ov, grads

    def __getitem__(self, i: int) -> Any:
        p = self.ov.averager.params[i]
        g = self.grads.get(p)
        if p.grad is None:  # (g may be the parameter's slot of the buffer: see
            return g        # gpugrad.eager.grad_sinks)
        return p.grad if g is None else p.xp.asarray(p.grad + g)


def _remove_hook(hook: Any) -> None:
    try:
        eager.backward_hooks.remove(hook)
    except ValueError:
        pass
