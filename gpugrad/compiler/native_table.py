"""A long fusion group as one kernel over a table of data pointers (the native tier's form
for a run longer than ``fuse.MAX_MEMBERS``: a chain of a hundred tiny steps, an unrolled
recurrent net).

numba's compile time grows with a function's statements, and each array argument costs a
statement and about 50 ns of unboxing a call, so a kernel with hundreds of array arguments
is out of reach. This form takes four: an int64 array of the data addresses of the arrays it
reads and the planned buffers it writes (the last entry: their common length), the block
whose rows are the values it hands back, a float64 array of the scalars it reads, and its
step table. The members are cut into steps (runs of at most :data:`SEGMENT_ARRAYS` arrays,
values in registers within a step); each distinct step (its names as operand slots, its
constants in place) is one loop compiled once, called with its operands as 1-D C arrays of
the group's dtype, whichever place they come from (an address, a row of the block, a
scratch row: a value stored by a step, read by a later one and not handed back).

The address table (:class:`Pointers`) is made once per set of arrays and kept while they
are the same objects (compared by ``id``; the table holds references to them, so no address
it uses is freed or reused): planned buffers are the same from one call to the next (per
batch size), so are Variables' arrays and a feed passed again. A non-contiguous input is
read through a contiguous copy made for that call alone (never kept, so a later in-place
change of the original is seen).

>>> import numpy as np
>>> p = Pointers(np.dtype("float32"))
>>> frame, w, out = [], np.zeros(3, np.float32), np.ones(3, np.float32)
>>> p.get(frame, [w]) is None
True
>>> t = p.make(frame, [w], [out])
>>> int(t[-1]), p.get(frame, [w]) is t, p.get(frame, [w.copy()]) is None
(3, True, True)
"""

from __future__ import annotations

import threading
from operator import is_

import numpy as np

from . import plan
from .batch import FRAMES
from .fuse import MAX_MEMBERS, Group, _names
from .native import _Writer

KEEP = FRAMES
"""Address tables kept per kernel: one per batch size's frame, as many as the program keeps
(an old frame's buffers stay alive while its table holds them)."""


def wanted(group: Group) -> bool:
    """Whether ``group`` runs in this form: a run longer than ``fuse.MAX_MEMBERS`` (fuse
    makes one only without tail inputs or row sums)."""
    return len(group.members) > MAX_MEMBERS


class Pointers:
    """The address tables of one kernel, one per frame (the program's buffers ``B``, whose
    planned buffers stay put; the last :data:`KEEP`). ``get(frame, dyn)``: the frame's table
    if it was made for these arrays (compared by identity), else None; then
    ``make(frame, dyn, planned)`` makes it: the int64 array of the addresses of ``dyn``
    (arrays read that are not planned buffers) and ``planned`` (planned buffers read or
    written), and last their common length."""

    __slots__ = ("dtype", "entries", "last", "lock")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.entries: dict = {}  # id(frame) -> (frame, dyn, table, planned)
        self.last: tuple | None = None  # the last entry used
        self.lock = threading.Lock()

    def get(self, frame: list, dyn: list) -> np.ndarray | None:
        got = self.last
        if got is None or got[0] is not frame:
            got = self.entries.get(id(frame))
            if got is None:
                return None
        if len(dyn) != len(got[1]) or not all(map(is_, dyn, got[1])):
            return None
        self.last = got
        return got[2]

    def make(self, frame: list, dyn: list, planned: list) -> np.ndarray:
        held, copied, n = [], False, -1
        for j, a in enumerate(dyn + planned):
            if type(a) is not np.ndarray or a.dtype != self.dtype:
                raise TypeError(f"a native kernel of {self.dtype} got {type(a).__name__} "
                                f"of {getattr(a, 'dtype', '?')}")
            if not a.flags.c_contiguous:
                if j >= len(dyn):
                    raise ValueError("a planned buffer is not C-contiguous")
                a, copied = np.ascontiguousarray(a), True
            if n < 0:
                n = a.size
            elif a.size != n:
                raise ValueError(f"a native kernel's arrays differ in size ({a.size}, {n})")
            held.append(a)
        table = np.array([a.__array_interface__["data"][0] for a in held] + [n], np.int64)
        if copied:  # a copy is this call's alone (the original may change in place): kept
            _held.copies = held  # alive until this thread's next such call
            return table
        entry = (frame, list(dyn), table, list(planned))  # the arrays stay alive with it
        with self.lock:
            self.entries.pop(id(frame), None)
            if len(self.entries) >= KEEP:
                self.entries.pop(next(iter(self.entries)))
            self.entries[id(frame)] = entry
            self.last = entry
        return table


_held = threading.local()  # a call's contiguous copies, alive while its kernel runs


SEGMENT_ARRAYS = 6
"""The most arrays one step's loop reads and writes (its members' values in registers
between): kept under ``native.FUSED_ARRAYS``, as the addresses may overlap for all LLVM
knows and each pair is tested before the vector loop."""
SEGMENT_MEMBERS = 12
"""The most members in one step (a loop's compile time grows with its length)."""


