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


def _jax_optimizer(jnp, cfg):
    """(init(ps) -> state, apply(ps, gs, state, t) -> (ps, state)): the config's optimizer
    (``models.OPTIMIZERS``) with gpugrad.optim's formulas, in jnp."""
    lr = cfg["lr"]
    name, hyper = M.OPTIMIZERS[cfg.get("opt", "sgd")]
    if name == "sgd":
        mu = hyper.get("momentum", 0.0)

        def sgd(ps, gs, bufs, t):
            if mu:  # buf = g at the first step (t = 1), momentum * buf + g after
                bufs = [jnp.where(t > 1.0, mu * b + g, g) for b, g in zip(bufs, gs)]
                gs = bufs
            return [p - lr * g for p, g in zip(ps, gs)], bufs
        return (lambda ps: [jnp.zeros_like(p) for p in ps] if mu else []), sgd
    if name == "adagrad":
        eps = hyper["eps"]

        def adagrad(ps, gs, sums, t):
            sums = [s + g * g for s, g in zip(sums, gs)]
            return [p - lr * (g / (jnp.sqrt(s) + eps)) for p, g, s in zip(ps, gs, sums)], sums
        return (lambda ps: [jnp.zeros_like(p) for p in ps]), adagrad
    if name == "rmsprop":
        alpha, eps = hyper["alpha"], hyper["eps"]

        def rmsprop(ps, gs, vs, t):
            vs = [alpha * v + (1.0 - alpha) * (g * g) for v, g in zip(vs, gs)]
            return [p - lr * (g / (jnp.sqrt(v) + eps)) for p, g, v in zip(ps, gs, vs)], vs
        return (lambda ps: [jnp.zeros_like(p) for p in ps]), rmsprop
    b1, b2, eps = M.ADAM["b1"], M.ADAM["b2"], M.ADAM["eps"]
    shrink = 1.0 - lr * hyper.get("weight_decay", 0.0)

    def adam(ps, gs, mvs, t):
        ms = [b1 * m + (1.0 - b1) * g for (m, _), g in zip(mvs, gs)]
        vs = [b2 * v + (1.0 - b2) * (g * g) for (_, v), g in zip(mvs, gs)]
        if name == "adamw":
            ps = [p * shrink for p in ps]
        step_size, bc2 = lr / (1.0 - b1**t), jnp.sqrt(1.0 - b2**t)
        ps = [p - step_size * (m / (jnp.sqrt(v) / bc2 + eps)) for p, m, v in zip(ps, ms, vs)]
        return ps, list(zip(ms, vs))
    return (lambda ps: [(jnp.zeros_like(p), jnp.zeros_like(p)) for p in ps]), adam


def _jax(cfg, params):
    """(update, dev): update(x, labels, target) -> loss is one jitted step (forward, grad,
    the optimizer's update) on arrays made by dev from host arrays."""
    jax = _need("jax")
    jnp = jax.numpy
    acts = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
            "gelu": lambda z: jax.nn.gelu(z, approximate=False), "silu": jax.nn.silu,
            "softplus": jax.nn.softplus}
    act = acts[cfg.get("act", "tanh")]  # the rnn's is tanh
    kind = cfg.get("loss", "xent")
    reduce = jnp.sum if cfg.get("reduction", "mean") == "sum" else jnp.mean

    def loss_fn(ps, x, target):
        z = forward(cfg, ps, x, jnp.tanh, act)
        if kind == "xent":
            return reduce(-jnp.sum(jax.nn.log_softmax(z) * target, axis=1))
        if kind == "mse":
            return reduce((z - target) ** 2)
        return reduce(jnp.logaddexp(0.0, z) - target * z)

    init, apply = _jax_optimizer(jnp, cfg)

    @jax.jit
    def step(ps, opt_state, t, x, target):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, target)
        ps, opt_state = apply(ps, gs, opt_state, t)
        return ps, opt_state, loss

    ps = [jnp.asarray(p) for p in params]
    state = {"ps": ps, "opt": init(ps), "t": 0}

    def update(x, labels, target):
        state["t"] += 1
        state["ps"], state["opt"], loss = step(
            state["ps"], state["opt"], jnp.float32(state["t"]), x, target)
        return jax.block_until_ready(loss)
    return update, jnp.asarray


def _torch(cfg, params):
    """(update, dev): update(x, labels, target) -> loss is one eager step with torch.optim,
    on tensors made by dev from host arrays."""
    torch = _need("torch")
    F = torch.nn.functional
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "gelu": F.gelu, "silu": F.silu, "softplus": F.softplus}
    act = acts[cfg.get("act", "tanh")]  # the rnn's is tanh
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    kind, reduction = cfg.get("loss", "xent"), cfg.get("reduction", "mean")
    name, hyper = M.OPTIMIZERS[cfg.get("opt", "sgd")]
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name](
               ps, lr=cfg["lr"], **hyper)

    def update(x, labels, target):
        z = forward(cfg, ps, x, torch.tanh, act)
        if kind == "xent":
            loss = F.cross_entropy(z, labels, reduction=reduction)
        elif kind == "mse":
            loss = F.mse_loss(z, target, reduction=reduction)
        else:
            loss = F.binary_cross_entropy_with_logits(z, target, reduction=reduction)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()
    return update, torch.from_numpy
