"""CuPy fast paths: fused elementwise kernels that replace several launches with one.

Each kernel is an optional override of a portable rule, registered for the "cupy" backend
only and tested against that rule on the GPU (tests/test_cuda.py). Kernels compile on first
use; nothing here imports CuPy until a CuPy array arrives, so the CPU never needs it.

- sigmoid forward: ``exp(-|x|)``, one division and a select, in one launch (the portable
  rule takes five); backward ``g * s * (1 - s)`` in one launch.
- optimizer updates (``sgd_update``, ``adam_update``): one in-place launch per parameter,
  used by gpugrad.optim on CuPy arrays.
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
        sgd = cupy.ElementwiseKernel(
            "T g, T lr, T momentum, T weight_decay, bool nesterov, bool first",
            "T p, T buf",
            """
            T d = g + weight_decay * p;
            if (momentum != (T)0) {
                buf = first ? d : momentum * buf + d;
                d = nesterov ? d + momentum * buf : buf;
            }
            p = p - lr * d;
            """,
            "gpugrad_sgd_update")
        sgd_plain = cupy.ElementwiseKernel(
            "T g, T lr, T weight_decay", "T p", "p = p - lr * (g + weight_decay * p)",
            "gpugrad_sgd_plain_update")
        adam = cupy.ElementwiseKernel(
            "T g, T lr, T b1, T b2, T eps, T weight_decay, T bc1, T bc2, bool decoupled",
            "T p, T m, T v",
            """
            T d = g;
            if (weight_decay != (T)0) {
                if (decoupled) { p = p * ((T)1 - lr * weight_decay); }
                else { d = d + weight_decay * p; }
            }
            m = b1 * m + ((T)1 - b1) * d;
            v = b2 * v + ((T)1 - b2) * d * d;
            p = p - (lr / bc1) * (m / (sqrt(v) / bc2 + eps));
            """,
            "gpugrad_adam_update")

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


def sgd_update(p: Any, g: Any, buf: Any, lr: float, momentum: float, weight_decay: float,
               nesterov: bool, first: bool) -> None:
    """In place: p (and the momentum buffer, None without momentum) after one SGD step, in
    one launch."""
    dt = p.dtype.type
    if buf is None:
        _kernels().sgd_plain(g, dt(lr), dt(weight_decay), p)
    else:
        _kernels().sgd(g, dt(lr), dt(momentum), dt(weight_decay), nesterov, first, p, buf)


def adam_update(p: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float, eps: float,
                weight_decay: float, bc1: float, bc2: float, decoupled: bool) -> None:
    """In place: p, m and v after one Adam/AdamW step (bias corrections precomputed:
    bc1 = 1 - b1**t, bc2 = sqrt(1 - b2**t)), in one launch."""
    dt = p.dtype.type
    _kernels().adam(g, dt(lr), dt(b1), dt(b2), dt(eps), dt(weight_decay), dt(bc1), dt(bc2),
                    decoupled, p, m, v)
