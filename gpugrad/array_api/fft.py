"""The array-API standard's fft extension on Tensors, differentiable (also ``gg.fft``).

The transforms and shifts are registered ops (gpugrad.ops.fft): differentiable, and twice,
on every backend. ``fftfreq`` and ``rfftfreq`` make new constant arrays. Conventions (norms,
the one-sided spectra's gradients, complex gradients) are in docs/fft.md.

>>> import numpy as np, gpugrad as gg
>>> x = gg.Variable(np.array([1.0, 2.0, 0.0, -1.0]))
>>> X = gg.fft.rfft(x)                       # 3 bins: DC, 1, Nyquist
>>> np.round(gg.to_numpy(X), 6)
array([2.+0.j, 1.-3.j, 0.+0.j])
>>> gg.sum(gg.real(X)).backward()            # d/dx_j = sum_k cos(2 pi jk/4), k = 0, 1, 2
>>> gg.to_numpy(x.grad)
array([3., 0., 1., 0.])
>>> gg.to_numpy(gg.fft.fftfreq(4, d=0.5))
array([ 0. ,  0.5, -1. , -0.5])
"""

from __future__ import annotations

from typing import Any

from .. import backend as B
from ..ops.fft import (fft, fftn, fftshift, hfft, ifft, ifftn, ifftshift, ihfft, irfft, irfftn,
                       rfft, rfftn)
from ._wrap import dtype_for, mark, wrap

__all__ = ["fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn", "hfft", "ihfft",
           "fftfreq", "rfftfreq", "fftshift", "ifftshift"]


def _frequencies(name: str, n: Any, d: float, dtype: Any, device: Any, half: bool) -> Any:
    n = int(n.__index__())
    if n < 1:
        raise ValueError(f"{name}: n must be >= 1, got {n}")
    cur = B.current()
    xp = cur.xp
    device = cur.device if device is None else device
    kw = {} if device is None else {"device": device}
    dt = dtype_for(xp, dtype) if dtype is not None else None
    count = n // 2 + 1 if half else n
    k = xp.arange(0.0, float(count), **kw) if dt is None else xp.arange(0, count, dtype=dt, **kw)
    if not half:
        k = xp.where(k < float((n + 1) // 2), k, k - float(n))
    return wrap(k * (1.0 / (n * float(d))))


@mark("none")
def fftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Any:
    """The sample frequencies of ``fft(x)`` for n samples spaced ``d`` apart:
    ``[0, 1, ..., (n-1)//2, -(n//2), ..., -1] / (d n)``, a constant Tensor (the default real
    floating dtype, or ``dtype``, on ``device``)."""
    return _frequencies("fftfreq", n, d, dtype, device, False)


@mark("none")
def rfftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Any:
    """The sample frequencies of ``rfft(x)``: ``[0, 1, ..., n//2] / (d n)``."""
    return _frequencies("rfftfreq", n, d, dtype, device, True)
