"""Pass 3d (native tier): steps folded into an op's own kernel (``lower.NativeKernel``
whose ``rows`` says how it reads or writes a matrix an element at a time).

- Into a kernel that reads a matrix an element at a time (the softmax cross-entropy's
  forward, a row at a time): the elementwise step that made the matrix, when nothing else
  reads it (a linear layer's bias add before the loss, which joins no fusion group). The
  kernel reads that step's inputs, a matrix and vectors along its rows, and computes its
  formula where it read the matrix, so the matrix is never stored: one NumPy call fewer,
  and the same arithmetic in the same order (bit for bit).
- Into a kernel that writes its value an element at a time (the cross-entropy's
  gradient): the sum of that value's columns (a bias gradient, ``Instr.rows``), added up
  in the same loop in the value's dtype, row after row, as a fusion group sums a bias's
  gradient (the NumPy tier makes a BLAS call for it, which adds in another order).

Only where the kernel's call is what runs: every value the op's step writes is planned
(gpugrad.compiler.plan), so no NumPy fallback of the step needs the folded values.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, NamedTuple

import numpy as np

from ..scalar_formula import CTYPES, c_name, cuda
from . import fuse, lower, plan
from .native import _Writer, array_type


class Fold(NamedTuple):
    """What an op's kernel takes in: ``inputs`` ((value name, kind, ndim) of the folded
    step's inputs, kind "full" or "tail") and ``read``, its formula spelt for the element
    at row ``i`` and the column where ``@`` stands; ``total``, the name of a 1-element
    float64 array it writes the sum of its value (a vector) into; or ``sums`` ((value
    name, shape) of the column sums of its value, a matrix, it writes). ``consts``: the
    numba lines of the constants ``read`` names.

    The op's source takes it as ``fold=`` and places its fields (:meth:`fields`). A device
    program's kernel (``NativeKernel.cuda``) places :meth:`cuda_fields` instead: ``cuda_read``
    is the formula in CUDA C, and its ``total`` is the mean (the value the sum's reader
    makes: ``mean``), written in the value's dtype into the reader's 0-d value."""

    dtype: str
    inputs: tuple = ()
    read: str = ""
    sums: tuple = ()
    consts: tuple = ()
    total: str | None = None
    cuda_read: str = ""
    mean: bool = False

    def fields(self) -> dict:
        """The text an op's source template places: ``in_args``/``in_sig`` (the folded
        step's inputs, in place of the matrix's argument and type), ``read0``/``readj``
        (an element of column 0 and column ``j`` of row ``i``), ``sum_args``/``sum_sig``
        (the arguments written too, each after ``, ``), and whole lines: ``sum_init``
        (before the loop over rows), ``sum_add`` (in it: the total after ``out[i]`` is
        written; a column sum after ``c[i, j]``, in the loop over ``j``), ``sum_end``
        (after the loop), ``consts`` (before the function)."""
        dt = self.dtype
        out = {"consts": "".join(line + "\n" for line in self.consts), "in_args": "z",
               "in_sig": array_type(dt, 2), "read0": "z[i, 0]", "readj": "z[i, j]"}
        if self.inputs:
            out.update(in_args=", ".join(f"f{k}" for k in range(len(self.inputs))),
                       in_sig=", ".join(array_type(dt, nd) for _, _, nd in self.inputs),
                       read0=self.read.replace("@", "0"), readj=self.read.replace("@", "j"))
        if self.total is not None:
            return {**out, "sum_args": ", tot", "sum_sig": ", " + array_type("float64", 1, True),
                    "sum_init": "    acc = 0.0\n",
                    "sum_add": "        acc += np.float64(out[i])\n",
                    "sum_end": "    tot[0] = acc\n"}
        names = [f"r{k}" for k in range(len(self.sums))]
        out["sum_args"] = "".join(", " + r for r in names)
        out["sum_sig"] = "".join(", " + array_type(dt, len(s), True) for _, s in self.sums)
        out["sum_init"] = "".join(f"    {r}[:] = 0\n" for r in names)
        out["sum_add"] = "".join(f"            {r}[j] = np.{dt}({r}[j] + c[i, j])\n"
                                 for r in names)
        out["sum_end"] = ""
        return out

    def cuda_fields(self) -> dict:
        """The text a CUDA source template places, as :meth:`fields` (``C`` the C type):
        ``in_params`` (the matrix's or the folded inputs' pointers), ``read0``/``readj``,
        ``sum_params`` (after ``, ``), ``sum_init``/``sum_add`` (lines in the loop over the
        rows, each thread's own) and ``sum_end`` (after it: the threads' parts of the total
        added in thread order in float64, then divided by the row count; each column of a
        sum added by one thread, row after row, in the value's dtype)."""
        c = CTYPES[self.dtype]
        out = {"C": c, "in_params": f"const {c}* z", "read0": "z[i * k]",
               "readj": "z[i * k + j]", "sum_params": "", "sum_init": "", "sum_add": "",
               "sum_end": ""}
        if self.inputs:
            out.update(in_params=", ".join(f"const {c}* f{j}" for j in range(len(self.inputs))),
                       read0=self.cuda_read.replace("@", "0"),
                       readj=self.cuda_read.replace("@", "j"))
        if self.total is not None:
            if not self.mean:
                raise ValueError("a device kernel folds a mean only")
            return {**out, "sum_params": f", {c}* tot", "sum_init": "double acc = 0.0;",
                    "sum_add": "acc += (double)out[i];", "sum_end": _CUDA_MEAN}
        names = [f"r{j}" for j in range(len(self.sums))]
        out["sum_params"] = "".join(f", {c}* {r}" for r in names)
        if names:
            out["sum_end"] = _CUDA_COLUMNS.format(
                adds=" ".join(f"{r}[j] = a{r};" for r in names),
                init=" ".join(f"T a{r} = (T)0;" for r in names),
                loop=" ".join(f"a{r} = a{r} + c[i * k + j];" for r in names))
        return out


_CUDA_MEAN = """__shared__ double part[1024];  // (a block has at most 1024 threads)
    part[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (unsigned int j = 0; j < blockDim.x; ++j) {
            s += part[j];
        }
        tot[0] = (T)(s / (double)n);
    }"""
_CUDA_COLUMNS = """__syncthreads();  // (the block's writes of c are seen by all its threads)
    for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
        {init}
        for (long long i = 0; i < n; ++i) {{
            {loop}
        }}
        {adds}
    }}"""


class Folded(NamedTuple):
    """An op's kernel with a :class:`Fold`: the program's kernel list holds it in the
    kernel's place (its ``source`` takes the fold, its ``call`` the fold's arguments)."""

    kernel: Any
    fold: Fold

    def source(self, name: str) -> str:
        return self.kernel.source(name, fold=self.fold)

    def cuda(self, name: str) -> str:
        """The device program's kernel (``NativeKernel.cuda``) with the fold."""
        return self.kernel.cuda(name, self.fold)

    def describe(self) -> str:
        what = [w for w, f in (("its input's elementwise step", self.fold.inputs),
                               ("its value's sum", self.fold.total),
                               ("its columns' sums", self.fold.sums)) if f]
        return f"an op's own kernel, with {' and '.join(what)}"


def call(env: dict, name: str, *args: Any) -> list:
    """The lines calling the op's kernel ``name`` of the program whose ``env`` this is:
    ``args`` as its ``NativeKernel.call`` takes them (forward ``o, dst, saved, bufs``,
    the buffer of a folded total last among ``bufs``; backward ``c, C`` and then the
    buffers of the folded sums)."""
    kernel = dict(env["KERNELS"])[name]
    if not isinstance(kernel, Folded):
        return kernel.call(name, *args)
    fold, lines, kw = kernel.fold, [], {}
    if fold.inputs:
        kw["reads"] = ", ".join(n if n in env["PLANNED"] else f"np.ascontiguousarray({n})"
                                for n, _, _ in fold.inputs)
    if fold.total is not None:  # (planned: the step's values all are, but a device's mean)
        o, dst, saved, bufs = args
        args = (o, dst, saved, bufs[:-1])
        env[f"D_{name}"] = np.dtype(fold.dtype)
        lines.append(f"{fold.total} = np.empty((), D_{name})" if fold.mean else
                     f"{fold.total} = {bufs[-1]}")  # (a device's mean: a new one each run)
        kw["writes"] = f", {fold.total}"
    elif fold.sums:
        args, bufs = args[:-len(fold.sums)], args[-len(fold.sums):]
        for k, ((m, shape), b) in enumerate(zip(fold.sums, bufs)):
            env[f"S_{name}_{k}"], env[f"D_{name}"] = shape, np.dtype(fold.dtype)
            lines.append(f"{m} = {b}" if b != "None" else f"{m} = np.empty(S_{name}_{k}, "
                         f"D_{name})")
        kw["writes"] = "".join(f", {m}" for m, _ in fold.sums)
    return lines + kernel.kernel.call(name, *args, **kw)


def fold(prog: list, n_forward: int, info: dict, keep: set, env: dict) -> tuple[list, int]:
    """``prog`` with the steps that fold into its ops' kernels folded (their kernels, in
    ``env["KERNELS"]``, become :class:`Folded`), and the new length of its forward block.
    ``info``: (shape, dtype) of the program's leaves; ``keep``: the values handed back."""
    values = env.get("OP_VALUES", {})
    kernels = env["KERNELS"]
    info = dict(info)
    for ins in prog:
        info.update((n, (s, d)) for n, s, d in ins.defines if s is not None)
    where = None
    for j, (name, kernel) in enumerate(kernels):
        rows = kernel.rows if isinstance(kernel, lower.NativeKernel) else None
        if rows is None or name not in values:
            continue
        at = _at(prog, values[name])
        if where is None:
            where = plan.assign(prog, keep)[0]
        if at is None or not all(n in where for n, *_ in prog[at].defines):
            continue  # (a value not planned: the step's NumPy code runs)
        dt = np.dtype(prog[at].defines[0][2]).name
        made = None
        total = functools.partial(_total, device=env.get("DEVICE", False))
        for step in (_sums,) if rows is True else (_prologue, total):
            got = step(prog, _at(prog, values[name]), rows, info, keep, made or Fold(dt))
            if got is not None:
                prog, made, gone = got
                n_forward -= gone is not None and gone < n_forward
        if made is not None:
            kernels[j] = (name, Folded(kernel, made))
    return prog, n_forward


def _at(prog: list, value: str) -> int | None:
    return next((k for k, ins in enumerate(prog) if any(n == value for n, *_ in ins.defines)),
                None)


def _prologue(prog: list, at: int, x: str, info: dict, keep: set, made: Fold) -> tuple | None:
    """Fold the step making ``x`` (read by ``prog[at]`` alone) into ``prog[at]``: ``(prog,
    fold, index of the step)``, or None."""
    j = next((k for k in range(at) if any(n == x for n, *_ in prog[k].defines)), None)
    if j is None or x in keep or sum(x in ins.reads for ins in prog) != 1:
        return None
    step = prog[j]
    shape, dtype = info.get(x, (None, None))
    if step.scalar is None or len(step.defines) != 1 or shape is None or len(shape) != 2 \
            or np.dtype(dtype).name not in fuse.FLOATS:
        return None
    dt = np.dtype(dtype).name
    inputs, spelt, loads = [], {}, {}
    for n in sorted(set(fuse._names(step.scalar))):
        s, d = info.get(n, (None, None))
        kind = fuse._kind(s, shape) if s is not None else ""
        if kind not in ("full", "tail") or np.dtype(d) != np.dtype(dtype):
            return None
        k = len(inputs)
        inputs.append((n, kind, len(s)))
        spelt[n] = f"f{k}[i, @]" if kind == "full" else \
            f"f{k}[{', '.join(['0'] * (len(s) - 1) + ['@'])}]"
        loads[c_name(n)] = f"f{k}[i * k + @]" if kind == "full" else f"f{k}[@]"
    w = _Writer(dt, spelt)
    read = w.expr(step.scalar)
    if w.lines:  # an exp (its overflow test): left as it is
        return None
    consts = tuple(f"{k} = np.{d}(float.fromhex({float(v).hex()!r}))"
                   for k, (d, v) in sorted(w.consts.items()))
    op = prog[at]
    reads = [n for n in op.reads if n != x]
    reads += [n for n, _, _ in inputs if n not in reads]
    tag = " | ".join(t for t in (step.tag, op.tag) if t)
    new = dataclasses.replace(op, reads=reads, tag=f"folded 2: {tag}" if tag else "")
    cuda_read = re.sub(r"\bv_\w+", lambda m: loads[m.group(0)], cuda(step.scalar))
    return prog[:j] + prog[j + 1:at] + [new] + prog[at + 1:], \
        made._replace(inputs=tuple(inputs), read=read, consts=consts, cuda_read=cuda_read), j


def _sums(prog: list, at: int, rows: Any, info: dict, keep: set, made: Fold) -> tuple | None:
    """Fold the sums of the columns of the value ``prog[at]`` writes into it: ``(prog,
    fold, index of the sum)``, or None."""
    c, shape, dtype = prog[at].defines[0]
    if shape is None or len(shape) != 2 or np.dtype(dtype).name not in fuse.FLOATS:
        return None
    for k in range(at + 1, len(prog)):
        ins = prog[k]
        if ins.rows != c or len(ins.defines) != 1:
            continue
        name, s, d = ins.defines[0]
        if s is None or math.prod(s) != shape[-1] or tuple(s)[-1:] != tuple(shape)[-1:] \
                or np.dtype(d) != np.dtype(dtype) \
                or any(name in prog[i].reads for i in range(at + 1, k)):
            continue
        op = dataclasses.replace(prog[at], defines=[*prog[at].defines, (name, s, d)])
        return prog[:at] + [op] + prog[at + 1:k] + prog[k + 1:], \
            made._replace(sums=((name, tuple(s)),)), k
    return None


def _total(prog: list, at: int, rows: Any, info: dict, keep: set, made: Fold,
           device: bool = False) -> tuple | None:
    """Fold the whole sum of the vector ``prog[at]`` writes first (a mean of the losses,
    ``Instr.total``) into it, added in float64: ``(prog, fold, None)``, or None. The
    kernel writes the sum into a 1-element buffer, which the reader's rest reads. On a
    ``device`` (where reading that sum would wait for it) the kernel writes the reader's
    value itself, a mean: ``(prog without the reader, fold, index of the reader)``."""
    v, shape, _ = prog[at].defines[0]
    k = next((k for k in range(at + 1, len(prog)) if prog[k].total is not None
              and prog[k].total[0] == v), None)
    if k is None or shape is None or len(shape) != 1 or v in keep \
            or sum(v in ins.reads for ins in prog) != 1 or len(prog[k].defines) != 1:
        return None
    reader, rest = prog[k], prog[k].total[1]
    if device:
        if prog[k].total[2:] != ("mean",):
            return None
        o = reader.defines[0][0]
        op = dataclasses.replace(prog[at], defines=[*prog[at].defines, reader.defines[0]])
        return prog[:at] + [op] + prog[at + 1:k] + prog[k + 1:], \
            made._replace(total=o, mean=True), k
    t = f"sum_{v}"
    op = dataclasses.replace(prog[at], defines=[*prog[at].defines, (t, (1,), np.float64)])
    o = reader.defines[0][0]
    new = dataclasses.replace(reader, reads=[t], total=None, inplace={}, temps=[],
                              emit=lambda outs, temps: [f"s_ = {t}[0]", *rest(o, "s_")])
    return prog[:at] + [op] + prog[at + 1:k] + [new] + prog[k + 1:], made._replace(total=t), \
        None
