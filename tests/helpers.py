"""Small helpers the test files share."""

from __future__ import annotations

import numpy as np

import gpugrad as gg
from gpugrad import backend as B


def host(t) -> np.ndarray:
    """A host float64 copy of a Tensor or backend array."""
    return np.array(gg.to_numpy(t), dtype=np.float64)


def is_on_backend(bk, arr) -> bool:
    """Whether ``arr`` belongs to the backend under test, on its device."""
    want = bk.backend()
    if B.name_of(B.namespace_of(arr)) != want.name:
        return False
    return want.device is None or arr.device == want.device


def assert_on_backend(bk, arr) -> None:
    want = bk.backend()
    assert B.name_of(B.namespace_of(arr)) == want.name
    if want.device is not None:
        assert arr.device == want.device


def var(bk, values, name=None) -> gg.Variable:
    """A Variable of the backend's float dtype."""
    return gg.Variable(np.asarray(values, dtype=bk.float_dtype), name=name)


def const(bk, values) -> gg.Tensor:
    """A constant Tensor of the backend's float dtype."""
    return gg.asarray(np.asarray(values, dtype=bk.float_dtype))
