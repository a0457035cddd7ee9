"""CUDA kernels from fusion groups: each group (gpugrad.compiler.fuse) as one kernel,
written from its members' scalar formulas (gpugrad.scalar_formula.cuda), in two forms.

- :func:`elementwise`: the arguments of a CuPy ``ElementwiseKernel`` (the
  :class:`gpugrad.ops.cuda.Source` the per-op kernels use). CuPy broadcasts the inputs
  itself, so a "tail" input (a bias) and a "one" input (a single element, a 0-d gradient)
  are declared like a "full" one; a Python number is a scalar argument of type ``T``. The
  outputs are always passed in (a group whose inputs are all narrower than it, a gradient
  broadcast from a 0-d seed, gives CuPy no shape to allocate them from).
- :func:`raw_source`: the complete kernel CuPy builds around the same ``operation`` (its
  typedef, ``extern "C" __global__`` function, grid-stride loop, the loads and the stores),
  written here for contiguous arrays (a tail input read at ``i % tail``, a single element at
  ``[0]``), so that NVRTC compiles it on a machine without CuPy or a device (the tests) and
  ``cupy.RawKernel`` could launch it.

A group with sums (a bias's gradient: a member summed over the leading axes) is a raw
kernel only, over columns (:func:`columns_text`): one thread a column of the sums (the
group's tail), each walking its column's elements row after row, computing the members and
storing the outputs as it goes, adding the summed values in a register from zero in row
order (the native tier's order, so the same bits where the arithmetic is the same), then
storing each sum once: no atomic adds, no zeroing launch, deterministic.

Each member is one ``const T`` local, in order, computed in registers; the group's outputs
are the only stores. The arithmetic is the group's dtype's (``T`` is ``float`` or
``double``), and with ``--fmad=false`` (:data:`OPTIONS`, as for the per-op kernels) each
``*`` and ``+`` rounds on its own, as NumPy's steps do.

Overflow: as in CuPy's own kernels, nothing reports it (an ``exp`` that overflows gives
``inf`` silently; CUDA has no floating-point error state). The native CPU tier
(gpugrad.compiler.native) instead tells the program when an ``exp`` overflowed, so the
planned program raises or warns as NumPy's error state says; a CuPy run does not.

>>> import numpy as np
>>> from gpugrad.compiler.fuse import Group
>>> g = Group([("v4", ("add", ("name", "p4"), ("name", "b"))),
...            ("v5", ("reciprocal", ("add", ("exp", ("negative", ("name", "v4"))),
...                                   ("const", 1.0))))],
...           (32, 64), np.dtype("float32"), [("p4", (32, 64)), ("b", (64,))], ["v5"])
>>> src = elementwise(g, "N0")
>>> src.in_params, src.out_params, src.name
('T v_p4, T v_b', 'T o_v5', 'gpugrad_N0')
>>> print(src.operation.replace("; ", ";\\n"))
const T v_v4 = (v_p4 + v_b);
const T v_v5 = ((T)1.0 / (exp((-v_v4)) + (T)1.0));
o_v5 = v_v5;
>>> print(raw_source(g, "N0"))  # doctest: +NORMALIZE_WHITESPACE
extern "C" __global__ void gpugrad_N0(const float* p_p4, const float* p_b, float* p_v5,
                                      long long n) {
    typedef float T;
    #pragma unroll 1
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T v_p4 = p_p4[i];
        const T v_b = p_b[i % 64];
        T o_v5;
        const T v_v4 = (v_p4 + v_b);
        const T v_v5 = ((T)1.0 / (exp((-v_v4)) + (T)1.0));
        o_v5 = v_v5;
        p_v5[i] = o_v5;
    }
}
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..ops.cuda import OPTIONS, Source
from ..scalar_formula import CTYPES, c_name, cuda
from .fuse import Group

__all__ = ["OPTIONS", "elementwise", "launches", "module_source", "raw_source"]



def kernel_name(name: str) -> str:
    """The CUDA name of the program's kernel ``name`` (``N0`` -> ``gpugrad_N0``)."""
    return f"gpugrad_{name}"


