"""``gg.minimize``: the tutorial's update rule ``w := w - learning_rate * dloss/dw``, one step
on a Placeholder graph. It lives above gpugrad.optim (its compiled step is a plain SGD, kept
with the graph's schedule) and above gpugrad.graph, which it drives.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import versions
from .graph import _as_tuple, _need_symbol, value_and_gradients
from .optim import SGD
from .shaping import as_array
from .tensor import Tensor, no_grad


def minimize(loss: Any, variables: Sequence[Tensor], lr: float,
             feed: Mapping | None = None) -> Any:
    """One gradient-descent step ``w := w - lr * dloss/dw``; returns the loss value (before
    the step) as a 0-d backend array. Everything stays on the device.

    >>> import numpy as np, gpugrad as gg
    >>> x = gg.Placeholder((1,), "float64", name="x")
    >>> w = gg.Variable(np.array([2.0]), name="w")
    >>> float(gg.minimize(gg.sum((w - x) ** 2), [w], lr=0.25, feed={x: np.zeros(1)}))
    4.0
    >>> gg.to_numpy(w.data)
    array([1.])
    """
    variables = _as_tuple(variables)
    lr = float(lr)
    if lr > 0:  # one compiled step, updating in place (see train_step)
        sched, _ = _need_symbol(loss, "minimize")._schedule(variables)
        opt = sched.minimizer
        if opt is None:
            opt = sched.minimizer = SGD(variables, lr=lr)
        opt.lr = lr
        return sched.train_step(opt, feed or {})
    value, grads = value_and_gradients(loss, variables, feed)
    with no_grad():
        for v, g in zip(variables, grads):
            v.data = as_array(v.xp, v.data - lr * g)
            versions.rebound(v)  # a new array: arrays saved earlier stay as they were
    return value
