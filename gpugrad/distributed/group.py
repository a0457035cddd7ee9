"""Process groups: which engine moves the bytes, this process's rank, and the group's size.

Two engines, both existing libraries:

- ``"mpi"``: MPI through mpi4py (``pip install gpugrad[mpi]`` brings mpi4py and the MPICH
  wheel with its ``mpiexec``). Host arrays are reduced in place; device arrays are copied to
  the host and back.
- ``"nccl"``: NCCL on CuPy through ``cupyx.distributed``. Buffers stay on the device and the
  collectives are queued on the current stream: the host never waits for them. MPI (which
  it then needs for more than one rank) starts it and carries host arrays and set-up checks.

Run without a launcher (or without mpi4py), :func:`init` gives a group of size 1 whose
collectives are the identity.

A group of size > 1 makes a rank that raises end the whole job: an uncaught exception prints
its traceback and the rank, then calls ``MPI.COMM_WORLD.Abort``. A watchdog thread aborts the
job, naming the rank and the collective, when a wait on a collective lasts longer than
``timeout`` seconds (default ``$GPUGRAD_DIST_TIMEOUT`` or 300), so a lost peer never hangs
the others forever.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any, Iterator

import numpy as np

from .. import backend as B

BACKENDS = ("mpi", "nccl")
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


class DistributedError(RuntimeError):
    """A distributed set-up problem (missing engine, mismatched ranks, bad arguments)."""


def launcher_size() -> int:
    """The number of processes a launcher (mpiexec, srun) says it started; 1 if none."""
    for var in _LAUNCHER_SIZE_VARS:
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    if "SLURM_STEP_ID" in os.environ:  # inside an srun step
        try:
            return max(1, int(os.environ.get("SLURM_NTASKS", "1")))
        except ValueError:
            return 1
    return 1


def launcher_rank() -> int:
    """This process's rank as the launcher set it (before MPI starts); 0 if none."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                continue
    if "SLURM_STEP_ID" in os.environ:
        try:
            return int(os.environ.get("SLURM_PROCID", "0"))
        except ValueError:
            return 0
    return 0


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI


class Group:
    """The processes that train together: ``rank`` (0 .. size-1), ``size`` and ``backend``
    (``"mpi"`` or ``"nccl"``). Get it from :func:`init`."""

    def __init__(self, backend: str, rank: int, size: int, comm: Any = None, nccl: Any = None,
                 timeout: float = 300.0) -> None:
        self.backend = backend
        self.rank = rank
        self.size = size
        self.comm = comm    # an mpi4py communicator (a duplicate of COMM_WORLD), or None
        self.nccl = nccl    # a cupyx.distributed communicator, or None
        self.timeout = float(timeout)
        self._waiting: tuple | None = None  # (since, what) while a wait is under way
        self.aborting = False  # set by abort(): no collective may start after it
        self._watchdog: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Group(backend={self.backend!r}, rank={self.rank}, size={self.size})"

    # --- engine calls on flat buffers -----------------------------------------------------

    def start_allreduce(self, buf: Any, op: str = "sum") -> "Pending":
        """Start summing (or taking the max of) a flat 1-D backend array over the ranks, in
        place where the engine allows (pass a buffer you own). Returns a handle whose
        ``finish()`` gives the result. MPI: a non-blocking ``Iallreduce``, on the NumPy buffer
        itself or on a host copy of a device array. NCCL: queued on the current stream."""
        if self.size == 1:
            return Pending(buf)
        if self.nccl is not None and not isinstance(buf, np.ndarray):
            self.nccl.all_reduce(buf, buf, op)
            return Pending(buf)
        host = _host_buffer(buf)
        req = self.comm.Iallreduce(self._mpi.IN_PLACE, host, op=_MPI_OPS[op](self._mpi))
        return Pending(host, self, req, buf, f"allreduce of {host.size} {host.dtype} values")

    def start_broadcast(self, buf: Any, root: int) -> "Pending":
        if self.size == 1:
            return Pending(buf)
        if self.nccl is not None and not isinstance(buf, np.ndarray):
            self.nccl.broadcast(buf, root)
            return Pending(buf)
        host = _host_buffer(buf)
        req = self.comm.Ibcast(host, root=root)
        return Pending(host, self, req, buf, f"broadcast of {host.size} {host.dtype} values")

    def allgather(self, obj: Any) -> list:
        """Every rank's ``obj`` (small, picklable), in rank order; for set-up checks."""
        if self.size == 1:
            return [obj]
        import pickle

        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        mine = np.asarray([data.size], np.int64)  # named: MPI reads it until the wait ends
        counts = np.zeros(self.size, dtype=np.int64)
        self.wait(self.comm.Iallgather(mine, counts), "allgather of sizes")
        out = np.empty(int(counts.sum()), dtype=np.uint8)
        self.wait(self.comm.Iallgatherv(data, (out, counts)), "allgather of set-up data")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return [pickle.loads(out[offsets[i]:offsets[i + 1]].tobytes())
                for i in range(self.size)]

    def barrier(self) -> None:
        if self.size > 1:
            self.wait(self.comm.Ibarrier(), "barrier")

    def wait(self, req: Any, what: str) -> None:
        """Wait for an MPI request; a watchdog thread aborts the job if it takes longer than
        ``timeout`` seconds (MPI's own collectives have no timeout)."""
        if req.Test():
            return
        with self.blocking(what):
            req.Wait()  # in C, without the GIL: as fast as MPI's own blocking wait

    @contextlib.contextmanager
    def blocking(self, what: str) -> Iterator[None]:
        """Around a blocking collective MPI call (one with no non-blocking form, such as a
        shared window's allocation): the watchdog aborts the job if it lasts longer than
        ``timeout`` seconds."""
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="gpugrad-watchdog",
                                              daemon=True)
            self._watchdog.start()
        self._waiting = (time.monotonic(), what)
        try:
            yield
        finally:
            self._waiting = None

    def _watch(self) -> None:
        period = min(1.0, self.timeout / 4.0)
        while True:
            time.sleep(period)
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[0] > self.timeout:
                self.abort(f"{waiting[1]} did not complete within {self.timeout:g} s (a rank "
                           "stopped, or ranks called collectives in different orders)")

    def abort(self, why: str, code: int = 1) -> None:
        """End the whole job: print ``why`` naming this rank, then ``MPI.COMM_WORLD.Abort``."""
        self.aborting = True
        sys.stdout.flush()
        print(f"gpugrad.distributed: rank {self.rank} of {self.size}: {why}; aborting the job",
              file=sys.stderr, flush=True)
        if self.size > 1 and self._mpi is not None:
            # Abort kills every process at once, the launcher's output forwarding included;
            # a moment first lets the line above reach the user's terminal
            time.sleep(0.5)
            self._mpi.COMM_WORLD.Abort(code)
        raise SystemExit(code)  # pragma: no cover  (Abort does not return)

    @property
    def _mpi(self) -> Any:
        return _mpi() if (self.comm is not None or self.nccl is not None) else None


