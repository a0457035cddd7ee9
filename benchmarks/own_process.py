"""Each peer in its own process: ``python -m benchmarks`` runs the rows of one peer (torch,
JAX, ...) in a child process of its own, interleaved with a floor timed in that child, and
reports the ratio measured there.

A peer's thread pools (XLA's, torch's OpenMP) keep the cores busy after its own rows; in
one process with the others they slow the floor and every row timed after them, so every
ratio looks better than it is. ``--peers-in-process`` runs them in the main process instead
(the old way). A peer that is not importable here is reported as skipped without a child.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_peer(peer: str, args, repeats: int) -> dict:
    """{workload: row} for one peer, each row with the child's ratio to its own floor."""
    if importlib.util.find_spec(peer) is None:
        return {wl: {"skipped": f"{peer} not installed"} for wl in args.workloads}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        cmd = [sys.executable, "-m", "benchmarks", "--peers-in-process", "--no-memory",
               "--rows", f"floor,{peer}", "--workloads", ",".join(args.workloads),
               "--threads", str(args.threads), "--repeats", str(repeats),
               "--backend", args.backend, "--json", out, *(["--quick"] if args.quick else [])]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {wl: {"skipped": f"{peer}'s process failed: {last}"}
                    for wl in args.workloads}
        with open(out) as f:
            report = json.load(f)
    rows = {}
    for wl, res in report["results"].items():
        row = dict(res["rows"].get(peer, {"skipped": f"{peer} did not run"}))
        floor = res["rows"].get("floor", {})
        if "median_s" in floor and "median_s" in row:
            row["own_floor_s"] = floor["median_s"]
        rows[wl] = row
    return rows
