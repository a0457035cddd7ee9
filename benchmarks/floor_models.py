"""The floor of the workloads in ``models.py``: plain array code, forward and backward
derived by hand, as a NumPy user writes them (``xp`` is numpy or cupy).

``grads(xp, cfg, params, x, target)`` returns ``(loss, [dL/dp for p in params])``;
``floor.Update`` applies the optimizer (``models.OPTIMIZERS``) in place, with the same
formulas as ``gpugrad.optim``.
"""

from __future__ import annotations

from .floor import Update, sigmoid
from .models import OPTIMIZERS

SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_TWO_PI = 0.3989422804014327  # 1 / sqrt(2 pi)
THRESHOLD = 20.0  # softplus: x itself above it (PyTorch's, gpugrad's default)


def erf(xp, z):
    """erf of an array: SciPy's (CuPy's for cupy arrays), as a NumPy user calls it."""
    if xp.__name__ == "numpy":
        from scipy.special import erf as scipy_erf
    else:
        from cupyx.scipy.special import erf as scipy_erf
    return scipy_erf(z)


def activate(xp, act, z):
    if act == "sigmoid":
        return sigmoid(xp, z)
    if act == "tanh":
        return xp.tanh(z)
    if act == "relu":
        return xp.maximum(z, 0.0)
    if act == "gelu":
        return z * 0.5 * (erf(xp, z * SQRT_HALF) + 1.0)
    if act == "silu":
        return z * sigmoid(xp, z)
    if act == "softplus":
        return xp.where(z > THRESHOLD, z, xp.log1p(xp.exp(xp.minimum(z, THRESHOLD))))
    raise ValueError(f"unknown activation {act!r}")


def activate_back(xp, act, d, a, z):
    """d * act'(z), written with the activation's output a where it serves."""
    if act == "sigmoid":
        return d * a * (1.0 - a)
    if act == "tanh":
        return d * (1.0 - a * a)
    if act == "relu":
        return d * (a > 0)
    if act == "gelu":
        cdf = (erf(xp, z * SQRT_HALF) + 1.0) * 0.5
        return d * (cdf + z * (xp.exp(z * z * -0.5) * INV_SQRT_TWO_PI))
    if act == "silu":
        s = sigmoid(xp, z)
        return d * (s * (z * (1.0 - s) + 1.0))
    e = xp.exp(xp.minimum(z, THRESHOLD))
    return xp.where(z > THRESHOLD, d, d * e / (e + 1.0))


def head(xp, loss, z, target, reduction="mean"):
    """(loss, dL/dz) of the logits z against target (one-hot rows for ``xent``): the mean
    over the batch (and, for ``mse`` and ``bce``, the outputs), or with ``reduction="sum"``
    the sum."""
    total = reduction == "sum"
    if loss == "xent":
        m = xp.max(z, axis=1, keepdims=True)
        e = xp.exp(z - m)
        s = xp.sum(e, axis=1, keepdims=True)
        each = xp.log(s) + m - xp.sum(z * target, axis=1, keepdims=True)
        d = e / s - target
        return (xp.sum(each), d) if total else (xp.mean(each), d / z.shape[0])
    if loss == "mse":
        diff = z - target
        sq = diff * diff
        return (xp.sum(sq), diff * 2.0) if total else (xp.mean(sq), diff * (2.0 / diff.size))
    if loss == "bce":
        each = xp.logaddexp(0.0, z) - target * z
        d = sigmoid(xp, z) - target
        return (xp.sum(each), d) if total else (xp.mean(each), d / z.size)
    raise ValueError(f"unknown loss {loss!r}")


def mlp_grads(xp, cfg, params, x, target):
    act = cfg["act"]
    ins, zs = [x], [None]
    for W, b in zip(params[0:-2:2], params[1:-2:2]):
        zs.append(ins[-1] @ W + b)
        ins.append(activate(xp, act, zs[-1]))
    loss, d = head(xp, cfg["loss"], ins[-1] @ params[-2] + params[-1], target,
                   cfg.get("reduction", "mean"))
    grads = [None] * len(params)
    for k in range(len(params) // 2 - 1, -1, -1):
        grads[2 * k] = ins[k].T @ d
        grads[2 * k + 1] = xp.sum(d, axis=0)
        if k:
            d = activate_back(xp, act, d @ params[2 * k].T, ins[k], zs[k])
    return loss, grads


def rnn_grads(xp, cfg, params, xs, target):
    Wx, Wh, b, Wo, bo = params
    hs = [xp.tanh(xs[0] @ Wx + b)]
    for t in range(1, xs.shape[0]):
        hs.append(xp.tanh(xs[t] @ Wx + hs[-1] @ Wh + b))
    loss, d = head(xp, "xent", hs[-1] @ Wo + bo, target)
    gWo, gbo = hs[-1].T @ d, xp.sum(d, axis=0)
    dz = (d @ Wo.T) * (1.0 - hs[-1] * hs[-1])
    gWx, gWh, gb = xs[-1].T @ dz, None, xp.sum(dz, axis=0)
    for t in range(xs.shape[0] - 2, -1, -1):
        gWh = hs[t].T @ dz if gWh is None else gWh + hs[t].T @ dz
        dz = (dz @ Wh.T) * (1.0 - hs[t] * hs[t])
        gWx += xs[t].T @ dz
        gb += xp.sum(dz, axis=0)
    return loss, [gWx, gWh if gWh is not None else xp.zeros_like(Wh), gb, gWo, gbo]


def grads(xp, cfg, params, x, target):
    return (rnn_grads if cfg["model"] == "rnn" else mlp_grads)(xp, cfg, params, x, target)


def step(xp, cfg, params, x, target):
    """One training step, by hand: returns a callable that runs it and gives the loss."""
    opt, hyper = OPTIMIZERS[cfg.get("opt", "sgd")]
    update = Update(xp, opt, cfg["lr"], params, **hyper)

    def run():
        loss, gs = grads(xp, cfg, params, x, target)
        update(xp, params, gs)
        return loss
    return run