def out_name(value: str) -> str:
    """The C name of the output parameter that stores member ``value``."""
    return f"o_{value}"


def _body(group: Group) -> list:
    """The statements of one element: a ``const T`` per member, then each output's value
    into its ``o_`` local."""
    lines = [f"const T {c_name(m)} = {cuda(node)};" for m, node in group.members]
    return lines + [f"{out_name(m)} = {c_name(m)};" for m in group.outputs]


def elementwise(group: Group, name: str) -> Source:
    """The ``ElementwiseKernel`` of ``group``: ``cupy.ElementwiseKernel(*src, options=
    OPTIONS)``, called with the inputs in ``group.inputs``' order (arrays of the group's
    dtype, broadcast by CuPy; numbers as Python floats), then the output arrays.

    A group with sums (a bias's gradient) has no such form: an ``ElementwiseKernel`` is one
    thread an element, and a sum taken that way needs atomic adds, in no fixed order. Such a
    group is a :func:`raw_source` kernel only (one thread a column); this raises ValueError.
    """
    _check(group)
    if group.sums:
        raise ValueError("a group with sums is a raw kernel only (cuda_group.raw_source): "
                         "an ElementwiseKernel cannot sum its rows in order")
    ins = ", ".join(f"T {c_name(n)}" for n, _ in group.inputs)
    outs = ", ".join(f"T {out_name(m)}" for m in group.outputs)
    return Source(ins, outs, " ".join(_body(group)), kernel_name(name))


def sum_name(value: str) -> str:
    """The C name of the pointer parameter a sum is stored into (once, by its column's
    thread: nothing needs to zero it)."""
    return f"q_{value}"


def acc_name(value: str) -> str:
    """The C name of the register a column's thread adds a sum's rows into."""
    return f"s_{value}"


def threads(group: Group) -> int | None:
    """The threads ``group``'s kernel is launched over: one a column of its sums (the
    group's tail, the sums' size) where it has sums; else None, one an element (the count
    ``n`` each launch is given)."""
    return group.tail() if group.sums else None


def _load(group: Group, n: str, shape: Any, column: str) -> str:
    kind = group.kind(shape)
    if kind == "full":
        return f"p_{n}[i]"
    if kind == "tail":
        return f"p_{n}[{column}]"
    return f"p_{n}[0]"  # "one": a single element of any shape


def raw_source(group: Group, name: str) -> str:
    """The complete CUDA source of ``group``'s kernel for C-contiguous arrays: arguments
    the input pointers (a number by value), the output pointers, the sums' pointers and the
    element count ``n``. Without sums, one thread an element in a grid-stride loop, as
    CuPy's kernels are; with sums, one thread a column (:func:`columns_text`)."""
    _check(group)
    ctype = CTYPES[group.dtype.name]
    tail = group.tail()
    column = "j" if group.sums else f"i % {tail}"
    params, loads, fixed = [], [], []
    for n, shape in group.inputs:
        if shape is None:
            params.append(f"const {ctype} {c_name(n)}")
            continue
        params.append(f"const {ctype}* p_{n}")
        kind = group.kind(shape)
        load = f"const T {c_name(n)} = {_load(group, n, shape, column)};"
        (fixed if group.sums and kind != "full" else loads).append(load)
    params += [f"{ctype}* p_{m}" for m in group.outputs]
    params += [f"{ctype}* {sum_name(m)}" for m, _, _ in group.sums]
    stores = [f"p_{m}[i] = {out_name(m)};" for m in group.outputs]
    body = loads + [f"T {out_name(m)};" for m in group.outputs] + _body(group)
    if not group.sums:
        return kernel_text(name, params, ctype, body + stores)
    adds = [f"{acc_name(m)} = {acc_name(m)} + {c_name(what)};" for m, what, _ in group.sums]
    return columns_text(name, params, ctype, tail, fixed, body + adds + stores,
                        [(acc_name(m), sum_name(m)) for m, _, _ in group.sums])


