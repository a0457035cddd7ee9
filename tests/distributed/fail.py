"""Run under ``mpiexec -n 2`` by tests/test_distributed_mpi.py; rank 0 waits in an allreduce
(or, with a second argument ``step``, in a DistributedOptimizer step: the sharded update on
one machine) while rank 1 either raises (``raise``) or stalls (``stall``). The job must end
non-zero within seconds, naming the rank."""

import sys
import time

import numpy as np

import gpugrad as gg

group = gg.distributed.init()
in_step = sys.argv[2:] == ["step"]
if in_step:
    w = gg.Variable(np.ones(1000))
    opt = gg.distributed.DistributedOptimizer(gg.optim.Adam([w]))
    assert opt.sharded is not None
    gg.sum(w * w).backward()
if group.rank == 1:
    if sys.argv[1] == "raise":
        raise RuntimeError("injected failure on rank 1")
    time.sleep(120)  # stalls: rank 0's watchdog must end the job ($GPUGRAD_DIST_TIMEOUT)
if in_step:
    opt.step()  # rank 0 would wait here forever
else:
    gg.distributed.all_reduce(np.ones(3))
print("rank 0 finished the allreduce, which it must not", flush=True)
