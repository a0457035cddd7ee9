"""Run under ``mpiexec -n 2`` by tests/test_optim_rules_mpi.py: every optimizer case of
tests/test_optim_rules.py through DistributedOptimizer on 2 ranks (the sharded update where
the ranks share memory), eager and graph, against the hand-written update fed the mean of
the ranks' gradients. Each rank writes ``<dir>/rank<R>.json``; a failing check is recorded,
never raised."""

from __future__ import annotations

import json
import pathlib
import sys
import traceback

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import test_optim_rules as rules

import gpugrad as gg
from gpugrad import distributed as dist

group = dist.init()
R, N = group.rank, group.size
out: dict = {"rank": R, "size": N, "failures": [], "sharded": {}, "diffs": {}}
SCALE = sum(float(r + 1) for r in range(N)) / N  # rank r's gradient is g * (r + 1)


def run(name: str, mode: str) -> None:
    ps = [gg.Variable(x) for x in rules._start()]
    opt = dist.DistributedOptimizer(rules._make(name, ps))
    out["sharded"][f"{name} {mode}"] = opt.sharded is not None
    cs, loss = rules._graph_loss(ps)
    for t in range(rules.STEPS):
        mine = [g * float(R + 1) for g in rules._grads(t)]
        if mode == "graph":
            opt.minimize(loss, feed=dict(zip(cs, mine)))
        else:
            for p, g in zip(ps, mine):
                p.grad = g
            opt.step()
    kind, kw = rules.CASES[name]
    want, states = rules._start(), [{}, {}]
    for t in range(1, rules.STEPS + 1):
        step = rules.HAND[kind](**kw)
        want = [step(p, g * SCALE, st, t) for p, g, st in zip(want, rules._grads(t - 1), states)]
    got = [gg.to_numpy(p.data) for p in ps]
    out["diffs"][f"{name} {mode}"] = max(
        float(np.max(np.abs(a - b) / (np.abs(b) + 1e-300))) for a, b in zip(got, want))
    every = group.allgather(got)
    for theirs in every:
        for a, b in zip(theirs, got):
            np.testing.assert_array_equal(a, b)  # every rank holds the same values
    opt.close()


for name in rules.CASES:
    for mode in ("eager", "graph"):
        try:
            run(name, mode)
        except Exception:  # noqa: BLE001 - recorded for the test to report
            out["failures"].append(f"{name} {mode}: {traceback.format_exc()}")

with open(f"{sys.argv[1]}/rank{R}.json", "w") as f:
    json.dump(out, f)