def columns_text(name: str, params: list, ctype: str, tail: int, fixed: list, body: list,
                 sums: list) -> str:
    """A kernel ``name`` of ``params`` (made ``__restrict__``: its outputs and sums never
    share an input's memory) and the count ``n``: one thread a column ``j`` of the ``tail``
    columns (grid-stride), which reads ``fixed`` (its column's tail inputs and single
    elements) once, then runs ``body`` for each element ``i`` of its column, row after row
    in order, adding into the registers of ``sums`` ((register, pointer) each, from zero)
    and storing each once after the last row. Adjacent threads read adjacent elements of a
    row (coalesced); each sum is added in one fixed order, the native tier's."""
    params = [p.replace("* ", "* __restrict__ ") for p in params]
    return "\n".join([
        f'extern "C" __global__ void {kernel_name(name)}({", ".join(params)}, long long n) {{',
        f"    typedef {ctype} T;",
        "    #pragma unroll 1",
        f"    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < {tail};",
        "         j += (long long)blockDim.x * gridDim.x) {",
        *("        " + line for line in fixed),
        *(f"        T {acc} = (T)0;" for acc, _ in sums),
        "        #pragma unroll 4",
        f"        for (long long i = j; i < n; i += {tail}) {{",
        *("            " + line for line in body),
        "        }",
        *(f"        {ptr}[j] = {acc};" for acc, ptr in sums),
        "    }",
        "}",
        ""])


def kernel_text(name: str, params: list, ctype: str, body: list) -> str:
    """A kernel ``name`` of ``params`` and the count ``n``, running ``body`` (lines, in
    type ``T``, ``ctype``) for each element ``i`` in a grid-stride loop."""
    return "\n".join([
        f'extern "C" __global__ void {kernel_name(name)}({", ".join(params)}, long long n) {{',
        f"    typedef {ctype} T;",
        "    #pragma unroll 1",
        "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
        "         i += (long long)blockDim.x * gridDim.x) {",
        *("        " + line for line in body),
        "    }",
        "}",
        ""])


def module_source(kernels: list) -> str:
    """One CUDA translation unit with the kernel of every ``(name, Group)`` of a program
    (its ``kernels``): what NVRTC compiles at once, or ``cupy.RawModule`` loads."""
    return "\n".join(raw_source(g, n) for n, g in groups_of(kernels))


def groups_of(kernels: list) -> list:
    """The fusion groups among a program's kernels (``(name, Group)``; the others, an
    optimizer's update and an op's own kernel, are the native tier's alone for now)."""
    return [(n, g) for n, g in kernels if isinstance(g, Group)]


_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check(group: Group) -> None:
    """A group this writer can express: a float dtype, value names that are C identifiers
    (never CuPy's own ``i`` or ``_``-names), every input readable at the group's shape."""
    if group.dtype.name not in CTYPES:
        raise TypeError(f"a CUDA group kernel runs float32 or float64, not {group.dtype}")
    for n in [n for n, _ in group.inputs] + [m for m, _ in group.members]:
        if not _IDENT.match(n):
            raise ValueError(f"{n!r} is not a C identifier")
    for n, shape in group.inputs:
        if not group.kind(shape):
            raise ValueError(f"input {n} of shape {shape} is not readable at {group.shape}")


# --- what a program would launch on a device ------------------------------------------------

BLAS = frozenset({"dot", "matmul", "vdot", "tensordot", "einsum", "inner", "outer"})
"""NumPy functions of a planned program that are a BLAS call on a device (cuBLAS)."""
NO_LAUNCH = frozenset({"array", "asarray", "empty", "ascontiguousarray", "isfinite",
                       "broadcast_to", "reshape"})
