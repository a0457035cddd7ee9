"""Run under ``mpiexec -n 2`` by tests/test_distributed_mpi.py; rank 0 waits in an allreduce
while rank 1 either raises (``raise``) or stalls (``stall``). The job must end non-zero within
seconds, naming the rank."""

import sys
import time

import numpy as np

import gpugrad as gg

group = gg.distributed.init()
if group.rank == 1:
    if sys.argv[1] == "raise":
        raise RuntimeError("injected failure on rank 1")
    time.sleep(120)  # stalls: rank 0's watchdog must end the job ($GPUGRAD_DIST_TIMEOUT)
gg.distributed.all_reduce(np.ones(3))  # rank 0 would wait here forever
print("rank 0 finished the allreduce, which it must not", flush=True)
