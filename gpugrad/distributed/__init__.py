"""Data-parallel training on an existing engine: MPI through mpi4py, NCCL through
``cupyx.distributed`` on CuPy.

>>> import gpugrad as gg
>>> group = gg.distributed.init()       # size 1 without a launcher
>>> group.size
1
"""

from .buckets import Bucket, GradientAverager, plan_buckets
from .collectives import all_reduce, broadcast, broadcast_parameters
from .group import DistributedError, Group, init, launcher_size
from .optimizer import DistributedOptimizer

__all__ = [
    "Bucket", "DistributedError", "DistributedOptimizer", "GradientAverager", "Group",
    "all_reduce", "broadcast", "broadcast_parameters", "init", "launcher_size",
    "plan_buckets",
]
