"""Every optimizer case of tests/test_optim_rules.py in DistributedOptimizer on 2 real ranks
(``mpiexec -n 2``, tests/distributed/optim_checks.py): the sharded update derived from each
declared formula gives the hand-written update of the mean gradient."""

from __future__ import annotations

import json
import sys

import pytest
from test_distributed_mpi import HAS_MPI, HERE, mpirun
from test_optim_rules import CASES

pytestmark = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and mpiexec "
                                "(pip install gpugrad[mpi])")


@pytest.mark.parametrize("shm", ["1", "0"], ids=["sharded", "allreduce"])
def test_every_optimizer_on_two_ranks_matches_the_formulas(tmp_path, shm):
    res = mpirun(sys.executable, str(HERE / "optim_checks.py"), str(tmp_path), timeout=300,
                 GPUGRAD_DIST_SHM=shm)
    assert res.returncode == 0, res.stdout + res.stderr
    for r in (0, 1):
        out = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert out["size"] == 2 and out["rank"] == r
        assert out["failures"] == [], "\n".join(out["failures"])
        assert len(out["diffs"]) == 2 * len(CASES)
        assert all(d <= 1e-12 for d in out["diffs"].values()), out["diffs"]
        assert all(s == (shm == "1") for s in out["sharded"].values()), out["sharded"]
