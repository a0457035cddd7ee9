"""The batch dimension, symbolic in planned programs: one program for every batch size.

The leading dim of a Placeholder declared with a None there (``Placeholder((None, 8))``;
``gg.compile`` declares its array arguments so, see gpugrad.jit) is *the batch*. A
schedule files its planned programs under a :func:`key` in which the feeds' batch dims
read None, so a training run whose last batch is smaller, or an evaluation at another
batch size, finds the program that the first batch size built.

Such a program is built once, at a probe batch size :data:`PROBE` (a prime far above any
real size): :func:`probe` infers every slot's shape there with the ops' shape rules
(gpugrad.shapes), so a dim of a value derived from the batch reads ``k * PROBE + c`` and
every other dim (a weight's 64 while the batch is 64 too) keeps its own size. What the
generated source would otherwise bake in (the planned buffers, the vectors of ones of a
bias gradient, a mean's count, broadcast shapes) is made per batch size, lazily, in a
:class:`Frame` that the program keeps for the last few sizes (:data:`FRAMES`).

A graph whose shapes do not follow the batch that way (a rule that cannot tell, a slice
of the batch, a constant or a parameter sized like the first batch) is specialised on
the batch size instead, as before: its key holds the batch size.

>>> shape = (PROBE, 3, 2 * PROBE - 1)
>>> at(shape, 32)
(32, 3, 63)
>>> tag(2 * PROBE - 1)
'2n_m1'
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from .. import shapes as S
from . import lower, plan
from .trace import trace

PROBE = 1_000_000_007
"""The batch size a symbolic program is planned at (a prime; no real dim comes near)."""

FRAMES = 4
"""Batch sizes whose buffers and constants a program keeps (the least recent goes)."""


class Specialise(Exception):
    """The program cannot be independent of the batch size: build it for this size."""


def batched(placeholders: list) -> tuple:
    """Per Placeholder (the schedule's order), whether its leading dim is the batch."""
    return tuple(bool(ph.shape) and ph.shape[0] is None for _, ph in placeholders)


def key(feeds: list, marks: tuple, lead: int) -> tuple:
    """The signature of the feeds (arrays, in the schedule's order), their batch dims as
    None: a feed whose leading dim is the batch (``marks``) and equals the first one's
    (feed ``lead``, -1: none), which is at least 1. An empty batch is a size of its own."""
    n = feeds[lead].shape[0] if lead >= 0 else 0
    if n < 1:
        return tuple([(v.shape, v.dtype) for v in feeds])
    return tuple([((None, *v.shape[1:]) if m and v.shape[0] == n else v.shape, v.dtype)
                  for v, m in zip(feeds, marks)])


def dim(d: int, n: int) -> int:
    """Dim ``d`` of a shape at :data:`PROBE`, at batch size ``n``."""
    if d < PROBE // 2:
        return d
    k = (d + PROBE // 2) // PROBE
    return k * n + d - k * PROBE


def at(shape: tuple, n: int) -> tuple:
    """A shape at :data:`PROBE`, at batch size ``n``."""
    return tuple([dim(d, n) for d in shape])


def tag(d: int) -> str:
    """How a dim at :data:`PROBE` reads in a name of the generated source (``n``, ``2n``,
    ``n_p1``, ``n_m1``)."""
    k = (d + PROBE // 2) // PROBE
    c = d - k * PROBE
    return ("n" if k == 1 else f"{k}n") + ("" if not c else f"_p{c}" if c > 0 else f"_m{-c}")


def symbolic(shape: Any) -> bool:
    """Whether a shape (a tuple of ints) has a dim derived from the batch."""
    return type(shape) is tuple and any(type(d) is int and d >= PROBE // 2 for d in shape)


def slot_shapes(sched: Any, seen: list, marks: tuple, n: int) -> list | None:
    """Every slot's shape, by the shape rules, when the batch is ``n`` (``seen``: the
    (shape, dtype) of each slot at a run, None for non-arrays); None where a rule cannot
    tell or refuses."""
    out: list = [None] * len(sched.template)
    for (s, _), m in zip(sched.placeholders, marks):
        shape = seen[s][0]
        out[s] = (n, *shape[1:]) if m else shape
    for s, _ in sched.tensors:
        out[s] = seen[s][0]
    for op, ins, params, o in sched.steps:
        facts = []
        for i in ins:
            v = sched.template[i]
            if out[i] is not None:
                facts.append((out[i], None, False))
            elif isinstance(v, (int, float, bool)):
                facts.append(((), v, True))
            elif v is not None and hasattr(v, "shape"):
                facts.append((tuple(v.shape), None, False))
        try:
            shape = S.infer(op, facts, params)[0]
        except Exception:  # noqa: BLE001  (a rule that refuses: not symbolic)
            return None
        if shape is None:
            return None
        out[o] = shape
    return out


def follows(tr: Any, seen: list, marks: tuple) -> bool:
    """Whether the shapes of the graph ``tr`` (a trace, its leaves' shapes ``seen`` at one
    batch size) follow the batch: the shape rules give every value a shape at
    :data:`PROBE` whose batch dims, at the size seen, are the sizes the rules give there
    (not so where a parameter holds the size seen, a reshape to it, say)."""
    if not any(marks):
        return True
    n0 = seen[tr.placeholders[marks.index(True)][0]][0][0]
    probed = slot_shapes(tr, seen, marks, PROBE)
    real = slot_shapes(tr, seen, marks, n0)
    return probed is not None and real is not None and all(
        p is None or at(p, n0) == r for p, r in zip(probed, real))


def probe_input(sym: Any, batched: set) -> tuple:
    """For :func:`follows`: the trace of the graph of ``sym`` (a Symbol that is not a
    Placeholder), its leaves' shapes and which of its Placeholders are batched (those whose
    ids are in ``batched``)."""
    tr = trace(sym, ())
    seen: list = [None] * len(tr.template)
    for s, ph in tr.placeholders:
        seen[s] = (ph.declared_shape, None)
    for s, t in tr.tensors:
        seen[s] = (tuple(t.shape), None)
    return tr, seen, tuple(id(ph) in batched for _, ph in tr.placeholders)


def read_batch(read: list, batched: set) -> bool:
    """Whether a shape that traced Python read (``read``: Symbols) depends on the batch
    size: a batched Placeholder's (ids in ``batched``), or a value's whose shape the rules
    give a batch dim at :data:`PROBE` (or cannot tell)."""
    for sym in read:
        if sym.op is None:  # a Placeholder
            if id(sym) in batched:
                return True
            continue
        tr, seen, marks = probe_input(sym, batched)
        got = slot_shapes(tr, seen, marks, PROBE)
        if got is None or symbolic(got[tr.out]):
            return True
    return False


class Sizing:
    """How a symbolic program's batch-dependent parts are made for one batch size."""

    def __init__(self, sched: Any, seen: list, marks: tuple, probed: list) -> None:
        self.sched, self.seen, self.marks, self.probed = sched, seen, marks, probed
        self.lead = marks.index(True)
        self.buffers: list = []  # (shape at PROBE, dtype) of each planned buffer
        self.made: list = []  # per sized name or shape: n -> its value

    def renewed(self) -> Sizing:
        """A new sizing of the same probe, for another program of the same graph (the native
        tier's: gpugrad.compiler.tier)."""
        return Sizing(self.sched, self.seen, self.marks, self.probed)

    def check(self, n: int) -> bool:
        """Whether the shape rules, at batch size ``n``, give every slot the shape that the
        program's substitution gives it (not so for a slice of the batch, say)."""
        real = slot_shapes(self.sched, self.seen, self.marks, n)
        return real is not None and all(
            p is None or at(p, n) == r for p, r in zip(self.probed, real))

    def frame(self, xp: Any, numpy: bool, n: int) -> list | None:
        """The buffers and values the program reads for batch size ``n`` (None where the
        program does not fit that size)."""
        if n < 1 or not self.check(n):
            return None
        bufs = [plan.empty(xp, at(shape, n), dtype) if numpy else None
                for shape, dtype in self.buffers]
        return bufs + [make(n) for make in self.made]


_LITERAL = re.compile(r"(?<![\w.])\d{9,}")


def symbolic_source(source: str, env: dict, head: int, sizing: Sizing) -> str:
    """``source`` (a program planned at :data:`PROBE`) independent of the batch size: each
    sized name (``ONES{PROBE}_float64``, see :func:`gpugrad.compiler.lower.sized`) and each
    shape in ``env`` with a batch dim becomes a local read from the frame, after line
    ``head``. Raises :class:`Specialise` if the batch size is still in it."""
    lines = source.split("\n")
    first = len(sizing.buffers)
    loads: list = []
    names: dict = {}

    def rename(m: re.Match) -> str:
        prefix, digits, suffix = m.groups()
        d = int(digits)
        if d < PROBE // 2:
            return m.group(0)
        name = f"{prefix}{tag(d)}{suffix}"
        if name not in names:
            names[name] = len(loads)
            loads.append(name)
            sizing.made.append(lambda n, p=prefix, d=d, s=suffix: lower.sized(p, dim(d, n), s))
        return name
    body = "\n".join(lines[head:])
    body = lower.SIZED.sub(rename, body)
    for name, value in list(env.items()):
        if symbolic(value):  # a shape: read from the frame (where the source reads it)
            if re.search(rf"\b{name}\b", body):
                loads.append(name)
                sizing.made.append(lambda n, v=value: at(v, n))
        elif _mentions_probe(value):
            raise Specialise(f"a batch-sized value in the program's namespace: {name}")
    if any(int(m.group(0)) >= PROBE // 2 for m in _LITERAL.finditer(body)):
        raise Specialise("a batch-sized literal in the program's source")
    head_lines = lines[:head] + [f"    {name} = B[{first + j}]" for j, name in
                                 enumerate(loads)]
    return "\n".join(head_lines) + "\n" + body


def _mentions_probe(value: Any) -> bool:
    """A value the source reads from its namespace that still holds a dim at PROBE."""
    if type(value) in (tuple, list):
        return any(_mentions_probe(v) for v in value)
    if type(value) is dict:
        return any(_mentions_probe(v) for v in value.values())
    return type(value) is int and value >= PROBE // 2


def probe(sched: Any, seen: list, marks: tuple) -> tuple | None:
    """``(shapes at PROBE, Sizing)`` for a program independent of the batch size, or None
    where the graph's shapes do not follow the batch (see the module's docstring)."""
    if not any(marks):
        return None
    lead = marks.index(True)
    n0 = seen[sched.placeholders[lead][0]][0][0]
    probed = slot_shapes(sched, seen, marks, PROBE)
    if probed is None or n0 < 1:
        return None
    for s, info in enumerate(seen):  # (a constant's slot has no probed shape: its own)
        if info is not None and probed[s] is not None and at(probed[s], n0) != tuple(info[0]):
            return None  # the rules do not give the shapes the run saw
    shapes = [(probed[s] if probed[s] is not None else info[0], info[1])
              if info is not None else None for s, info in enumerate(seen)]
    return shapes, Sizing(sched, seen, marks, probed)


class Frames:
    """A symbolic program's frames, by batch size: the last :data:`FRAMES` sizes."""

    __slots__ = ("sizing", "xp", "numpy", "by_n", "made", "last_n", "last")

    def __init__(self, sizing: Sizing, xp: Any, numpy: bool) -> None:
        self.sizing, self.xp, self.numpy = sizing, xp, numpy
        self.by_n: OrderedDict = OrderedDict()
        self.made = 0  # frames made so far (a size that comes back after others went)
        self.last_n, self.last = -1, None  # the size of the last call, and its frame

    def get(self, n: int) -> list | None:
        """The frame of batch size ``n`` (made now if it is not kept), or None."""
        got = self.by_n.get(n)
        if got is not None:
            self.by_n.move_to_end(n)
        else:
            got = self.sizing.frame(self.xp, self.numpy, n)
            if got is None:
                return None
            self.made += 1
            self.by_n[n] = got
            while len(self.by_n) > FRAMES:
                self.by_n.popitem(last=False)
        self.last_n, self.last = n, got
        return got