"""NumPy calls of a planned program that launch no kernel on a device: a host 0-d array,
allocations, views and the host-side finiteness test of a sum."""
FILLS = frozenset({"fill"})
"""Methods of an array that write it on a device (a memset: a launch)."""
_KERNEL_CALL = re.compile(r"^N\d+$")
_NATIVE_CALL = re.compile(r"^(NU|NX\d+)$")  # an update or an op's own native kernel
_RULE_CALL = re.compile(r"^([FR]\d+(_\d+)?|acc)$")  # a registered rule, a sum of gradients


def launches(source: str) -> dict:
    """What the planned program whose generated ``source`` this is would launch on a
    device per run, counted from its calls (computed, not measured): ``groups``
    (fusion-group kernels, ``N0(...)``), ``native`` (a kernel the native tier has and
    CUDA has not yet: an op's own, ``NX0``, one launch if made for CUDA; and the one
    update of every parameter, ``NU``, which a device program launches as one CUDA kernel,
    gpugrad.compiler.cuda_update), ``blas`` (products), ``other`` (every other array
    call: a NumPy ufunc or reduction, a fill (``a.fill(0)``, ``np.zeros``, ``full_like``:
    a memset or a kernel on a device), a fancy-indexed read or update, an arithmetic
    expression, a registered rule's call, a parameter's optimizer update, each counted once
    though a rule may launch more)
    and ``total``. The body of an ``if`` (a rare recovery path, an overflow report) is not
    counted; its test is. An allocation (``np.empty``) launches nothing.

    >>> launches("def program():\\n    p = np.dot(a, b, B0)\\n    if N0(p, c):\\n"
    ...          "        overflow()\\n    s_ = np.add.reduce(p, axis=None)\\n"
    ...          "    z = np.empty(S, D)\\n    z.fill(0)\\n")
    {'groups': 1, 'native': 0, 'blas': 1, 'other': 2, 'total': 4}
    >>> launches("def program():\\n    v = x[3, ...]\\n    w = x[AR3, t]\\n")["other"]
    1
    """
    counts = {"groups": 0, "native": 0, "blas": 0, "other": 0, "none": 0}
    todo = list(ast.parse(source).body[0].body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If):
            todo.append(node.test)
            continue
        if isinstance(node, ast.AugAssign):
            counts["other"] += 1  # ``a[idx] -= 1``: one kernel, its subscript with it
            todo.append(node.value)
            continue
        if isinstance(node, ast.Call):
            counts[_call_kind(node)] += 1
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple) \
                and not all(_basic(e) for e in node.slice.elts):
            counts["other"] += 1  # a gather (an integer-array index; ``[()]``, ``x[3, ...]``:
            # a 0-d read, a basic index's view)
        elif isinstance(node, ast.BinOp):
            counts["other"] += 1  # ``seed_ / 32.0``: a kernel on device arrays
        todo.extend(ast.iter_child_nodes(node))
    del counts["none"]
    counts["total"] = counts["groups"] + counts["native"] + counts["blas"] + counts["other"]
    return counts


def _basic(e: ast.AST) -> bool:
    """Whether an index's part is basic (a number, a slice of numbers, ``...``, None)."""
    if isinstance(e, ast.UnaryOp):
        e = e.operand
    if isinstance(e, ast.Slice):
        return all(p is None or _basic(p) for p in (e.lower, e.upper, e.step))
    return isinstance(e, ast.Constant)


def _call_kind(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Subscript):
        return "other"  # ``UF_[0](...)``: a parameter's update (one kernel on a device)
    if isinstance(f, ast.Name):
        if _KERNEL_CALL.match(f.id):
            return "groups"
        if _NATIVE_CALL.match(f.id):
            return "native"
        return "other" if _RULE_CALL.match(f.id) else "none"
    if isinstance(f, ast.Attribute) and f.attr in FILLS and not (
            isinstance(f.value, ast.Name) and f.value.id in ("np", "xp")):
        return "other"  # ``a.fill(0)``: a memset on a device
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if not (isinstance(f, ast.Name) and f.id in ("np", "xp")) or not parts:
        return "none"
    head = parts[-1]  # np.<head>[.reduce ...]
    if head in BLAS:
        return "blas"
    return "none" if head in NO_LAUNCH else "other"