class Pending:
    """An allreduce or broadcast in flight; ``finish()`` waits (with the group's timeout) and
    returns the result as an array of the input's backend and device."""

    __slots__ = ("host", "group", "req", "like", "what")

    def __init__(self, host: Any, group: Group | None = None, req: Any = None,
                 like: Any = None, what: str = "") -> None:
        self.host, self.group, self.req, self.like, self.what = host, group, req, like, what

    def test(self) -> bool:
        """Let MPI make progress; True when done."""
        return self.req is None or bool(self.req.Test())

    def finish(self) -> Any:
        if self.req is None:
            return self.host
        self.group.wait(self.req, self.what)
        self.req = None
        if isinstance(self.like, np.ndarray):
            return self.host
        return B.namespace_of(self.like).asarray(self.host, device=B.device_of(self.like))


def _host_buffer(a: Any) -> np.ndarray:
    """A contiguous host array MPI may write into: a NumPy buffer itself (the caller owns
    it), else a host copy of the device array."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(B.to_numpy(a), order="C", copy=True)


_MPI_OPS = {"sum": lambda MPI: MPI.SUM, "max": lambda MPI: MPI.MAX}

_GROUP: Group | None = None


def init(backend: str | None = None, *, timeout: float | None = None) -> Group:
    """Join the group of processes started by the launcher; the same group on later calls.

    ``backend=None`` picks ``"nccl"`` when the current gpugrad backend is CuPy and ``"mpi"``
    otherwise. Without a launcher the group has size 1 and every collective is the identity.

    >>> import gpugrad as gg
    >>> g = gg.distributed.init()
    >>> (g.rank, g.size)
    (0, 1)
    >>> gg.distributed.init() is g
    True
    """
    global _GROUP
    if backend is not None and backend not in BACKENDS:
        raise DistributedError(f"gg.distributed.init: unknown backend {backend!r}; choose "
                               f"'mpi' (host arrays, mpi4py) or 'nccl' (CuPy arrays, NCCL)")
    if _GROUP is not None:
        if backend is not None and backend != _GROUP.backend:
            raise DistributedError(f"gg.distributed.init: already initialised with backend "
                                   f"{_GROUP.backend!r}; cannot switch to {backend!r}")
        return _GROUP
    if backend is None:
        backend = "nccl" if B.current().name == "cupy" else "mpi"
    if timeout is None:
        timeout = float(os.environ.get("GPUGRAD_DIST_TIMEOUT", "300"))
    MPI = _mpi()
    if MPI is None and launcher_size() > 1:
        raise DistributedError(
            f"gg.distributed.init: a launcher started {launcher_size()} processes but mpi4py "
            "is not installed; install it with `pip install gpugrad[mpi]`")
    if backend == "nccl":
        _GROUP = _init_nccl(MPI, timeout)
    elif MPI is None:
        _GROUP = Group("mpi", 0, 1, timeout=timeout)
    else:
        world = MPI.COMM_WORLD
        comm = world.Dup()  # our own traffic never meets the user's messages
        _GROUP = Group("mpi", world.Get_rank(), world.Get_size(), comm=comm, timeout=timeout)
    if _GROUP.size > 1:
        _install_excepthook(_GROUP)
    return _GROUP


def _init_nccl(MPI: Any, timeout: float) -> Group:
    try:
        import cupy
        import cupyx.distributed
    except ImportError as exc:
        raise DistributedError("gg.distributed.init: backend 'nccl' needs CuPy with NCCL; "
                               "install gpugrad[cuda12] (or cuda13)") from exc
    comm = MPI.COMM_WORLD.Dup() if MPI is not None else None
    rank = comm.Get_rank() if comm is not None else 0
    size = comm.Get_size() if comm is not None else 1
    cupy.cuda.Device(rank % cupy.cuda.runtime.getDeviceCount()).use()
    nccl = cupyx.distributed.init_process_group(size, rank, backend="nccl",
                                                use_mpi=comm is not None)
    return Group("nccl", rank, size, comm=comm, nccl=nccl, timeout=timeout)


def _install_excepthook(group: Group) -> None:
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        group.abort(f"raised {kind.__name__}: {value}")

    sys.excepthook = hook
