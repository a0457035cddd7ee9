"""The native tier: each fusion group (gpugrad.compiler.fuse) as one loop compiled to
machine code by numba (``pip install gpugrad[jit]``), generated from the members' scalar
formulas.

A group's kernel reads each input once per element, computes every member in order in
registers (in the group's dtype: a float32 group does float32 arithmetic, as NumPy would)
and stores only the group's outputs. ``exp`` is written out branch-free (:data:`PRELUDE`,
within about 2 ulps in float64 and 1.2 ulps in float32, in that dtype's own arithmetic) so
that loops with it run on SIMD lanes, as NumPy's own exp does; the other
functions call the C library. A kernel returns True where an ``exp`` overflowed from a
finite argument, so the program raises or warns as NumPy's error state says.

All the kernels of one program are one module of Python source, written to the disk
cache (:func:`cache_dir`) under a name made from a hash of its text, numba's and NumPy's
versions; numba caches their machine code beside it, so another process with the same
program loads them instead of compiling. Nothing here imports numba until a program is
hot (see gpugrad.compiler.tier).

>>> import numpy as np
>>> from gpugrad.compiler.fuse import Group
>>> g = Group([("y", ("reciprocal", ("add", ("exp", ("negative", ("name", "x"))),
...                                  ("const", 1.0))))],
...           (3,), np.dtype("float32"), [("x", (3,))], ["y"])
>>> print(kernel_source(g, "k0"))
@njit(types.boolean(R("float32", 1), W("float32", 1)),
      nogil=True, error_model="numpy", cache=True)
def k0(x0, y0):
    a0 = x0.ravel()
    o0 = y0.ravel()
    n = o0.shape[0]
    over = False
    for i0 in range(n):
        u0 = a0[i0]
        q0 = np.float32(-u0)
        e0 = exp_float32(q0)
        over |= (e0 == INF) & (q0 < INF)
        t0 = np.float32(ONE_float32 / np.float32(e0 + ONE_float32))
        o0[i0] = t0
    return over
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import native_math, plan
from ..scalar_formula import BINARY, COMPARE_OPS, write
from .fuse import Group

_TANH = (1.0, -0.3333333333333333, 0.13333333333333333, -0.05396825396825397,
         0.021869488536155203, -0.008863235529902197, 0.003592128036572481,
         -0.0014558343870513183, 0.000590027440945586, -0.00023912911424355248,
         9.691537956929451e-05, -3.927832388331683e-05, 1.5918905069328964e-05,
         -6.451689215655431e-06, 2.6147711512907546e-06, -1.0597268320104654e-06,
         4.294911078273806e-07, -1.7406618963571648e-07)
"""tanh's Taylor coefficients, 2**2n (2**2n - 1) B_2n / (2n)! (B: Bernoulli numbers): to x**35
they are within 2.4e-16 of tanh below 0.55 in float64; to x**17, 5e-9 in float32."""

PRELUDE = '''\
import math
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

INF = np.inf
ONE_float32, ZERO_float32 = np.float32(1.0), np.float32(0.0)


def R(dtype, ndim):
    """An input argument: a C-contiguous array, read-only or not."""
    return types.Array(getattr(types, dtype), ndim, "C", readonly=True)


def W(dtype, ndim):
    """An output argument: a C-contiguous array the kernel writes."""
    return types.Array(getattr(types, dtype), ndim, "C")

ONE_float64, ZERO_float64 = np.float64(1.0), np.float64(0.0)


_CASTS = {types.float64: (types.int64, ir.IntType(64)),
          types.int64: (types.float64, ir.DoubleType()),
          types.float32: (types.int32, ir.IntType(32)),
          types.int32: (types.float32, ir.FloatType())}


@intrinsic
def bitcast(typingctx, x):
    """The same bits as the other type of the width: float64 and int64, float32 and int32."""
    to, llvm = _CASTS[x]

    def gen(context, builder, sig, args):
        return builder.bitcast(args[0], llvm)
    return to(x), gen


@njit(inline="always", error_model="numpy", cache=True)
def exp_float64(x):
    """e**x without branches: x = k ln2 + r, |r| <= ln2/2, e**r by its Taylor series to
    r**13 (truncation below 2e-16), times 2**k made from bits in two halves (so that
    subnormal results round once)."""
    y = min(max(x, -746.0), 710.0)
    t = y * 1.4426950408889634 + 6755399441055744.0
    k = t - 6755399441055744.0
    r = (y - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (
            1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (
                1.0 / 479001600 + r * (1.0 / 6227020800.0)))))))))))))
    ki = bitcast(t) - bitcast(6755399441055744.0)
    k1 = ki >> 1
    p = p * bitcast((k1 + 1023) << 52) * bitcast((ki - k1 + 1023) << 52)
    p = np.inf if x > 709.782712893384 else p
    p = 0.0 if x < -745.1332191019412 else p
    return x if x != x else p


F32 = np.float32
E32 = (F32(1.0), F32(1.0), F32(0.5), F32(1.0 / 6), F32(1.0 / 24), F32(1.0 / 120), F32(1.0 / 720),
       F32(1.0 / 5040))
MAGIC32, LOG2E32 = F32(12582912.0), F32(1.4426950408889634)
LN2HI32, LN2LO32 = F32(0.693359375), F32(-2.12194440e-4)
LO32, HI32, UNDER32, OVER32 = F32(-104.0), F32(89.0), F32(-103.97208), F32(88.72283935546875)
ZERO32, INF32 = F32(0.0), F32(np.inf)


@njit(inline="always", error_model="numpy", cache=True)
def exp_float32(x):
    """e**x in float32 arithmetic, as exp_float64 with a Taylor series to r**7 (within 1.2
    ulps of the true value over its range; NumPy's own: 2.3)."""
    c0, c1, c2, c3, c4, c5, c6, c7 = E32
    y = min(max(x, LO32), HI32)
    t = y * LOG2E32 + MAGIC32
    k = t - MAGIC32
    r = (y - k * LN2HI32) - k * LN2LO32
    p = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
    ki = np.int32(bitcast(t) - bitcast(MAGIC32))
    k1 = np.int32(ki >> 1)
    p = p * bitcast(np.int32((k1 + 127) << 23)) * bitcast(np.int32((ki - k1 + 127) << 23))
    p = INF32 if x > OVER32 else p
    p = ZERO32 if x < UNDER32 else p
    return x if x != x else p
''' + "".join(
    f'''

@njit(inline="always", error_model="numpy", cache=True)
def tanh_{t}(x):
    """tanh without branches: its Taylor series below |x| = 0.55 (the terms to
    x**{2 * len(c) - 1}), 1 - 2 / (e**(2|x|) + 1) above, the sign copied."""
    a = abs(x)
    e = exp_{t}(np.{t}(2.0) * min(a, np.{t}({cap})))
    big = np.{t}(1.0) - np.{t}(2.0) / (e + np.{t}(1.0))
    z = a * a
    s = {" + z * (".join(f"np.{t}({v!r})" for v in c)}{")" * (len(c) - 1)}
    r = a * s if a < np.{t}(0.55) else big
    return x if x != x else np.{t}(math.copysign(r, x))
''' for t, c, cap in (("float64", _TANH[:18], 20.0), ("float32", _TANH[:9], 9.0)))

PRELUDE += native_math.LOG1P + native_math.LOGADDEXP

_LIBM = {"log": "math.log", "sqrt": "np.sqrt"}


class _Writer:
    """The loop body of one kernel: a line per member, reading names through ``where``,
    each ufunc spelt in numba's Python with NumPy's semantics (as ``scalar_formula.CUDA``
    spells it in C), in the group's dtype."""

    def __init__(self, dtype: str, where: dict) -> None:
        self.dtype, self.where = dtype, where
        self.lines: list = []
        self.consts: dict = {}
        self.n_exp = 0
        self.seen: tuple = (None, {})  # (the lines, {an exp's argument there: its name})
        self.over = "over"
        T, one, zero = f"np.{dtype}", self.const(1.0), self.const(0.0)
        self.spell = {
            **{k: f"{T}({{0}} {op} {{1}})" for k, op in BINARY.items()},
            **{k: f"({one} if {{0}} {op} {{1}} else {zero})" for k, op in COMPARE_OPS.items()},
            **{k: f"{T}({fn}({{0}}))" for k, fn in _LIBM.items()},
            "negative": f"{T}(-{{0}})", "reciprocal": f"{T}({one} / {{0}})",
            "square": f"{T}({{0}} * {{0}})", "absolute": "abs({0})",
            "tanh": f"tanh_{dtype}({{0}})",  # the prelude's: C's would keep loops off SIMD
            "log1p": f"log1p_{dtype}({{0}})",  # (gpugrad.compiler.native_math)
            "exp": self._exp,
            "maximum": "({0} if ({0} > {1} or {0} != {0}) else {1})",
            "minimum": "({0} if ({0} < {1} or {0} != {0}) else {1})",
            "where": f"({{1}} if {{0}} != {zero} else {{2}})",
            # libm's erf (in float64, rounded: within an ulp of the true value in float32)
            "erf": f"{T}(math.erf({{0}}))",
            "isinf": f"({one} if np.isinf({{0}}) else {zero})",
            "logaddexp": f"logaddexp_{dtype}({{0}}, {{1}})",  # (native_math: no overflow)
            "sign": f"({one} if {{0}} > {zero} else ({T}(-{one}) if {{0}} < {zero} else "
                    f"({zero} if {{0}} == {zero} else {{0}})))"}

    def const(self, v: float) -> str:
        if v == 1.0:
            return f"ONE_{self.dtype}"
        if v == 0.0 and struct.pack(">d", v)[0] == 0:
            return f"ZERO_{self.dtype}"
        name = f"K_{self.dtype}_{struct.pack('>d', v).hex()}"
        self.consts[name] = (self.dtype, v)
        return name

    def _leaf(self, n: tuple) -> str:
        return self.where[n[1]] if n[0] == "name" else self.const(n[1])

    def _exp(self, x: str) -> str:
        """Its own lines: the overflow test reads the argument and the result. The same
        argument in the same lines (a formula reading ``exp(y)`` twice) is computed once."""
        if self.seen[0] is not self.lines:
            self.seen = (self.lines, {})
        if x in self.seen[1]:
            return self.seen[1][x]
        e = self.n_exp
        self.seen[1][x] = f"e{e}"
        self.n_exp += 1
        self.lines += [f"q{e} = {x}", f"e{e} = exp_{self.dtype}(q{e})",
                       f"{self.over} |= (e{e} == INF) & (q{e} < INF)"]
        return f"e{e}"

    def expr(self, n: tuple) -> str:
        return write(n, self.spell, self._leaf)


def array_type(dtype: str, ndim: int, written: bool = False) -> str:
    """A C-contiguous array argument: an input (``R``, read-only or not: a read-only feed
    is fine) or an output (``W``)."""
    return f'{"W" if written else "R"}("{dtype}", {ndim})'


FUSED_ARRAYS = 8
"""The most arrays one fused loop reads and writes: beyond it LLVM's loop vectoriser gives
up (it would test every pair for overlap at run time), so a longer group runs as one loop
per member over scratch rows instead ("staged"; 113 against about 20 µs for the 100-step
chain on 2026-12-06), still one call."""


def kernel_source(group: Group, name: str) -> str:
    """The numba source of ``group``'s kernel, called ``name`` (its arguments: the inputs in
    order, arrays C-contiguous and single elements or numbers as Python floats, then the
    output arrays)."""
    dt = group.dtype.name
    tail = group.tail()
    index = "b@ + j@" if tail > 1 else "i@"  # @: the loop's number (numba's SSA pass
    # recurses through every redefinition of a name, so no two loops share one)
    args, sig, head, where = [], [], [], {}
    arrays = []
    for j, (n, shape) in enumerate(group.inputs):
        kind = group.kind(shape)
        args.append(f"x{j}")
        if kind in ("number", "one"):
            sig.append("types.float64")
            head.append(f"s{j} = np.{dt}(x{j})")
            where[n] = f"s{j}"
            continue
        sig.append(array_type(dt, len(shape)))
        head.append(f"a{j} = x{j}.ravel()")
        arrays.append((n, f"a{j}[{'j@' if kind == 'tail' else index}]"))
    outs = {m: j for j, m in enumerate(group.outputs)}
    for j, _ in enumerate(group.outputs):
        args.append(f"y{j}")
        sig.append(array_type(dt, len(group.shape), True))
        head.append(f"o{j} = y{j}.ravel()")
    sums: dict = {}  # what is summed -> [the sums' numbers]
    for j, (_, what, shape) in enumerate(group.sums):
        args.append(f"r{j}")
        sig.append(array_type(dt, len(shape), True))
        head += [f"z{j} = r{j}.ravel()", f"z{j}[:] = 0"]
        sums.setdefault(what, []).append(j)
    at = "j@" if tail > 1 else "0"
    staged = len(arrays) + len(outs) + len(group.sums) > FUSED_ARRAYS
    w = _Writer(dt, where)
    loops: list = []
    if staged:  # one loop per member; a member that is not stored gets a scratch row
        where.update(arrays)
        rows = [m for m, _ in group.members if m not in outs]
        if rows:
            head.append(f"S = np.empty(({len(rows)}, n), np.{dt})")
        for k, (m, node) in enumerate(group.members):
            w.lines, w.over = [], f"over{k}"
            value = w.expr(node)
            dest = f"o{outs[m]}" if m in outs else f"S[{rows.index(m)}]"
            head.append(f"t{k} = {dest}")
            loops.append(w.lines + [f"t{k}[{index}] = {value}"])
            where[m] = f"t{k}[{index}]"
        for what, js in sums.items():  # each sum: a loop of its own, after
            loops.append([f"z{j}[{at}] = np.{dt}(z{j}[{at}] + {where[what]})" for j in js])
    else:  # one loop: each input read once an element, members in registers
        body = [f"u{j} = {e}" for j, (_, e) in enumerate(arrays)]
        where.update((n, f"u{j}") for j, (n, _) in enumerate(arrays))
        body += [f"z{j}[{at}] = np.{dt}(z{j}[{at}] + {where[what]})"
                 for what, js in sums.items() if what in where for j in js]
        for k, (m, node) in enumerate(group.members):
            w.lines = []
            value = w.expr(node)
            body += w.lines + [f"t{k} = {value}"]
            where[m] = f"t{k}"
            if m in outs:
                body.append(f"o{outs[m]}[{index}] = t{k}")
            body += [f"z{j}[{at}] = np.{dt}(z{j}[{at}] + t{k})" for j in sums.get(m, [])]
        loops.append(body)
    size = "o0.shape[0]" if group.outputs else \
        f"a{[n for n, _ in group.inputs].index(group.sums[0][1])}.shape[0]" \
        if group.sums and group.sums[0][1] in dict(group.inputs) else "0"
    lines = [f'@njit(types.boolean({", ".join(sig)}),',
             '      nogil=True, error_model="numpy", cache=True)',
             f"def {name}({', '.join(args)}):",
             *("    " + h for h in head if h.startswith(("a", "o", "s"))),
             f"    n = {size}", *("    " + h for h in head if not h.startswith(("a", "o", "s")))]
    flags = []
    for k, body in enumerate(loops):
        flag = f"over{k}" if staged else "over"
        text = "\n".join(body)
        if f"{flag} |=" in text:
            lines.append(f"    {flag} = False")
            flags.append(flag)
        body = text.replace("@", str(k)).split("\n")
        if tail > 1:
            lines += [f"    for i{k} in range(n // {tail}):", f"        b{k} = i{k} * {tail}",
                      f"        for j{k} in range({tail}):", *("            " + x for x in body)]
        else:
            lines += [f"    for i{k} in range(n):", *("        " + x for x in body)]
    lines.append(f"    return {' or '.join(flags) or 'False'}")
    consts = [f"{k} = np.{d}(float.fromhex({float(v).hex()!r}))"
              for k, (d, v) in sorted(w.consts.items())]
    return "\n".join(consts + lines)


def source_of(name: str, kernel: Any) -> str:
    """The numba source of one of a program's kernels (a Group, an Update, an op's own)."""
    return kernel_source(kernel, name) if isinstance(kernel, Group) else kernel.source(name)


def describe(kernel: Any) -> str:
    """What one of a program's kernels is, in words (for listings)."""
    if isinstance(kernel, Group):
        return f"one kernel for {len(kernel.members)} elementwise steps"
    tell = getattr(kernel, "describe", None)  # gpugrad.compiler.native_update.Update
    return tell() if tell is not None else "an op's own kernel"


def module_source(kernels: list) -> str:
    """One module: the prelude and each ``(name, kernel)``'s source, with the
    versions that its compiled code depends on in its first line (so they are part of its
    hash)."""
    import numba  # noqa: PLC0415  (the optional extra, loaded only for the native tier)

    head = f"# gpugrad native kernels; numba {numba.__version__}, numpy {np.__version__}"
    return "\n\n\n".join([head + "\n" + PRELUDE] + [source_of(n, k) for n, k in kernels])


def cache_dir() -> Path:
    """Where generated modules and their machine code are kept: ``$GPUGRAD_CACHE_DIR``, or
    ``gpugrad/native`` under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    root = os.environ.get("GPUGRAD_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpugrad" / "native"


def _marker(program_source: str) -> Path:
    return cache_dir() / f"hot_{hashlib.sha256(program_source.encode()).hexdigest()[:20]}"


def was_native(program_source: str) -> bool:
    """Whether a program of this (NumPy-tier) source went native before, in any process
    (:func:`mark_native`): its kernels are in the disk cache, so it may go native at once."""
    try:
        return _marker(program_source).exists()
    except OSError:
        return False


def mark_native(program_source: str) -> None:
    """Note in the disk cache that the program of this (NumPy-tier) source went native."""
    try:
        path = _marker(program_source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        pass  # a read-only cache: the next process waits until the program is hot


def load(source: str) -> Any:
    """The module of ``source``, from the disk cache where it is there (numba then loads
    the machine code it cached), else written there first and compiled. One load at a time:
    a module is in ``sys.modules`` before its kernels are defined, and another thread
    asking for it meanwhile would get it half made."""
    with _loading:
        return _load(source)


_loading = threading.Lock()


def _load(source: str) -> Any:
    key = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"gpugrad_native_{key}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != source:
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cached code finds its globals by the module's name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def instruction(group: Group, name: str, env: dict) -> plan.Instr:
    """The program's instruction calling ``group``'s kernel ``name``: it reads the group's
    inputs and defines its outputs."""
    env[f"S_{name}"], env[f"D_{name}"] = group.shape, group.dtype

    def emit(outs: list, temps: list) -> list:
        planned = env["PLANNED"]
        lines, args = [], []
        for n, s in group.inputs:
            kind = group.kind(s)
            if kind == "number":
                args.append(f"float({n})")
            elif kind == "one":
                args.append(f"{n}.item()")
            else:
                args.append(n if n in planned else f"np.ascontiguousarray({n})")
        fresh = [m for m, o in zip(group.outputs, outs) if o == "None"]
        if len(fresh) > 1:  # values handed back: the rows of one new block (one allocation)
            env[f"S_{name}_all"] = (len(fresh), *group.shape)
            lines.append(f"{', '.join(fresh)} = np.empty(S_{name}_all, D_{name})")
        for m, o in zip(group.outputs, outs):
            if o != "None" or len(fresh) == 1:
                lines.append(f"{m} = {o}" if o != "None" else
                             f"{m} = np.empty(S_{name}, D_{name})")
            args.append(m)
        lines += sums_bound(group, name, outs, env)
        args += [m for m, _, _ in group.sums]
        return lines + [f"if {name}({', '.join(args)}):", "    overflow()"]
    # an output never shares an input's buffer: where they overlap, the compiled loop falls
    # back to one element at a time (about 5x slower in float32 with exp on 2026-12-06)
    return group_instruction(group, emit)


def sums_bound(group: Group, name: str, outs: list, env: dict) -> list:
    """The lines naming each sum of ``group`` (its kernel ``name``) after its buffer in
    ``outs`` (after the outputs'), or after a new array where it is not planned (the kernel
    writes every element: nothing zeroes it). Used by every tier's group call."""
    lines = []
    for j, ((m, _, shape), o) in enumerate(zip(group.sums, outs[len(group.outputs):])):
        env[f"S_{name}_{j}"] = shape
        lines.append(f"{m} = {o}" if o != "None" else f"{m} = np.empty(S_{name}_{j}, D_{name})")
    return lines


def group_instruction(group: Group, emit: Any) -> plan.Instr:
    """The instruction of a group's call written by ``emit``: it reads the group's inputs
    and defines its outputs, then its sums."""
    return plan.Instr([n for n, s in group.inputs],
                      [(m, group.shape, group.dtype) for m in group.outputs]
                      + [(m, shape, group.dtype) for m, _, shape in group.sums], emit, True)
