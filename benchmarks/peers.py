"""The peers, where they happen to be installed: PyTorch, JAX (jit), HIPS autograd, MyGrad.

None is a dependency; a missing peer raises Skip and is reported as skipped. Each runs the
same arithmetic on the same host data as the floor (float32, CPU).
"""

from __future__ import annotations

import importlib

import numpy as np

PEERS = ("torch", "jax", "autograd", "mygrad")


class Skip(Exception):
    """This row cannot run here (peer not installed, or workload not implemented)."""


def _need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Skip(f"{module} not installed") from None


def version(name: str) -> str | None:
    try:
        return importlib.import_module(name).__version__
    except Exception:
        return None


def make(workload: str, impl: str, cfg: dict, device: str = "cpu"):
    from . import workloads as W

    fn = globals().get(f"_{impl}_{workload}")
    if fn is None:
        raise Skip(f"{impl} is not run on {workload}")
    if device != "cpu" and impl != "torch":
        raise Skip(f"{impl} runs on the CPU only here")
    loader = {"mlp": W.mlp_data, "chain": W.chain_data, "bmm": W.bmm_data}[workload]
    if impl == "torch":
        return _torch_on(device, fn(cfg, *loader(cfg), device=device))
    return fn(cfg, *loader(cfg))


def _torch_on(device: str, step):
    """On CUDA, a torch row waits for its own stream before the clock is read."""
    if device == "cpu":
        return step
    torch = _need("torch")
    if not torch.cuda.is_available():
        raise Skip("torch has no CUDA here")

    def synced():
        out = step()
        torch.cuda.synchronize()
        return out
    return synced


# --- PyTorch (eager autograd) ---------------------------------------------------------------

def _torch_mlp(cfg, params, x, labels, onehot, device="cpu"):
    torch = _need("torch")
    ps = [torch.tensor(p, requires_grad=True, device=device) for p in params]
    xt, yt = torch.tensor(x, device=device), torch.tensor(labels, device=device)
    lr = cfg["lr"]

    def step():
        a = torch.sigmoid(xt @ ps[0] + ps[1])
        a = torch.sigmoid(a @ ps[2] + ps[3])
        loss = torch.nn.functional.cross_entropy(a @ ps[4] + ps[5], yt)
        loss.backward()
        with torch.no_grad():
            for p in ps:
                p -= lr * p.grad
                p.grad = None
        return loss
    return step


def _torch_chain(cfg, y0, ws, device="cpu"):
    torch = _need("torch")
    y0t = torch.tensor(y0, device=device)
    wt = [torch.tensor(w, requires_grad=True, device=device) for w in ws]

    def step():
        y = y0t
        for w in wt:
            y = torch.sigmoid(y * w + 0.1)
        return torch.autograd.grad(y.sum(), wt)
    return step


def _torch_bmm(cfg, A, B, device="cpu"):
    torch = _need("torch")
    At = torch.tensor(A, requires_grad=True, device=device)
    Bt = torch.tensor(B, requires_grad=True, device=device)
    return lambda: torch.autograd.grad(torch.sigmoid(At @ Bt).sum(), [At, Bt])


# --- JAX (jit) -------------------------------------------------------------------------------

def _jax_mlp(cfg, params, x, labels, onehot):
    jax = _need("jax")
    jnp = jax.numpy
    lr = cfg["lr"]

    def loss_fn(ps, x, onehot):
        a = jax.nn.sigmoid(x @ ps[0] + ps[1])
        a = jax.nn.sigmoid(a @ ps[2] + ps[3])
        logp = jax.nn.log_softmax(a @ ps[4] + ps[5])
        return -jnp.mean(jnp.sum(logp * onehot, axis=1))

    @jax.jit
    def update(ps, x, onehot):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, onehot)
        return [p - lr * g for p, g in zip(ps, gs)], loss

    state = {"ps": [jnp.asarray(p) for p in params]}
    xj, oj = jnp.asarray(x), jnp.asarray(onehot)

    def step():
        state["ps"], loss = update(state["ps"], xj, oj)
        return jax.block_until_ready(loss)
    return step


