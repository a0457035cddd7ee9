"""The optimizer's update of every parameter of a device program as one CUDA kernel.

The kernel is written from the element update the optimizer's form writes for CUDA
(gpugrad.optim_rule: ``form.kernel``, the text gpugrad.compiler.native_update compiles for
the native CPU tier): one grid covers the elements of every parameter, laid end to end in
the order of ``opt.params``, and each thread finds its parameter by comparing its index with
their offsets (the parameters' sizes are the program's: they never change). A parameter's
pointer, its gradient's, its states' and its per-step scalars (each a ``double``, turned
into the parameter's type as NumPy turns a Python float) are arguments of the kernel, so a
step copies nothing to the device to launch it.

Where the kernel does not apply (the options changed since the program was built, a first
update that makes the state, a parameter that is not a contiguous array of the dtype) the
step runs ``opt._apply`` as a program without it does: one CuPy kernel per parameter.

>>> u = Update("T n3 = (h2 * G);\\nT n4 = (P - n3);\\nP = n4;", ["h2"], 0, [6, 2], "float32")
>>> src = u.source("NU")
>>> print(src[:src.index("} else")])  # doctest: +NORMALIZE_WHITESPACE
extern "C" __global__ void gpugrad_NU(float* p_P0, const float* p_G0, const double h0_h2,
                                      float* p_P1, const float* p_G1, const double h1_h2,
                                      long long n) {
    typedef float T;
    #pragma unroll 1
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        if (i < 6) {
            const long long k = i - 0;
            T P = p_P0[k];
            const T G = p_G0[k];
            const T h2 = (T)h0_h2;
            T n3 = (h2 * G);
            T n4 = (P - n3);
            P = n4;
            p_P0[k] = P;
<BLANKLINE>
>>> print(src[src.index("} else"):].splitlines()[:3])
['} else {', '            const long long k = i - 6;', '            T P = p_P1[k];']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import cuda_group

ARGUMENT_BYTES = 4000
"""At most this many bytes of kernel arguments (CUDA's limit is 4096): a model with more
parameters keeps one update kernel per parameter."""


class Update:
    """The update of parameters of ``sizes`` elements, all of ``dtype``, by the element
    update ``body`` (``T n4 = (h2 * S0);`` lines, then ``P = n25;``, ``S0 = n8;``) reading
    the per-step scalars ``hoisted`` and ``states`` state arrays of each parameter."""

    def __init__(self, body: str, hoisted: list, states: int, sizes: list, dtype: Any):
        self.body, self.hoisted, self.states = body, list(hoisted), states
        self.sizes, self.dtype = list(sizes), np.dtype(dtype)
        self.total = sum(self.sizes)
        self.form: Any = None  # the optimizer's form and Lowering it was made from (a
        self.low: Any = None  # device program's, see gpugrad.compiler.update)

    @classmethod
    def of_form(cls, form: Any, sizes: list, dtype: Any) -> Update:
        """The update by an optimizer's form (its CUDA parts ``T G, T h2, ...`` in,
        ``T P, T S0, ...`` out, and the body)."""
        return cls(*form.element(), sizes, dtype)

    def fits(self) -> bool:
        """Whether its arguments fit in one launch (:data:`ARGUMENT_BYTES`)."""
        return 8 * (len(self.sizes) * (2 + self.states + len(self.hoisted)) + 1) \
            <= ARGUMENT_BYTES

    def args(self, P: list, G: list, S: list, H: list) -> list:
        """The kernel's arguments but ``n``: each parameter's ``P, G, *S, *H``."""
        out: list = []
        for j in range(len(self.sizes)):
            out += [P[j], G[j], *S[j], *(np.float64(h) for h in H[j])]
        return out

    def source(self, name: str) -> str:
        """Its complete CUDA source: one thread an element of all the parameters, in a
        grid-stride loop, computing the form's lines in the parameters' type."""
        ctype = cuda_group.CTYPES[self.dtype.name]
        params, blocks, start = [], [], 0
        outs = [line.split("=")[0].strip() for line in self.body.splitlines()
                if not line.startswith("T ")]
        for j, size in enumerate(self.sizes):
            params += [f"{ctype}* p_P{j}", f"const {ctype}* p_G{j}",
                       *(f"{ctype}* p_S{j}_{k}" for k in range(self.states)),
                       *(f"const double h{j}_{h}" for h in self.hoisted)]
            last = j == len(self.sizes) - 1
            head = ("if" if j == 0 else "} else if") + f" (i < {start + size}) {{"
            blocks += [head if not last or j == 0 else "} else {",
                       f"    const long long k = i - {start};", f"    T P = p_P{j}[k];",
                       f"    const T G = p_G{j}[k];",
                       *(f"    T S{k} = p_S{j}_{k}[k];" for k in range(self.states)),
                       *(f"    const T {h} = (T)h{j}_{h};" for h in self.hoisted),
                       *("    " + line for line in self.body.splitlines()),
                       *(f"    {_pointer(o, j)}[k] = {o};" for o in outs)]
            start += size
        blocks.append("}")
        return cuda_group.kernel_text(name, params, ctype, blocks)


class Step:
    """A device program's update instruction ``NU(opt, P0, G0, P1, G1, ...)``: the one
    kernel ``run(args, n)`` over every parameter where it applies (``low``: the optimizer's
    gpugrad.optim_in_place.Lowering, ``form`` the form the kernel was made from), else
    ``opt._apply``; ``bump`` counts the step after the kernel (``_apply`` counts its own)."""

    def __init__(self, kernel: Update, run: Any, xp: Any, bump: Any) -> None:
        self.kernel, self.form, self.low, self.run = kernel, kernel.form, kernel.low, run
        self.xp, self.bump = xp, bump

    def _fits(self, a: Any, size: int | None = None) -> bool:
        """Whether the kernel reads and writes ``a`` as it is (of ``size`` where given)."""
        return type(a) is self.xp.ndarray and a.dtype == self.kernel.dtype \
            and a.flags.c_contiguous and (size is None or a.size == size)

    def __call__(self, opt: Any, *pg: Any) -> bool:
        """Update the parameters ``pg[0::2]`` by the gradients ``pg[1::2]``; whether the
        one kernel did it."""
        P, G = pg[0::2], pg[1::2]
        low, xp, dt = self.low, self.xp, self.kernel.dtype
        low.start()
        names = self.form.names
        ok = low.later is self.form and all(map(self._fits, P)) and (
            not names or all(all(self._fits(st.get(k), P[j].size) for k in names)
                             for j, st in enumerate(map(opt.state.__getitem__, opt.params))))
        if not ok:  # a first update, changed options, a parameter or state of its own
            opt._apply(list(zip(opt.params, G)))
            return False
        _, S, H = low.begin()
        G = [g if self._fits(g, p.size) else xp.ascontiguousarray(
            xp.broadcast_to(xp.asarray(g, dtype=dt), p.shape)) for p, g in zip(P, G)]
        self.run(tuple(self.kernel.args(P, G, S, H)), self.kernel.total)
        self.bump(opt)
        return True


def _pointer(out: str, j: int) -> str:
    """The pointer parameter ``j``'s new value ``out`` (``P``, ``S0``, ...) is stored to."""
    return f"p_P{j}" if out == "P" else f"p_S{j}_{out[1:]}"


def sizes_of(shapes: list) -> list:
    """The element counts of parameters of ``shapes``."""
    return [math.prod(s) for s in shapes]
