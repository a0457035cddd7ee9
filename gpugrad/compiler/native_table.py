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
constants in place) is one loop compiled once, called with its operands as pointers to the
group's dtype, whichever place they come from (an address, a row of the block, a scratch
row: a value stored by a step, read by a later one and not handed back).

The address table (:class:`Pointers`) is made once per set of arrays and kept while they
are the same objects (compared by identity; the table holds references to them, so no
address it uses is freed or reused): planned buffers are the same from one call to the next
(per batch size), so are Variables' arrays and a feed passed again. The program hands it its
feeds and Variables' arrays as it was called with them (``P``, ``D``): the last call's
tuples where they are the same arrays (the graph's front door and ``gg.compile`` pass
them), known by identity at once; else compared whole (about 10 ns an array), then, where
some differ, only the ones the kernel reads. A non-contiguous input is read through a
contiguous copy made for that call alone (never kept, so a later in-place change of the
original is seen).

>>> import numpy as np
>>> p = Pointers(np.dtype("float32"), [(1, 0)], [0])
>>> B, w = [np.ones(3, np.float32)], np.zeros(3, np.float32)
>>> p.get(B, [], [w]) is None
True
>>> t = p.make(B, [], [w])
>>> int(t[-1]), p.get(B, [], [w]) is t, p.get(B, [], [w.copy()]) is None
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
    planned buffers stay put; the last :data:`KEEP`). The arrays the kernel reads that are
    not planned buffers are ``spec``: ``(0, j)`` is feed ``P[j]``, ``(1, j)`` the Tensor
    array ``D[j]``, ``(2, j)`` value ``j`` of the program's list ``extra``; ``fixed``: the
    indices in ``B`` of the planned buffers it reads or writes. ``get(B, P, D, extra)``: the
    frame's table if it was made for the same arrays (compared by identity), else None; then
    ``make(B, P, D, extra)`` makes it: the int64 array of the arrays' addresses, and last
    their common length."""

    __slots__ = ("dtype", "spec", "fixed", "entries", "last", "lock")

    def __init__(self, dtype: np.dtype, spec: list, fixed: list) -> None:
        self.dtype = np.dtype(dtype)
        self.spec, self.fixed = list(spec), list(fixed)
        self.entries: dict = {}  # id(frame) -> (frame, P, D, extra, table, dyn, planned)
        self.last: tuple | None = None  # the last entry used
        self.lock = threading.Lock()

    def get(self, frame: list, P: list, D: list, extra: list = ()) -> np.ndarray | None:
        got = self.last
        if got is None or got[0] is not frame:
            got = self.entries.get(id(frame))
            if got is None:
                return None
        known = D is got[2]
        if (known or len(D) == len(got[2]) and all(map(is_, D, got[2]))) and \
                (P is got[1] or all(map(is_, P, got[1]))) and all(map(is_, extra, got[3])):
            if known or type(D) is not tuple:
                self.last = got
                return got[4]
        else:
            dyn = self.dyn(P, D, extra)  # some array differs: one the kernel does not read?
            if len(dyn) != len(got[5]) or not all(map(is_, dyn, got[5])):
                return None
        # kept as they came (a tuple is known by identity from the next call on)
        got = (frame, _kept(P), _kept(D), list(extra), *got[4:])
        with self.lock:
            self.entries[id(frame)] = self.last = got
        return got[4]

    def dyn(self, P: list, D: list, extra: list) -> list:
        """The arrays the kernel reads that are not planned buffers, in the table's order."""
        lists = (P, D, extra)
        return [lists[k][j] for k, j in self.spec]

    def make(self, frame: list, P: list, D: list, extra: list = ()) -> np.ndarray:
        dyn = self.dyn(P, D, extra)
        planned = [frame[b] for b in self.fixed]
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
        # the arrays stay alive with it
        entry = (frame, _kept(P), _kept(D), list(extra), table, dyn, planned)
        with self.lock:
            self.entries.pop(id(frame), None)
            if len(self.entries) >= KEEP:
                self.entries.pop(next(iter(self.entries)))
            self.entries[id(frame)] = entry
            self.last = entry
        return table