def _costly(node: tuple) -> int:
    """How many ``exp`` and ``tanh`` a formula computes: a step ends after one (a loop
    going on after it ran without SIMD, 2-3x slower per element, on 2026-12-06)."""
    if node[0] in ("name", "const"):
        return 0
    return (node[0] in ("exp", "tanh")) + sum(_costly(a) for a in node[1:])


def _template(node: tuple, slot: dict) -> tuple:
    """``node`` with each name replaced by its slot's name (``slot``: name -> "A<k>" for an
    array read, "S<k>" for a scalar, "T<k>" for an earlier member of the step)."""
    if node[0] == "name":
        return ("name", slot[node[1]])
    if node[0] == "const":
        return node
    return (node[0], *(_template(a, slot) for a in node[1:]))


class Table:
    """The kernel of a long group (:func:`wanted`): its members cut into steps (runs of at
    most :data:`SEGMENT_ARRAYS` arrays, values in registers within a step), one loop per
    distinct step, a dispatcher over the step table, and (:meth:`instruction`) the
    program's call of it."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.dt = group.dtype.name
        self.scalars = {n for n, s in group.inputs if group.kind(s) in ("number", "one")}
        if group.sums or any(group.kind(s) not in ("full", "number", "one")
                             for _, s in group.inputs):
            raise ValueError("a pointer-table kernel reads full arrays and scalars only")
        members = group.members
        later: list = [set(group.outputs)]  # later[j]: read by members j.. or handed out
        for _, node in reversed(members):
            later.append(later[-1] | set(_names(node)))
        later.reverse()
        self.templates: dict = {}  # template -> its number
        self.steps: list = []  # (template number, stored, arrays read, scalars read)
        a = 0
        while a < len(members):
            e = a + 1
            while e < len(members) and e - a < SEGMENT_MEMBERS and \
                    self._count(a, e + 1, later) <= SEGMENT_ARRAYS and \
                    not any(_costly(node) for _, node in members[a:e]):
                e += 1
            self._step(a, e, later)
            a = e
        self.width = 1 + max(len(o) + len(r) + len(c) for _, o, r, c in self.steps)

    def _io(self, a: int, e: int, later: list) -> tuple:
        """The arrays members ``a:e`` read from outside, the scalars, the members stored."""
        made = {m for m, _ in self.group.members[a:e]}
        reads: dict = {}
        scal: dict = {}
        for _, node in self.group.members[a:e]:
            for n in _names(node):
                if n not in made:
                    (scal if n in self.scalars else reads).setdefault(n, None)
        stored = [m for m, _ in self.group.members[a:e] if m in later[e]]
        return list(reads), list(scal), stored

    def _count(self, a: int, e: int, later: list) -> int:
        reads, _, stored = self._io(a, e, later)
        return len(reads) + len(stored)

    def _step(self, a: int, e: int, later: list) -> None:
        reads, scal, stored = self._io(a, e, later)
        slot = {n: f"A{j}" for j, n in enumerate(reads)}
        slot.update((n, f"S{j}") for j, n in enumerate(scal))
        body = []
        for k, (m, node) in enumerate(self.group.members[a:e]):
            body.append(_template(node, slot))
            slot[m] = f"T{k}"
        key = (tuple(body), tuple(int(slot[m][1:]) for m in stored), len(reads), len(scal))
        if key not in self.templates:
            self.templates[key] = len(self.templates)
        self.steps.append((self.templates[key], stored, reads, scal))

    def describe(self) -> str:
        return (f"one kernel for {len(self.group.members)} elementwise steps, over a table "
                f"of data pointers ({len(self.steps)} steps, {len(self.templates)} distinct)")

    def _loop(self, name: str, key: tuple, consts: dict) -> list:
        body, stored, na, ns = key
        dt = self.dt
        w = _Writer(dt, {**{f"A{j}": f"u{j}" for j in range(na)},
                         **{f"S{j}": f"s{j}" for j in range(ns)}})
        lines = [f"u{j} = a{j}[i]" for j in range(na)]
        for k, node in enumerate(body):
            w.lines = []
            value = w.expr(node)
            lines += w.lines + [f"t{k} = {value}"]
            w.where[f"T{k}"] = f"t{k}"
        lines += [f"o{j}[i] = t{k}" for j, k in enumerate(stored)]
        consts.update(w.consts)
        args = [f"o{j}" for j in range(len(stored))] + [f"a{j}" for j in range(na)] + \
            [f"x{j}" for j in range(ns)]
        return ['@njit(inline="always", nogil=True, error_model="numpy", cache=True)',
                f"def {name}({', '.join(args)}, n):",
                *(f"    s{j} = np.{dt}(x{j})" for j in range(ns)),
                "    over = False", "    for i in range(n):", *("        " + x for x in lines),
                "    return over", "", ""]

    def source(self, name: str) -> str:
        """The numba source: a loop per distinct step, the operand helper, the dispatcher."""
        dt, lines, consts = self.dt, [], {}
        for key, k in self.templates.items():
            lines += self._loop(f"{name}_f{k}", key, consts)
        pt = f"types.CPointer(types.{dt})"
        lines += ["@intrinsic", f"def {name}_ptr(typingctx, addr):",
                  "    def gen(context, builder, sig, args):",
                  f"        return builder.inttoptr(args[0], context.get_value_type({pt}))",
                  f"    return {pt}(types.int64), gen", "", "",
                  '@njit(inline="always", nogil=True, cache=True)',
                  f"def {name}_at(ref, ptrs, p, blk, f, s, n):",
                  "    if ref < p:",
                  f"        return numba.carray({name}_ptr(ptrs[ref]), n)",
                  "    if ref < p + f:", "        return blk[ref - p].ravel()",
                  "    return s[ref - p - f]", "", ""]
        nd = len(self.group.shape)
        lines += [f'@njit(types.boolean(types.Array(types.int64, 1, "C", readonly=True), '
                  f'W("{dt}", {nd + 1}), types.Array(types.float64, 1, "C", readonly=True), '
                  'types.Array(types.int64, 2, "C", readonly=True)),',
                  '      nogil=True, error_model="numpy", cache=True)',
                  f"def {name}(ptrs, blk, scal, steps):",
                  "    p = ptrs.shape[0] - 1", "    n = ptrs[p]", "    f = blk.shape[0]",
                  "    if n < 0 and f > 0:", "        n = blk.size // f",
                  "    if blk.size != f * n:",
                  '        raise ValueError("the block of values handed back has another size")',
                  f"    s = np.empty((steps[0, 0], n), np.{dt})", "    over = False",
                  "    for k in range(1, steps.shape[0]):", "        st = steps[k]",
                  "        t = st[0]"]
        at = f"{name}_at(st[{{}}], ptrs, p, blk, f, s, n)"
        for (_, stored, na, ns), k in self.templates.items():
            ops = [at.format(1 + j) for j in range(len(stored) + na)] + \
                [f"scal[st[{1 + len(stored) + na + j}]]" for j in range(ns)]
            lines += [f"        {'if' if k == 0 else 'elif'} t == {k}:",
                      f"            over |= {name}_f{k}({', '.join(ops)}, n)"]
        lines.append("    return over")
        head = [f"{k} = np.{d}(float.fromhex({float(v).hex()!r}))"
                for k, (d, v) in sorted(consts.items())]
        return "\n".join(["import numba"] + head + lines)

    def instruction(self, name: str, env: dict) -> plan.Instr:
        """The program's instruction calling this kernel ``name``: the address table of its
        arrays (cached by identity), a new block for the values handed back, its scalars."""
        g = self.group
        env[f"D_{name}"] = g.dtype
        arrays = [n for n, s in g.inputs if g.kind(s) == "full"]
        scalars = [(n, g.kind(s)) for n, s in g.inputs if g.kind(s) in ("number", "one")]

        def emit(outs: list, temps: list) -> list:
            planned = [(m, o) for m, o in zip(g.outputs, outs) if o != "None"]
            fresh = [m for m, o in zip(g.outputs, outs) if o == "None"]
            dyn = [n for n in arrays if n not in env["PLANNED"]]
            fixed = [n for n in arrays if n in env["PLANNED"]] + [m for m, _ in planned]
            table = dyn + fixed
            env[f"TB_{name}"] = Pointers(g.dtype)
            ref = {n: j for j, n in enumerate(table)}
            ref.update((m, len(table) + j) for j, m in enumerate(fresh))
            rows = list(dict.fromkeys(m for _, o, _, _ in self.steps for m in o
                                      if m not in ref))
            ref.update((m, len(table) + len(fresh) + j) for j, m in enumerate(rows))
            sref = {n: j for j, (n, _) in enumerate(scalars)}
            steps = [[len(rows)] + [0] * (self.width - 1)]
            for t, o, a, c in self.steps:
                row = [t] + [ref[n] for n in o + a] + [sref[n] for n in c]
                steps.append(row + [0] * (self.width - len(row)))
            env[f"ST_{name}"] = np.array(steps, np.int64)
            lines = [f"{m} = {o}" for m, o in planned]
            if fresh:
                env[f"S_{name}_all"] = (len(fresh), *g.shape)
                lines.append(f"{', '.join(fresh)}, = BK_{name} = np.empty(S_{name}_all, "
                             f"D_{name})")
                blk = f"BK_{name}"
            else:
                env[f"E_{name}"] = np.empty((0,) * (len(g.shape) + 1), g.dtype)
                blk = f"E_{name}"
            got = [f"float({n})" if k == "number" else f"{n}.item()" for n, k in scalars]
            env[f"SC_{name}"] = np.empty(0)
            scal = f"np.array([{', '.join(got)}])" if got else f"SC_{name}"
            lines += [f"T_ = TB_{name}.get(B, [{', '.join(dyn)}])", "if T_ is None:",
                      f"    T_ = TB_{name}.make(B, [{', '.join(dyn)}], [{', '.join(fixed)}])"]
            return lines + [f"if {name}(T_, {blk}, {scal}, ST_{name}):", "    overflow()"]
        return plan.Instr([n for n, _ in g.inputs],
                          [(m, g.shape, g.dtype) for m in g.outputs], emit, True)
