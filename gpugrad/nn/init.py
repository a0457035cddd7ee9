"""Initialisers: drawn on the host with a seeded ``numpy.random.Generator`` (the array API
has no random module), then moved to the backend's device once.

>>> from gpugrad.nn import init
>>> w = init.glorot_uniform((64, 10), seed=0)
>>> w.shape, str(w.dtype)
((64, 10), 'float32')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend as B


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = 1
    for d in shape[2:]:
        receptive *= d
    return shape[0] * receptive, shape[1] * receptive


def _host_dtype(dtype: Any) -> np.dtype:
    return np.dtype(B.dtype_name(dtype))


def glorot_uniform(shape: tuple, *, seed: int | np.random.Generator | None = None,
                   dtype: Any = "float32") -> Any:
    """Glorot/Xavier uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    Suits sigmoid and tanh layers. ``shape`` is (fan_in, fan_out) for ``x @ W``."""
    fan_in, fan_out = _fans(tuple(shape))
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return B.to_backend(_rng(seed).uniform(-a, a, size=shape).astype(_host_dtype(dtype)))


def glorot_normal(shape: tuple, *, seed: int | np.random.Generator | None = None,
                  dtype: Any = "float32") -> Any:
    """Glorot/Xavier normal: N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tuple(shape))
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return B.to_backend((_rng(seed).standard_normal(shape) * std).astype(_host_dtype(dtype)))


def he_normal(shape: tuple, *, seed: int | np.random.Generator | None = None,
              dtype: Any = "float32") -> Any:
    """He/Kaiming normal: N(0, 2 / fan_in). Suits ReLU layers."""
    fan_in, _ = _fans(tuple(shape))
    std = math.sqrt(2.0 / fan_in)
    return B.to_backend((_rng(seed).standard_normal(shape) * std).astype(_host_dtype(dtype)))


def he_uniform(shape: tuple, *, seed: int | np.random.Generator | None = None,
               dtype: Any = "float32") -> Any:
    """He/Kaiming uniform: U(-a, a) with a = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(tuple(shape))
    a = math.sqrt(6.0 / fan_in)
    return B.to_backend(_rng(seed).uniform(-a, a, size=shape).astype(_host_dtype(dtype)))


def zeros(shape: tuple, *, dtype: Any = "float32") -> Any:
    """Zeros on the backend's device."""
    return B.to_backend(np.zeros(shape, dtype=_host_dtype(dtype)))


INITIALISERS = {
    "glorot": glorot_uniform,
    "glorot_uniform": glorot_uniform,
    "xavier": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he": he_normal,
    "he_normal": he_normal,
    "kaiming": he_normal,
    "he_uniform": he_uniform,
}
