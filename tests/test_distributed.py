"""gg.distributed in one process: a group of size 1 runs the same code paths as many ranks
(bucketing, the backward overlap, sharding, the CLI hooks), with identity collectives.
Multi-process runs are in test_distributed_mpi.py."""

from __future__ import annotations

import gc
import types

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import distributed as dist
from gpugrad import eager
from gpugrad.data import Batches, shard_order
from gpugrad.distributed.overlap import Overlap
from conftest import HAS_GPU
from tests.helpers import assert_on_backend, host


def test_init_is_a_group_of_one_and_the_same_group_twice():
    g = dist.init()
    assert (g.rank, g.size) == (0, 1) and g.backend in ("mpi", "nccl")
    assert dist.init() is g
    with pytest.raises(dist.DistributedError, match="unknown backend 'gloo'"):
        dist.init("gloo")
    other = "nccl" if g.backend == "mpi" else "mpi"
    with pytest.raises(dist.DistributedError, match="already initialised"):
        dist.init(other)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("shape", [(), (0,), (2, 3)])
def test_collectives_are_the_identity_on_one_rank(bk, dtype, shape):
    if dtype == "float64" and not bk.float64:
        pytest.skip("no float64 on this device")
    base = np.asarray(np.arange(int(np.prod(shape))).reshape(shape) - 2, dtype=dtype)
    x = gg.backend.to_backend(base)
    for op in ("sum", "mean", "max"):
        got = dist.all_reduce(x, op)
        assert_on_backend(bk, got)
        assert tuple(got.shape) == shape and got.dtype == x.dtype
        np.testing.assert_array_equal(gg.to_numpy(got), base)
    got = dist.broadcast(x, 0)
    assert_on_backend(bk, got)
    np.testing.assert_array_equal(gg.to_numpy(got), base)
    t = dist.all_reduce(gg.asarray(x), "mean")
    assert isinstance(t, gg.Tensor) and not t.requires_grad
    np.testing.assert_array_equal(gg.to_numpy(t), base)


def test_collectives_are_not_differentiated_and_check_arguments(numpy_backend):
    w = gg.Variable(np.array([1.0, 2.0]))
    out = dist.all_reduce(w, "sum")
    assert isinstance(out, gg.Tensor) and not out.requires_grad
    out.data[0] = 5.0  # a new array, not w's
    assert gg.to_numpy(w.data)[0] == 1.0
    with pytest.raises(ValueError, match="unknown op 'min'.*sum, mean, max"):
        dist.all_reduce(np.ones(2), "min")
    with pytest.raises(TypeError, match="all_reduce: expected a backend array or a Tensor"):
        dist.all_reduce([1.0, 2.0])
    with pytest.raises(ValueError, match="root 1 is not a rank"):
        dist.broadcast(np.ones(2), root=1)


def test_broadcast_parameters_keeps_values_and_bumps_versions(bk):
    model = gg.nn.MLP([3, 4, 2], seed=0, dtype=bk.float_dtype)
    before = {n: host(p.data) for n, p in model.named_parameters()}
    versions = {n: p.version for n, p in model.named_parameters()}
    dist.broadcast_parameters(model)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(host(p.data), before[n])
        assert p.version == versions[n] + 1
        assert_on_backend(bk, p.data)
    with pytest.raises(TypeError, match="expected Variables"):
        dist.broadcast_parameters([np.ones(2)])


def test_buckets_group_by_dtype_in_reverse_order_under_the_cap(numpy_backend):
    ps = [gg.Variable(np.zeros((256, 256), "float32")),   # 256 KiB
          gg.Variable(np.zeros(10)),
          gg.Variable(np.zeros((256, 256), "float32")),
          gg.Variable(np.zeros(5, "float32"))]
    plan = dist.plan_buckets(ps, bucket_mb=0.3)
    assert [(b.dtype, b.members) for b in plan] == [
        ("float32", [3, 2]), ("float64", [1]), ("float32", [0])]
    assert plan[0].offsets == [0, 5] and plan[0].numel == 5 + 256 * 256
    assert [b.members for b in dist.plan_buckets(ps)] == [[3, 2, 0], [1]]  # 25 MiB
    with pytest.raises(ValueError, match="bucket_mb must be positive"):
        dist.plan_buckets(ps, 0)


