"""Per-section timing of the sharded step (2 ranks): mpiexec -n 2 python .prof/prof.py"""
import statistics, sys, time, json
import numpy as np
import gpugrad as gg
from gpugrad import distributed as dist
from gpugrad.distributed import shm, sharded, buckets
from benchmarks import sizes

T = {}
def timed(cls, name, label):
    f = getattr(cls, name)
    def w(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T.setdefault(label, []).append(time.perf_counter() - t0)
    setattr(cls, name, w)

timed(buckets.GradientAverager, "_start_numpy", "pack+announce")
timed(shm.SharedBuffer, "reduce_scatter", "wait+chunksum")
timed(sharded.ShardedUpdate, "_adopt", "adopt")
timed(sharded.ShardedUpdate, "_barrier", "barrier")
timed(sharded.ShardedUpdate, "_update", "update+barrier")
timed(sharded.ShardedUpdate, "step", "step total")

group = dist.init()
cfg = sizes.FULL["mlp"]
rng = np.random.default_rng(sizes.SEED + group.rank)
x = rng.standard_normal((cfg["batch"], cfg["sizes"][0])).astype(np.float32)
y = rng.integers(0, cfg["sizes"][-1], cfg["batch"]).astype(np.int64)
model = gg.nn.MLP(list(cfg["sizes"]), activation="sigmoid", seed=sizes.SEED)
mode = sys.argv[1] if len(sys.argv) > 1 else "sharded"
opt = gg.optim.SGD(model.parameters(), lr=cfg["lr"])
if mode != "plain":
    opt = dist.DistributedOptimizer(opt)
xb = gg.asarray(x)
fb = []
st = []
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 150):
    if i == 20:
        T.clear(); fb.clear(); st.clear()
    group.barrier()
    t0 = time.perf_counter()
    opt.zero_grad()
    gg.nn.cross_entropy(model(xb), y).backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    fb.append(t1 - t0); st.append(t2 - t1)
res = {k: round(statistics.median(v) * 1e6, 1) for k, v in T.items()}
res["fwd+bwd"] = round(statistics.median(fb) * 1e6, 1)
res["opt.step"] = round(statistics.median(st) * 1e6, 1)
res["n/step"] = {k: len(v) // len(st) for k, v in T.items()}
print(group.rank, mode, json.dumps(res), flush=True)
