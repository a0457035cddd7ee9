"""Run under ``mpiexec -n 2``: rank 1 raises while rank 0 waits in an allreduce. The job
must end non-zero within seconds, naming rank 1 (tests/test_distributed_mpi.py)."""

import numpy as np

import gpugrad as gg

group = gg.distributed.init()
if group.rank == 1:
    raise RuntimeError("injected failure on rank 1")
gg.distributed.all_reduce(np.ones(3))  # rank 0 would wait here forever without Abort
print("rank 0 finished the allreduce, which it must not", flush=True)
