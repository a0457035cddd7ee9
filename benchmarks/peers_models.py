"""JAX (``jax.jit`` of the whole step) and PyTorch (eager) on the workloads of
``models.py`` and on ``digits``, where they happen to be installed (neither is a
dependency: a missing one raises Skip). Same host data and arithmetic as the floor."""

from __future__ import annotations

import numpy as np

from . import models as M
from .peers import Skip, _need

DIGITS = {"model": "mlp", "act": "sigmoid", "loss": "xent", "opt": "adam"}


def make(workload: str, impl: str, cfg: dict):
    if impl not in ("jax", "torch"):
        raise Skip(f"{impl} is not run on {workload}")
    build = _jax if impl == "jax" else _torch
    if workload != "digits":
        params, *host = M.data(cfg)
        update, dev = build(cfg, params)
        x, labels, target = (None if a is None else dev(a) for a in host)
        return lambda: update(x, labels, target)
    from .workloads import digits_data

    sizes, params, batches = digits_data(cfg)
    eye = np.eye(10, dtype=np.float32)
    update, dev = build({**cfg, **DIGITS, "sizes": sizes}, params)
    data = [(dev(xb), dev(yb), dev(eye[yb])) for xb, yb in batches]

    def epoch():
        for xb, yb, onehot in data:
            loss = update(xb, yb, onehot)
        return loss
    return epoch


def forward(cfg, ps, x, tanh, act):
    """The model's logits, in the peer's own ops (its ``tanh`` and activation)."""
    if cfg["model"] == "rnn":
        h = tanh(x[0] @ ps[0] + ps[2])
        for t in range(1, x.shape[0]):
            h = tanh(x[t] @ ps[0] + h @ ps[1] + ps[2])
        return h @ ps[3] + ps[4]
    a = x
    for W, b in zip(ps[0:-2:2], ps[1:-2:2]):
        a = act(a @ W + b)
    return a @ ps[-2] + ps[-1]


def _jax(cfg, params):
    """(update, dev): update(x, labels, target) -> loss is one jitted step (forward, grad,
    SGD or Adam) on arrays made by dev from host arrays."""
    jax = _need("jax")
    jnp = jax.numpy
    acts = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}
    act = acts[cfg.get("act", "tanh")]  # the rnn's is tanh
    lr, kind = cfg["lr"], cfg.get("loss", "xent")

    def loss_fn(ps, x, target):
        z = forward(cfg, ps, x, jnp.tanh, act)
        if kind == "xent":
            return -jnp.mean(jnp.sum(jax.nn.log_softmax(z) * target, axis=1))
        if kind == "mse":
            return jnp.mean((z - target) ** 2)
        return jnp.mean(jnp.logaddexp(0.0, z) - target * z)

    if cfg.get("opt", "sgd") == "sgd":
        @jax.jit
        def sgd(ps, x, target):
            loss, gs = jax.value_and_grad(loss_fn)(ps, x, target)
            return [p - lr * g for p, g in zip(ps, gs)], loss
        state = {"ps": [jnp.asarray(p) for p in params]}

        def update(x, labels, target):
            state["ps"], loss = sgd(state["ps"], x, target)
            return jax.block_until_ready(loss)
        return update, jnp.asarray

    @jax.jit
    def adam(ps, ms, vs, t, x, target, b1=0.9, b2=0.999, eps=1e-8):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, target)
        ms = [b1 * m + (1.0 - b1) * g for m, g in zip(ms, gs)]
        vs = [b2 * v + (1.0 - b2) * (g * g) for v, g in zip(vs, gs)]
        step_size, bc2 = lr / (1.0 - b1**t), jnp.sqrt(1.0 - b2**t)
        ps = [p - step_size * (m / (jnp.sqrt(v) / bc2 + eps)) for p, m, v in zip(ps, ms, vs)]
        return ps, ms, vs, loss

    ps = [jnp.asarray(p) for p in params]
    state = {"ps": ps, "ms": [jnp.zeros_like(p) for p in ps],
             "vs": [jnp.zeros_like(p) for p in ps], "t": 0}

    def update(x, labels, target):
        state["t"] += 1
        state["ps"], state["ms"], state["vs"], loss = adam(
            state["ps"], state["ms"], state["vs"], jnp.float32(state["t"]), x, target)
        return jax.block_until_ready(loss)
    return update, jnp.asarray


def _torch(cfg, params):
    """(update, dev): update(x, labels, target) -> loss is one eager step with torch.optim,
    on tensors made by dev from host arrays."""
    torch = _need("torch")
    F = torch.nn.functional
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
    act = acts[cfg.get("act", "tanh")]  # the rnn's is tanh
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    kind = cfg.get("loss", "xent")
    opt = (torch.optim.Adam if cfg.get("opt", "sgd") == "adam" else torch.optim.SGD)(
        ps, lr=cfg["lr"])

    def update(x, labels, target):
        z = forward(cfg, ps, x, torch.tanh, act)
        if kind == "xent":
            loss = F.cross_entropy(z, labels)
        elif kind == "mse":
            loss = F.mse_loss(z, target)
        else:
            loss = F.binary_cross_entropy_with_logits(z, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()
    return update, torch.from_numpy
