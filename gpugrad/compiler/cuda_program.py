"""A CuPy program's fusion groups as CUDA kernels: the planned program of a device.

On CuPy (``program.build`` with a :class:`Device`, chosen by :func:`choose`) a program is
lowered and grouped as on NumPy, with four differences:

- a lowered step is kept only where every line of its code, forward and backward, is a
  formula's ufunc call or a product (:func:`portable`); where the op has kernels of its
  own for a device (``lower.NativeKernel.cuda``: the cross-entropy's, launched as
  :class:`OpLaunch`; a mean of what such a kernel makes folds into it, its gradient a host
  number, see :func:`lowered`); or where its forward and backwards are formulas spelt in
  CUDA that fusion groups run (:func:`grouped`: gelu's erf, softplus's ``where``; a step
  a group does not take runs its rules, :func:`left_out`); a reduction, a gather, a host
  scalar (``isfinite``, ``dtype.type``) runs the op's rules instead;
- each fusion group (gpugrad.compiler.fuse) is one CUDA kernel, the complete source that
  gpugrad.compiler.cuda_group writes, called by :func:`instruction`'s line ``N0(...)``;
- the optimizer's update of every parameter is one more kernel, ``NU(opt, ...)``, where
  they share a float dtype (gpugrad.compiler.cuda_update);
- the planned buffers are device arrays, and ``np`` in the program's namespace is the
  device's array module (``cupy``, which spells NumPy's ufuncs and ``dot`` the same);
- there is no floating-point error state: nothing tests for overflow (CuPy's rules do not
  either).

All of a program's kernels are one translation unit, compiled once when the program is
built (``cupy.RawModule``; CuPy keeps the binary in its disk cache). Where that fails the
program is built again without its groups, every step running its rules, with a warning
(:func:`bind`).

Everything here but :func:`cupy_device` takes the device as an argument, so a test builds
the same program over NumPy arrays with each kernel's CUDA source read back as Python
(tests/test_cuda_program.py): that checks the program's code, its buffers and the kernels'
arithmetic, not a GPU.

>>> import numpy as np
>>> dev = Device(np, lambda kernels: {})
>>> portable(["c = np.multiply(g, np.greater(x, ZERO_float32), C)"], dev)
True
>>> portable(["c = np.add.reduce(g, axis=0, out=C)"], dev), portable(["o = x[AR3, t]"], dev)
(False, False)
"""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import backend, scalar_formula
from . import cuda_group, cuda_update, lower, native, native_fold, plan, tier
from .fuse import Group


@dataclass(frozen=True)
class Device:
    """Where a device program runs: ``np``, the array module its NumPy-spelt code calls
    (``cupy``), and ``load(kernels)``, which compiles the ``(name, kernel)`` kernels of one
    program and returns ``{name: run}``, ``run(args, n)`` launching one with ``args`` in
    the order of cuda_group.raw_source's parameters and the element count ``n``, over the
    threads the kernel takes (``n``, one an element; a group with sums one a column,
    cuda_group.threads)."""

    np: Any
    load: Callable


def choose(xp: Any, device: Any, shapes: list, native: Any) -> Device | None:
    """The device a program of namespace ``xp`` whose slots have ``shapes`` is built for:
    none for the native CPU tier (``native``) or a complex value; else ``device`` where
    given (False: none), or the CuPy device where ``xp`` is CuPy's and ``GPUGRAD_JIT`` is
    ``now``. (Opt-in until ``ci/gpu-check`` has passed on a device: this path has been
    checked on the CPU only, see docs/gpu.md; the default stays the unfused rules.)"""
    if native or device is False:
        return None
    if device is None and (tier.mode() != "now" or backend.name_of(xp) != "cupy"):
        return None
    return (device or cupy_device()) if real(shapes) else None


def real(shapes: list) -> bool:
    """Whether no slot of ``shapes`` ((shape, dtype) or None each, NumPy dtypes) is complex:
    lowering, rewrites and in-place updates are written for real values."""
    return not any(s is not None and np.dtype(s[1]).kind == "c" for s in shapes)


