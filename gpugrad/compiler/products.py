"""Pass 3d (first half), products: the matrix products of an unrolled loop, fewer and
faster (gpugrad.compiler.stack runs these rewrites before its own).

- **One product for the rows of one array.** Products ``x[t] @ W`` of one matrix ``W`` by
  rows ``t`` of one array (an RNN's input projection at every step) are one product
  ``x[a:b].reshape(-1, p) @ W`` at the first of them, written into the rows of one planned
  buffer (:class:`gpugrad.compiler.plan.Stack`) that the steps read as their values.
- **A matrix transposed once.** A matrix that several backward products read transposed
  (``g @ W.T``, the gradient of ``x @ W`` by ``x``, once per step) is copied transposed
  once, and the products read the copy (:func:`transposed_once`).

Both compute the same products through other BLAS calls, so the results agree up to
rounding (tests/test_compiler_stack.py compares them in ulps). No product of more than
:data:`MAX_WORK` multiply-adds is made: a longer one is cut into pieces.
"""

from __future__ import annotations

from typing import Callable

from . import batch, plan

MAX_WORK = 1 << 18
"""The most multiply-adds (``m * n * k``) of one product made of several; a longer one is
cut into pieces of about equal length, in order. OpenBLAS runs a product above this size
on several threads: on a machine whose cores are busy with other work, that made the
``rnn`` benchmark's step 30 times slower (22 ms against 0.7 ms, 2026-12-06), where a piece
below it runs on the calling thread."""

NT_USES = 3
"""A matrix ``W`` read transposed (``g @ W.T``) by at least this many products is copied
transposed once, and the products read the copy (see :func:`transposed_once`)."""


