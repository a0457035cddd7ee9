"""``gpugrad train --distributed``: the CLI's hooks for data-parallel training.

Rank 0 alone prints and writes files (``--save``, ``--plot``). An error that every rank hits
alike (a bad argument, a bad ``--data`` file) is agreed on: rank 0 prints one line and every
rank exits with status 2. Any other failure on a rank, once training has begun, prints the
rank and the error and aborts the whole job (``MPI.COMM_WORLD.Abort``), so nothing hangs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable

from .. import backend as B
from ..data import Batches
from .collectives import all_reduce, broadcast_parameters
from .group import DistributedError, Group, init, launcher_rank
from .optimizer import DistributedOptimizer


class AgreedError(Exception):
    """An error every rank raises together, after agreeing on it."""


_state = {"together": False}  # True once the ranks have begun talking to one another


def main_train(args: Any, train: Callable[[Any], Any], errors: tuple) -> int:
    """Run ``train(args)`` on every rank of the launcher's group; returns the exit status.
    ``errors`` (and DistributedError) are the exception types reported as one line."""
    errors = (*errors, DistributedError)
    try:
        if args.backend:  # before init(): on CuPy it picks NCCL
            B.set_backend(args.backend)
        group = init()
    except errors as exc:  # the same on every rank: the launcher's rank 0 says it once
        if launcher_rank() == 0:
            print(f"gpugrad train: error: {exc}", file=sys.stderr)
        return 2
    if group.size == 1:
        print("gpugrad train: --distributed without a launcher (mpiexec, srun): running as "
              "one process")
    elif group.rank != 0:
        args.quiet, args.save, args.plot = True, None, None
    _state["together"] = False
    with _rank0_prints(group):
        try:
            if args.batch_size % group.size:
                raise AgreedError(f"--batch-size {args.batch_size} is the global batch; with "
                                  f"{group.size} ranks it must be a multiple of {group.size}")
            train(args)
            return 0
        except AgreedError as exc:
            if group.rank == 0:
                print(f"gpugrad train: error: {exc}", file=sys.stderr)
            return 2
        except errors as exc:
            if group.size > 1 and _state["together"]:
                group.abort(f"gpugrad train: {exc}")
            if group.rank == 0:  # before any collective: every rank raised the same
                print(f"gpugrad train: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:
            if group.size > 1:
                group.abort(f"gpugrad train failed: {type(exc).__name__}: {exc}")
            raise


@contextlib.contextmanager
def _rank0_prints(group: Group) -> Any:
    if group.rank == 0:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def load_together(load: Callable[[Any], tuple], path: Any, errors: tuple) -> tuple:
    """``load(path)`` on every rank; if it fails on any rank, every rank raises the first
    failing rank's error (rank 0 prints it once)."""
    group = init()
    try:
        out, problem = load(path), None
    except errors as exc:
        out, problem = None, str(exc)
    _state["together"] = True
    problems = group.allgather(problem)
    for r, p in enumerate(problems):
        if p is not None:
            raise AgreedError(p if group.size == 1 or r == 0 else f"rank {r}: {p}")
    return out


def distribute(model: Any, opt: Any, X: Any, y: Any, args: Any) -> tuple:
    """Start every rank from rank 0's parameters; wrap the optimizer; shard the batches.
    ``args.batch_size`` is the global batch."""
    group = init()
    if len(y) < group.size:  # every rank loaded the same data, so every rank says this
        raise AgreedError(f"{len(y)} training rows cannot be shared by {group.size} ranks")
    broadcast_parameters(model, group=group)
    per_rank = args.batch_size // group.size
    batches = Batches(X, y, per_rank, shuffle=True, seed=args.seed, shard=group)
    print(f"distributed: {group.size} ranks ({group.backend}), {per_rank} rows per rank per "
          f"step (global batch {args.batch_size})")
    return DistributedOptimizer(opt, group=group), batches


def epoch_totals(loss_sum: Any, hit_sum: Any, n_rows: int) -> tuple:
    """The epoch's summed loss and hits over all ranks, scaled to ``n_rows`` rows (the
    ``n_rows % size`` rows each epoch leaves out are not counted twice)."""
    group = init()
    if group.size == 1:
        return loss_sum, hit_sum
    both = all_reduce(_stack(loss_sum, hit_sum), "sum", group=group)
    scale = n_rows / float((n_rows // group.size) * group.size)
    return both[0] * scale, both[1] * scale


def _stack(a: Any, b: Any) -> Any:
    xp = B.namespace_of(a)
    return xp.stack([xp.reshape(a, ()), xp.astype(xp.reshape(b, ()), a.dtype)])
