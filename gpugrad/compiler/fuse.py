"""Pass 3c, fuse: runs of elementwise instructions become one group, one kernel.

An instruction that states its value as one formula over value names (``Instr.scalar``:
an elementwise op's forward, a gradient at ``g``'s shape, a sum of gradients, a linear
layer's bias add; see gpugrad.compiler.lower.resolve) is elementwise. A *run* is a stretch
of consecutive elementwise instructions whose values have one shape and one floating dtype,
where each value read has that shape, a trailing part of it (a bias), a single element, or
is a Python number. BLAS products, reductions and ops without a formula end a run.

A run becomes a :class:`Group`: the members' formulas in order, the values it reads from
outside, and the values it must write (read after the run, or handed back); a value made
and used inside the run is never stored. The group's code is generated from the members'
formulas by each tier: compiled to machine code (gpugrad.compiler.native) or to a CUDA
kernel (gpugrad.compiler.cuda_group). Nothing here names an op.

>>> from gpugrad.compiler.plan import Instr
>>> f32 = "float32"
>>> prog = [Instr(["x"], [("a", (4,), f32)], None, True,
...               scalar=("exp", ("name", "x"))),
...         Instr(["a"], [("b", (4,), f32)], None, True,
...               scalar=("add", ("name", "a"), ("const", 1.0))),
...         Instr(["b"], [("c", (4,), f32)], None, True,
...               scalar=("reciprocal", ("name", "b")))]
>>> (start, stop, g, _), = runs(prog, {"x": ((4,), f32)}, keep={"c"})
>>> (start, stop), [m for m, _ in g.members], g.inputs, g.outputs
((0, 3), ['a', 'b', 'c'], [('x', (4,))], ['c'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOATS = ("float32", "float64")
MAX_MEMBERS = 24
"""The most instructions in one group: a longer run is cut (numba's SSA pass recurses once
per loop of a kernel, and a compile's time grows faster than its length)."""
NUMBER = "number"
"""The info of a Python number (it takes the group's dtype, as NumPy's weak scalars do)."""


@dataclass
class Group:
    """One fusion group: ``members`` ((value name, formula) in order, each formula reading
    inputs and earlier members), the ``shape`` and ``dtype`` of every member, ``inputs``
    ((value name, shape), the shape None for a Python number), ``outputs`` (the members
    that are stored) and ``sums`` ((value name, what it sums, its shape): a member or input
    summed over the leading axes, a bias's gradient, accumulated in the same loop)."""

    members: list
    shape: tuple
    dtype: Any
    inputs: list
    outputs: list
    sums: list = field(default_factory=list)  # (value, member or input it sums over rows)

    def kind(self, shape: tuple | None) -> str:
        """How an input of ``shape`` is read: "full" (the group's shape), "tail" (its
        trailing part, broadcast over the leading axes), "one" (a single element) or
        "number" (a Python number); "" where it cannot be."""
        return _kind(shape, self.shape)

    def tail(self) -> int:
        """The length of the trailing part the "tail" inputs and the sums share (1 without
        any)."""
        sizes = {math.prod(_strip(s)) for _, s in self.inputs if self.kind(s) == "tail"}
        sizes |= {math.prod(self.shape[len(self.shape) - len(s):]) for _, _, s in self.sums}
        return sizes.pop() if sizes else 1


def _strip(shape: tuple) -> tuple:
    """``shape`` without its leading 1s."""
    k = 0
    while k < len(shape) and shape[k] == 1:
        k += 1
    return tuple(shape[k:])


def _kind(shape: tuple | None, out: tuple) -> str:
    if shape is None:
        return "number"
    if tuple(shape) == tuple(out):
        return "full"
    if math.prod(shape) == 1:
        return "one"
    s = _strip(shape)
    if len(s) < len(out) and tuple(out[len(out) - len(s):]) == s:
        return "tail"
    return ""


def _names(node: tuple) -> list:
    if node[0] == "name":
        return [node[1]]
    if node[0] == "const":
        return []
    return [n for a in node[1:] for n in _names(a)]


def _fits(ins: Any, info: dict, shape: tuple, dtype: Any, tails: set) -> bool:
    """Whether instruction ``ins`` can join a run at ``shape`` and ``dtype`` (whose tail
    inputs have the lengths ``tails``, updated when it joins)."""
    if ins.scalar is None or len(ins.defines) != 1:
        return False
    _, s, d = ins.defines[0]
    if s is None or tuple(s) != tuple(shape) or np.dtype(d) != np.dtype(dtype):
        return False
    new = set()
    for n in _names(ins.scalar):
        got = info.get(n)
        if got == NUMBER:
            continue
        if got is None or got[0] is None:
            return False  # a value of unknown shape (made by a rule at run time)
        k = _kind(got[0], shape)
        if not k or np.dtype(got[1]) != np.dtype(dtype):
            return False  # another dtype: NumPy would promote, the kernel would not
        if k == "tail":
            new.add(math.prod(_strip(got[0])))
    if len(tails | new) > 1:
        return False
    tails |= new
    return True


def runs(prog: list, info: dict, keep: set, breaks: set = frozenset(),
         long: bool = False) -> list:
    """``[(start, stop, Group, absorbed)]``: each run of ``prog[start:stop]`` as a group,
    with the indices of the later row sums it absorbed (:func:`_row_sums`). ``info``
    maps value names to (shape, dtype), or :data:`NUMBER`; ``keep``: the values handed back
    (always stored); no run goes over an index in ``breaks``. A run of one instruction is
    left as it is unless NumPy would make several calls for it. ``long``: a run without
    tail inputs goes on past :data:`MAX_MEMBERS` (and then absorbs no row sums), for a
    kernel whose compile time does not grow with its length (gpugrad.compiler.native_table)."""
    info = dict(info)
    for ins in prog:
        info.update((n, (s, d)) for n, s, d in ins.defines if s is not None)
    out = []
    k = 0
    while k < len(prog):
        first = prog[k]
        # a value passed on unchanged (a sum's gradient) stays a name for its value: a run
        # starting with it would store a copy
        if first.scalar is None or first.alias or len(first.defines) != 1:
            k += 1
            continue
        _, shape, dtype = first.defines[0]
        if shape is None or np.dtype(dtype).name not in FLOATS or not shape:
            k += 1
            continue
        tails: set = set()
        stop = k
        while stop < len(prog) and (stop - k < MAX_MEMBERS or long and not tails) \
                and (stop == k or stop not in breaks) \
                and _fits(prog[stop], info, shape, dtype, tails):
            stop += 1
            if stop - k > MAX_MEMBERS and tails:  # a tail input past MAX_MEMBERS: cut
                stop -= 1
                break
        if stop - k >= 2 or (stop - k == 1 and _worth_alone(first.scalar)):
            g = _group(prog, k, stop, info, keep, tuple(shape), dtype)
            taken = _row_sums(prog, stop, g, breaks, tails) if stop - k <= MAX_MEMBERS \
                else []
            if taken:  # the absorbed sums are no longer outputs unless read elsewhere
                g.outputs = [m for m in g.outputs if m in keep or any(
                    m in ins.reads for j, ins in enumerate(prog[stop:], stop)
                    if j not in taken)]
            out.append((k, stop, g, taken))
        k = max(stop, k + 1)
    return out


def _row_sums(prog: list, stop: int, g: Group, breaks: set, tails: set) -> list:
    """The instructions after the run ``prog[:stop]`` of group ``g`` that sum one of its
    values over the leading axes (``Instr.rows``) and can move up to it (nothing between
    reads what they define; no break between): they join ``g`` as sums. Returns their
    indices."""
    values = {m for m, _ in g.members} | {n for n, s in g.inputs if g.kind(s) == "full"}
    taken = []
    for j in range(stop, len(prog)):
        if j in breaks and j != stop:
            break
        ins = prog[j]
        if ins.rows is None or ins.rows not in values or len(ins.defines) != 1:
            continue
        name, shape, dtype = ins.defines[0]
        if shape is None or np.dtype(dtype) != g.dtype or not shape or \
                tuple(g.shape[len(g.shape) - len(shape):]) != tuple(shape) or \
                len(tails | {math.prod(shape)}) > 1:
            continue
        if any(name in prog[i].reads for i in range(stop, j)):
            continue
        tails.add(math.prod(shape))
        g.sums.append((name, ins.rows, tuple(shape)))
        taken.append(j)
    return taken


def _worth_alone(node: tuple) -> bool:
    """A single formula is worth a kernel when NumPy would make more than one call."""
    return sum(1 for _ in _calls(node)) > 1


def _calls(node: tuple):
    if node[0] not in ("name", "const"):
        yield node[0]
        for a in node[1:]:
            yield from _calls(a)


def _group(prog: list, start: int, stop: int, info: dict, keep: set, shape: tuple,
           dtype: Any) -> Group:
    members = [(prog[j].defines[0][0], prog[j].scalar) for j in range(start, stop)]
    made = {m for m, _ in members}
    inputs: list = []
    for _, node in members:
        for n in _names(node):
            if n not in made and n not in [i for i, _ in inputs]:
                got = info[n]
                inputs.append((n, None if got == NUMBER else tuple(got[0])))
    later = {n for ins in prog[stop:] for n in ins.reads}
    outputs = [m for m, _ in members if m in later or m in keep]
    return Group(members, shape, np.dtype(dtype), inputs, outputs)