def pieces(rows: int, work_per_row: int) -> int:
    """The rows of each piece of a product of ``rows`` rows (the last may be shorter).

    >>> pieces(480, 64 * 64), pieces(512, 16 * 64), pieces(100, 8)
    (60, 256, 100)
    """
    n = -(-rows * work_per_row // MAX_WORK)
    return -(-rows // max(n, 1))


def in_pieces(rows: int, work_per_row: int, first: Callable, rest: Callable,
              length: str) -> list:
    """Lines running a product of ``rows`` rows in pieces of at most :data:`MAX_WORK`:
    ``first(rows slice)`` for the first piece, ``rest(rows slice)`` for each later one, in
    order. A row count derived from the batch (gpugrad.compiler.batch: known when the
    program runs, as ``length``) gets a loop over pieces of one length.

    >>> in_pieces(6, 1 << 17, "A[{}]".format, "B[{}]".format, "n")
    ['A[0:2]', 'B[2:4]', 'B[4:6]']
    >>> in_pieces(batch.PROBE, 1 << 17, "A[{}]".format, "B[{}]".format, "n")
    ['A[0:2]', 'for r_ in range(2, n, 2):', '    B[r_:r_ + 2]']
    """
    if rows >= batch.PROBE // 2:
        step = max(1, MAX_WORK // work_per_row)
        return [first(f"0:{step}"), f"for r_ in range({step}, {length}, {step}):",
                "    " + rest(f"r_:r_ + {step}")]
    step = pieces(rows, work_per_row)
    return [first(f"0:{step}")] + [rest(f"{r}:{r + step}") for r in range(step, rows, step)]


def rewrite(prog: list, n_forward: int) -> tuple[list, int]:
    """Both rewrites of this module; the new length of the forward block."""
    prog, n_forward = one_product(prog, n_forward)
    return transposed_once(prog, n_forward), n_forward


def one_product(prog: list, n_forward: int) -> tuple[list, int]:
    """``prog`` where the forward products ``x[t] @ W`` of one ``W`` by contiguous rows
    ``t`` of one array ``x`` (``Instr.part``) are one product at the first of them."""
    parts = {n: ins.part for ins in prog if ins.part is not None for n, *_ in ins.defines}
    info = {n: (shape, dtype) for ins in prog for n, shape, dtype in ins.defines}
    groups: dict = {}
    for k in range(n_forward):
        got = prog[k].product
        if got is not None and got[0] == "nn" and got[1] in parts \
                and len(prog[k].defines) == 1 and prog[k].defines[0][1] is not None:
            base, row = parts[got[1]]
            groups.setdefault((base, got[2]), []).append((k, row, prog[k].defines[0]))
    merged: dict = {}
    gone: set = set()
    for (base, w), items in groups.items():
        rows = sorted(r for _, r, _ in items)
        kinds = {(shape, dtype) for _, _, (_, shape, dtype) in items}
        a = info.get(prog[items[0][0]].product[1], (None,))[0]
        if len(items) < 2 or rows != list(range(rows[0], rows[0] + len(rows))) \
                or len(kinds) != 1 or a is None or len(a) != 2:
            continue
        (shape, dtype), = kinds
        items.sort(key=lambda i: i[1])
        merged[min(k for k, _, _ in items)] = _one(base, w, items, a, shape, dtype, prog)
        gone.update(k for k, _, _ in items)
    gone -= merged.keys()
    return [merged.get(k, ins) for k, ins in enumerate(prog) if k not in gone], \
        n_forward - len(gone)


def _one(base: str, w: str, items: list, a: tuple, shape: tuple, dtype: object,
         prog: list) -> plan.Instr:
    names = [name for _, _, (name, _, _) in items]
    first, n = items[0][1], len(items)
    st = plan.Stack(list(names), shape, dtype)

    def emit(outs: list, temps: list) -> list:
        if st.buffer is None:  # one by one, as before
            return [f"{m} = np.dot({base}[{first + j}], {w}, {o})"
                    for j, (m, o) in enumerate(zip(names, outs))]
        lines = [f"sx_ = {base}[{first}:{first + n}].reshape(-1, {a[1]})",
                 f"sy_ = B{st.buffer}.reshape(-1, {shape[1]})"]
        piece = f"np.dot(sx_[{{0}}], {w}, sy_[{{0}}])".format
        lines += in_pieces(n * shape[0], a[1] * shape[1], piece, piece, "sx_.shape[0]")
        return lines + [f"{m} = {o}" for m, o in zip(names, outs)]
    k = min(k for k, _, _ in items)
    return plan.Instr([base, w], [(m, shape, dtype) for m in names], emit, True, stacks=[st],
                      tag=prog[k].tag + " (one product for the rows of one array)")




def transposed_once(prog: list, n_forward: int) -> list:
    """``prog`` where each matrix that :data:`NT_USES` or more backward products read
    transposed (``g @ W.T``, the gradient of ``x @ W`` by ``x``) is copied transposed into
    a planned buffer just before the first of them, which then multiply by the copy: OpenBLAS
    multiplies a 32x64 by a transposed 64x64 in 5.5 µs and by a contiguous one in 2.9 µs,
    and the copy takes 1.9 µs (float32, one thread, 2026-12-06; with one reader the copy
    does not pay: docs/performance.md). Same products, possibly rounded by another kernel."""
    info = {name: (shape, dtype) for ins in prog for name, shape, dtype in ins.defines}
    uses: dict = {}
    for k in range(n_forward, len(prog)):
        got = prog[k].product
        if got is not None and got[0] == "nt" and len(prog[k].defines) == 1:
            uses.setdefault(got[2], []).append(k)
    copies = {ks[0]: w for w, ks in uses.items() if len(ks) >= NT_USES}
    if not copies:
        return prog
    out = []
    for k, ins in enumerate(prog):
        if k in copies:  # W.T's shape: (g's columns, the product's columns)
            w, (c, (n, p), dtype) = copies[k], ins.defines[0]
            g = info.get(ins.product[1], ((None, None),))[0]
            out.append(plan.Instr([w], [(f"t_{w}", (g[1], p) if g[1] else None, dtype)],
                                  lambda outs, temps, w=w: [
                                      f"np.copyto({outs[0]}, {w}.T)", f"t_{w} = {outs[0]}"]
                                  if outs[0] != "None" else
                                  [f"t_{w} = np.ascontiguousarray({w}.T)"], True,
                                  tag=ins.tag + " (the matrix transposed once)"))
        got = ins.product
        if got is not None and got[0] == "nt" and uses.get(got[2], [k])[0] in copies:
            name, shape, dtype = ins.defines[0]
            g, t = got[1], f"t_{got[2]}"
            ins = plan.Instr([g, t], ins.defines, lambda outs, temps, c=name, g=g, t=t: [
                f"{c} = np.dot({g}, {t}, {outs[0]})"], True, tag=ins.tag)
        out.append(ins)
    return out


