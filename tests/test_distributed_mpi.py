"""Real multi-process runs: ``mpiexec -n 2`` spawned as a subprocess, with a timeout.

Nothing is mocked. Several checks share one launch (tests/distributed/checks.py) to keep
the wall time down. Skipped where mpi4py or mpiexec is missing (``pip install gpugrad[mpi]``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent / "distributed"


def _mpiexec() -> str | None:
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


MPIEXEC = _mpiexec()
try:
    import mpi4py  # noqa: F401
    HAS_MPI = MPIEXEC is not None
except ImportError:
    HAS_MPI = False

pytestmark = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and mpiexec "
                                "(pip install gpugrad[mpi])")


def mpirun(*args: str, n: int = 2, timeout: float = 120, **extra_env: str
           ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env.update(extra_env, PYTHONPATH=str(ROOT))
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return subprocess.run([MPIEXEC, "-n", str(n), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def checks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("checks")
    res = mpirun(sys.executable, str(HERE / "checks.py"), str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)}


def test_two_ranks_ran_every_check_without_failure(checks):
    for rank, out in checks.items():
        assert out["size"] == 2 and out["rank"] == rank and out["backend"] == "mpi"
        assert out["failures"] == [], "\n".join(out["failures"])


def test_equivalence_with_one_process_of_twice_the_batch(checks):
    """2 ranks x batch 4 == 1 process x batch 8 after 20 steps, float64, to 1e-12: SGD with
    momentum and Adam; eager with and without overlap, and Placeholder graphs (the compiled
    step with the average inside it, and gradients first then the update)."""
    for out in checks.values():
        assert len(out["diffs"]) == 8, out["diffs"]
        for case, diff in out["diffs"].items():
            assert diff <= 1e-12, (case, diff)
        assert len(out["state_diffs"]) == 8, out["state_diffs"]  # momentum, Adam's m and v
        for case, diff in out["state_diffs"].items():
            assert diff <= 1e-12, (case, diff)


def test_ranks_on_one_machine_update_shared_parameters_each_its_chunk(checks):
    """Same-machine ranks share one copy of the parameters and optimizer state and each
    updates its chunk (gpugrad.distributed.sharded); a parameter without a gradient on a
    rank counts as zero, rank 0's starting values win, rebound parameters and reset state are
    taken up at the next step, and an optimizer not known to be elementwise is not sharded."""
    for out in checks.values():
        assert out["sharded"] == [True] * 8 and out["sharded_opt"] is True
        assert out["direct_step"].startswith(
            "SGD.minimize: its parameters live in memory shared by the 2 ranks of a "
            "DistributedOptimizer"), out["direct_step"]
        assert "call step() or minimize() on the DistributedOptimizer instead" in \
            out["direct_step"]


def test_ranks_on_one_machine_average_through_shared_memory(checks):
    for out in checks.values():
        assert out["shared_memory"] is True


def test_shared_windows_left_open_are_freed_at_exit(checks):
    """The launch that ``checks`` ran (which returned 0 within its timeout) left sharded
    updates open at exit; gpugrad.distributed.sharded closed them then, before MPI
    finalized. Closing explicitly is checked in checks.py ("gradients written into shared
    memory")."""
    for out in checks.values():
        assert out["open_at_exit"] > 0


def test_without_shared_memory_the_equivalence_holds_through_mpi(tmp_path):
    res = mpirun(sys.executable, str(HERE / "checks.py"), str(tmp_path), GPUGRAD_DIST_SHM="0")
    assert res.returncode == 0, res.stdout + res.stderr
    for r in (0, 1):
        out = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert out["failures"] == [], "\n".join(out["failures"])
        assert out["shared_memory"] is False and out["sharded"] == [False] * 8
        assert len(out["diffs"]) == 8 and max(out["diffs"].values()) <= 1e-12, out["diffs"]


def test_parameter_mismatch_is_an_error_on_every_rank(checks):
    for out in checks.values():
        msg = out["mismatch"]
        assert msg is not None, "no error"
        assert "parameter 0 ('W')" in msg and "(3, 2)" in msg and "(3, 3)" in msg, msg
        assert "rank 0" in msg and "rank 1" in msg, msg


@pytest.mark.parametrize("where", ["allreduce", "step"])
def test_a_rank_that_raises_ends_the_job_quickly(where):
    start = time.monotonic()
    res = mpirun(sys.executable, str(HERE / "fail.py"), "raise", where, timeout=60)
    took = time.monotonic() - start
    assert res.returncode != 0, res.stdout + res.stderr
    assert took < 30, took
    assert "injected failure on rank 1" in res.stderr
    assert "rank 1 of 2" in res.stderr and "aborting the job" in res.stderr, res.stderr
    assert "must not" not in res.stdout


@pytest.mark.parametrize("where", ["allreduce", "step"])
def test_a_stalled_rank_trips_the_collective_timeout(where):
    start = time.monotonic()
    res = mpirun(sys.executable, str(HERE / "fail.py"), "stall", where, timeout=60,
                 GPUGRAD_DIST_TIMEOUT="2")
    took = time.monotonic() - start
    assert res.returncode != 0, res.stdout + res.stderr
    assert took < 30, took
    assert "rank 0 of 2" in res.stderr and "did not complete within 2 s" in res.stderr, \
        res.stderr
    assert "must not" not in res.stdout


def test_cli_two_ranks_log_once_per_epoch_and_learn():
    res = mpirun(sys.executable, "-m", "gpugrad", "train", "--distributed", "--epochs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert len(re.findall(r"^epoch +\d+/2", out, re.M)) == 2, out  # rank 0 alone logs
    assert out.count("done: train accuracy") == 1, out
    assert "distributed: 2 ranks (mpi), 16 rows per rank per step (global batch 32)" in out
    acc = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    one = subprocess.run([sys.executable, "-m", "gpugrad", "train", "--epochs", "2", "--quiet"],
                         cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    acc_one = float(re.search(r"test accuracy (\d\.\d+)", one).group(1))
    assert acc_one > 0.9 and abs(acc - acc_one) <= 0.02, (acc, acc_one)  # the same band


def test_cli_bad_data_path_fails_on_every_rank_with_one_line(tmp_path):
    # each rank reports its own exit status on stdout
    cmd = (f"{sys.executable} -m gpugrad train --distributed --data {tmp_path}/missing.npz; "
           'echo "EXIT $PMI_RANK $?"')
    res = mpirun("sh", "-c", cmd, timeout=60)
    assert sorted(re.findall(r"EXIT (\d) (\d+)", res.stdout)) == [("0", "2"), ("1", "2")], \
        res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "error" in lines[0] and "no such file" in lines[0], lines
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_save_written_by_rank_0_only(tmp_path):
    res = mpirun(sys.executable, "-m", "gpugrad", "train", "--distributed", "--epochs", "1",
                 "--quiet", "--save", str(tmp_path / "p.npz"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("saved parameters to") == 1
    with np.load(tmp_path / "p.npz") as z:
        assert "_sizes" in z.files


def test_cli_data_missing_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d0.npz", X=rng.normal(size=(40, 3)), y=np.arange(40) % 2)
    cmd = (f"{sys.executable} -m gpugrad train --distributed --data {tmp_path}/d$PMI_RANK.npz; "
           'echo "EXIT $PMI_RANK $?"')  # rank 1 looks for d1.npz, which does not exist
    res = mpirun("sh", "-c", cmd, timeout=60)
    assert sorted(re.findall(r"EXIT (\d) (\d+)", res.stdout)) == [("0", "2"), ("1", "2")], \
        res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "rank 1: --data" in lines[0] and "d1.npz" in lines[0], lines


def test_docs_example_runs_on_two_ranks(tmp_path):
    text = (ROOT / "docs" / "distributed.md").read_text()
    block = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
             if "DistributedOptimizer" in b]
    assert len(block) == 1
    script = tmp_path / "example.py"
    script.write_text("import gpugrad as gg\n" + block[0])
    res = mpirun(sys.executable, str(script))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("last loss") == 1, res.stdout  # rank 0 alone prints


def test_benchmark_quick_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--distributed", "--quick",
                          "--json", str(tmp_path / "d.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["1"]["ranks"] == 1 and report["2"]["ranks"] == 2
    for rep in report.values():
        assert set(rep["step_s"]) == {"plain", "blocking", "overlap", "unsharded"}
        assert all(v > 0 for v in rep["step_s"].values())
    assert report["2"]["allreduce"]["bandwidth_Bps"] > 0
    assert "ring model" in res.stdout and "N=64" in res.stdout


def test_cli_failure_after_start_aborts_the_job_naming_the_rank(tmp_path):
    rng = np.random.default_rng(0)
    for r, classes in ((0, 3), (1, 4)):  # rank 1's data has one more class: a wider model
        np.savez(tmp_path / f"d{r}.npz", X=rng.normal(size=(40, 3)), y=np.arange(40) % classes)
    start = time.monotonic()
    res = mpirun("sh", "-c", f"{sys.executable} -m gpugrad train --distributed --data "
                 f"{tmp_path}/d$PMI_RANK.npz", timeout=60)
    assert res.returncode != 0, res.stdout + res.stderr
    assert time.monotonic() - start < 30
    assert re.search(r"rank \d of 2: gpugrad train: broadcast_parameters: parameter \d+ .*has "
                     r"shape .* on rank 0 but .* on rank 1; .*aborting the job", res.stderr), \
        res.stderr


def test_distributed_benchmark_quick_runs_and_reports_rank_0_alone(tmp_path):
    """``python -m benchmarks.distributed --quick`` launches -n 1 and -n 2 and reports, beside
    each mode's step, the 2-rank job's per-round ratios to rank 0 stepping alone (no time is
    asserted: only that every number is there and positive)."""
    out = tmp_path / "dist.json"
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.distributed", "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    two = json.loads(out.read_text())["2"]
    assert two["alone_s"] > 0
    assert set(two["vs_alone"]) == {"plain", "blocking", "overlap", "unsharded"}
    assert all(r > 0 for r in two["vs_alone"].values())
    assert "2 ranks vs 1 alone" in proc.stdout
