"""Pass 3d, stack: a sum of products that contract over rows becomes one product.

A weight read at every step of an unrolled loop (``x[t] @ Wx``, ``h @ Wh`` in a recurrent
net) gets its gradient as a sum of products ``a_1.T @ b_1 + ... + a_K.T @ b_K``, one per
step. That sum is the product of the stacked rows::

    [a_1; ...; a_K].T @ [b_1; ...; b_K]

one BLAS call over ``K * n`` rows instead of K calls and K - 1 additions. It needs no copy
where the plan (gpugrad.compiler.plan) places the ``a_k`` (and the ``b_k``) as the rows of
one buffer, in the same order (:class:`gpugrad.compiler.plan.Stack`), or where they are
already the rows of one array (``x[t]``: a view of row ``t``, ``Instr.part``).

Which values go where is solved across the sums: values that are rows of an array keep
their rows; the other side of a sum takes the same order; a value shared by two sums (the
step's ``dz``, in both the input weight's and the recurrent weight's gradient) keeps the
row the first sum gave it, and the other side of the second sum follows it. A sum whose
rows cannot line up (two values at one row, a gap, an order that does not match) stays as
it was.

The product of the stacked rows adds in another order than the sum of products does (BLAS
accumulates over all ``K * n`` rows in its own order), so the gradient is the same up to
rounding only (tests/test_compiler_stack.py): float64 within 1e-12 relative (2.5e-15 at
the ``rnn`` benchmark's shapes), float32 within a few units in the last place of the
gradient's largest element (8 at those shapes: sums over 512 rows). A stack of more than
``products.MAX_WORK`` multiply-adds is cut into pieces, added in order. Where a member
cannot be planned in its row after all (``Stack.buffer`` None), the instruction computes
the products one by one and adds them in the original order.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Placeholder((3, 4, 2), "float64", name="x")
>>> W = gg.Variable(np.full((2, 2), 0.5), name="W")
>>> loss = gg.sum(gg.tanh(x[0] @ W) + gg.tanh(x[1] @ W) + gg.tanh(x[2] @ W))
>>> feed = {x: np.linspace(-1, 1, 24).reshape(3, 4, 2)}
>>> for _ in range(2):
...     (g,) = gg.gradients(loss, [W], feed=feed)
>>> (prog,) = loss._schedule((W,))[0].programs.values()
>>> [line.split("  #")[0].strip() for line in prog.source.splitlines() if ".T, " in line]
['g2 = np.dot(v0[0:3].reshape(-1, 2).T, B1[0:3].reshape(-1, 2), None)']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import plan, products


def rewrite(prog: list, n_forward: int) -> tuple[list, int]:
    """``prog`` with each sum of contracting products (in the backward block, from
    ``n_forward``) whose rows line up replaced by one product of stacked rows, after the
    rewrites of gpugrad.compiler.products; and the new length of its forward block."""
    prog, n_forward = products.rewrite(prog, n_forward)
    defs = {name: k for k, ins in enumerate(prog) for name, *_ in ins.defines}
    info = {name: (shape, dtype) for ins in prog for name, shape, dtype in ins.defines}
    readers: dict = {}
    for ins in prog:
        for name in ins.reads:
            readers[name] = readers.get(name, 0) + 1
    parent = {out: src for ins in prog for out, src in ins.alias.items()}

    def root(name: str) -> str:
        while name in parent:
            name = parent[name]
        return name
    found = []
    for k in range(n_forward, len(prog)):
        pairs = _pairs(prog, k, n_forward, defs, info, readers)
        if pairs is not None:
            found.append((k, pairs))
    parts = {root(n): ("part",) + ins.part for ins in prog if ins.part is not None
             for n, *_ in ins.defines}
    layout = Layout(parts, {root(n) for ins in prog if not ins.lowered
                            for n, *_ in ins.defines})
    found.sort(key=lambda f: (not any(root(a) in parts for _, a, _ in f[1]), f[0]))
    merged = {}
    named: dict = {}  # root -> the name a product reads it by (kept by the native tier)
    for k, pairs in found:
        for _, a, b in pairs:
            named.setdefault(root(a), a)
            named.setdefault(root(b), b)
        got = layout.place([root(a) for _, a, _ in pairs], [root(b) for _, _, b in pairs])
        if got is not None:
            merged[k] = (pairs, got)
    stacks = {key: plan.Stack([None] * size, *row) for key, (size, row) in layout.new.items()}
    for r, (key, i) in layout.pos.items():
        if key in stacks:
            stacks[key].members[i] = named[r]
    for key, st in stacks.items():
        st.shape, st.dtype = info[next(m for m in st.members if m is not None)]
    gone = {j for pairs, _ in merged.values() for j, _, _ in pairs}
    out = []
    for k, ins in enumerate(prog):
        if k in merged:
            out.append(_merged(ins, *merged[k], info, stacks))
        elif k not in gone:
            out.append(ins)
    return out, n_forward


def summands(node: tuple | None) -> list | None:
    """The value names a formula adds, where it is only additions of names (else None).

    >>> summands(("add", ("add", ("name", "a"), ("name", "b")), ("name", "c")))
    ['a', 'b', 'c']
    """
    if node is None:
        return None
    if node[0] == "name":
        return [node[1]]
    if node[0] != "add":
        return None
    left, right = summands(node[1]), summands(node[2])
    return left + right if left is not None and right is not None else None


def _pairs(prog: list, k: int, n_forward: int, defs: dict, info: dict,
           readers: dict) -> list | None:
    """``[(step, a, b), ...]`` where instruction ``k`` adds products ``a.T @ b`` read only
    by it, of matrices of one shape and one float dtype each side (else None)."""
    ins = prog[k]
    terms = summands(ins.scalar)
    if terms is None or len(terms) < 2 or len(set(terms)) != len(terms) \
            or len(ins.defines) != 1 or sorted(ins.reads) != sorted(terms):
        return None
    pairs = []
    for t in terms:
        j = defs.get(t, -1)
        got = prog[j].product if n_forward <= j < k else None
        if got is None or got[0] != "tn" or readers.get(t) != 1 or len(prog[j].defines) != 1 or \
                info.get(t) != info[ins.defines[0][0]]:
            return None
        pairs.append((j, *got[1:]))
    for side in (1, 2):
        rows = {info.get(p[side]) for p in pairs}
        (row,) = rows if len(rows) == 1 else (None,)
        if row is None or row[0] is None or len(row[0]) != 2 \
                or np.dtype(row[1]).char not in "fd":
            return None
    if info[pairs[0][1]][0][0] != info[pairs[0][2]][0][0]:
        return None
    return pairs


class Layout:
    """Where each value sits: ``pos[root] = (key, row)``, ``key`` an array the value is a
    row of (``("part", value, ...)``) or a new stack (an int, its size and row info in
    ``new``)."""

    def __init__(self, parts: dict, unplanned: set) -> None:
        self.pos = {r: (("part", v), i) for r, (_, v, i) in parts.items()}
        self.new: dict = {}
        self.unplanned = unplanned  # values no plan can place (views, generic rules' values)

    def place(self, a: list, b: list) -> tuple | None:
        """Rows for the values of both sides of one sum (in pairs ``a[k]``, ``b[k]``):
        ``((key, start), (key, start))``, each side's rows ``start .. start + K``; None
        where they cannot line up."""
        sides = [self._side(a), self._side(b)]
        if "bad" in sides or len(set(a)) != len(a) or len(set(b)) != len(b) or any(
                side is None and self.unplanned.intersection(vals)
                for side, vals in zip(sides, (a, b))):
            return None
        if sides[0] is None and sides[1] is None:  # both free: rows in the sum's order
            if set(a) & set(b):  # (a value on both sides: one row each side, unplaceable)
                return None
            sides[0] = self._fresh(a, range(len(a)))
        for s, t, vals in ((0, 1, b), (1, 0, a)):
            if sides[t] is None:
                first = min(r for _, r in sides[s])
                sides[t] = self._fresh(vals, [r - first for _, r in sides[s]])
        (ka, ra), (kb, rb) = zip(*sides[0]), zip(*sides[1])
        if len({x - y for x, y in zip(ra, rb)}) != 1:
            return None
        return (ka[0], min(ra)), (kb[0], min(rb))

    def _side(self, vals: list) -> Any:
        """The rows of ``vals``: a list of (key, row), None where none has one, "bad" where
        only some do, they are in several arrays, or their rows are not one run."""
        got = [self.pos.get(v) for v in vals]
        if all(g is None for g in got):
            return None
        if any(g is None for g in got) or len({k for k, _ in got}) != 1:
            return "bad"
        rows = sorted(r for _, r in got)
        return got if rows == list(range(rows[0], rows[0] + len(rows))) else "bad"

    def _fresh(self, vals: list, rows: Any) -> list:
        key = len(self.new)
        self.new[key] = (len(vals), ((), None))
        got = [(key, r) for r in rows]
        self.pos.update(zip(vals, got))
        return got


def _merged(ins: plan.Instr, pairs: list, where: tuple, info: dict,
            stacks: dict) -> plan.Instr:
    """The instruction computing the sum ``ins`` as one product of stacked rows."""
    name, shape, dtype = ins.defines[0]
    reads = [n for _, a, b in pairs for n in (a, b)]
    used = [stacks[key] for key, _ in where if key in stacks]
    reads += [key[1] for key, _ in where if key not in stacks]
    cols = [info[pairs[0][1]][0][1], info[pairs[0][2]][0][1]]
    n = len(pairs)

    def emit(outs: list, temps: list) -> list:
        c, C = name, outs[0]
        if any(st.buffer is None for st in used):  # one by one, in the sum's order
            lines = [f"{c} = np.dot({pairs[0][1]}.T, {pairs[0][2]}, {C})"]
            return lines + [f"np.add({c}, np.dot({a}.T, {b}, {temps[0]}), {c})"
                            for _, a, b in pairs[1:]]
        arrays = [f"B{stacks[key].buffer}" if key in stacks else key[1] for key, _ in where]
        a, b = (f"{arr}[{start}:{start + n}].reshape(-1, {m})"
                for arr, (_, start), m in zip(arrays, where, cols))
        rows = n * info[pairs[0][1]][0][0]
        if products.pieces(rows, cols[0] * cols[1]) >= rows:
            return [f"{c} = np.dot({a}.T, {b}, {C})"]
        return [f"sa_ = {a}", f"sb_ = {b}"] + products.in_pieces(
            rows, cols[0] * cols[1], f"{c} = np.dot(sa_[{{0}}].T, sb_[{{0}}], {C})".format,
            f"np.add({c}, np.dot(sa_[{{0}}].T, sb_[{{0}}], {temps[0]}), {c})".format,
            "sa_.shape[0]")
    return plan.Instr(reads, [(name, shape, dtype)], emit, True, temps=[(shape, dtype)],
                      tag=ins.tag + " (one product of stacked rows)", stacks=used)