def _jax_chain(cfg, y0, ws):
    jax = _need("jax")
    jnp = jax.numpy

    def f(ws, y):
        for w in ws:
            y = jax.nn.sigmoid(y * w + 0.1)
        return jnp.sum(y)

    g = jax.jit(jax.grad(f))
    wj, yj = [jnp.asarray(w) for w in ws], jnp.asarray(y0)
    return lambda: jax.block_until_ready(g(wj, yj))


def _jax_bmm(cfg, A, B):
    jax = _need("jax")
    jnp = jax.numpy
    g = jax.jit(jax.grad(lambda a, b: jnp.sum(jax.nn.sigmoid(a @ b)), argnums=(0, 1)))
    Aj, Bj = jnp.asarray(A), jnp.asarray(B)
    return lambda: jax.block_until_ready(g(Aj, Bj))


# --- HIPS autograd ---------------------------------------------------------------------------

def _autograd_mlp(cfg, params, x, labels, onehot):
    ag = _need("autograd")
    anp = importlib.import_module("autograd.numpy")
    lr = cfg["lr"]
    ps = [p.copy() for p in params]

    def loss_fn(ps):
        a = 1.0 / (1.0 + anp.exp(-(anp.dot(x, ps[0]) + ps[1])))
        a = 1.0 / (1.0 + anp.exp(-(anp.dot(a, ps[2]) + ps[3])))
        z = anp.dot(a, ps[4]) + ps[5]
        m = anp.max(z, axis=1, keepdims=True)
        lse = anp.log(anp.sum(anp.exp(z - m), axis=1, keepdims=True)) + m
        return -anp.mean(anp.sum((z - lse) * onehot, axis=1))

    grad = ag.grad(loss_fn)

    def step():
        for p, g in zip(ps, grad(ps)):
            p -= lr * g.astype(p.dtype)
    return step


def _autograd_chain(cfg, y0, ws):
    ag = _need("autograd")
    anp = importlib.import_module("autograd.numpy")

    def f(ws):
        y = y0
        for w in ws:
            y = 1.0 / (1.0 + anp.exp(-(y * w + 0.1)))
        return anp.sum(y)

    g = ag.grad(f)
    return lambda: g(list(ws))


def _autograd_bmm(cfg, A, B):
    ag = _need("autograd")
    anp = importlib.import_module("autograd.numpy")
    g = ag.grad(lambda ab: anp.sum(1.0 / (1.0 + anp.exp(-anp.matmul(ab[0], ab[1])))))
    return lambda: g([A, B])


# --- MyGrad ----------------------------------------------------------------------------------

def _mygrad_mlp(cfg, params, x, labels, onehot):
    mg = _need("mygrad")
    ps = [mg.tensor(p.copy()) for p in params]
    lr = cfg["lr"]

    def sig(z):
        return 1.0 / (1.0 + mg.exp(-z))

    def step():
        a = sig(mg.matmul(x, ps[0]) + ps[1])
        a = sig(mg.matmul(a, ps[2]) + ps[3])
        z = mg.matmul(a, ps[4]) + ps[5]
        lse = mg.log(mg.sum(mg.exp(z - z.max(axis=1, keepdims=True).data), axis=1,
                            keepdims=True)) + z.max(axis=1, keepdims=True).data
        loss = -mg.mean(mg.sum((z - lse) * onehot, axis=1))
        loss.backward()
        for p in ps:
            p.data -= lr * p.grad
        return loss
    return step


def _mygrad_chain(cfg, y0, ws):
    mg = _need("mygrad")
    wt = [mg.tensor(w) for w in ws]

    def step():
        y = y0
        for w in wt:
            y = 1.0 / (1.0 + mg.exp(-(y * w + 0.1)))
        mg.sum(y).backward()
        return [w.grad for w in wt]
    return step


def _mygrad_bmm(cfg, A, B):
    mg = _need("mygrad")
    At, Bt = mg.tensor(A), mg.tensor(B)

    def step():
        mg.sum(1.0 / (1.0 + mg.exp(-mg.matmul(At, Bt)))).backward()
        return At.grad, Bt.grad
    return step


_ = np
