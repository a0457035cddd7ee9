"""Gradient sinks: arrays that eager backward writes given leaves' gradients into, in place.

gpugrad.distributed's sharded update registers each parameter's slot of this rank's shared
gradient buffer, so the gradients are where the ranks sum them as soon as backward ends, with
no packing pass. The sweep (gpugrad.eager.backward) calls :func:`open_sinks` as it starts and
:func:`into_sink` for each gradient that reaches a leaf with an open sink; with nothing
registered it does neither.
"""

from __future__ import annotations

from typing import Any

from .shaping import as_array, fit

grad_sinks: dict = {}
"""Leaf Tensor -> array of its shape and dtype: where a sweep puts that leaf's gradient.
A sweep that reaches a registered leaf whose ``.grad`` is None computes the leaf's gradient
into the array (through an op rule's ``into`` form where it has one, else by copying it in;
later contributions are added in place: the same sums in the same order) and leaves the
array itself as ``.grad``. A leaf whose ``.grad`` is already its array gets a private copy
first, and that sweep adds out of place as usual, so an accumulated gradient never aliases
the new one. Two sweeps running at once (threads) over one registered leaf would write its
array together: run those one at a time. Empty by default.

An op's per-input rule ``rule(xp, g, res, **params)`` may carry ``rule.into(xp, g, res, out,
**params)``: the same values computed into ``out``, returning it, or None where it cannot
(then the rule runs and its result is copied in). gpugrad.ops.linalg gives matmul's and
linear's weight gradient one on NumPy."""


def open_sinks(leaves: list) -> dict | None:
    """The registered sinks a sweep reaching ``leaves`` writes into (see
    :data:`grad_sinks`), or None.

    >>> import numpy as np, gpugrad as gg
    >>> w = gg.Variable(np.ones(2))
    >>> grad_sinks[w] = buf = np.zeros(2)
    >>> gg.sum(w * 3.0).backward()
    >>> w.grad is buf, buf
    (True, array([3., 3.]))
    >>> del grad_sinks[w]
    """
    out = {}
    for leaf in leaves:
        sink = grad_sinks.get(leaf)
        if sink is None:
            continue
        grad = leaf.grad
        if grad is None:
            data = leaf.data
            if sink.shape == data.shape and sink.dtype == data.dtype:
                out[leaf] = sink
        elif grad is sink:  # accumulating: keep the old sum apart from the new one
            leaf.grad = as_array(leaf.xp, leaf.xp.asarray(grad, copy=True))
    return out or None


def into_sink(xp: Any, p: Any, gi: Any, rule: bool, g: Any, res: Any, params: dict,
              grads: dict, sink: Any) -> None:
    """Add one gradient of leaf ``p`` into its sink, the sweep's running sum for ``p``
    (``grads[p]``): ``gi`` itself, or, where ``rule`` is True, what the per-input rule ``gi``
    computes from the upstream gradient ``g``, the saved ``res`` and ``params``."""
    first = p not in grads
    if rule:
        into = getattr(gi, "into", None)
        if first and into is not None and into(xp, g, res, sink, **params) is not None:
            grads[p] = sink  # computed where it belongs
            return
        gi = gi(xp, g, res, **params) if params else gi(xp, g, res)
    if gi is None:
        return
    data = p.data
    gi = fit(xp, gi, data.shape, data.dtype)
    if gi is None:
        return
    if first:
        sink[...] = gi
        grads[p] = sink
    else:
        sink += gi  # prev + gi, in place