def test_gradient_averager_round_trips_and_fills_missing_with_zeros(bk):
    f = bk.float_dtype
    ps = [gg.Variable(np.ones((2, 3), f)), gg.Variable(np.ones(4, f)),
          gg.Variable(np.ones((), f))]
    avg = dist.GradientAverager(ps, bucket_mb=1e-5)  # one parameter per bucket
    assert len(avg.buckets) == 3
    gs = [gg.backend.to_backend(np.arange(6, dtype=f).reshape(2, 3)), None,
          gg.backend.to_backend(np.asarray(3.0, f))]
    out = avg(gs)
    np.testing.assert_array_equal(host(out[0]), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(host(out[1]), np.zeros(4))
    np.testing.assert_array_equal(host(out[2]), np.asarray(3.0))
    for p, g in zip(ps, out):
        assert tuple(g.shape) == p.shape and g.dtype == p.dtype
        assert_on_backend(bk, g)
    with pytest.raises(ValueError, match="got 2 gradients for 3 parameters"):
        avg(gs[:2])
    with pytest.raises(ValueError, match=r"gradient for parameter 0 has shape \(3,\)"):
        avg([gg.backend.to_backend(np.ones(3, f)), None, None])


def _mlp_run(opt_factory, wrap, steps=5, accumulate=False, **kw):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = rng.integers(0, 3, size=40).astype(np.int64)
    model = gg.nn.MLP([4, 5, 3], seed=1, dtype="float64")
    opt = opt_factory(model.parameters())
    if wrap:
        opt = dist.DistributedOptimizer(opt, **kw)
    it = iter(Batches(X, y, 8, seed=0))
    for _ in range(steps):
        xb, yb = next(it)
        opt.zero_grad()
        if accumulate:  # two half batches, gradients summed in .grad
            for part in (slice(0, 4), slice(4, 8)):
                (gg.nn.cross_entropy(model(gg.asarray(xb[part, ...])), yb[part]) * 0.5).backward()
        else:
            gg.nn.cross_entropy(model(gg.asarray(xb)), yb).backward()
        if wrap:  # a group of one never overlaps: nothing to send
            assert opt.overlap is None
        opt.step()
    return [host(p.data) for p in model.parameters()], opt


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("make", [lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: gg.optim.Adam(ps, lr=0.01)], ids=["sgd", "adam"])
def test_one_rank_distributed_training_equals_plain_training(bk64, make, overlap, accumulate):
    got, opt = _mlp_run(make, True, accumulate=accumulate, overlap=overlap, bucket_mb=1e-4)
    want, _ = _mlp_run(make, False, accumulate=accumulate)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert opt.steps == 5


@pytest.mark.parametrize("how", ["compiled", "uncompiled", "train_step"])
def test_graph_minimize_equals_plain_minimize(bk64, how):
    rng = np.random.default_rng(3)
    xb, tb = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    x = gg.Placeholder((None, 3), "float64", name="x")
    t = gg.Placeholder((None, 2), "float64", name="t")
    results = []
    for wrap in (True, False):
        W = gg.Variable(np.ones((3, 2)) * 0.1, name="W")
        loss = gg.mean((gg.tanh(x @ W) - t) ** 2)
        opt = gg.optim.Adam([W], lr=0.05)
        if wrap:
            opt = dist.DistributedOptimizer(opt)
        for _ in range(10):
            if how == "train_step" and wrap:  # the compiled step with the averager in it,
                value = gg.graph.train_step(loss, opt, {x: xb, t: tb})  # as on many ranks
            else:
                value = opt.minimize(loss, feed={x: xb, t: tb}, compiled=how != "uncompiled")
        results.append((host(W.data), float(value)))
        assert opt.steps == 10
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=0, atol=1e-12)
    assert abs(results[0][1] - results[1][1]) <= 1e-12