@functools.cache
def cupy_device() -> Device:
    """CuPy's device: kernels compiled by ``cupy.RawModule`` (CuPy is imported already:
    the backend's namespace wraps it)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        import cupy  # noqa: PLC0415  (only where the backend is CuPy)
    return Device(cupy, functools.partial(_load_raw, cupy))


def source(name: str, kernel: Any) -> str:
    """The CUDA source of a device program's kernel: a fusion group's, the optimizer's
    update of every parameter (gpugrad.compiler.cuda_update), or an op's own
    (``lower.NativeKernel.cuda``, with what is folded into it: gpugrad.compiler.native_fold)."""
    if isinstance(kernel, Group):
        return cuda_group.raw_source(kernel, name)
    if isinstance(kernel, cuda_update.Update):
        return kernel.source(name)
    return kernel.cuda(name) if isinstance(kernel, native_fold.Folded) else kernel.cuda(name, None)


def has_kernel(native: Any) -> bool:
    """Whether an op's lowering declares its own kernel for a device (``NativeKernel.cuda``)."""
    return native is not None and native.cuda is not None


def module_source(kernels: list) -> str:
    """One CUDA translation unit with every kernel of ``kernels`` (``(name, kernel)``)."""
    return "\n".join(source(n, k) for n, k in kernels)


def _load_raw(cupy: Any, kernels: list) -> dict:
    module = cupy.RawModule(code=module_source(kernels), options=cuda_group.OPTIONS)
    return {n: functools.partial(_launch_raw, module.get_function(cuda_group.kernel_name(n)),
                                 cuda_group.threads(k) if isinstance(k, Group) else None)
            for n, k in kernels}


BLOCK = 256
"""Threads per block of a kernel over elements (a grid-stride loop covers any count)."""
COLUMN_BLOCK = 32
"""Threads per block of a kernel over columns (a group with sums): a warp a block, so that
a few hundred columns spread over as many multiprocessors as there are warps."""
OP_BLOCK = 256
"""Threads of the one block an op's own kernel runs as (``n`` None: its arguments end with
the row and column counts)."""


