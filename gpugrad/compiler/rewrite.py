"""Pass 3a, rewrite: exact graph rewrites chosen when a program is built.

- **Learning rate folded into the seed.** For plain SGD the backward starts from ``lr``
  instead of 1, so every gradient comes out already scaled and the update is ``p -= g``.
  VJPs are linear in their incoming gradient, so this is exact up to rounding.

- **A negation moved into its producer.** A step whose lowering can write minus its value
  (``linear``: ``(-b) - x @ W``, exactly ``-(x @ W + b)``), read only by a step whose scalar
  formula starts by negating its input (``sigmoid``), writes the negation, and the consumer
  starts at its next operation: one pass over the activations fewer. Likewise a step whose
  forward ends by negating (``softmax_cross_entropy``'s ``-logp[target]``) read only by a
  full sum or mean (``lowering.reads_negated``): the producer leaves its negation out and
  the reduction negates its scalar instead (exact: rounding to nearest is symmetric).

The other rewrites live with the lowering (``gpugrad.compiler.lower``): elementwise forward
and backward in place, bias add and bias gradient without broadcast temporaries, the
unbroadcast sum as one ``add.reduce`` into the gradient's buffer.
"""

from __future__ import annotations

from typing import Any

from .lower import starts_negated

def fold_lr(lowering: Any) -> bool:
    """An update that is plain ``p - lr * g`` (no state; the optimizer's lowering says so,
    see gpugrad.compiler.update) can start its backward from ``lr``."""
    return lowering is not None and lowering.fold_lr


def negated_producers(steps: list, readers: dict, keep: set, shapes: list) -> dict:
    """``{producer step: consumer step}`` where a float step whose lowering can write minus
    its value (``lowering.negated``: linear's ``(-b) - x @ W``) is read only by one step,
    of the same shape and dtype, whose forward formula starts by negating that input
    (``-x``: sigmoid's ``1 / (1 + exp(-x))``); the consumer then reads the negation as it
    is. Exact: -(x @ W + b) == (-b) - x @ W (rounding to nearest is symmetric)."""
    found = {}
    by_input: dict = {}
    for j, (op, ins, _, out) in enumerate(steps):
        if len(ins) == 1 and (starts_negated(op) or reads_negated(op)):
            by_input[ins[0]] = j
    for k, (op, ins, _, out) in enumerate(steps):
        if getattr(op.lowering, "negated", None) is None or out in keep \
                or readers.get(out, 0) != 1 or out not in by_input or shapes[out] is None \
                or getattr(shapes[out][1], "kind", "") != "f":
            continue
        j = by_input[out]
        if reads_negated(steps[j][0]):  # a reduction: worth it where the negation was a pass
            if getattr(op.lowering, "ends_negated", False):
                found[k] = j
        elif shapes[steps[j][3]] == shapes[out] and len(shapes[out][0]) == 2:
            found[k] = j
    return found


def reads_negated(op: Any) -> bool:
    """Whether ``op``'s lowering can read its single input holding minus its value."""
    return getattr(op.lowering, "reads_negated", False)
