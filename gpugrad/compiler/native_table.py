"""A long fusion group as one kernel over a table of data pointers (the native tier's form
for a run longer than ``fuse.MAX_MEMBERS``: a chain of a hundred tiny steps, an unrolled
recurrent net).

numba's compile time grows with a function's statements, and each array argument costs a
statement and about 50 ns of unboxing a call, so a kernel with hundreds of array arguments
is out of reach. This form takes four: an int64 array of the data addresses of the arrays it
reads and the planned buffers it writes (the last entry: their common length), the block
whose rows are the values it hands back, a float64 array of the scalars it reads, and its
step table. Each member is a step: one loop of its formula, compiled once per distinct
formula (its names as operand slots, its constants in place), called with its operands as
1-D C arrays of the group's dtype, whichever place they come from (an address, a row of the
block, a scratch row). A member that is neither stored nor handed back lives in a scratch row.

The address table (:class:`Pointers`) is made once per set of arrays and kept while they
are the same objects (compared by ``id``; the table holds references to them, so no address
it uses is freed or reused): planned buffers are the same from one call to the next (per
batch size), so are Variables' arrays and a feed passed again. A non-contiguous input is
read through a contiguous copy made for that call alone (never kept, so a later in-place
change of the original is seen).

>>> import numpy as np
>>> p = Pointers(np.dtype("float32"), 1)
>>> a, b = np.zeros(3, np.float32), np.ones(3, np.float32)
>>> t = p.get([a, b])
>>> t[-1], p.get([a, b]) is t
(3, True)
"""

from __future__ import annotations

import threading

import numpy as np

from . import plan
from .fuse import MAX_MEMBERS, Group, _names
from .native import _Writer

KEEP = 8
"""Address tables kept per kernel (one per batch size's frame, Variables rebound...)."""


def wanted(group: Group) -> bool:
    """Whether ``group`` runs in this form: a run longer than ``fuse.MAX_MEMBERS`` (fuse
    makes one only without tail inputs or row sums)."""
    return len(group.members) > MAX_MEMBERS


class Pointers:
    """The address tables of one kernel: ``get(arrays)`` (the first ``n_in`` read, the rest
    written) gives the int64 array of their addresses and, last, their common length."""

    __slots__ = ("dtype", "n_in", "entries", "lock")

    def __init__(self, dtype: np.dtype, n_in: int) -> None:
        self.dtype, self.n_in = np.dtype(dtype), n_in
        self.lock = threading.Lock()
        self.entries: dict = {}

    def get(self, arrays: list) -> np.ndarray:
        key = tuple(map(id, arrays))
        got = self.entries.get(key)
        if got is not None:
            return got[0]
        with self.lock:
            return self._make(key, arrays)

    def _make(self, key: tuple, arrays: list) -> np.ndarray:
        held, copied, n = [], False, -1
        for j, a in enumerate(arrays):
            if type(a) is not np.ndarray or a.dtype != self.dtype:
                raise TypeError(f"a native kernel of {self.dtype} got {type(a).__name__} "
                                f"of {getattr(a, 'dtype', '?')}")
            if not a.flags.c_contiguous:
                if j >= self.n_in:
                    raise ValueError("a native kernel's output is not C-contiguous")
                a, copied = np.ascontiguousarray(a), True
            if n < 0:
                n = a.size
            elif a.size != n:
                raise ValueError(f"a native kernel's arrays differ in size ({a.size}, {n})")
            held.append(a)
        table = np.array([a.__array_interface__["data"][0] for a in held] + [n], np.int64)
        if not copied:  # a copy is this call's alone: the original may change in place
            if len(self.entries) >= KEEP:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = (table, list(arrays))  # the arrays stay alive with it
        else:  # kept alive until this thread's next call of a kernel of this program
            _held.copies = held
        return table


_held = threading.local()  # a call's contiguous copies, alive while its kernel runs


def _template(node: tuple, slot: dict) -> tuple:
    """``node`` with each name replaced by its operand slot's name (``slot``: name ->
    "A<k>" for arrays, "S<k>" for scalars, filled in order of first reading)."""
    if node[0] == "name":
        return ("name", slot[node[1]])
    if node[0] == "const":
        return node
    return (node[0], *(_template(a, slot) for a in node[1:]))


