"""The workloads of other shapes: MLPs with other activations, losses, optimizers and
depths, and a small recurrent net. Each is a config in ``sizes.py`` (``"model": "mlp"`` or
``"rnn"``) and its host data here, from a fixed seed; every row starts from these arrays.

An ``mlp`` config names ``act`` (sigmoid, tanh, relu, gelu (erf form), silu or softplus,
PyTorch's definitions), ``loss`` (``xent``: softmax cross-entropy on integer labels;
``mse``: mean squared error on real targets; ``bce``: binary cross-entropy with logits on
0/1 targets, one per output), ``reduction`` (``mean``, the default, or ``sum``: the loss
over the batch) and ``opt`` (sgd, adam, or one of :data:`OPTIMIZERS`: AdamW, RMSprop,
Adagrad, SGD with momentum, with the hyperparameters given there).
The ``rnn`` is an Elman net, ``h = tanh(x_t @ Wx + h @ Wh + b)`` unrolled over ``steps``
inputs (the first step has no ``h @ Wh``: ``h`` starts at zero), with a linear read-out of
the last state and softmax cross-entropy (its ``opt`` as an ``mlp``'s, SGD by default).
"""

from __future__ import annotations

import numpy as np

MODELS = ("tanh-mse", "relu-adam", "relu-bce", "deep", "rnn", "gelu-adamw", "silu-rmsprop",
          "softplus-momentum", "sigmoid-adagrad", "narrow-sum", "rnn-adam", "deep-relu-adam")
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
OPTIMIZERS = {"sgd": ("sgd", {}), "adam": ("adam", {}),
              "adamw": ("adamw", {"weight_decay": 1e-2}),
              "rmsprop": ("rmsprop", {"alpha": 0.99, "eps": 1e-8}),
              "adagrad": ("adagrad", {"eps": 1e-10}),
              "momentum": ("sgd", {"momentum": 0.9})}
"""A config's ``opt``: (gpugrad.optim's name, its keyword arguments besides ``lr``); every
row (floor, gpugrad, peers) uses these numbers (Adam's and AdamW's betas and eps: ADAM;
Adagrad's accumulator starts at zero, its learning rate does not decay)."""


def _linear(rng, n_in, n_out):
    a = np.sqrt(6.0 / (n_in + n_out))
    return [rng.uniform(-a, a, size=(n_in, n_out)).astype(np.float32),
            np.zeros(n_out, np.float32)]


def _targets(rng, cfg, n_out, batch):
    """(labels, target): integer labels and their one-hot rows for ``xent``; the float
    targets for ``mse`` and ``bce`` (labels is None)."""
    loss = cfg.get("loss", "xent")
    if loss == "xent":
        labels = rng.integers(0, n_out, batch)
        return labels, np.eye(n_out, dtype=np.float32)[labels]
    if loss == "mse":
        return None, rng.standard_normal((batch, n_out)).astype(np.float32)
    if loss == "bce":
        return None, (rng.random((batch, n_out)) < 0.5).astype(np.float32)
    raise ValueError(f"unknown loss {loss!r}")


def mlp_data(cfg):
    """params [W1, b1, ...], x (batch, sizes[0]), labels, target (see ``_targets``)."""
    rng = np.random.default_rng(0)
    sizes = cfg["sizes"]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += _linear(rng, n_in, n_out)
    x = rng.standard_normal((cfg["batch"], sizes[0])).astype(np.float32)
    labels, target = _targets(rng, cfg, sizes[-1], cfg["batch"])
    return params, x, labels, target


def rnn_data(cfg):
    """params [Wx, Wh, b, Wo, bo], xs (steps, batch, n_in), labels, one-hot target."""
    rng = np.random.default_rng(0)
    n_in, n_h, n_out = cfg["n_in"], cfg["hidden"], cfg["n_out"]
    Wx, b = _linear(rng, n_in, n_h)
    Wh = _linear(rng, n_h, n_h)[0]
    params = [Wx, Wh, b, *_linear(rng, n_h, n_out)]
    xs = rng.standard_normal((cfg["steps"], cfg["batch"], n_in)).astype(np.float32)
    labels, target = _targets(rng, {"loss": "xent"}, n_out, cfg["batch"])
    return params, xs, labels, target


def data(cfg):
    return (rnn_data if cfg["model"] == "rnn" else mlp_data)(cfg)
