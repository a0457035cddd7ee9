"""What the eager engine checks about an op's arguments before it runs the op: one backend,
device and dtype (the short way of :func:`gpugrad.eager.apply`), precision kept across mixed
dtypes, and Python scalars made into arrays where a rule needs arrays.

>>> import numpy as np, gpugrad as gg
>>> x = gg.asarray(np.ones(2, np.float32))
>>> same_kind((x, x * 2.0)), same_kind((x, gg.asarray(np.ones(2))))
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend as B
from . import errors as E
from . import diagnose as D
from .registry import Op
from .tensor import Tensor

SCALARS = (float, int, bool, complex)
"""The Python scalar types an op takes as weak values."""


def same_kind(args: Sequence[Any]) -> bool:
    """Whether every argument is a Tensor of one backend, device and dtype."""
    a = args[0]
    if not isinstance(a, Tensor):
        return False
    xp, x = a.xp, a.data
    for b in args[1:]:
        if not isinstance(b, Tensor) or b.xp is not xp:
            return False
        y = b.data
        if y.dtype is not x.dtype or (xp is not np and y.device != x.device):
            return False
    return True


def check_promotion(op: Op, arrays: list, dtype: Any, xp: Any) -> None:
    """Float32 meeting float64 (or an integer array that NumPy would promote a float32 to
    float64): raise rather than silently change precision. Python scalars are weak and were
    never arrays here, so ``x32 * 0.5`` stays float32 without reaching this."""
    if xp is np:  # every floating input already has the result's dtype: nothing changed
        for a in arrays:
            d = getattr(a, "dtype", None)
            if d is not None and d is not dtype and d.kind in "fc" and d != dtype:
                break
        else:
            return
    why = D.promotion_problem(op.name, arrays, dtype, xp)
    if why is not None:
        raise E.DtypeError(E.at(why))


def scalars_to_arrays(op: Op, arrays: list, ref: Any, xp: Any) -> None:
    """Python scalars become 0-d arrays on ``ref``'s device, where the op's rule needs arrays.
    A scalar is weak, as the standard says: it takes the dtype of an array input of its kind,
    a floating one first, so ``where(mask, 0.5, x32)`` stays float32 and
    ``where(mask, int32_array, 0)`` stays int32 (see backend.scalar_dtype)."""
    typed = [a for a in arrays if hasattr(a, "dtype")]
    typed.sort(key=lambda a: not B.is_inexact(xp, a.dtype))
    for i, a in enumerate(arrays):
        if type(a) in SCALARS and i not in op.scalar_ok:
            if ref is None:
                arrays[i] = B.to_backend(a)
                continue
            dt = next((d for d in (B.scalar_dtype(xp, a, b.dtype) for b in typed)
                       if d is not None), None)
            arrays[i] = (np.asarray(a, dtype=dt) if xp is np
                         else xp.asarray(a, dtype=dt, device=ref.device))


def mix_error(op: Any, a: Tensor, b: Any) -> Exception:
    """The error for inputs on different backends or devices, naming both."""
    da = B.describe_device(a.xp, a.device)
    db = B.describe_device(B.namespace_of(getattr(b, "data", b)), B.device_of(
        getattr(b, "data", b))) if not isinstance(b, Tensor) else B.describe_device(b.xp, b.device)
    return B.BackendError(E.at(
        f"{getattr(op, 'name', op)}: inputs live on different backends or devices ({da} and "
        f"{db}); move them to one with gpugrad.asarray under the backend you want"))