def test_synchronize_stores_the_gradient_which_matches_finite_differences(bk64):
    w0 = np.array([0.3, -1.2, 0.7])
    c = gg.backend.to_backend(np.array([1.0, 2.0, -0.5]))

    def f(w):
        return gg.sum(gg.sigmoid(w * c) ** 2)

    w = gg.Variable(w0)
    opt = dist.DistributedOptimizer(gg.optim.SGD([w], lr=0.1))
    f(w).backward()
    opt.synchronize()
    eps = 1e-6
    fd = np.array([(float(f(gg.asarray(w0 + eps * e))) - float(f(gg.asarray(w0 - eps * e))))
                   / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(host(w.grad), fd, rtol=1e-7, atol=1e-9)
    w.grad = w.grad * 0.0  # edits after synchronize() are what step() uses
    opt.step()
    np.testing.assert_array_equal(host(w.data), w0)


def test_wrapper_forwards_lr_state_and_zero_grad(numpy_backend):
    w = gg.Variable(np.ones(2))
    inner = gg.optim.SGD([w], lr=0.5, momentum=0.9)
    opt = dist.DistributedOptimizer(inner)
    sched = gg.optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert inner.lr == 0.25 and opt.lr == 0.25 and opt.momentum == 0.9
    gg.sum(w * w).backward()
    opt.zero_grad()
    assert w.grad is None and opt.overlap is None
    assert opt.state_dict()["type"] == "SGD"
    with pytest.raises(TypeError, match="expected a gg.optim optimizer"):
        dist.DistributedOptimizer(object())


def test_overlap_ignores_unrelated_backward_and_unhooks_when_collected(numpy_backend):
    gc.collect()
    n = len(eager.backward_hooks)
    w, v = gg.Variable(np.ones(2)), gg.Variable(np.ones(3))
    opt = dist.DistributedOptimizer(gg.optim.SGD([w], lr=0.5), overlap=True)
    assert opt.overlap is None and len(eager.backward_hooks) == n  # a group of one: no hook
    # the hook itself, on a group of one (the two-rank runs use it through the optimizer)
    ov = Overlap(dist.GradientAverager([w, v], bucket_mb=1e-6))
    assert len(eager.backward_hooks) == n + 1
    other = gg.Variable(np.ones(3))
    gg.sum(other * 2.0).backward()
    assert ov.started == 0 and ov.take() is None
    gg.sum(w * 3.0).backward()  # v gets no gradient: it counts as zero
    assert ov.started == 2
    got = ov.take()
    np.testing.assert_array_equal(got[0], np.full(2, 3.0))
    np.testing.assert_array_equal(got[1], np.zeros(3))
    ov2 = Overlap(dist.GradientAverager([w], bucket_mb=1e-6))
    del ov
    gc.collect()
    assert len(eager.backward_hooks) == n + 1
    ov2.close()  # unhooks at once, and only once
    assert len(eager.backward_hooks) == n
    del ov2
    gc.collect()
    assert len(eager.backward_hooks) == n


def test_close_ends_the_wrapper_and_frees_the_optimizer(numpy_backend):
    w = gg.Variable(np.ones(2))
    opt = dist.DistributedOptimizer(gg.optim.SGD([w], lr=0.5))
    gg.sum(w * w).backward()
    opt.step()
    opt.close()
    opt.close()
    for call in (opt.step, lambda: opt._apply([(w, np.ones(2))]),
                 lambda: opt.minimize(gg.sum(w * 1.0))):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    np.testing.assert_array_equal(w.data, np.zeros(2))  # the refused steps wrote nothing
    opt.optimizer.zero_grad()
    gg.sum(w * 2.0).backward()
    opt.optimizer.step()  # the wrapped optimizer is free to step on its own
    np.testing.assert_array_equal(w.data, np.full(2, -1.0))


# --- sharding ---------------------------------------------------------------------------------

def _ranks(size):
    return [types.SimpleNamespace(rank=r, size=size) for r in range(size)]


@pytest.mark.parametrize("n,size,batch", [(24, 2, 4), (25, 2, 4), (31, 3, 4), (7, 2, 8)])
def test_shards_are_disjoint_equal_and_together_match_one_process(numpy_backend, n, size,
                                                                  batch):
    X = np.arange(n, dtype=np.float64).reshape(n, 1)
    for epoch_seed in (0, 1):
        single = [gg.to_numpy(xb)[:, 0] for xb, _ in
                  Batches(X, None, batch * size, seed=epoch_seed)]
        per_rank = [[gg.to_numpy(xb)[:, 0] for xb, _ in
                     Batches(X, None, batch, seed=epoch_seed, shard=g)] for g in _ranks(size)]
        counts = [sum(len(b) for b in r) for r in per_rank]
        assert counts == [n // size] * size  # equal shares
        assert len({len(r) for r in per_rank}) == 1  # same number of steps on every rank
        rows = np.concatenate([np.concatenate(r) for r in per_rank])
        assert len(set(rows.tolist())) == len(rows)  # disjoint
        for k, step in enumerate(zip(*per_rank)):  # step k covers the same rows
            together = np.sort(np.concatenate(step))
            np.testing.assert_array_equal(together, np.sort(single[k][:len(together)]))
        assert len(Batches(X, None, batch, seed=0, shard=_ranks(size)[0])) == len(per_rank[0])


def test_shard_options(numpy_backend):
    X = np.arange(20.0).reshape(20, 1)
    g = _ranks(2)[1]
    assert shard_order(None, 20, 4, 1, 2).tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 18, 19]
    b = Batches(X, None, 4, seed=0, shard=g, drop_last=True)
    assert [len(xb) for xb, _ in b] == [4, 4] and len(b) == 2
    b = Batches(X, None, 4, shuffle=False, shard=g, resident=False)
    assert [gg.to_numpy(xb)[:, 0].tolist() for xb, _ in b][0] == [4.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="shard needs a seed"):
        Batches(X, None, 4, seed=None, shard=g)
    one = dist.init()  # a group of size 1 shards nothing
    assert len(Batches(X, None, 4, seed=0, shard=one)) == 5


# --- CLI without a launcher --------------------------------------------------------------------

def test_cli_distributed_without_launcher_runs_as_one_process(capsys):
    from gpugrad import cli

    assert cli.main(["train", "--distributed", "--epochs", "1", "--quiet",
                     "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert out.count("running as one process") == 1
    assert "done: train accuracy" in out
    assert cli.main(["train", "--distributed", "--data", "/nonexistent.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


# --- NCCL --------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
def test_nccl_group_of_one_trains_without_host_sync():
    """The NCCL engine (cupyx.distributed) in a group of one: buckets stay on the device and
    a training step, eager (with overlap) and graph, never waits for the host."""
    import warnings

    import cupy
    import cupyx

    from gpugrad.distributed import group as G

    with gg.use_backend("cupy"):
        group = G._init_nccl(G._mpi(), 60.0)
        assert (group.backend, group.size, group.rank) == ("nccl", 1, 0)
        x = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
        got = dist.all_reduce(x, "sum", group=group)
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(got), cupy.asnumpy(x))
        model = gg.nn.MLP([8, 16, 4], seed=0)
        opt = dist.DistributedOptimizer(gg.optim.Adam(model.parameters(), lr=0.01),
                                        group=group)
        xb = cupy.asarray(np.random.default_rng(0).normal(size=(32, 8)), dtype=cupy.float32)
        yb = cupy.arange(32, dtype=cupy.int64) % 4
        xs = gg.Placeholder((None, 8), name="x")
        ys = gg.Placeholder((None,), "int64", name="y")
        graph_loss = gg.nn.cross_entropy(model(xs), ys)

        def steps():
            opt.zero_grad()
            gg.nn.cross_entropy(model(gg.asarray(xb)), yb).backward()
            opt.step()
            opt.minimize(graph_loss, feed={xs: xb, ys: yb})

        steps()  # warm-up: kernels compiled, memory pool filled
        cupy.cuda.Device().synchronize()
        before = [p.data.copy() for p in model.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with cupyx.allow_synchronize(False):
                for _ in range(3):
                    steps()
        moved = [float(cupy.abs(p.data - b).max()) for p, b in zip(model.parameters(), before)]
        assert min(moved) > 0
