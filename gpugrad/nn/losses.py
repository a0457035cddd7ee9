"""Losses, each with ``reduction="mean" | "sum" | "none"``.

>>> import numpy as np, gpugrad as gg
>>> from gpugrad import nn
>>> logits = gg.asarray(np.zeros((2, 4), "float32"))
>>> round(float(nn.cross_entropy(logits, gg.asarray(np.array([0, 3])))), 4)
1.3863
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend as B
from ..errors import DtypeError, OpError, at, show
from ..ops import arithmetic, elementwise, reductions, softmax
from ..tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Any, reduction: str, who: str) -> Any:
    if reduction == "mean":
        return reductions.mean(loss)
    if reduction == "sum":
        return reductions.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{who}: unknown reduction {reduction!r}; choose one of "
                     f"{', '.join(REDUCTIONS)}")


def _shape(x: Any) -> tuple | None:
    if getattr(x, "_gpugrad_symbolic", False):  # a graph node: its shape inferred at build
        return getattr(x, "_shape", None)
    return tuple(x.shape) if hasattr(x, "shape") else None


def _same_shape(a: Any, b: Any, who: str) -> None:
    sa, sb = _shape(a), _shape(b)
    if sa is None or sb is None:
        return
    if len(sa) != len(sb) or any(
            x is not None and y is not None and x != y for x, y in zip(sa, sb)):
        raise OpError(at(f"{who}: prediction has shape {show(sa)} but target has shape "
                         f"{show(sb)}; they must match"))


def mse_loss(pred: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean squared error: reduce((pred - target) ** 2)."""
    _same_shape(pred, target, "mse_loss")
    d = arithmetic.subtract(pred, target)
    return _reduce(arithmetic.multiply(d, d), reduction, "mse_loss")


def binary_cross_entropy_with_logits(logits: Any, targets: Any, reduction: str = "mean") -> Any:
    """-[y log s(z) + (1 - y) log(1 - s(z))] = logaddexp(0, z) - y z, stable for any z."""
    _same_shape(logits, targets, "binary_cross_entropy_with_logits")
    loss = arithmetic.subtract(elementwise.logaddexp(logits, 0.0),
                               arithmetic.multiply(targets, logits))
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def cross_entropy(logits: Any, targets: Any, reduction: str = "mean") -> Any:
    """-log softmax(logits)[target] per row, for integer class targets (shape logits[:-1]).

    Targets outside [0, n_classes) raise an error naming the range (checked where the
    targets are on the host-visible backends; on CuPy the data loader checks them instead,
    so the training loop never waits for the GPU).
    """
    ls, ts = _shape(logits), _shape(targets)
    if ls is not None and ts is not None and (len(ts) != len(ls) - 1 or any(
            a is not None and b is not None and a != b for a, b in zip(ls[:-1], ts))):
        raise OpError(at(f"cross_entropy: logits have shape {show(ls)}, so targets need shape "
                         f"{show(ls[:-1])} (one class index per row), got {show(ts)}"))
    if ls is not None and ls[-1] is not None:
        check_targets(targets, ls[-1], "cross_entropy")
    # one op on the tape or in the graph (the compiler lowers it as it is); host labels are
    # copied (they are small), so the tape holds its own instead of checksumming the
    # caller's array on every step
    if type(targets) is np.ndarray:
        targets = Tensor(np.array(targets), xp=np)
    return _reduce(softmax.softmax_cross_entropy(logits, targets, axis=-1), reduction,
                   "cross_entropy")


def check_targets(targets: Any, n_classes: int, who: str) -> None:
    """Raise if integer class targets are not ints or fall outside [0, n_classes)."""
    if getattr(targets, "_gpugrad_symbolic", False):
        return
    data = targets.data if isinstance(targets, Tensor) else targets
    if not hasattr(data, "dtype"):
        return
    kind = getattr(data.dtype, "kind", None)  # NumPy and CuPy dtypes: no string per call
    if not (kind in ("i", "u") if kind is not None else "int" in B.dtype_name(data.dtype)):
        raise DtypeError(at(f"{who}: targets must be integer class indices, got dtype "
                            f"{B.dtype_name(data.dtype)} {show(data.shape)}"))
    if type(data) is np.ndarray:  # the ufuncs themselves: the methods' Python layers cost more
        if data.size and (np.minimum.reduce(data, axis=None) < 0
                          or np.maximum.reduce(data, axis=None) >= n_classes):
            _out_of_range(data, n_classes, who)
        return
    if "cupy" in type(data).__module__:
        return  # reading them would synchronise the GPU in every step
    host = B.to_numpy(data)
    if host.size and (host.min() < 0 or host.max() >= n_classes):
        _out_of_range(host, n_classes, who)


def _out_of_range(host: np.ndarray, n_classes: int, who: str) -> None:
    raise OpError(at(f"{who}: targets range over [{int(host.min())}, {int(host.max())}] "
                     f"but must lie in [0, {n_classes - 1}] for {n_classes} classes"))


def accuracy(logits: Any, targets: Any) -> Any:
    """Fraction of rows whose largest logit is the target, as a 0-d backend array."""
    lg = logits.data if isinstance(logits, Tensor) else logits
    tg = targets.data if isinstance(targets, Tensor) else targets
    xp = B.namespace_of(lg)
    hits = xp.astype(xp.argmax(lg, axis=-1) == tg, lg.dtype)
    out = xp.mean(hits)
    return np.asarray(out) if xp is np else out
