"""gpugrad on the workloads of ``models.py``, written as a user would: ``nn.MLP`` (or the
RNN's Variables), an ``nn`` loss and an ``optim`` optimizer; eager, graph
(``opt.minimize``) and ``gg.compile`` rows. Each step carries ``step.params()``, the
parameters as host arrays (the tests compare them with the floor's)."""

from __future__ import annotations

from functools import partial

import gpugrad as gg
from gpugrad import nn, optim

from . import models as M
from .peers import Skip

LOSSES = {"xent": nn.cross_entropy, "mse": nn.mse_loss,
          "bce": nn.binary_cross_entropy_with_logits}


def net(cfg):
    """(forward, parameters, x, y) from the workload's data: y holds the integer labels for
    cross-entropy, else the float targets."""
    if cfg["model"] == "rnn":
        params, xs, labels, _ = M.rnn_data(cfg)
        Wx, Wh, b, Wo, bo = ps = [gg.Variable(gg.backend.to_backend(p)) for p in params]

        def forward(x):
            h = gg.tanh(x[0] @ Wx + b)
            for t in range(1, cfg["steps"]):
                h = gg.tanh(x[t] @ Wx + h @ Wh + b)
            return h @ Wo + bo
        return forward, ps, xs, labels
    params, x, labels, target = M.mlp_data(cfg)
    model = nn.MLP(cfg["sizes"], activation=cfg["act"], seed=0)
    model.load_state_dict({name: p for (name, _), p in zip(model.named_parameters(), params)})
    return model, model.parameters(), x, target if labels is None else labels


def loss_fn(cfg):
    """The config's loss, with its ``reduction`` (mean unless the config says sum)."""
    return partial(LOSSES[cfg.get("loss", "xent")], reduction=cfg.get("reduction", "mean"))


def compiled_step(opt, compiled, *args):
    """``opt.zero_grad(); loss = compiled(*args); loss.backward(); opt.step()``."""
    def step():
        opt.zero_grad()
        loss = compiled(*args)
        loss.backward()
        opt.step()
        return loss
    return step


def make(impl: str, cfg: dict):
    forward, params, x, y = net(cfg)
    loss_of = loss_fn(cfg)
    name, hyper = M.OPTIMIZERS[cfg.get("opt", "sgd")]
    opt = optim.OPTIMIZERS[name](params, lr=cfg["lr"], **hyper)
    xd, yd = gg.backend.to_backend(x), gg.backend.to_backend(y)
    xt, yt = gg.asarray(xd), gg.asarray(yd)
    if impl == "eager":
        def step():
            loss = loss_of(forward(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
    elif impl == "graph":
        xs = gg.Placeholder((*x.shape[:-2], None, x.shape[-1]), "float32", name="x")
        ys = gg.Placeholder((None, *y.shape[1:]), yd.dtype, name="y")
        loss = loss_of(forward(xs), ys)
        feed = {xs: xd, ys: yd}

        def step():
            return opt.minimize(loss, feed=feed)
    elif impl == "compile":
        if not hasattr(gg, "compile"):
            raise Skip("gg.compile is not in this build")
        step = compiled_step(opt, gg.compile(lambda xb, yb: loss_of(forward(xb), yb)), xt, yt)
    else:
        raise Skip(f"no gpugrad row {impl}")
    step.params = lambda: [gg.to_numpy(p.data) for p in params]
    return step
