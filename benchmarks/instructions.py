"""Instructions per step, counted by valgrind's callgrind: a measure that does not drift.

Timed ratios on a shared VM move by several points from run to run; an instruction count
does not. Each row runs in its own process under callgrind twice, for ``base`` and for
``base + steps`` steps after a warm-up, and the difference divided by ``steps`` is what one
step executes (start-up, imports and tracing cancel out). OpenBLAS and OpenMP get one thread:
idle BLAS threads spin, and their spinning made counts wander by about 10k instructions a
step. With one thread the count repeats to the instruction, so a change of a few thousand
instructions is visible. It counts work, not time: cache misses and memory traffic do not
show, so it complements the timed benchmark and never replaces it.

    python -m benchmarks.instructions                        # small: floor, eager, graph, compile
    python -m benchmarks.instructions --workloads small,chain --rows floor,compile

It needs ``valgrind`` on the PATH (not a Python package: ``apt install valgrind``), and takes
about a minute a row at the default 500 steps on the small workload.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

ROWS = ("floor", "eager", "graph", "compile")
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def child(workload: str, row: str, n: int, quick: bool) -> None:
    """Build the row's step, warm it up, then run it ``n`` times (what callgrind counts)."""
    from . import sizes, workloads

    cfg = (sizes.QUICK if quick else sizes.FULL)[workload]
    step = workloads.make(workload, row, "numpy", cfg)
    for _ in range(50):
        step()
    for _ in range(n):
        step()


def count(workload: str, row: str, n: int, quick: bool = False) -> int:
    """Instructions callgrind collects for the whole child process running ``n`` steps."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONHASHSEED="0", GPUGRAD_BACKEND="numpy")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, "-m", "benchmarks.instructions", "--child", workload, row, str(n)]
    if quick:
        cmd.append("--quick")
    if shutil.which("setarch"):  # the same addresses every run
        cmd = ["setarch", os.uname().machine, "-R", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind of {workload}/{row} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return int(found.group(1))


def per_step(workload: str, row: str, steps: int, base: int = 100,
             quick: bool = False) -> float:
    """Instructions one step of ``row`` executes: (count(base + steps) - count(base)) / steps."""
    return (count(workload, row, base + steps, quick) - count(workload, row, base, quick)) \
        / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="small", help="comma-separated, e.g. small,chain")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of "
                    + ", ".join(ROWS) + " (the floor is always counted)")
    ap.add_argument("--steps", type=int, default=500, help="steps counted per row")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "ROW", "N"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.quick)
        return 0
    if shutil.which("valgrind") is None:
        print("benchmarks.instructions needs valgrind on the PATH (apt install valgrind)",
              file=sys.stderr)
        return 2
    rows = ["floor"] + [r for r in args.rows.split(",") if r and r != "floor"]
    print(f"instructions per step (callgrind, 1 BLAS thread, {args.steps} steps)")
    print(f"{'workload':9} {'row':8} {'instructions':>13} {'vs floor':>9}")
    for workload in args.workloads.split(","):
        floor = None
        for row in rows:
            n = per_step(workload, row, args.steps, quick=args.quick)
            floor = n if floor is None else floor
            print(f"{workload:9} {row:8} {n:13,.0f} {n / floor:8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
