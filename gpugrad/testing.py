"""Gradient checking against float64 central differences, in the spirit of the tutorial.

>>> import numpy as np, gpugrad as gg
>>> x = np.array([0.5, -1.0, 2.0])
>>> gg.testing.check_grad(lambda t: gg.sum(gg.tanh(t) * t), x)
>>> gg.testing.check_gradgrad(lambda t: gg.sum(gg.tanh(t) * t), x)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import backend as B
from .functional import vjp
from .ops.shape import concat, reshape
from .tensor import Tensor, Variable

TOLERANCES = {"float64": (1e-5, 1e-5), "float32": (2e-3, 2e-3), "float16": (1e-2, 1e-2)}
"""Per-dtype (rtol, atol): the one table gradient checks read."""

FULL_JACOBIAN_MAX = 64


class GradCheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def _tolerance(dtype: Any) -> tuple[float, float]:
    return TOLERANCES.get(B.dtype_name(dtype), TOLERANCES["float32"])


def _scalar_output(fn: Callable, args: list, weights: np.ndarray | None) -> Tensor:
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"check_grad: fn must return a Tensor, got {type(out).__name__}")
    return out


def check_grad(fn: Callable[..., Any], *inputs: Any, eps: float = 1e-6, rtol: float | None = None,
               atol: float | None = None, seed: int = 0, wrt: Any = None) -> None:
    """Compare ``fn``'s analytic gradients with float64 central differences.

    ``inputs`` are backend arrays, host arrays or Tensors; floating ones are differentiated
    (or only the positions in ``wrt``). ``fn`` gets Tensors and returns a Tensor. For inputs
    and outputs of at most 64 elements every Jacobian entry is checked; above that, one random
    direction per input against random output weights. Raises GradCheckError naming the
    input, the largest error and where it occurred. Complex inputs or outputs go to
    ``check_grad_complex``.
    """
    rng = np.random.default_rng(seed)
    b = B.current()
    arrays = [B.to_backend(a.data if isinstance(a, Tensor) else a, None, b) for a in inputs]
    xp = B.namespace_of(arrays[0])
    if any(B.is_complex(xp, a.dtype) for a in arrays) or B.is_complex(
            xp, fn(*[Tensor(a) for a in arrays]).dtype):  # real inputs, complex output (rfft)
        return check_grad_complex(fn, *arrays, eps=eps, rtol=rtol, atol=atol, wrt=wrt)
    positions = [i for i, a in enumerate(arrays) if B.is_floating(xp, a.dtype)]
    if wrt is not None:
        positions = [wrt] if isinstance(wrt, int) else list(wrt)
    dtype = arrays[positions[0]].dtype if positions else None
    r_tol, a_tol = _tolerance(dtype)
    rtol = r_tol if rtol is None else rtol
    atol = a_tol if atol is None else atol

    def evaluate(arrs: list) -> np.ndarray:
        args = [Tensor(a) for a in arrs]
        return B.to_numpy(_scalar_output(fn, args, None).data).astype(np.float64)

    def like(host: np.ndarray, ref: Any) -> Any:
        return xp.asarray(host.astype(B.dtype_name(ref.dtype)), device=B.device_of(ref))

    out0 = evaluate(arrays)
    out_size = out0.size
    weights = rng.standard_normal(out0.shape) if out_size > FULL_JACOBIAN_MAX else None
    # analytic: one backward per output row (small), or one weighted backward (large)
    rows = [np.eye(out_size)[r].reshape(out0.shape) for r in range(out_size)] \
        if weights is None else [weights]
    analytic = {i: [] for i in positions}
    for seed_row in rows:
        args = [Variable(a) if i in positions else Tensor(a) for i, a in enumerate(arrays)]
        out = fn(*args)
        if not out.requires_grad:
            raise GradCheckError("check_grad: the output does not depend on any input")
        out.backward(grad=like(seed_row, out.data))
        for i in positions:
            g = args[i].grad
            if g is None:
                g = np.zeros(arrays[i].shape)
            else:
                _check_meta(g, arrays[i], i)
                g = B.to_numpy(g).astype(np.float64)
            analytic[i].append(g)
    for i in positions:
        x0 = B.to_numpy(arrays[i]).astype(np.float64)
        n = x0.size
        if n <= FULL_JACOBIAN_MAX and weights is None:
            num = np.zeros((out_size, n))
            for j in range(n):
                d = np.zeros(n)
                d[j] = eps
                num[:, j] = _central(evaluate, arrays, i, x0, d.reshape(x0.shape), eps, like)
            ana = np.stack([g.reshape(-1) for g in analytic[i]]) if out_size else num
            _compare(ana, num, rtol, atol, i, "Jacobian entry (output, input)", x0.shape)
        else:
            v = rng.standard_normal(x0.shape)
            w = weights if weights is not None else None
            num = _central(evaluate, arrays, i, x0, v * eps, eps, like)
            if w is None:
                num_dir = num.reshape(out_size)  # one column per output row
                ana_dir = np.array([np.sum(g * v) for g in analytic[i]])
            else:
                num_dir = np.array([np.sum(num.reshape(w.shape) * w)])
                ana_dir = np.array([np.sum(analytic[i][0] * v)])
            _compare(ana_dir[None, :], num_dir[None, :], rtol, atol, i,
                     "directional derivative", x0.shape)


def check_grad_complex(fn: Callable[..., Any], *inputs: Any, eps: float = 1e-6,
                       rtol: float | None = None, atol: float | None = None,
                       wrt: Any = None) -> None:
    """``check_grad`` for complex inputs or outputs, with PyTorch's convention: for a real
    loss L of z = x + iy, ``z.grad`` is dL/dx + i dL/dy.

    Each output entry k is seeded with v = e_k, and for a complex output also with v = i e_k;
    the seed v stands for the real loss L = Re(sum(conj(v) * out)). The numeric gradient
    perturbs the real and the imaginary part of every input entry (the real part only for a
    real input) by central differences. Every entry is checked, so keep inputs small.

    >>> import numpy as np, gpugrad as gg
    >>> z = np.array([1.0 + 2.0j, -0.5 + 0.25j])
    >>> gg.testing.check_grad_complex(lambda t: gg.exp(t) * t, z)
    """
    b = B.current()
    arrays = [B.to_backend(a.data if isinstance(a, Tensor) else a, None, b) for a in inputs]
    xp = B.namespace_of(arrays[0])
    positions = [i for i, a in enumerate(arrays) if B.is_inexact(xp, a.dtype)]
    if wrt is not None:
        positions = [wrt] if isinstance(wrt, int) else list(wrt)
    real_name = B.dtype_name(arrays[positions[0]].dtype).replace("complex128", "float64")
    r_tol, a_tol = _tolerance(real_name.replace("complex64", "float32"))
    rtol = r_tol if rtol is None else rtol
    atol = a_tol if atol is None else atol

    def evaluate(arrs: list) -> np.ndarray:
        return B.to_numpy(fn(*[Tensor(a) for a in arrs]).data).astype(np.complex128)

    def like(host: np.ndarray, ref: Any) -> Any:
        return xp.asarray(host.astype(B.dtype_name(ref.dtype)), device=B.device_of(ref))

    out_dtype = fn(*[Tensor(a) for a in arrays]).dtype
    out0 = evaluate(arrays)
    seeds = [np.eye(out0.size)[k].reshape(out0.shape) for k in range(out0.size)]
    if B.is_complex(xp, out_dtype):
        seeds += [1j * s for s in seeds]
    for i in positions:
        is_c = B.is_complex(xp, arrays[i].dtype)
        x0 = B.to_numpy(arrays[i]).astype(np.complex128 if is_c else np.float64)
        parts = (1.0, 1j) if is_c else (1.0,)
        ana = np.zeros((len(seeds), x0.size), np.complex128)
        for r, v in enumerate(seeds):
            args = [Variable(a) if j in positions else Tensor(a) for j, a in enumerate(arrays)]
            out = fn(*args)
            out.backward(grad=like(v, out.data))
            g = args[i].grad
            if g is not None:
                _check_meta(g, arrays[i], i)
                ana[r] = B.to_numpy(g).astype(np.complex128).reshape(-1)
        num = np.zeros_like(ana)
        for j in range(x0.size):
            for part in parts:
                d = np.zeros(x0.size, x0.dtype)
                d[j] = eps * part
                plus, minus = list(arrays), list(arrays)
                plus[i] = like(x0 + d.reshape(x0.shape), arrays[i])
                minus[i] = like(x0 - d.reshape(x0.shape), arrays[i])
                dout = ((evaluate(plus) - evaluate(minus)) / (2 * eps)).reshape(-1)
                for r, v in enumerate(seeds):
                    num[r, j] += part * np.sum(np.conj(v.reshape(-1)) * dout).real
        for what, a, n in (("real part", ana.real, num.real), ("imaginary part", ana.imag,
                                                                num.imag)):
            _compare(a, n, rtol, atol, i, f"Jacobian entry (seed, input), {what}", x0.shape)


def check_gradgrad(fn: Callable[..., Any], *inputs: Any, eps: float = 1e-6,
                   rtol: float | None = None, atol: float | None = None, seed: int = 0) -> None:
    """Check ``fn``'s second derivatives: its VJP ``(x, g) -> g @ J(x)``, computed with
    ``backward(create_graph=True)``'s machinery, must pass ``check_grad`` in both ``x`` and
    ``g``.

    ``g`` is a random cotangent of the output's shape; floating inputs are differentiated,
    integer ones (indices) are held fixed. An empty output has nothing to check. Run it in
    float64.

    >>> import numpy as np, gpugrad as gg
    >>> gg.testing.check_gradgrad(lambda t: gg.tanh(t) * t, np.array([0.5, -1.0]))
    """
    rng = np.random.default_rng(seed)
    b = B.current()
    arrays = [B.to_backend(a.data if isinstance(a, Tensor) else a, None, b) for a in inputs]
    xp = B.namespace_of(arrays[0])
    positions = [i for i, a in enumerate(arrays) if B.is_inexact(xp, a.dtype)]
    out0 = fn(*[Tensor(a) for a in arrays])
    if 0 in tuple(out0.shape):
        return  # no cotangent entries: the VJP is identically zero
    host = rng.standard_normal(tuple(out0.shape)).astype(B.dtype_name(out0.dtype))
    g0 = xp.asarray(host, device=B.device_of(out0.data)) if xp is not np else host

    def vjp_of_fn(*args: Tensor) -> Tensor:
        xs, g = list(args[:-1]), args[-1]

        def at(*diff: Tensor) -> Any:
            full = list(xs)
            for i, d in zip(positions, diff):
                full[i] = d
            return fn(*full)

        grads = vjp(at, *[xs[i] for i in positions])[1](g)
        return concat([reshape(gi, shape=(-1,)) for gi in grads], axis=0)

    check_grad(vjp_of_fn, *arrays, g0, eps=eps, rtol=rtol, atol=atol, seed=seed)


def _central(evaluate: Callable, arrays: list, i: int, x0: np.ndarray, d: np.ndarray,
             eps: float, like: Callable) -> np.ndarray:
    plus, minus = list(arrays), list(arrays)
    plus[i] = like(x0 + d, arrays[i])
    minus[i] = like(x0 - d, arrays[i])
    return ((evaluate(plus) - evaluate(minus)) / (2 * eps)).reshape(-1)


def _check_meta(g: Any, x: Any, i: int) -> None:
    if tuple(g.shape) != tuple(x.shape) or g.dtype != x.dtype:
        raise GradCheckError(
            f"check_grad: gradient of input {i} has shape {tuple(g.shape)} dtype "
            f"{B.dtype_name(g.dtype)}, but the input has shape {tuple(x.shape)} dtype "
            f"{B.dtype_name(x.dtype)}"
        )
    if B.device_of(g) != B.device_of(x):
        raise GradCheckError(
            f"check_grad: gradient of input {i} is on device {B.device_of(g)}, input on "
            f"{B.device_of(x)}"
        )


def _compare(ana: np.ndarray, num: np.ndarray, rtol: float, atol: float, i: int, what: str,
             shape: tuple) -> None:
    err = np.abs(ana - num)
    bound = atol + rtol * np.abs(num)
    bad = ~(err <= bound)
    if bad.any():
        excess = np.where(np.isnan(err), np.inf, err - bound)
        k = np.unravel_index(int(np.argmax(excess)), err.shape)
        raise GradCheckError(
            f"check_grad: input {i} (shape {shape}): {int(bad.sum())} of {bad.size} values "
            f"disagree; largest error {err[k]:.3g} at {what} {tuple(int(v) for v in k)}: "
            f"analytic {ana[k]:.6g}, numeric {num[k]:.6g} (rtol {rtol:g}, atol {atol:g})"
        )
