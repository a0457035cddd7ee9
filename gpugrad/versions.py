"""Version counters: in-place writes are recorded, so backward refuses stale saved arrays.

Every in-place write (``t[...] = v``, ``t += u``, an optimizer step) bumps the written
Tensor's version and notes the write's sequence number, on the Tensor's version and in a short
log of recent writes (with a weak reference to the array, to catch writes through views and
aliases); one optimizer step's writes are one event of the log, at one sequence number. Nodes
are numbered from the same counter. So "was an array this Node saved written after the Node
was made?" compares two integers, and backward asks it only when some write
(or some host fingerprint, below) is newer than the oldest Node of its graph. A training loop
that steps its optimizer between backward passes never pays for the check.

A Node holds the Tensors it was given (constants and Variables) and checks their versions
exactly. A write through another Tensor that shares the memory (a NumPy or CuPy view, or an
alias made by ``detach()`` of an intermediate) is found through the log, which keeps the last
``KEEP`` writes; on array_api_strict, views are only recognised when they are the same array.

Host NumPy arrays passed raw into a recorded op on the NumPy backend are the caller's memory,
which the caller can change behind gpugrad's back. For those the Node keeps a CRC-32 of each
raw array it saved, and backward compares it. ``gpugrad.asarray`` copies host arrays instead,
so the usual path costs nothing.
"""

from __future__ import annotations

import itertools
import threading
import weakref
import zlib
from collections import deque
from typing import Any

import numpy as np

from . import hooks
from .errors import GradientError, at, show

sequence = itertools.count()
"""Orders Node creation and in-place writes."""

last_event = -1
"""Sequence number of the latest in-place write or host fingerprint."""

KEEP = 256
"""How many recent writes the log remembers (whole events: at least the latest one)."""

_writes: deque = deque()  # events: (sequence number, refs, [(version, count)], site)
_held = 0  # how many writes its events hold
_lock = threading.Lock()  # so that last_event never moves backwards


class Version:
    """How many in-place writes a Tensor's array has had, and when the recent ones were.
    ``detach()`` shares it."""

    __slots__ = ("count", "last", "recent", "site")

    def __init__(self, count: int = 0, last: int = -1, recent: tuple = (),
                 site: str = "") -> None:
        self.count = count
        self.last = last  # sequence number of the latest write
        self.recent: deque = deque(recent, maxlen=64)  # ... and of the last 64 writes
        self.site = site

    def __reduce__(self) -> tuple:
        # a copy (pickle, deepcopy) keeps the count; sequence numbers belong to this process
        return (Version, (self.count,))

    def at(self, seq: int) -> str:
        """The version this was at sequence number ``seq`` (a bound if that is too long ago)."""
        recent = list(self.recent)  # a copy: another thread may be writing
        after = sum(1 for s in recent if s > seq)
        if after == len(recent) and self.count > after:
            return f"at most {self.count - after}"
        return str(self.count - after)


def version_of(t: Any) -> Version:
    v = getattr(t, "_vlog", None)
    if v is None:
        v = t._vlog = Version()
    return v


def wrote(t: Any, array: Any, site: str) -> None:
    """Record an in-place write into ``array`` (the data of Tensor ``t``)."""
    with _lock:
        _record((t,), (_ref(array),), site)


def _ref(array: Any) -> Any:
    """What the write log keeps of an array: a weak reference, or its id when it takes none
    (then only the same array is matched)."""
    try:
        return weakref.ref(array)
    except TypeError:
        return id(array)


def _record(tensors: Any, refs: Any, site: str) -> None:
    """One event: a write into each Tensor's array (``refs``: the log's :func:`_ref` of
    each), all at one sequence number, as one entry of the log; the caller holds ``_lock``.
    Each Tensor's version is bumped as for a write of its own."""
    global last_event, _held
    seq = next(sequence)
    bumped: list = []  # (version, its count now) per write
    keep = bumped.append
    for t in tensors:
        try:
            v = t._vlog  # (a slot: unset until the first write or version read)
        except AttributeError:
            v = None
        if v is None:
            v = t._vlog = Version()
        count = v.count = v.count + 1
        v.last = seq
        v.recent.append(seq)
        v.site = site
        keep((v, count))
    _writes.append((seq, refs, bumped, site))
    _held += len(bumped)
    while _held > KEEP and len(_writes) > 1:  # the oldest events go
        _held -= len(_writes.popleft()[2])
    last_event = seq


def rebound(t: Any) -> None:
    """``t`` got a new array (an out-of-place update): bump its version. Arrays that were
    saved earlier are untouched, and aliases made by ``detach()`` keep the old count."""
    old = getattr(t, "_vlog", None)
    t._vlog = Version(old.count + 1, old.last, old.recent, old.site) if old is not None \
        else Version(1)
    if getattr(t, "_views", None):  # its views (gpugrad.views) are recomputed from it
        hooks.follow(t)


