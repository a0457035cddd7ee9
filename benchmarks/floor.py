"""The floor: each workload written by hand in plain array code, forward and backward
derived by hand. ``xp`` is numpy (or cupy for ``--backend cupy``); the sigmoid is the
naive ``1 / (1 + exp(-z))`` a NumPy user writes, with overflow warnings silenced."""

from __future__ import annotations

import math


def sigmoid(xp, z):
    return 1.0 / (1.0 + xp.exp(-z))


def mlp_step(xp, params, x, labels, onehot, lr):
    """One SGD step of the sigmoid MLP with softmax cross-entropy; returns the loss."""
    W1, b1, W2, b2, W3, b3 = params
    a1 = sigmoid(xp, x @ W1 + b1)
    a2 = sigmoid(xp, a1 @ W2 + b2)
    logits = a2 @ W3 + b3
    m = xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(logits - m)
    s = xp.sum(e, axis=1, keepdims=True)
    n = x.shape[0]
    loss = xp.mean(xp.log(s) + m - xp.sum(logits * onehot, axis=1, keepdims=True))
    d3 = (e / s - onehot) / n
    d2 = (d3 @ W3.T) * a2 * (1.0 - a2)
    d1 = (d2 @ W2.T) * a1 * (1.0 - a1)
    grads = (x.T @ d1, xp.sum(d1, axis=0), a1.T @ d2, xp.sum(d2, axis=0),
             a2.T @ d3, xp.sum(d3, axis=0))
    for p, g in zip(params, grads):
        p -= lr * g
    return loss


def chain(xp, y0, ws):
    """Forward and backward of y = sigmoid(y * w_i + 0.1), 100 times; returns dL/dw_i."""
    ys = [y0]
    y = y0
    for w in ws:
        y = sigmoid(xp, y * w + 0.1)
        ys.append(y)
    g = xp.ones_like(y)
    grads = [None] * len(ws)
    for i in range(len(ws) - 1, -1, -1):
        s = ys[i + 1]
        dz = g * s * (1.0 - s)
        grads[i] = dz * ys[i]
        g = dz * ws[i]
    return grads


def bmm(xp, A, B):
    """Forward and backward of sum(sigmoid(A @ B)); returns (dA, dB)."""
    S = sigmoid(xp, A @ B)
    dC = S * (1.0 - S)
    return dC @ xp.swapaxes(B, -1, -2), xp.swapaxes(A, -1, -2) @ dC


class Update:
    """SGD (``p -= lr * g``; with ``momentum``, ``buf = momentum * buf + g``, ``buf = g`` at
    the first step, ``p -= lr * buf``), Adam with bias correction (AdamW: ``p *= 1 - lr *
    weight_decay`` first), RMSprop (``v = alpha * v + (1 - alpha) * g**2``,
    ``p -= lr * g / (sqrt(v) + eps)``) or Adagrad (``s += g**2``, ``p -= lr * g / (sqrt(s) +
    eps)``, no learning-rate decay), in place, with the formulas and the float32 arithmetic
    of ``gpugrad.optim`` (Python floats for the scalars)."""

    def __init__(self, xp, opt, lr, params, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                 alpha=0.99, momentum=0.0):
        self.opt, self.lr, self.t = opt, lr, 0
        self.b1, self.b2, self.eps = b1, b2, eps
        self.decay, self.alpha, self.momentum = weight_decay, alpha, momentum
        if opt in ("adam", "adamw"):
            self.mv = [(xp.zeros_like(p), xp.zeros_like(p)) for p in params]
        if opt in ("rmsprop", "adagrad"):
            self.vs = [xp.zeros_like(p) for p in params]
        self.bufs = None

    def __call__(self, xp, params, grads):
        if self.opt == "sgd" and self.momentum:
            if self.bufs is None:
                self.bufs = [g.copy() for g in grads]
            else:
                for buf, g in zip(self.bufs, grads):
                    buf *= self.momentum
                    buf += g
            grads = self.bufs
        if self.opt == "sgd":
            for p, g in zip(params, grads):
                p -= self.lr * g
            return
        if self.opt == "rmsprop":
            a = self.alpha
            for p, g, v in zip(params, grads, self.vs):
                v *= a
                v += (1.0 - a) * (g * g)
                p -= self.lr * (g / (xp.sqrt(v) + self.eps))
            return
        if self.opt == "adagrad":
            for p, g, s in zip(params, grads, self.vs):
                s += g * g
                p -= self.lr * (g / (xp.sqrt(s) + self.eps))
            return
        self.t += 1
        b1, b2 = self.b1, self.b2
        step_size = self.lr / (1.0 - b1**self.t)
        bc2 = math.sqrt(1.0 - b2**self.t)
        for p, g, (m, v) in zip(params, grads, self.mv):
            if self.opt == "adamw":
                p *= 1.0 - self.lr * self.decay
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= step_size * (m / (xp.sqrt(v) / bc2 + self.eps))


def digits_epoch(xp, params, update, batches):
    """One epoch of the default ``gpugrad train`` model, by hand: sigmoid MLP, Adam
    (``update`` is an ``Update(xp, "adam", lr, params)``)."""
    for x, labels, onehot in batches:
        hidden = []
        a = x
        for W, b in zip(params[0:-2:2], params[1:-2:2]):
            a = sigmoid(xp, a @ W + b)
            hidden.append(a)
        logits = a @ params[-2] + params[-1]
        m = xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(logits - m)
        s = xp.sum(e, axis=1, keepdims=True)
        d = (e / s - onehot) / x.shape[0]
        grads = [None] * len(params)
        ins = [x] + hidden
        for k in range(len(params) // 2 - 1, -1, -1):
            grads[2 * k] = ins[k].T @ d
            grads[2 * k + 1] = xp.sum(d, axis=0)
            if k:
                d = (d @ params[2 * k].T) * ins[k] * (1.0 - ins[k])
        update(xp, params, grads)
