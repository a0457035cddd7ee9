"""Pass 4, plan: a liveness pass assigns every planned value a persistent buffer.

The program (``gpugrad.compiler.program``) is a straight list of instructions, each naming
the values it reads and the values it defines. A value is *planned* (written with ``out=``
into a buffer kept across runs) only when every instruction that touches it is a lowered one
and it is not handed back to the user; anything a generic rule reads or makes may be kept
by that rule or be a view, so it is left to ordinary allocation. A buffer whose last reader
has run goes back to a pool and the next value of the same shape and dtype takes it.

>>> from gpugrad.compiler.plan import Instr, assign
>>> prog = [Instr(["x"], [("a", (2,), "f8")], None, True),
...         Instr(["a"], [("b", (2,), "f8")], None, True),
...         Instr(["b"], [("c", (2,), "f8")], None, True)]
>>> where, shapes = assign(prog, escapes={"c"})
>>> where["a"], where["b"], where.get("c")
(0, 1, None)
>>> prog.append(Instr(["a"], [("d", (2,), "f8")], None, True))
>>> where, _ = assign(prog, escapes={"c", "d"})
>>> where["a"] != where["b"]
True
>>> prog[1].inplace = {"b": ["a"]}  # elementwise: b may take a's buffer if a dies there
>>> where, _ = assign(prog[:3], escapes={"c"})
>>> where["a"] == where["b"]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Instr:
    """One instruction: ``reads`` (value names), ``defines`` ((name, shape, dtype) each),
    ``emit(out_exprs, temp_exprs) -> lines`` and whether it is lowered (emits ``out=``).

    ``alias`` maps a defined value to a read value whose memory it shares (a gradient passed
    on unchanged); ``temps`` are scratch buffers (shape, dtype) used only inside it;
    ``inplace`` maps a defined value to read values whose buffer it may take when they are
    read for the last time here (elementwise code that may write over its input); ``tag``
    names the op and the user's line it comes from, a comment on each of its lines
    (gpugrad.compiler.listing)."""

    reads: list
    defines: list
    emit: Callable | None
    lowered: bool
    alias: dict = field(default_factory=dict)
    temps: list = field(default_factory=list)
    inplace: dict = field(default_factory=dict)
    scalar: tuple | None = None  # its one value as a formula over value names (fusion)
    rows: str | None = None  # or: its value is this value summed over its leading axes
    total: tuple | None = None  # or: made from this value's whole sum (lower.Forward.total)
    tag: str = ""
    product: tuple | None = None  # ("nn" | "tn" | "nt", a, b): a @ b, a.T @ b or a @ b.T
    part: tuple | None = None  # its value is a view of row i of a value, (value, i)
    stacks: list = field(default_factory=list)  # Stacks whose rows it reads (see Stack)


@dataclass
class Stack:
    """Values planned as the rows of one buffer of shape ``(len(members), *shape)``, in
    order (None: a row no value takes), so that one instruction reads them as one array
    (gpugrad.compiler.stack). ``assign`` sets ``buffer`` to its index, or leaves it None
    where a member cannot be planned there (the reader then reads the values one by one).
    The buffer is held for the whole program."""

    members: list
    shape: tuple
    dtype: Any
    buffer: int | None = None


def assign(prog: list, escapes: set) -> tuple[dict, list]:
    """Buffers for the planned values: ``({value: buffer index}, [(shape, dtype), ...])``.
    Temps are named ``"~k.j"`` (instruction k, temp j)."""
    parent: dict = {}

    def find(a: str) -> str:
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    unplanned = set(escapes)
    info: dict = {}
    for ins in prog:
        for name, shape, dtype in ins.defines:
            info[name] = (shape, dtype)
            if not ins.lowered or shape is None:
                unplanned.add(name)
        if not ins.lowered:
            unplanned.update(ins.reads)
        for out, src in ins.alias.items():
            parent[find(out)] = find(src)
    # a group of aliases is planned only if all its members are
    bad = {find(a) for a in unplanned}
    last: dict = {}
    for k, ins in enumerate(prog):
        for name in ins.reads:
            last[find(name)] = k
        for name, *_ in ins.defines:
            last.setdefault(find(name), k)
    where: dict = {}
    shapes: list = []
    rows = _stacked(prog, find, bad, info, shapes)  # root -> "buffer[row]"
    bad |= rows.keys()  # (no value takes a row's buffer, nor gives it back to the pool)
    pool: dict = {}
    for k, ins in enumerate(prog):
        took = []
        for name, shape, dtype in ins.defines:
            root = find(name)
            if root in rows:
                where[name] = rows[root]
                continue
            if root in bad or name in ins.alias or root in where:
                if root in where and name not in where:
                    where[name] = where[root]
                continue
            src = _dying(ins.inplace.get(name, ()), find, where, bad, last, k, shapes,
                         (shape, dtype))
            if src is not None:  # its buffer passes on to this value
                last[src] = -1
                where[name] = where[root] = where[src]
                continue
            where[name] = where[root] = _take(pool, shapes, shape, dtype)
        for j, (shape, dtype) in enumerate(ins.temps):
            b = _take(pool, shapes, shape, dtype)
            where[f"~{k}.{j}"] = b
            took.append(b)
        for b in took:
            pool.setdefault(shapes[b], []).append(b)
        released = {find(n) for n in ins.reads} | {find(n) for n, *_ in ins.defines}
        for root in released:
            if last.get(root) == k and root in where and root not in bad:
                pool.setdefault(shapes[where[root]], []).append(where[root])
                last[root] = -1
    return where, shapes


def _stacked(prog: list, find: Any, bad: set, info: dict, shapes: list) -> dict:
    """``{root: "b[i]"}`` for the members of each Stack whose members can all be planned
    (each stack then gets buffer ``b``, appended to ``shapes``)."""
    rows: dict = {}
    for st in [st for ins in prog for st in ins.stacks]:
        roots = [find(m) if m is not None else None for m in st.members]
        named = [r for r in roots if r is not None]
        if len(set(named)) != len(named) or any(
                r in bad or r in rows or info.get(m) != (st.shape, st.dtype)
                for r, m in zip(roots, st.members) if r is not None):
            continue
        st.buffer = len(shapes)
        shapes.append(((len(st.members), *st.shape), st.dtype))
        rows.update((r, f"{st.buffer}[{i}]") for i, r in enumerate(roots) if r is not None)
    return rows


def _dying(cands: tuple, find: Any, where: dict, bad: set, last: dict, k: int,
           shapes: list, info: tuple) -> str | None:
    """The root of a candidate whose planned buffer fits ``info`` and whose last reader is
    instruction ``k``, or None."""
    for c in cands:
        root = find(c)
        if root in where and root not in bad and last.get(root) == k \
                and shapes[where[root]] == info:
            return root
    return None


def _take(pool: dict, shapes: list, shape: Any, dtype: Any) -> int:
    free = pool.get((shape, dtype))
    if free:
        return free.pop()
    shapes.append((shape, dtype))
    return len(shapes) - 1


SPACED = 320
"""The bytes between the starts of two small planned buffers at the least (a smaller buffer
is the start of a block of this size). A native kernel's vector loop checks at run time that
what it writes does not start less than its vector width times its unroll (256 bytes here)
after what it reads, and runs scalar if it does: 64-byte buffers allocated one after another
(80 bytes apart) made the forward sweep of the ``chain`` benchmark scalar for about half its
links (2.5x slower), on 2026-12-06. 320 is not a power of two, so the buffers' cache lines
fall in different sets."""
ALIGN = 64
"""A small planned buffer starts at a multiple of this (a cache line: a buffer of up to 64
bytes is one line, and a vector loop's loads do not straddle two)."""


def empty(xp: Any, shape: tuple, dtype: Any) -> Any:
    """A planned buffer (``xp`` is NumPy): ``xp.empty(shape, dtype)``; one smaller than
    :data:`SPACED` bytes starts at a multiple of :data:`ALIGN` bytes, at least
    :data:`SPACED` bytes from the start of any other.

    >>> import numpy as np
    >>> a, b = empty(np, (4,), "float32"), empty(np, (4,), "float32")
    >>> a.shape, a.dtype.name, a.flags.c_contiguous, abs(a.ctypes.data - b.ctypes.data) >= 320
    ((4,), 'float32', True, True)
    >>> a.ctypes.data % 64
    0
    """
    dtype = xp.dtype(dtype)
    size = dtype.itemsize
    for d in shape:
        size *= d
    if size >= SPACED:
        return xp.empty(shape, dtype=dtype)
    raw = xp.empty(SPACED + ALIGN, dtype=xp.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + size].view(dtype).reshape(shape)
