"""Run under ``mpiexec -n 2`` by tests/test_distributed_mpi.py: many checks in one launch.

Each rank writes its results to ``<dir>/rank<R>.json`` (dir: the first argument); the test
reads them. A check that fails
is recorded as a string, never raised, so one launch reports every check.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

import gpugrad as gg
from gpugrad import distributed as dist
from gpugrad.distributed import sharded

group = dist.init()
R, N = group.rank, group.size
out: dict = {"rank": R, "size": N, "backend": group.backend, "failures": [], "diffs": {},
             "state_diffs": {}, "shared_memory_off": os.environ.get("GPUGRAD_DIST_SHM") == "0"}


def check(name):
    def run(fn):
        try:
            fn()
        except Exception:
            out["failures"].append(f"{name}: {traceback.format_exc()}")
        return fn
    return run


# --- collectives ----------------------------------------------------------------------------

def strict_backend():
    import array_api_strict
    return gg.backend.make_backend("array_api_strict", array_api_strict.Device("device1"))


@check("collectives")
def _():
    for backend in ("numpy", strict_backend()):
        with gg.use_backend(backend) as b:
            xp = b.xp
            for dtype in ("float32", "float64", "int64"):
                for shape in ((), (0,), (3, 2)):
                    base = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) + 1
                    mine = np.asarray(base * (R + 1))  # rank r holds (r + 1) * base
                    x = gg.backend.to_backend(mine)
                    total = base * sum(r + 1 for r in range(N))
                    want = {"sum": total, "max": base * N,
                            "mean": (total // N if dtype == "int64" else total / N)}
                    for op, expect in want.items():
                        got = dist.all_reduce(x, op)
                        assert type(got) is type(x), (op, type(got))
                        assert tuple(got.shape) == shape and got.dtype == x.dtype, (op, shape)
                        np.testing.assert_array_equal(gg.to_numpy(got), expect.astype(dtype))
                        assert np.array_equal(gg.to_numpy(x), mine)  # input untouched
                    t = dist.all_reduce(gg.asarray(x), "sum")
                    assert isinstance(t, gg.Tensor) and not t.requires_grad
                    np.testing.assert_array_equal(gg.to_numpy(t), total.astype(dtype))
                    for root in range(N):
                        got = dist.broadcast(x, root)
                        np.testing.assert_array_equal(gg.to_numpy(got),
                                                      (base * (root + 1)).astype(dtype))
                    assert xp is gg.backend.namespace_of(got)


@check("broadcast_parameters")
def _():
    model = gg.nn.MLP([3, 4, 2], seed=R)  # a different start on each rank
    dist.broadcast_parameters(model)
    ref = gg.nn.MLP([3, 4, 2], seed=0)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_array_equal(gg.to_numpy(p.data), gg.to_numpy(q.data), err_msg=n)


@check("mismatch")
def _():
    w = gg.Variable(np.zeros((3, 2 + R)), name="W")
    try:
        dist.DistributedOptimizer(gg.optim.SGD([w], lr=0.1))
    except dist.DistributedError as exc:
        out["mismatch"] = str(exc)
    else:
        out["mismatch"] = None


@check("missing gradient counts as zero")
def _():
    a, b = gg.Variable(np.ones(2)), gg.Variable(np.ones(3))
    opt = dist.DistributedOptimizer(gg.optim.SGD([a, b], lr=1.0), bucket_mb=1e-6, overlap=True)
    assert [bk.members for bk in opt.average.buckets] == [[1], [0]]
    loss = gg.sum(a * a) if R == 1 else gg.sum(a * a) + gg.sum(b * 3.0)  # b unused on rank 1
    loss.backward()
    assert opt.overlap.started == 2  # both buckets, in the same order on every rank
    opt.step()
    np.testing.assert_array_equal(gg.to_numpy(a.data), np.ones(2) - 2.0)
    # (N - 1) ranks send 3, rank 1 sends zeros (exact for N = 2; to rounding otherwise)
    np.testing.assert_allclose(gg.to_numpy(b.data), np.ones(3) - 3.0 * (N - 1) / N,
                               rtol=0, atol=1e-15)
    # a step where only rank 0 runs backward at all: rank 1 contributes zeros
    opt.zero_grad()
    if R == 0:
        gg.sum(a * 4.0).backward()
    opt.step()
    np.testing.assert_allclose(gg.to_numpy(a.data), np.ones(2) - 2.0 - 4.0 / N,
                               rtol=0, atol=1e-15)


@check("sharded update")
def _():
    # the ranks start from different values: rank 0's become everyone's
    r = np.random.default_rng(R)
    a, b = gg.Variable(r.normal(size=(3, 2))), gg.Variable(np.full(5, float(R)))
    a0 = group.allgather(gg.to_numpy(a.data))[0]
    opt = dist.DistributedOptimizer(gg.optim.SGD([a, b], lr=0.5, momentum=0.5))
    if opt.sharded is None:  # without shared memory each rank keeps its own copy
        dist.broadcast_parameters([a, b])
    np.testing.assert_array_equal(gg.to_numpy(a.data), a0)
    np.testing.assert_array_equal(gg.to_numpy(b.data), np.zeros(5))
    out["sharded_opt"] = opt.sharded is not None
    # b has no gradient on rank 1: it counts as zero there (mean of 3 and 0 on 2 ranks)
    loss = gg.sum(a * 2.0) if R == 1 else gg.sum(a * 2.0) + gg.sum(b * 3.0)
    loss.backward()
    opt.step()
    np.testing.assert_array_equal(gg.to_numpy(a.data), a0 - 1.0)
    np.testing.assert_allclose(gg.to_numpy(b.data), np.full(5, -1.5 * (N - 1) / N),
                               rtol=0, atol=1e-15)
    # a parameter rebound between steps (a checkpoint loaded on every rank) and a reset
    # optimizer state are copied into the shared memory at the next step
    a.data = np.full((3, 2), 10.0)
    opt.load_state_dict({**opt.state_dict(), "state": [{}, {}]})
    opt.zero_grad()
    gg.sum(a * 2.0).backward()
    opt.step()  # momentum restarts from zero: a -= 0.5 * 2
    np.testing.assert_array_equal(gg.to_numpy(a.data), np.full((3, 2), 9.0))
    st = opt.state_dict()["state"]
    np.testing.assert_array_equal(st[0]["momentum"], np.full((3, 2), 2.0))
    np.testing.assert_array_equal(st[1]["momentum"], np.zeros(5))
    # synchronize() (to read or clip the mean gradient), then step() with it
    opt.zero_grad()
    gg.sum(a * float(R + 1)).backward()
    opt.synchronize()
    np.testing.assert_array_equal(gg.to_numpy(a.grad), np.full((3, 2), (N + 1) / 2))
    a.grad = a.grad * 0.5
    opt.step()  # momentum 0.5 * 2 + (N + 1) / 4 (1.75 on 2 ranks); a = 9 - 0.5 * momentum
    np.testing.assert_allclose(gg.to_numpy(a.data), np.full((3, 2), 9 - 0.5 * (1 + (N + 1) / 4)),
                               rtol=0, atol=1e-15)
    every = group.allgather([gg.to_numpy(a.data).tolist(), gg.to_numpy(b.data).tolist()])
    assert all(e == every[0] for e in every)
    # the wrapped optimizer stepped directly would write each rank's own update into the
    # shared parameters: refused with the reason, nothing written
    if opt.sharded is not None:
        before = gg.to_numpy(a.data).copy()
        for call in (opt.optimizer.step, lambda: opt.optimizer.minimize(gg.sum(a * 1.0))):
            try:
                call()
            except RuntimeError as exc:
                out["direct_step"] = str(exc)
            else:
                out["direct_step"] = None
                break
        np.testing.assert_array_equal(gg.to_numpy(a.data), before)
        group.barrier()

    # complex and float32 parameters (Adam's complex step, the in-place real one), 3 steps,
    # against one process's Adam fed the mean gradient
    r = np.random.default_rng(5)
    starts = [r.normal(size=(4, 3)) + 1j * r.normal(size=(4, 3)),
              r.normal(size=7).astype(np.float32)]
    g0 = [r.normal(size=(4, 3)) - 2j * r.normal(size=(4, 3)), r.normal(size=7).astype("f4")]
    mine = [gg.Variable(np.array(v)) for v in starts]
    ref = [gg.Variable(np.array(v)) for v in starts]
    opt, plain = dist.DistributedOptimizer(gg.optim.Adam(mine, lr=0.1)), gg.optim.Adam(ref, lr=0.1)
    assert opt.sharded is not None or out["shared_memory_off"]
    for k in range(3):
        for p, q, g in zip(mine, ref, g0):
            p.grad = g * float(R + k + 1)
            q.grad = g * (sum(float(rr + k + 1) for rr in range(N)) / N)
        opt.step()
        plain.step()
    for p, q in zip(mine, ref):
        assert p.dtype == q.dtype
        np.testing.assert_allclose(gg.to_numpy(p.data), gg.to_numpy(q.data), rtol=0,
                                   atol=1e-12 if p.dtype == np.complex128 else 1e-6)

    class Scaled(gg.optim.SGD):  # an update that is not known to be elementwise
        def update(self, p, g, state):
            super().update(p, g * 2.0, state)

    c = gg.Variable(np.ones(4))
    opt = dist.DistributedOptimizer(Scaled([c], lr=0.25))
    assert opt.sharded is None
    gg.sum(c * float(R + 1)).backward()  # mean gradient (1 + 2) / 2 on 2 ranks
    opt.step()
    np.testing.assert_allclose(gg.to_numpy(c.data), 1.0 - 0.5 * (N + 1) / 2, atol=1e-15)


@check("gradients written into shared memory")
def _():
    from gpugrad import eager
    from gpugrad.distributed import sharded

    r = np.random.default_rng(11 + R)
    x = gg.asarray(r.normal(size=(6, 4)))
    for overlap in (False, True):
        model = gg.nn.MLP([4, 5, 3], seed=0, dtype="float64")
        # this rank's own gradient, as one process computes it
        plain = gg.nn.MLP([4, 5, 3], seed=0, dtype="float64")
        gg.sum(plain(x) ** 2).backward()
        opt = dist.DistributedOptimizer(gg.optim.SGD(model.parameters(), lr=0.5),
                                        overlap=overlap)
        if opt.sharded is None:
            assert out["shared_memory_off"]
            continue
        ps = model.parameters()
        sinks = opt.sharded.sinks
        assert set(sinks) == set(ps)
        # (read before backward: with overlap, once every rank's backward has ended, other
        # ranks may already update their chunks of the shared parameters)
        start = [np.array(p.data) for p in ps]
        gg.sum(model(x) ** 2).backward()
        # .grad is this rank's slot of the shared buffer, holding its own gradient
        assert all(p.grad is sinks[p] for p in ps)
        for p, q in zip(ps, plain.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
        opt.step()  # ... which the step leaves as it is
        for p, q in zip(ps, plain.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
        mean = [sum(g) / N for g in zip(*group.allgather([q.grad for q in plain.parameters()]))]
        for p, s0, m in zip(ps, start, mean):
            np.testing.assert_allclose(p.data, s0 - 0.5 * m, rtol=0, atol=1e-15)
        # two backwards without zero_grad: .grad is the sum, in a private array (the slot,
        # which an array kept from the first .grad is, then gets the sum: documented)
        opt.zero_grad()
        start = [np.array(p.data) for p in ps]
        gg.sum(model(x)).backward()
        first = [np.array(p.grad) for p in ps]
        gg.sum(model(x) * 3.0).backward()
        assert not any(p.grad is sinks[p] for p in ps)
        for p, f in zip(ps, first):
            np.testing.assert_allclose(p.grad, 4.0 * f, rtol=1e-14, atol=1e-15)
        sums = group.allgather([np.array(p.grad) for p in ps])
        opt.step()
        for p, s0, m in zip(ps, start, [sum(g) / N for g in zip(*sums)]):
            np.testing.assert_allclose(p.data, s0 - 0.5 * m, rtol=0, atol=1e-14)
        # close(): private copies (equal on every rank), no more sinks, the windows freed;
        # later steps refuse, the wrapped optimizer steps directly again
        values = [np.array(p.data) for p in ps]
        opt.close()
        opt.close()  # idempotent
        assert opt.sharded.windows == [] and opt.sharded not in sharded._OPEN
        assert all(b.shared is None for b in opt.average.buckets)
        assert not any(p in eager.grad_sinks for p in ps)
        for p, v in zip(ps, values):
            assert p.data.base is None  # its own memory
            np.testing.assert_array_equal(p.data, v)
        every = group.allgather([np.array(p.data) for p in ps])
        assert all(np.array_equal(a, b) for e in every for a, b in zip(e, every[0]))
        try:
            opt.step()
        except RuntimeError as exc:
            assert "closed" in str(exc), exc
        else:
            raise AssertionError("a step after close() did not raise")
        opt.optimizer.zero_grad()
        gg.sum(model(x)).backward()
        assert not any(p.grad is sinks.get(p) for p in ps)
        opt.optimizer.step()  # this rank alone, on its own copy


@check("shared-memory buckets")
def _():
    # odd sizes (chunks of 0 and 1 values), several dtypes, an empty bucket; twice, so the
    # second call reuses the buffers; every rank gets the mean, equal to MPI's own allreduce
    shapes = [(), (1,), (3, 5), (0,), (7,)]
    for dtype in ("float32", "float64", "complex128"):
        ps = [gg.Variable(np.zeros(s, dtype)) for s in shapes]
        avg = dist.GradientAverager(ps, group, bucket_mb=1e-6)  # one parameter per bucket
        both = dist.GradientAverager(ps, group, bucket_mb=1.0)  # all in one bucket
        for step in range(2):
            r = np.random.default_rng(100 * step + R)
            gs = [np.asarray(r.normal(size=s) * (1 + 1j if dtype == "complex128" else 1),
                             dtype) for s in shapes]
            gs[4] = None if R == 1 else gs[4]  # None counts as zero
            want = [gg.to_numpy(dist.all_reduce(g if g is not None else np.zeros(s, dtype),
                                                "sum")) / N for g, s in zip(gs, shapes)]
            for a in (avg, both):
                got = a(gs)
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
                    assert g.dtype == np.dtype(dtype)
            allg = group.allgather([g.tolist() for g in both(gs)])
            assert allg[0] == allg[-1]  # every rank holds the same bits
    used = [b.shared is not None for b in both.buckets + avg.buckets if b.numel]
    out["shared_memory"] = all(used)


# --- equivalence: N ranks x batch b == one process x batch N*b ------------------------------

rng = np.random.default_rng(42)
X = rng.normal(size=(96, 5))
Y = (X @ rng.normal(size=(5, 3))).argmax(axis=1).astype(np.int64)
B_RANK, STEPS = 4, 20


def params():
    r = np.random.default_rng(7)
    return [gg.Variable(r.normal(size=(5, 6)), name="W1"), gg.Variable(np.zeros(6), name="b1"),
            gg.Variable(r.normal(size=(6, 3)), name="W2"), gg.Variable(np.zeros(3), name="b2")]


def forward(ps, x):
    W1, b1, W2, b2 = ps
    return gg.tanh(x @ W1 + b1) @ W2 + b2


def batches(batch, shard):
    epoch = 0
    while True:
        yield from gg.data.Batches(X, Y, batch, seed=epoch, shard=shard)
        epoch += 1


def train(make_opt, ps, batch, shard, mode, wrap, states=None):
    opt = make_opt(ps)
    if wrap:
        opt = dist.DistributedOptimizer(opt, bucket_mb=1e-4, overlap=(mode == "eager"))
        out.setdefault("sharded", []).append(opt.sharded is not None)
    it = batches(batch, shard)
    if mode.startswith("graph"):
        xs = gg.Placeholder((None, 5), "float64", name="x")
        ys = gg.Placeholder((None,), "int64", name="y")
        loss = gg.nn.cross_entropy(forward(ps, xs), ys)
    for _ in range(STEPS):
        xb, yb = next(it)
        if mode == "graph":
            opt.minimize(loss, feed={xs: xb, ys: yb})
        elif mode == "graph-uncompiled":
            opt.minimize(loss, feed={xs: xb, ys: yb}, compiled=False)
        else:
            opt.zero_grad()
            gg.nn.cross_entropy(forward(ps, gg.asarray(xb)), yb).backward()
            if wrap and mode == "eager":  # the sweep started every bucket itself
                assert opt.overlap.started == len(opt.average.buckets) == 4
            opt.step()
    if states is not None:  # the optimizer's state, every parameter's, as rank 0 saves it
        states += [np.asarray(a) for st in opt.state_dict()["state"] for _, a in
                   sorted(st.items())]
    return [gg.to_numpy(p.data) for p in ps]


OPTS = {"sgd-momentum": lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9),
        "adam": lambda ps: gg.optim.Adam(ps, lr=0.01)}
for opt_name, make in OPTS.items():
    for mode in ("eager", "eager-no-overlap", "graph", "graph-uncompiled"):
        @check(f"equivalence {opt_name} {mode}")
        def _(make=make, mode=mode, opt_name=opt_name):
            m = mode if mode.startswith("graph") else "eager"
            s_got, s_ref = [], []
            got = train(make, params(), B_RANK, group, m if mode != "eager-no-overlap"
                        else "eager-no", True, s_got)
            ref = train(make, params(), B_RANK * N, None, m, False, s_ref)
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref))
            assert len(s_got) == len(s_ref) == 8 if opt_name == "adam" else 4
            out["state_diffs"][f"{opt_name} {mode}"] = max(
                float(np.max(np.abs(a - b))) for a, b in zip(s_got, s_ref))
            moved = max(float(np.max(np.abs(a - b))) for a, b in zip(got, [
                gg.to_numpy(p.data) for p in params()]))
            out["diffs"][f"{opt_name} {mode}"] = diff
            assert moved > 1e-3, "the parameters did not move"
            every = group.allgather(got)
            for theirs in every:
                for a, b in zip(theirs, got):
                    np.testing.assert_array_equal(a, b)  # every rank holds the same values

# still open, closed at exit (before MPI finalizes): the launch must end, and end cleanly
out["open_at_exit"] = len(sharded._OPEN)
with open(f"{sys.argv[1]}/rank{R}.json", "w") as f:
    json.dump(out, f)