def _kept(arrays: list | tuple) -> tuple:
    """``arrays`` as an entry keeps them: a tuple (the same tuple, passed again, is the same
    arrays: the graph's front door passes the last call's where its arrays are the same)."""
    return arrays if type(arrays) is tuple else tuple(arrays)


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
        """The numba source: a loop per distinct step, the dispatcher. Each operand is a
        pointer (an array's would be reference-counted at each step: 25% of the chain's
        forward sweep); the scratch rows live until the end (``s`` is read last)."""
        dt, lines, consts = self.dt, [], {}
        for key, k in self.templates.items():
            lines += self._loop(f"{name}_f{k}", key, consts)
        pt = f"types.CPointer(types.{dt})"
        size = self.group.dtype.itemsize
        lines += ["@intrinsic", f"def {name}_ptr(typingctx, addr):",
                  "    def gen(context, builder, sig, args):",
                  f"        return builder.inttoptr(args[0], context.get_value_type({pt}))",
                  f"    return {pt}(types.int64), gen", "", ""]
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
                  "    r = steps[0, 0]", f"    s = np.empty((r, n), np.{dt})",
                  "    adr = np.empty(p + f + r, np.int64)", "    adr[:p] = ptrs[:p]",
                  "    b = np.int64(blk.ctypes.data)", "    for j in range(f):",
                  f"        adr[p + j] = b + j * n * {size}",
                  "    b = np.int64(s.ctypes.data)", "    for j in range(r):",
                  f"        adr[p + f + j] = b + j * n * {size}",
                  "    over = False",
                  "    for k in range(1, steps.shape[0]):", "        st = steps[k]",
                  "        t = st[0]"]
        at = f"{name}_ptr(adr[st[{{}}]])"
        for (_, stored, na, ns), k in self.templates.items():
            ops = [at.format(1 + j) for j in range(len(stored) + na)] + \
                [f"scal[st[{1 + len(stored) + na + j}]]" for j in range(ns)]
            lines += [f"        {'if' if k == 0 else 'elif'} t == {k}:",
                      f"            over |= {name}_f{k}({', '.join(ops)}, n)"]
        lines += ["    return over or s.size < 0"]
        head = [f"{k} = np.{d}(float.fromhex({float(v).hex()!r}))"
                for k, (d, v) in sorted(consts.items())]
        return "\n".join(["import numba"] + head + lines)

    def instruction(self, name: str, env: dict) -> plan.Instr:
        """The program's instruction calling this kernel ``name``: the address table of its
        arrays (cached by identity), a new block for the values handed back, its scalars.
        The feeds and Tensors' arrays it reads (``env["LEAVES"]``: value name -> ``(0, j)``
        for ``P[j]``, ``(1, j)`` for ``D[j]``) are not read into names first, nor are its
        planned buffers (``env["PLANNED"]``: value name -> index in ``B``); a planned value
        it writes is named only where another instruction reads it (``env["READ"]``)."""
        g = self.group
        env[f"D_{name}"] = g.dtype
        arrays = [n for n, s in g.inputs if g.kind(s) == "full"]
        scalars = [(n, g.kind(s)) for n, s in g.inputs if g.kind(s) in ("number", "one")]
        leaves = env.get("LEAVES", {})

        def emit(outs: list, temps: list) -> list:
            where = env["PLANNED"]
            planned = [(m, o) for m, o in zip(g.outputs, outs) if o != "None"]
            fresh = [m for m, o in zip(g.outputs, outs) if o == "None"]
            dyn = [n for n in arrays if n not in where]
            extra = list(dict.fromkeys(n for n in dyn if n not in leaves))
            spec = [leaves.get(n) or (2, extra.index(n)) for n in dyn]
            fixed = [n for n in arrays if n in where] + [m for m, _ in planned]
            env[f"TB_{name}"] = Pointers(g.dtype, spec, [where[n] for n in fixed])
            table = dyn + fixed
            ref = {n: j for j, n in enumerate(table)}
            ref.update((m, len(table) + j) for j, m in enumerate(fresh))
            rows = list(dict.fromkeys(m for _, o, _, _ in self.steps for m in o
                                      if m not in ref))
            # the last row first: a step then writes below the rows it reads (see plan.SPACED)
            ref.update((m, len(table) + len(fresh) + len(rows) - 1 - j)
                       for j, m in enumerate(rows))
            sref = {n: j for j, (n, _) in enumerate(scalars)}
            steps = [[len(rows)] + [0] * (self.width - 1)]
            for t, o, a, c in self.steps:
                row = [t] + [ref[n] for n in o + a] + [sref[n] for n in c]
                steps.append(row + [0] * (self.width - len(row)))
            env[f"ST_{name}"] = np.array(steps, np.int64)
            read = env.get("READ")
            lines = [f"{m} = {o}" for m, o in planned if read is None or m in read]
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
            args = f"B, P, D, [{', '.join(extra)}]" if extra else "B, P, D"
            lines += [f"T_ = TB_{name}.get({args})", "if T_ is None:",
                      f"    T_ = TB_{name}.make({args})"]
            return lines + [f"if {name}(T_, {blk}, {scal}, ST_{name}):", "    overflow()"]
        ins = plan.Instr([n for n, s in g.inputs if n not in leaves or g.kind(s) != "full"],
                         [(m, g.shape, g.dtype) for m in g.outputs], emit, True)
        ins.named = [n for n, _ in scalars]  # planned values it may read by name (arrays: in B)
        return ins
