import time, os, numpy as np
from mpi4py import MPI
from gpugrad import distributed as dist
from gpugrad.distributed import shm
g = dist.init()
node = shm.node_comm(g)
sa = shm.SharedArray(g, node, 64, "int64")
flags = sa.array
r = g.rank
def mpi_bar():
    g.wait(node.Ibarrier(), "b")
def raw_bar():
    node.Barrier()
k = [0]
def spin_bar():
    k[0] += 1; kk = k[0]
    sa.win.Sync()
    flags[r * 8] = kk
    q = (1 - r) * 8
    n = 0
    while flags[q] < kk:
        n += 1
        if n > 1000: os.sched_yield()
    sa.win.Sync()
for name, f in (("mpi Ibarrier+wait", mpi_bar), ("Barrier", raw_bar), ("spin", spin_bar), ("mpi Ibarrier+wait", mpi_bar), ("spin", spin_bar)):
    for _ in range(100): f()
    ts = []
    for _ in range(2000):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts.sort()
    print(r, name, "median us", round(ts[len(ts)//2]*1e6, 2), "p90", round(ts[int(len(ts)*.9)]*1e6, 2), flush=True)
