"""Gradients shaped like their inputs: broadcasting undone in one place, dtypes kept, and the
seed that starts a backward sweep.

Both front ends use these: the eager sweep (gpugrad.eager) and the compiled schedules
(gpugrad.codegen, gpugrad.interpret).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import backend as B
from . import errors as E
from .errors import GradientError
from .tensor import Tensor


def unbroadcast(xp: Any, g: Any, shape: tuple) -> Any:
    """Sum ``g`` down to ``shape``, undoing broadcasting (the one place this happens)."""
    gshape = tuple(g.shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead < 0:
        return xp.broadcast_to(g, shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and gshape[lead + i] != 1
    )
    if xp is np:  # the ufunc method itself: np.sum's Python layers cost more than the sum
        if axes and len(axes) == lead:  # only leading axes (a bias): no reshape afterwards
            g = np.asarray(np.add.reduce(g, axis=axes))
        elif axes:
            g = np.asarray(np.add.reduce(g, axis=axes, keepdims=True))
        if g.shape != shape:
            g = g.reshape(shape) if g.size == _numel(shape) else np.broadcast_to(g, shape)
        return g
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    if tuple(g.shape) != shape:
        g = xp.reshape(g, shape) if _numel(g.shape) == _numel(shape) else xp.broadcast_to(
            g, shape)
    return g


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def fit(xp: Any, g: Any, shape: tuple, dtype: Any) -> Any:
    """Gradient with the input's shape and dtype (broadcasting undone, dtype kept); None for
    an integer or boolean input, which never has a gradient. A real input that gets a complex
    gradient keeps its real part: dL/dx of z = x + iy (see gpugrad.ops.complexes)."""
    if xp is np and type(g) is not np.ndarray:
        g = np.asarray(g)
    if g.shape != shape:
        g = unbroadcast(xp, g, tuple(shape))
    if g.dtype != dtype:
        return cast_gradient(xp, xp, g, dtype)
    return g


def cast_gradient(xp: Any, backend: Any, g: Any, dtype: Any) -> Any:
    """``g`` in the input's ``dtype`` (its real part for a real input); None for an integer
    or boolean input. ``xp`` may be the differentiable namespace, ``backend`` is the one the
    dtypes belong to."""
    if not B.is_inexact(backend, dtype):
        return None
    if B.is_complex(backend, g.dtype) and not B.is_complex(backend, dtype):
        g = xp.real(g)
    return xp.astype(g, dtype)


def as_array(xp: Any, x: Any) -> Any:
    """NumPy turns a 0-d result into a NumPy scalar; wrap it back into an array."""
    return np.asarray(x) if xp is np and type(x) is not np.ndarray else x


def seed_gradient(out: Any, xp: Any, grad: Any, what: str) -> Any:
    """The starting gradient for ``out``: ones for a scalar, else the checked ``grad``."""
    if grad is None:
        if _numel(out.shape) != 1:
            raise GradientError(E.at(
                f"{what}: the output has shape {tuple(out.shape)}, not a scalar; pass a seed "
                "gradient of that shape, e.g. backward(grad=ones), or reduce it first with "
                ".sum() or .mean()"))
        if B.is_complex(xp, out.dtype):
            raise GradientError(E.at(
                f"{what}: the output is complex ({B.dtype_name(out.dtype)}); gradients are "
                "taken of a real loss: reduce it with gpugrad.real(out), gpugrad.abs(out) or "
                "gpugrad.imag(out) first, or pass the seed gradient explicitly"))
        if xp is np:  # np.ones_like's Python layers cost more than the one element
            return np.array(1, dtype=out.dtype).reshape(out.shape)
        return xp.ones_like(out)
    g = grad.data if isinstance(grad, Tensor) else grad
    if not B.is_backend_array(g) or (xp is not np and B.namespace_of(g) is not xp):
        g = xp.asarray(g, dtype=out.dtype, device=B.device_of(out))
    if tuple(g.shape) != tuple(out.shape):
        raise GradientError(E.at(
            f"{what}: seed gradient has shape {tuple(g.shape)} but the output has shape "
            f"{tuple(out.shape)}; they must match"))
    if g.dtype != out.dtype:
        g = xp.astype(g, out.dtype)
    return g
