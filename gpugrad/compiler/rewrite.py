"""Pass 3a, rewrite: exact graph rewrites chosen when a program is built.

- **Softmax cross-entropy.** ``mean(-squeeze(take_along_axis(log_softmax(z), t[..., None])))``
  (what ``nn.cross_entropy`` builds) runs as one step: the forward computes ``log_softmax``
  with the same operations as its rule, and the backward is ``(p - onehot) * (g / n)`` with
  ``p = exp(log_softmax(z))`` computed in place, instead of a scatter, a where and a
  broadcast product. Equal to the chain's VJPs in exact arithmetic.
- **Learning rate folded into the seed.** For plain SGD the backward starts from ``lr``
  instead of 1, so every gradient comes out already scaled and the update is ``p -= g``.
  VJPs are linear in their incoming gradient, so this is exact up to rounding.

- **A negation moved into its producer.** A step whose lowering can write minus its value
  (``linear``: ``(-b) - x @ W``, exactly ``-(x @ W + b)``), read only by a step whose scalar
  formula starts by negating its input (``sigmoid``), writes the negation, and the consumer
  starts at its next operation: one pass over the activations fewer.

The other rewrites live with the lowering (``gpugrad.compiler.lower``): elementwise forward
and backward in place, bias add and bias gradient without broadcast temporaries, the
unbroadcast sum as one ``add.reduce`` into the gradient's buffer.
"""

from __future__ import annotations

from typing import Any

CHAIN = ("log_softmax", "take_along_axis", "squeeze", "negative")


def cross_entropy_groups(steps: list, readers: dict, keep: set, shapes: list) -> dict:
    """``{k of the reduction step: (z slot, t slot, member step indices, reduction)}`` for each
    cross-entropy chain whose intermediates nothing else reads."""
    producer = {out: k for k, (_, _, _, out) in enumerate(steps)}
    found: dict = {}
    for k, (op, ins, params, out) in enumerate(steps):
        if op.name not in ("mean", "sum") or params.get("axis") is not None \
                or params.get("keepdims"):
            continue
        members = [k]
        slot = ins[0]
        ok = True
        chain: list = []
        for name in reversed(CHAIN):
            j = producer.get(slot)
            if j is None or steps[j][0].name != name or readers.get(slot, 0) != 1 \
                    or slot in keep:
                ok = False
                break
            chain.append(j)
            members.append(j)
            slot = steps[j][1][0]
        if not ok:
            continue
        neg, sq, tal, ls = chain
        if steps[sq][2].get("axis") not in (-1, 1) or steps[tal][2].get("axis") not in (-1, 1) \
                or steps[ls][2].get("axis", -1) not in (-1, 1):
            continue
        z = steps[ls][1][0]
        idx = steps[tal][1][1]
        j = producer.get(idx)
        if j is None or steps[j][0].name != "expand_dims" or readers.get(idx, 0) != 1 \
                or idx in keep or steps[j][2].get("axis") not in (-1, 1):
            continue
        t = steps[j][1][0]
        zi, ti = shapes[z], shapes[t]
        if zi is None or ti is None or len(zi[0]) != 2 or len(ti[0]) != 1 \
                or getattr(ti[1], "kind", "") not in "iu" or zi[0][0] != ti[0][0] \
                or getattr(zi[1], "char", "") not in ("f", "d"):
            continue
        members.append(j)
        found[k] = (z, t, set(members), op.name)
    return found


def ce_forward(z: str, t: str, o: str, logp: str, LOGP: str, T: str, ar: str,
               reduction: str) -> list:
    """Lines computing the loss ``o`` and ``logp`` (kept for the backward) as the chain's
    rules do: ``shifted = z - finite max; logp = shifted - log(sum(exp(shifted)))``. The
    maxima are checked for being finite only when the loss is not (the rules' replacement of
    a non-finite maximum by 0 changes nothing otherwise)."""
    # np.mean's own arithmetic, without its Python wrappers: add.reduce, then the scalar
    # divided by the count as an intp and cast back to the dtype
    last = f"{o} = asarray(s_.dtype.type(s_ / INTP_{o}))" if reduction == "mean" \
        else f"{o} = asarray(s_)"
    body = [
        f"{logp} = np.subtract({z}, m_, {LOGP})",
        f"s_ = np.add.reduce(np.exp({logp}, out={T}), axis=-1, keepdims=True)",
        f"np.subtract({logp}, np.log(s_, out=s_), {logp})",
        # -(sum of x) is exactly the sum of -x (rounding is symmetric): one negation
        f"s_ = -np.add.reduce({logp}[{ar}, {t}], axis=None)",
    ]
    return [
        f"m_ = np.maximum.reduce({z}, axis=-1, keepdims=True)",
        *body,
        # a row maximum that is not finite makes its whole row nan, and so the loss: a loss
        # that is not finite is the cue to run again as the rule does, with such maxima 0
        "if not isfinite(s_):",
        "    m_ = np.where(np.isfinite(m_), m_, 0.0)",
        *("    " + line for line in body),
        last,
    ]


def ce_backward(g: str, t: str, logp: str, c: str, C: str, ar: str, n: int,
                reduction: str, one: str) -> list:
    """``(p - onehot) * scale``: the chain's VJPs in one buffer (``one``: the literal 1 of
    its dtype, see gpugrad.compiler.lower.const)."""
    scale = f"({g} / {float(n)!r})" if reduction == "mean" else g
    return [f"{c} = np.exp({logp}, {C})", f"{c}[{ar}, {t}] -= {one}",
            f"np.multiply({c}, {scale}, {c})"]


def fold_lr(opt: Any) -> bool:
    """Plain SGD (no momentum, no weight decay) can start its backward from ``lr``."""
    from ..optim import SGD

    return type(opt) is SGD and not opt.momentum and not opt.weight_decay


def negated_producers(steps: list, readers: dict, keep: set, shapes: list) -> dict:
    """``{producer step: consumer step}`` where a float step whose lowering can write minus
    its value (``lowering.negated``: linear's ``(-b) - x @ W``) is read only by one step,
    of the same shape and dtype, whose forward formula starts by negating that input
    (``-x``: sigmoid's ``1 / (1 + exp(-x))``); the consumer then reads the negation as it
    is. Exact: -(x @ W + b) == (-b) - x @ W (rounding to nearest is symmetric)."""
    from .lower import starts_negated

    found = {}
    by_input: dict = {}
    for j, (op, ins, _, out) in enumerate(steps):
        if len(ins) == 1 and starts_negated(op):
            by_input[ins[0]] = j
    for k, (op, ins, _, out) in enumerate(steps):
        if getattr(op.lowering, "negated", None) is None or out in keep \
                or readers.get(out, 0) != 1 or out not in by_input or shapes[out] is None:
            continue
        j = by_input[out]
        if shapes[steps[j][3]] == shapes[out] and len(shapes[out][0]) == 2 \
                and getattr(shapes[out][1], "kind", "") == "f":
            found[k] = j
    return found
