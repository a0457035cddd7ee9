"""gpugrad's two front ends on each workload, using the library as a user would."""

from __future__ import annotations

import numpy as np

import gpugrad as gg
from gpugrad import nn, optim

from . import workloads as W
from .gpugrad_models import compiled_step


def _model(sizes, params) -> nn.MLP:
    """The workload's sigmoid MLP, with the floor's initial parameters."""
    model = nn.MLP(sizes, activation="sigmoid", seed=0)
    model.load_state_dict({name: p for (name, _), p in zip(model.named_parameters(), params)})
    return model


def make(workload: str, impl: str, cfg: dict):
    if impl == "compile":
        return _compiled(workload, cfg)
    eager = impl == "eager"
    if workload == "mlp":
        params, x, labels, onehot = W.mlp_data(cfg)
        model = _model(cfg["sizes"], params)
        opt = optim.SGD(model.parameters(), lr=cfg["lr"])
        xd, yd = gg.backend.to_backend(x), gg.backend.to_backend(labels)
        if eager:
            xt = gg.asarray(xd)

            def step():
                loss = nn.cross_entropy(model(xt), yd)
                opt.zero_grad()
                loss.backward()
                opt.step()
                return loss
            return step
        xs = gg.Placeholder((None, cfg["sizes"][0]), "float32", name="x")
        ys = gg.Placeholder((None,), yd.dtype, name="labels")
        loss = nn.cross_entropy(model(xs), ys)
        feed = {xs: xd, ys: yd}
        return lambda: opt.minimize(loss, feed=feed)
    if workload == "chain":
        y0, ws = W.chain_data(cfg)
        wv = [gg.Variable(w) for w in ws]
        y0d = gg.backend.to_backend(y0)
        if eager:
            y0t = gg.asarray(y0d)

            def step():
                for w in wv:
                    w.grad = None
                y = y0t
                for w in wv:
                    y = gg.sigmoid(y * w + 0.1)
                gg.sum(y).backward()
                return [w.grad for w in wv]
            return step
        ys = gg.Placeholder((cfg["n"],), "float32", name="y0")
        y = ys
        for w in wv:
            y = gg.sigmoid(y * w + 0.1)
        loss = gg.sum(y)
        feed = {ys: y0d}
        return lambda: gg.gradients(loss, wv, feed=feed)
    if workload == "bmm":
        A, B = (gg.backend.to_backend(a) for a in W.bmm_data(cfg))
        if eager:
            Av, Bv = gg.Variable(A), gg.Variable(B)

            def step():
                Av.grad = Bv.grad = None
                gg.sum(gg.sigmoid(Av @ Bv)).backward()
                return Av.grad, Bv.grad
            return step
        As = gg.Placeholder(A.shape, "float32", name="A")
        Bs = gg.Placeholder(B.shape, "float32", name="B")
        loss = gg.sum(gg.sigmoid(As @ Bs))
        feed = {As: A, Bs: B}
        return lambda: gg.gradients(loss, [As, Bs], feed=feed)
    if workload == "digits":
        from gpugrad.cli import run_epoch

        sizes, params, batches = W.digits_data(cfg)
        model = _model(sizes, params)
        opt = optim.Adam(model.parameters(), lr=cfg["lr"])
        dbatches = [(gg.backend.to_backend(xb), gg.backend.to_backend(yb))
                    for xb, yb in batches]
        if eager:
            def epoch():
                run_epoch(model, opt, dbatches)
        else:
            xs = gg.Placeholder((None, 64), "float32", name="x")
            ys = gg.Placeholder((None,), dbatches[0][1].dtype, name="labels")
            loss = nn.cross_entropy(model(xs), ys)

            def epoch():
                for xb, yb in dbatches:
                    opt.minimize(loss, feed={xs: xb, ys: yb})
        epoch.params = lambda: [gg.to_numpy(p.data) for p in model.parameters()]
        return epoch
    raise W.Skip(f"no gpugrad run for {workload}")


def _compiled(workload: str, cfg: dict):
    """``step = gg.compile(fn)``, then ``loss = step(...); loss.backward(); opt.step()``."""
    if not hasattr(gg, "compile"):
        raise W.Skip("gg.compile is not in this build")
    if workload == "mlp":
        params, x, labels, onehot = W.mlp_data(cfg)
        model = _model(cfg["sizes"], params)
        opt = optim.SGD(model.parameters(), lr=cfg["lr"])
        xt = gg.asarray(gg.backend.to_backend(x))
        yt = gg.asarray(gg.backend.to_backend(labels))
        step = gg.compile(lambda xb, yb: nn.cross_entropy(model(xb), yb))
        return compiled_step(opt, step, xt, yt)
    if workload == "chain":
        y0, ws = W.chain_data(cfg)
        wv = [gg.Variable(w) for w in ws]
        y0t = gg.asarray(gg.backend.to_backend(y0))

        def fn(y):
            for w in wv:
                y = gg.sigmoid(y * w + 0.1)
            return gg.sum(y)
        step = gg.compile(fn)

        def run():
            for w in wv:
                w.grad = None
            step(y0t).backward()
            return [w.grad for w in wv]
        return run
    if workload == "digits":
        sizes, params, batches = W.digits_data(cfg)
        model = _model(sizes, params)
        opt = optim.Adam(model.parameters(), lr=cfg["lr"])
        tbatches = [(gg.asarray(gg.backend.to_backend(xb)), gg.asarray(gg.backend.to_backend(yb)))
                    for xb, yb in batches]
        step = gg.compile(lambda xb, yb: nn.cross_entropy(model(xb), yb))

        def epoch():
            for xb, yb in tbatches:
                opt.zero_grad()
                step(xb, yb).backward()
                opt.step()
        epoch.params = lambda: [gg.to_numpy(p.data) for p in model.parameters()]
        return epoch
    raise W.Skip(f"no compile row for {workload}")


_ = np
