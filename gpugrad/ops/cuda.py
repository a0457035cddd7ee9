"""CuPy fast paths: fused elementwise kernels that replace several launches with one.

Each kernel is an optional override of a portable rule, registered for the "cupy" backend
only and tested against that rule on the GPU (tests/test_cuda.py). Kernels compile on first
use; nothing here imports CuPy until a CuPy array arrives, so the CPU never needs it.

- sigmoid forward: ``exp(-|x|)``, one division and a select, in one launch (the portable
  rule takes five); backward ``g * s * (1 - s)`` in one launch.
(The optimizers' kernels are generated from their declared formulas: gpugrad.optim_rule.)
"""

from __future__ import annotations

import functools
from typing import Any

from .elementwise import sigmoid


@functools.cache
def _kernels() -> Any:
    import cupy

    class K:
        sigmoid_fwd = cupy.ElementwiseKernel(
            "T x", "T y",
            "T e = exp(-fabs(x)); T r = (T)1 / ((T)1 + e); y = x >= (T)0 ? r : e * r",
            "gpugrad_sigmoid_fwd")
        sigmoid_bwd = cupy.ElementwiseKernel(
            "T g, T s", "T dx", "dx = g * s * ((T)1 - s)", "gpugrad_sigmoid_bwd")
    return K


def _sigmoid_forward_cupy(xp: Any, x: Any) -> tuple:
    if x.dtype.kind == "c":  # the kernel orders values; complex goes the portable way
        return sigmoid.forward(xp, x)
    out = _kernels().sigmoid_fwd(x)
    return out, out


def _sigmoid_vjp_cupy(xp: Any, g: Any, s: Any) -> tuple:
    if s.dtype.kind == "c":  # the portable rule conjugates
        return sigmoid.vjp(xp, g, s)
    return (_kernels().sigmoid_bwd(g, s),)


sigmoid.def_fast_path("cupy", forward=_sigmoid_forward_cupy, vjp=_sigmoid_vjp_cupy)


def is_cupy_array(a: Any) -> bool:
    module = type(a).__module__
    return module == "cupy" or module.startswith("cupy.")