def _checksum(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def saved_arrays(res: Any) -> list:
    """The arrays inside a Node's residuals (tuples and lists are searched, nothing else)."""
    out: list = []
    stack = [res]
    while stack:
        r = stack.pop()
        if isinstance(r, (tuple, list)):
            stack.extend(r)
        elif hasattr(r, "shape") and hasattr(r, "dtype") and not isinstance(r, np.generic):
            out.append(r)
    return out


def overlap(a: Any, b: Any) -> bool:
    """Do arrays ``a`` and ``b`` share memory? Exact for NumPy and CuPy views; identity
    elsewhere."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if not np.may_share_memory(a, b):
            return False
        try:
            return bool(np.shares_memory(a, b, max_work=10_000))
        except np.exceptions.TooHardError:
            return True
    mod = type(a).__module__
    if mod.startswith("cupy") and type(b).__module__.startswith("cupy"):
        import cupy

        return bool(cupy.may_share_memory(a, b))
    return False


def fingerprint(node: Any, raw: list) -> None:
    """Checksum the host NumPy arrays in ``raw`` that ``node`` saved for backward."""
    global last_event
    saved = saved_arrays(node.res)
    sums = [(a, _checksum(a)) for a in raw
            if isinstance(a, np.ndarray) and any(overlap(a, r) for r in saved)]
    if sums:
        node.sums = sums
        with _lock:
            last_event = max(last_event, node.seq)


def check(nodes: list, freed: Any, replayed: bool = False) -> None:
    """Raise GradientError if an array a Node in ``nodes`` saved was written in place after
    the Node was made (``nodes`` are latest first). ``replayed``: backward will recompute the
    forward from the Nodes' inputs (``create_graph``), so any input written since counts."""
    oldest = nodes[-1].seq
    log = list(_writes)  # one atomic copy, in sequence order: keep the tail newer than oldest
    k = len(log)
    while k and log[k - 1][0] > oldest:
        k -= 1
    writes = log[k:]
    for v in nodes:
        if v.res is freed:
            continue
        for a, crc in getattr(v, "sums", ()):
            if _checksum(a) != crc:
                i = _position(v, a)
                raise GradientError(at(
                    f"backward: {v.op.name} saved a NumPy array you passed in ({i}shape "
                    f"{show(a.shape)}) for its gradient, and its contents changed before "
                    "backward ran; pass gpugrad.asarray(array) instead (it copies), or change "
                    "the array only after backward"))
        saved = None
        for i, p in enumerate(v.inputs):  # the Tensors it was given: exact
            version = getattr(p, "_vlog", None)
            if version is not None and version.last > v.seq and hasattr(p, "requires_grad"):
                if replayed:
                    raise GradientError(at(
                        f"backward(create_graph=True): {v.op.name} recorded input {i} (shape "
                        f"{show(p.shape)}), which was modified in place afterwards, at "
                        f"{version.site}: expected version {version.at(v.seq)}, found version "
                        f"{version.count}; the replayed forward would use the new values"))
                saved = saved_arrays(v.res) if saved is None else saved
                hit = [r for r in saved if overlap(p.data, r)]
                if hit:
                    raise GradientError(at(_stale(v, f"input {i}, ", hit[0], version.site,
                                                  version.at(v.seq), version.count)))
        later = [w for w in writes if w[0] > v.seq]
        if not later:
            continue
        saved = saved_arrays(v.res) if saved is None else saved
        for _, refs, bumped, site in later:  # writes through views and aliases
            for ref, (version, count) in zip(refs, bumped):
                arr = ref() if isinstance(ref, weakref.ref) else None
                hit = [r for r in saved
                       if (overlap(arr, r) if arr is not None else id(r) == ref)]
                if hit:
                    raise GradientError(at(_stale(v, _position(v, hit[0]), hit[0], site,
                                                  count - 1, version.count)))


def _stale(v: Any, where: str, array: Any, site: str, expected: Any, found: int) -> str:
    return (f"backward: {v.op.name} saved an array ({where}shape {show(array.shape)}) for its "
            f"gradient, and it was modified in place afterwards, at {site}: expected version "
            f"{expected}, found version {found}; make the change after backward, or change a "
            "copy (t = t + 1 makes a new Tensor)")


def _position(node: Any, array: Any) -> str:
    """``input i, `` for the input of ``node`` whose data is ``array``, if it is a Tensor."""
    for i, p in enumerate(node.inputs):
        data = p.data if hasattr(p, "requires_grad") else p  # a Tensor, or a raw array
        if hasattr(data, "shape") and hasattr(data, "dtype") and overlap(data, array):
            return f"input {i}, "
    return ""


def refs(arrays: Any) -> tuple:
    """The write log's references to ``arrays`` (for :func:`wrote_arrays`)."""
    try:
        return tuple(map(weakref.ref, arrays))  # (the usual case, without a call per array)
    except TypeError:  # some array takes no weak reference
        return tuple(_ref(a) for a in arrays)


def wrote_arrays(tensors: Any, refs: tuple, site: str) -> None:
    """:func:`wrote_many` for Tensors whose arrays' :func:`refs` the caller has (an
    optimizer step): one event of the log, under one lock."""
    with _lock:
        _record(tensors, refs, site)


def wrote_many(tensors: Any, site: str) -> None:
    """Record one in-place write into each Tensor's current array (an optimizer step), as
    one event of the log, under one lock."""
    wrote_arrays(tensors, refs([t.data for t in tensors]), site)