def _launch_raw(fn: Any, columns: int | None, args: tuple, n: int | None) -> None:
    """Launch ``fn`` with ``args`` and the element count ``n``: over ``n`` threads, or over
    ``columns`` (a group with sums: launched even where ``n`` is 0, to store sums of 0);
    ``n`` None: an op's own kernel, one block of :data:`OP_BLOCK`, ``args`` complete."""
    if n is None:
        fn((1,), (OP_BLOCK,), args)
        return
    count, block = (n, BLOCK) if columns is None else (columns, COLUMN_BLOCK)
    if count:
        fn((min((count + block - 1) // block, 65535),), (block,), (*args, np.int64(n)))


_NP_CALL = re.compile(r"\bnp\.(\w+)\(")
_CALL = re.compile(r"(?<![\w.])(\w+)\(")
_ATTR = re.compile(r"(?<!\bnp)\.(?![0-9])(\w+)")
_BINARY = re.compile(r"[\w)\]]\s*[-+*/%@]")
_HOST_VALUE = re.compile(r"^\s*\w+ = (K_|ONE_|ZERO_)\w*\s*$")
_BASIC_INDEX = re.compile(r"^\w+ = \w+\[(?:-?\d+|None|:|\.\.\.|[-\d:]+)(?:, (?:-?\d+|None|"
                          r":|\.\.\.|[-\d:]+))*\]$")
"""A basic index's line (getitem's lowered forward, ``o = x[3, ...]``)."""
_HOST_NUMBER = re.compile(r"^\w+ = (INV\d+_float\d+|K_\w+)$")  # a mean's 1 / n
_HOST_WORK = re.compile(r"\.reduce\(|\bisfinite\(|\.item\(\)|\[AR\w+, |float\(s_\)")
"""Code that would wait for the device (a reduction read on the host, a gather by row
numbers on the host): a device program with any is built again without a device."""
PORTABLE = frozenset(scalar_formula.CUDA) | {"dot"}
"""NumPy functions a device program's lowered code may call: the formulas' ufuncs (those
with a CUDA spelling) and the product."""


def portable(lines: list, dev: Device) -> bool:
    """Whether lowered code ``lines`` runs as it is on ``dev``: only calls of
    :data:`PORTABLE` functions that ``dev.np`` has, value names (a sized name only as the
    vector of ones of a bias's product), ``.T``, no indexing but a basic index's view
    (``o = x[3, ...]``), no Python arithmetic, no other call or attribute, no value made
    from a host constant alone."""
    for line in lines:
        if _BASIC_INDEX.match(line):
            continue  # a view, as NumPy's: no launch, nothing read on the host
        if "[" in line or _BINARY.search(line) or _HOST_VALUE.match(line):
            return False
        if any(f not in PORTABLE or not hasattr(dev.np, f) for f in _NP_CALL.findall(line)):
            return False
        if _CALL.search(line) or any(a != "T" for a in _ATTR.findall(line)):
            return False
        if any(m.group(1) != "ONES" for m in lower.SIZED.finditer(line)):
            return False
    return True


def lowered(low: Any, backs: list, dev: Device, kernel_made: set = frozenset()) -> str:
    """How a step's lowered forward ``low`` (lower.Forward) and backwards ``backs``
    (lower.Backward, emitted with the names ``g``, ``o``) run on ``dev``: "code" as they are
    (portable code, or the op's own kernels, :func:`has_kernel`, forward and backward, or a
    mean of a vector that such a kernel makes, ``kernel_made``: its name; the kernel adds
    it up, gpugrad.compiler.native_fold, and its gradient is a host number); "groups" only
    as members of fusion groups (:func:`grouped`); "" not at all (the step runs its rules).
    """
    if has_kernel(low.native):
        return "code" if all(has_kernel(b.native) for b in backs) else ""
    if low.total is not None and low.total[0] in kernel_made and low.total[2:] == ("mean",):
        return "code" if all(b.emit is None or all(_HOST_NUMBER.match(line) for line in b.emit(
            "c", "C", [])) for b in backs) else ""
    if low.saved:
        return ""
    temps = [f"T{j}_" for j in range(len(low.temps))]
    lines = low.epilogue[0]("o", "D") if low.epilogue else low.emit("o", "D", *temps)
    for b in backs:
        if b.emit is not None:
            lines = lines + b.emit("c", "C", [f"T{j}_" for j in range(len(b.temps))])
    return "code" if portable(lines, dev) else "groups" if grouped(low, backs, dev) else ""


def spelt(node: tuple) -> bool:
    """Whether every function of the formula ``node`` has a CUDA spelling
    (``scalar_formula.CUDA``).

    >>> spelt(("erf", ("name", "x"))), spelt(("arctan", ("name", "x")))
    (True, False)
    """
    try:
        scalar_formula.cuda(node)
    except KeyError:
        return False
    return True


def grouped(low: Any, backs: list, dev: Device) -> bool:
    """Whether a step whose NumPy lines are not :func:`portable` (gelu's call of the erf
    rule, ``ERF_INTO``; softplus's ``np.copyto(..., where=)``) may still be kept lowered on
    ``dev``: its forward is a formula (``low.scalar``) and each backward a formula
    (``b.scalar``) or portable code, every formula spelt in CUDA (:func:`spelt`). A fusion
    group's kernel computes the formula, never the lines; where the fusion pass leaves such a
    step's instruction outside every group (a lone one-call formula, a dtype or a shape a
    group cannot read), :func:`left_out` finds it and ``program.build`` builds the program
    again with that step running its rules."""
    if low.scalar is None or low.saved or low.epilogue or not spelt(low.scalar):
        return False
    for b in backs:
        if b.scalar is not None and spelt(b.scalar):
            continue
        if b.emit is not None and not portable(
                b.emit("c", "C", [f"T{j}_" for j in range(len(b.temps))]), dev):
            return False
    return True


_STEP_VALUE = re.compile(r"c(\d+)_\d+|v(\d+)")


def left_out(prog: list, dev: Device, steps: set, made_by: dict) -> set:
    """Which of ``steps`` (kept lowered only for fusion groups, :func:`grouped`) the grouped
    device program ``prog`` would still run as NumPy code: those with a formula instruction
    (``Instr.scalar``) outside every group whose lines are not :func:`portable`. An
    instruction's step is read from the value it defines: a gradient ``c<k>_<pos>`` is step
    ``k``'s, a value ``v<o>`` is ``made_by[o]``'s.

    This is the safety net of :func:`grouped`, chosen over making the fusion pass form a
    group for every such instruction because a group cannot take every one (a float16
    value, an input of unknown shape): ``program.build`` builds again with the steps found
    running their rules (``ruled``), which may leave a neighbour alone in turn, so it
    repeats until none is found (each time with more steps ruled: it ends)."""
    left = set()
    for ins in prog:
        if ins.scalar is None:  # (a group's call, a rule's: not a formula step's lines)
            continue
        m = _STEP_VALUE.fullmatch(ins.defines[0][0])
        k = None if m is None else int(m[1]) if m[1] else made_by.get(int(m[2]))
        if k in steps and k not in left and not portable(ins.emit(
                [n for n, *_ in ins.defines], [f"T{j}_" for j in range(len(ins.temps))]), dev):
            left.add(k)
    return left


class Launch:
    """One group's kernel in a program: checks that each argument is what the kernel reads
    (a contiguous device array of the group's dtype and size, made so where it is not:
    a rule may hand over a view or a host scalar), then ``run(args, n)``, ``n`` the size of
    the group's values (its batch size's, in a program independent of it; ``run`` launches
    a group with sums over its columns, :class:`Device`). A wrong dtype or size raises
    TypeError: a kernel never reads memory as what it is not."""

    def __init__(self, group: Group, run: Callable, dev: Device) -> None:
        self.run, self.xp, self.dtype = run, dev.np, group.dtype
        size = {"number": None, "full": 0, "tail": group.tail(), "one": 1}
        self.sizes = [size[group.kind(s)] for _, s in group.inputs]  # 0: the group's
        self.sizes += [0] * len(group.outputs) + [math.prod(s) for _, _, s in group.sums]
        self.n_in = len(group.inputs)
        self.at = self.sizes.index(0)  # an argument of the group's size

    def __call__(self, *args: Any) -> None:
        xp, dt = self.xp, self.dtype
        n = args[self.at].size
        got = []
        for j, (a, size) in enumerate(zip(args, self.sizes)):
            if size is None:  # a number, by value
                got.append(dt.type(a))
                continue
            if not isinstance(a, xp.ndarray):
                if j >= self.n_in or np.dtype(getattr(a, "dtype", dt)) != dt:
                    raise TypeError(f"a kernel's argument {j} is {type(a).__name__}")
                a = xp.asarray(a, dtype=dt)
            if a.dtype != dt or a.size != (size or n):
                raise TypeError(f"a kernel's argument {j} is {a.dtype} of size {a.size}, "
                                f"not {dt} of size {size or n}")
            if not a.flags.c_contiguous:
                if j >= self.n_in:
                    raise TypeError(f"a kernel's output {j} is not contiguous")
                a = xp.ascontiguousarray(a)
            got.append(a)
        self.run(tuple(got), n)


def allocated(outs: list, values: list, env: dict) -> tuple[list, list]:
    """``outs`` (buffer names, "None" where a value is not planned) with each "None" among
    the first ``len(values)`` ((name, shape, dtype) each) a new device array's name, and the
    lines making those arrays (``np.empty``, no launch; a shape with the batch dim is read
    per batch size, as a group's are)."""
    got, lines = list(outs), []
    for j, (name, shape, dtype) in enumerate(values):
        if got[j] == "None":
            a = f"A_{name}"
            env[f"S_{a}"], env[f"D_{a}"] = shape, np.dtype(dtype)
            lines.append(f"{a} = np.empty(S_{a}, D_{a})")
            got[j] = a
    return got, lines


class OpLaunch:
    """An op's own kernel in a program (``lower.NativeKernel.cuda``): called by the numba
    function's lines with its arguments (device arrays; a number, sent as a ``double``),
    it adds the row and column counts of the largest matrix among them and launches one
    block (``run(args, None)``). Returns False: nothing is reported to the host."""

    def __init__(self, run: Callable, dev: Device) -> None:
        self.run, self.xp = run, dev.np

    def __call__(self, *args: Any) -> bool:
        got = [a if isinstance(a, self.xp.ndarray) else np.float64(a) for a in args]
        n, k = max((a.shape for a in got if getattr(a, "ndim", 0) == 2), key=math.prod)
        self.run((*got, np.int64(n), np.int64(k)), None)
        return False


def instruction(group: Group, name: str, env: dict) -> plan.Instr:
    """The device program's instruction calling ``group``'s kernel ``name`` (a
    :class:`Launch`): it reads the group's inputs as they are (a single element stays a
    device array: no ``.item()``, which would wait for the device) and tests nothing after.
    The outputs and sums are planned buffers where the program plans them (else new
    arrays); a sum needs no zeroing: the kernel stores each of its elements once."""
    env[f"S_{name}"], env[f"D_{name}"] = group.shape, group.dtype

    def emit(outs: list, temps: list) -> list:
        lines, args = [], [n for n, _ in group.inputs]
        for m, o in zip(group.outputs, outs):
            lines.append(f"{m} = {o}" if o != "None" else f"{m} = np.empty(S_{name}, D_{name})")
            args.append(m)
        lines += native.sums_bound(group, name, outs, env)
        args += [m for m, _, _ in group.sums]
        return lines + [f"{name}({', '.join(args)})"]
    return native.group_instruction(group, emit)


def bind(made: Any, dev: Device, buffers: list) -> Any:
    """The device program ``made`` (a program.Program) ready to run: ``np`` bound to the
    device's module, its buffers and vectors of ones on the device, its kernels compiled
    and bound (``made.tier`` "cuda"). Where they cannot be compiled, the program rebuilt
    without a device (every step its rules) instead, with a warning saying why."""
    scope = made.fn.__globals__
    kernels = list(made.kernels)
    host = next((line.strip() for line in made.source.splitlines()
                 if _HOST_WORK.search(line)), None)
    try:
        if host is not None:  # (a step left its NumPy code: a fold that did not happen)
            raise ValueError(f"its code would wait for the device: {host}")
        runs = dev.load(kernels) if kernels else {}
    except Exception as e:  # NVRTC's error, a missing driver, ...
        warnings.warn(f"gpugrad: the CUDA kernels of a program's fusion groups could not be "
                      f"built ({type(e).__name__}: {e}); its steps run unfused, each its "
                      "rules", RuntimeWarning, stacklevel=4)
        return made.rebuild(device=False)
    bump = functools.partial(scope["bump"], site=scope["SITE"]) if "SITE" in scope else None
    scope.update({n: Launch(g, runs[n], dev) if isinstance(g, Group) else
                  cuda_update.Step(g, runs[n], dev.np, bump)
                  if isinstance(g, cuda_update.Update) else OpLaunch(runs[n], dev)
                  for n, g in kernels})
    scope["np"] = dev.np
    on = functools.partial(_on_device, dev)
    scope.update({k: on(v) for k, v in scope.items() if lower.SIZED.fullmatch(k)})
    if made.frames is None:
        made.buffers = [dev.np.empty(shape, dtype) for shape, dtype in buffers]
    else:  # a frame per batch size: its buffers and vectors made on the device
        made.frames.numpy = True
        sizing = made.frames.sizing
        sizing.made = [lambda n, f=f: on(f(n)) for f in sizing.made]
    made.tier = "cuda"
    return made


def _on_device(dev: Device, value: Any) -> Any:
    return dev.np.asarray(value) if isinstance(value, np.ndarray) else value
