"""CI runs the benchmarks at tiny sizes so they keep working. Nothing here asserts a time."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmarks_quick_smoke(tmp_path):
    from benchmarks import models

    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-peers",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"small", "mlp", "chain", "bmm", "digits", *models.MODELS}
    for workload, res in report["results"].items():
        rows = res["rows"]
        for impl in ("floor", "eager", "graph"):
            assert rows[impl]["median_s"] > 0, (workload, impl)
            assert rows[impl]["peak_bytes"] >= 0
        assert rows["floor"]["ratio"] == 1.0
    assert "vs floor" in proc.stdout and report["machine"]["cpu"]
    assert report["blas_threads"]


def test_benchmark_rows_compute_the_same_gradients():
    """The floor and gpugrad do the same arithmetic: their chain and bmm gradients agree."""
    import numpy as np

    import gpugrad as gg
    from benchmarks import sizes, workloads

    cfg = sizes.QUICK
    with gg.use_backend("numpy"):
        floor = workloads.make("chain", "floor", "numpy", cfg["chain"])()
        for impl in ("eager", "graph"):
            got = workloads.make("chain", impl, "numpy", cfg["chain"])()
            np.testing.assert_allclose(np.stack(got), np.stack(floor), rtol=1e-4, atol=1e-6)
        dA, dB = workloads.make("bmm", "floor", "numpy", cfg["bmm"])()
        for impl in ("eager", "graph"):
            gA, gB = workloads.make("bmm", impl, "numpy", cfg["bmm"])()
            np.testing.assert_allclose(gA, dA, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(gB, dB, rtol=1e-4, atol=1e-6)


def test_benchmark_mlp_rows_agree_on_the_loss():
    import numpy as np

    import gpugrad as gg
    from benchmarks import sizes, workloads

    cfg = sizes.QUICK["mlp"]
    with gg.use_backend("numpy"):
        floor, eager, graph = (float(workloads.make("mlp", impl, "numpy", cfg)())
                               for impl in ("floor", "eager", "graph"))
    np.testing.assert_allclose([eager, graph], floor, rtol=1e-5)


def test_instruction_count_child_runs_each_row():
    """The process callgrind counts builds each row and runs its steps (no valgrind needed);
    the counts themselves are benchmarks, never asserted."""
    from benchmarks import instructions

    for row in instructions.ROWS:
        instructions.child("small", row, 2, quick=True)


def test_instruction_count_without_valgrind_says_what_to_install(monkeypatch, capsys):
    from benchmarks import instructions

    monkeypatch.setenv("PATH", "")
    assert instructions.main(["--quick"]) == 2
    assert "needs valgrind" in capsys.readouterr().err


def test_summary_gives_each_rows_median_and_range(tmp_path, capsys):
    from benchmarks import summary

    paths = []
    for i, r in enumerate((0.9, 0.7, 0.8)):
        rows = {"floor": {"ratio": 1.0}, "jax": {"ratio": r}, "torch": {"skipped": "no"}}
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps({"results": {"small": {"rows": rows}}}))
    assert summary.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "| small | jax | 0.80x | 0.70-0.90 |" in out
    assert "torch" not in out and out.startswith("3 runs")
    assert summary.main([]) == 2
