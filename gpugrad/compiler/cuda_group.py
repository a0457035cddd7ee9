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
import math
import re
from typing import Any

from ..ops.cuda import OPTIONS, Source
from ..scalar_formula import c_name, cuda
from .fuse import Group

__all__ = ["OPTIONS", "elementwise", "launches", "module_source", "raw_source"]

CTYPES = {"float32": "float", "float64": "double"}


def kernel_name(name: str) -> str:
    """The CUDA name of the program's kernel ``name`` (``N0`` -> ``gpugrad_N0``)."""
    return f"gpugrad_{name}"


def out_name(value: str) -> str:
    """The C name of the output parameter that stores member ``value``."""
    return f"o_{value}"


def _body(group: Group, sum_at: str) -> list:
    """The statements of one element: a ``const T`` per member, then each output's store
    into its parameter, then each sum's atomic add (at ``sum_at``, a pointer expression)."""
    lines = [f"const T {c_name(m)} = {cuda(node)};" for m, node in group.members]
    tail = group.tail()
    adds = [f"atomicAdd(&{sum_at.format(m=m)}[i % {tail}], {c_name(what)});"
            for m, what, _ in group.sums]
    return lines + [f"{out_name(m)} = {c_name(m)};" for m in group.outputs] + adds


def elementwise(group: Group, name: str) -> Source:
    """The ``ElementwiseKernel`` of ``group``: ``cupy.ElementwiseKernel(*src, options=
    OPTIONS)``, called with the inputs in ``group.inputs``' order (arrays of the group's
    dtype, broadcast by CuPy; numbers as Python floats), then the output arrays."""
    _check(group)
    ins = ", ".join(f"T {c_name(n)}" for n, _ in group.inputs)
    outs = ", ".join([f"T {out_name(m)}" for m in group.outputs]
                     + [f"raw T {sum_name(m)}" for m, _, _ in group.sums])
    return Source(ins, outs, " ".join(_body(group, sum_name("{m}"))), kernel_name(name))


def sum_name(value: str) -> str:
    """The C name of the parameter a sum is added into (zeroed by the caller: a kernel's
    threads add into it at once)."""
    return f"q_{value}"


def _load(group: Group, n: str, shape: Any) -> str:
    kind = group.kind(shape)
    if kind == "full":
        return f"p_{n}[i]"
    if kind == "tail":
        return f"p_{n}[i % {math.prod(shape)}]"
    return f"p_{n}[0]"  # "one": a single element of any shape


def raw_source(group: Group, name: str) -> str:
    """The complete CUDA source of ``group``'s kernel for C-contiguous arrays: arguments
    the input pointers (a number by value), the output pointers and the element count
    ``n``; one thread an element, in a grid-stride loop as CuPy's kernels are."""
    _check(group)
    ctype = CTYPES[group.dtype.name]
    params, loads = [], []
    for n, shape in group.inputs:
        if shape is None:
            params.append(f"const {ctype} {c_name(n)}")
            continue
        params.append(f"const {ctype}* p_{n}")
        loads.append(f"const T {c_name(n)} = {_load(group, n, shape)};")
    params += [f"{ctype}* p_{m}" for m in group.outputs]
    params += [f"{ctype}* {sum_name(m)}" for m, _, _ in group.sums]
    stores = [f"p_{m}[i] = {out_name(m)};" for m in group.outputs]
    body = loads + [f"T {out_name(m)};" for m in group.outputs] + _body(
        group, sum_name("{m}")) + stores
    return kernel_text(name, params, ctype, body)


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
    call: a NumPy ufunc or reduction, a fancy-indexed read or update, an arithmetic
    expression, a registered rule's call, a parameter's optimizer update, each counted once
    though a rule may launch more)
    and ``total``. The body of an ``if`` (a rare recovery path, an overflow report) is not
    counted; its test is.

    >>> launches("def program():\\n    p = np.dot(a, b, B0)\\n    if N0(p, c):\\n"
    ...          "        overflow()\\n    s_ = np.add.reduce(p, axis=None)\\n")
    {'groups': 1, 'native': 0, 'blas': 1, 'other': 1, 'total': 3}
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
                and node.slice.elts:
            counts["other"] += 1  # a gather (an integer-array index; ``[()]`` reads a 0-d)
        elif isinstance(node, ast.BinOp):
            counts["other"] += 1  # ``seed_ / 32.0``: a kernel on device arrays
        todo.extend(ast.iter_child_nodes(node))
    del counts["none"]
    counts["total"] = counts["groups"] + counts["native"] + counts["blas"] + counts["other"]
    return counts


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
