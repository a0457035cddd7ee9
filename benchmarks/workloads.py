"""Each workload: host data from a fixed seed, then one ``step()`` per implementation.

``make(name, impl, xp_name, cfg)`` returns a zero-argument callable that runs one iteration,
or raises ``Skip`` when the implementation is not installed or does not apply.
"""

from __future__ import annotations

import numpy as np

from . import floor, floor_models, models, peers, peers_models
from .peers import Skip


def glorot(rng, n_in, n_out):
    a = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-a, a, size=(n_in, n_out)).astype(np.float32)


def mlp_data(cfg, sizes_key="sizes", batch_key="batch"):
    rng = np.random.default_rng(0)
    sizes = cfg[sizes_key]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [glorot(rng, n_in, n_out), np.zeros(n_out, np.float32)]
    x = rng.standard_normal((cfg[batch_key], sizes[0])).astype(np.float32)
    labels = rng.integers(0, sizes[-1], cfg[batch_key])
    onehot = np.eye(sizes[-1], dtype=np.float32)[labels]
    return params, x, labels, onehot


def chain_data(cfg):
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal(cfg["n"]).astype(np.float32)
    ws = [rng.uniform(0.5, 1.5, cfg["n"]).astype(np.float32) for _ in range(cfg["steps"])]
    return y0, ws


def bmm_data(cfg):
    rng = np.random.default_rng(0)
    shape = cfg["shape"]
    scale = 1.0 / np.sqrt(shape[-1])
    return ((rng.standard_normal(shape) * scale).astype(np.float32),
            (rng.standard_normal(shape) * scale).astype(np.float32))


def digits_data(cfg):
    from gpugrad.data import Batches, train_test_split
    from gpugrad.datasets import load_digits

    X, y = load_digits()
    Xtr, ytr, _, _ = train_test_split(X.astype(np.float32), y.astype(np.int64), 0.2, seed=0)
    Xtr = (Xtr - Xtr.mean(0)) / np.where(Xtr.std(0) == 0, 1.0, Xtr.std(0))
    batches = [(xb, yb) for xb, yb in Batches(Xtr.astype(np.float32), ytr, cfg["batch"],
                                             seed=0, resident=False)]
    sizes = (64, *cfg["hidden"], 10)
    rng = np.random.default_rng(0)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [glorot(rng, n_in, n_out), np.zeros(n_out, np.float32)]
    return sizes, params, batches


def make(workload: str, impl: str, xp_name: str, cfg: dict):
    if workload in ("small", "mlp-small", "mlp-large"):  # the mlp step at other shapes
        workload = "mlp"
    if workload in models.MODELS:
        return _model(workload, impl, xp_name, cfg)
    if workload == "digits" and impl in ("jax", "torch"):
        return peers_models.make(workload, impl, cfg)
    if impl == "floor":
        return _floor(workload, xp_name, cfg)
    if impl in ("eager", "graph", "compile"):
        from . import gpugrad_runs

        return gpugrad_runs.make(workload, impl, cfg)
    return peers.make(workload, impl, cfg, "cuda" if xp_name == "cupy" else "cpu")


def _model(workload, impl, xp_name, cfg):
    """The workloads of other shapes (models.py) on the CPU."""
    if xp_name != "numpy":
        raise Skip(f"{workload} runs on the CPU only")
    if impl == "floor":
        params, x, _, target = models.data(cfg)
        step = floor_models.step(np, cfg, params, x, target)
        step.params = lambda: params
        return step
    if impl in ("eager", "graph", "compile"):
        from . import gpugrad_models

        return gpugrad_models.make(impl, cfg)
    return peers_models.make(workload, impl, cfg)


def _xp(xp_name):
    if xp_name == "cupy":
        import cupy

        return cupy
    return np


def _floor(workload, xp_name, cfg):
    xp = _xp(xp_name)
    dev = xp.asarray
    if workload == "mlp":
        params, x, labels, onehot = mlp_data(cfg)
        params = [dev(p.copy()) for p in params]
        x, labels, onehot = dev(x), dev(labels), dev(onehot)
        return lambda: floor.mlp_step(xp, params, x, labels, onehot, cfg["lr"])
    if workload == "chain":
        y0, ws = chain_data(cfg)
        y0, ws = dev(y0), [dev(w) for w in ws]
        return lambda: floor.chain(xp, y0, ws)
    if workload == "bmm":
        A, B = (dev(a) for a in bmm_data(cfg))
        return lambda: floor.bmm(xp, A, B)
    if workload == "digits":
        sizes, params, batches = digits_data(cfg)
        params = [dev(p.copy()) for p in params]
        eye = np.eye(10, dtype=np.float32)
        dbatches = [(dev(xb), dev(yb), dev(eye[yb])) for xb, yb in batches]
        update = floor.Update(xp, "adam", cfg["lr"], params)

        def epoch():
            floor.digits_epoch(xp, params, update, dbatches)
        epoch.params = lambda: params
        return epoch
    raise Skip(f"no floor for {workload}")


__all__ = ["Skip", "make"]