class Table:
    """The kernel of a long group (:func:`wanted`): its formulas' loops, a dispatcher over
    the step table, and (:meth:`instruction`) the program's call of it."""

    def __init__(self, group: Group) -> None:
        self.group = group
        dt = group.dtype.name
        scalars = {n for n, s in group.inputs if group.kind(s) in ("number", "one")}
        if group.sums or any(group.kind(s) not in ("full", "number", "one")
                             for _, s in group.inputs):
            raise ValueError("a pointer-table kernel reads full arrays and scalars only")
        self.templates: dict = {}  # template -> (its number, arrays, scalars)
        self.steps: list = []  # per member: (template number, array names, scalar names)
        for _, node in group.members:
            arrays, scal, slot = [], [], {}
            for n in _names(node):
                if n not in slot:
                    kind = scal if n in scalars else arrays
                    slot[n] = f"{'S' if kind is scal else 'A'}{len(kind)}"
                    kind.append(n)
            t = (_template(node, slot), len(arrays), len(scal))
            if t not in self.templates:
                self.templates[t] = len(self.templates)
            self.steps.append((self.templates[t], arrays, scal))
        self.width = 2 + max(len(a) + len(s) for _, a, s in self.steps)
        self.dt = dt

    def describe(self) -> str:
        return (f"one kernel for {len(self.group.members)} elementwise steps, over a table "
                f"of data pointers ({len(self.templates)} loops)")

    def source(self, name: str) -> str:
        """The numba source: a loop per formula, the operand helper, the dispatcher."""
        dt, lines, consts = self.dt, [], {}
        for (node, na, ns), k in self.templates.items():
            w = _Writer(dt, {**{f"A{j}": f"a{j}[i]" for j in range(na)},
                             **{f"S{j}": f"s{j}" for j in range(ns)}})
            value = w.expr(node)
            consts.update(w.consts)
            args = ["o"] + [f"a{j}" for j in range(na)] + [f"x{j}" for j in range(ns)]
            lines += ['@njit(nogil=True, error_model="numpy", cache=True)',
                      f"def {name}_f{k}({', '.join(args)}, n):",
                      *(f"    s{j} = np.{dt}(x{j})" for j in range(ns)),
                      "    over = False", "    for i in range(n):",
                      *("        " + x for x in w.lines), f"        o[i] = {value}",
                      "    return over", "", ""]
        pt = f"types.CPointer(types.{dt})"
        lines += ["@intrinsic", f"def {name}_ptr(typingctx, addr):",
                  f"    def gen(context, builder, sig, args):",
                  f"        return builder.inttoptr(args[0], context.get_value_type({pt}))",
                  f"    return {pt}(types.int64), gen", "", "",
                  '@njit(inline="always", nogil=True, cache=True)',
                  f"def {name}_at(ref, ptrs, p, blk, f, s, n):",
                  f"    if ref < p:",
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
        for (_, na, ns), k in self.templates.items():
            ops = [at.format(1 + j) for j in range(na + 1)] + \
                [f"scal[st[{2 + na + j}]]" for j in range(ns)]
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
            table = arrays + [m for m, _ in planned]
            env[f"TB_{name}"] = Pointers(g.dtype, len(arrays))
            ref = {n: j for j, n in enumerate(table)}
            ref.update((m, len(table) + j) for j, m in enumerate(fresh))
            rows = [m for m, _ in g.members if m not in ref]
            ref.update((m, len(table) + len(fresh) + j) for j, m in enumerate(rows))
            sref = {n: j for j, (n, _) in enumerate(scalars)}
            steps = [[len(rows)] + [0] * (self.width - 1)]
            for (m, _), (t, a, s) in zip(g.members, self.steps):
                row = [t, ref[m]] + [ref[n] for n in a] + [sref[n] for n in s]
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
            call = f"{name}(TB_{name}.get([{', '.join(table)}]), {blk}, {scal}, ST_{name})"
            return lines + [f"if {call}:", "    overflow()"]
        return plan.Instr([n for n, _ in g.inputs],
                          [(m, g.shape, g.dtype) for m in g.outputs], emit, True)
