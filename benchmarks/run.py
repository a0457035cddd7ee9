"""Run the workloads side by side and print ratios against the hand-written floor.

    python -m benchmarks                 # full sizes, this machine
    python -m benchmarks --quick         # tiny sizes, few repetitions (CI smoke test)
    python -m benchmarks --backend cupy  # CuPy floor and gpugrad on the GPU
    python -m benchmarks --json out.json

Every row runs in this one process, interleaved repetition by repetition, with the BLAS
thread count pinned to the same value for all of them (threadpoolctl).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import numpy as np  # noqa: E402

from . import models, own_process, peers, sizes  # noqa: E402
from .workloads import Skip, make  # noqa: E402

IMPLS = ("floor", "eager", "graph", "compile", *peers.PEERS)
UNTRACED = ("torch", "jax")
WORKLOADS = ("small", "mlp", "chain", "bmm", "digits", *models.MODELS)
GPU_WORKLOADS = ("mlp-small", "mlp-large", "bmm")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_threads(n: int):
    """Pin BLAS (and torch) to n threads; returns (context, description)."""
    try:
        import threadpoolctl
    except ImportError:
        return contextlib.nullcontext(), "unpinned (threadpoolctl not installed)"
    ctx = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
    info = threadpoolctl.threadpool_info()
    libs = ", ".join(sorted({f"{i['internal_api']}" for i in info if i["user_api"] == "blas"}))
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(n)
    return ctx, f"{n} ({libs or 'no BLAS found'})"


def synchronize(backend: str):
    if backend == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().synchronize
    return lambda: None


def peak_bytes(step, sync) -> int:
    """Peak traced memory of one step, above what was allocated before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = step()
        sync()
        del out
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def device_checks(step, n: int = 5) -> dict:
    """CuPy rows: do n steps run without a host synchronisation, and without growing the
    memory pool after warm-up?"""
    import warnings

    import cupy
    import cupyx

    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    before = pool.total_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with cupyx.allow_synchronize(False):
                for _ in range(n):
                    step()
        syncs = "none"
    except Exception as exc:  # DeviceSynchronized names where it happened
        syncs = f"yes: {type(exc).__name__}"
    cupy.cuda.Device().synchronize()
    return {"syncs": syncs, "pool_growth_bytes": pool.total_bytes() - before}


def run(args) -> dict:
    os.environ["GPUGRAD_JIT"] = args.jit  # read when a program is planned
    import gpugrad as gg

    if args.backend == "cupy":
        cfgs = sizes.GPU_QUICK if args.quick else sizes.GPU
    else:
        cfgs = sizes.QUICK if args.quick else sizes.FULL
    repeats = args.repeats or sizes.REPEATS["quick" if args.quick else "full"]
    gg.set_backend(args.backend)
    sync = synchronize(args.backend)
    pin, threads = pin_threads(args.threads)
    chosen = [i for i in IMPLS if i in args.rows and (args.peers or i not in peers.PEERS)]
    apart = [] if args.peers_in_process else [i for i in chosen if i in peers.PEERS]
    impls = [i for i in chosen if i not in apart]
    results = {}
    with pin:
        for wl in args.workloads:
            cfg = cfgs[wl]
            steps, rows = {}, {}
            for impl in impls:
                try:
                    steps[impl] = make(wl, impl, args.backend, cfg)
                    for _ in range(2):  # warm-up: compile schedules, jit, allocator
                        steps[impl]()
                    sync()
                except Skip as why:
                    rows[impl] = {"skipped": str(why)}
                    steps.pop(impl, None)
            times = {impl: [] for impl in steps}
            for _ in range(repeats):
                for impl, step in steps.items():
                    t0 = time.perf_counter()
                    step()
                    sync()
                    times[impl].append(time.perf_counter() - t0)
            for impl, step in steps.items():
                rows[impl] = {"median_s": statistics.median(times[impl]),
                              "min_s": min(times[impl])}
                if args.backend == "cupy" and impl in ("floor", "eager", "graph"):
                    rows[impl].update(device_checks(step))
                if args.backend == "numpy" and not args.no_memory:
                    if impl in UNTRACED:  # their allocator bypasses tracemalloc
                        rows[impl]["memory"] = "not traced"
                    else:
                        rows[impl]["peak_bytes"] = peak_bytes(step, sync)
            base = rows.get("floor", {})
            for impl, row in rows.items():
                if "median_s" in row and "median_s" in base:
                    row["ratio"] = row["median_s"] / base["median_s"]
                if "peak_bytes" in row and base.get("peak_bytes"):
                    row["mem_ratio"] = row["peak_bytes"] / base["peak_bytes"]
            results[wl] = {"config": cfg, "rows": {i: rows[i] for i in impls if i in rows}}
    for peer in apart:
        for wl, row in own_process.run_peer(peer, args, repeats).items():
            results[wl]["rows"][peer] = row
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "backend": gg.backend_info(),
        "blas_threads": threads,
        "quick": args.quick,
        "repeats": repeats,
        "jit": args.jit,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "gpugrad": gg.__version__, "numba": peers.version("numba"),
                     **{p: peers.version(p) for p in peers.PEERS}},
        "results": results,
    }


def table(report: dict) -> str:
    lines = [
        f"machine: {report['machine']['cpu']} ({report['machine']['cores']} cores); "
        f"backend {report['backend']['name']} on {report['backend']['device']}; "
        f"BLAS threads {report['blas_threads']}; {report['repeats']} repeats; "
        f"GPUGRAD_JIT={report.get('jit', '?')}; {report['date']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v),
        "",
        f"{'workload':<9} {'row':<9} {'median':>10} {'vs floor':>9} {'peak mem':>10} "
        f"{'mem vs floor':>12}",
    ]
    for wl, res in report["results"].items():
        for impl, row in res["rows"].items():
            if "skipped" in row:
                lines.append(f"{wl:<9} {impl:<9} {'skipped: ' + row['skipped']}")
                continue
            t = row["median_s"]
            shown = f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.3f} s"
            ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
            mem = f"{row['peak_bytes'] / 2**20:.2f} MiB" if "peak_bytes" in row else (
                "untraced" if "memory" in row else "-")
            mratio = f"{row['mem_ratio']:.2f}x" if "mem_ratio" in row else "-"
            extra = ""
            if "own_floor_s" in row:
                extra = f"  own process, its floor {row['own_floor_s'] * 1e3:.3f} ms"
            if "syncs" in row:
                extra = (f"  syncs {row['syncs']}, pool growth "
                         f"{row['pool_growth_bytes'] / 2**20:.1f} MiB")
            lines.append(f"{wl:<9} {impl:<9} {shown:>10} {ratio:>9} {mem:>10} {mratio:>12}"
                         + extra)
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in argv:  # weak scaling under mpiexec: benchmarks/distributed.py
        from . import distributed

        return distributed.main([a for a in argv if a != "--distributed"])
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--json", help="write the full report to this path")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated subset of {', '.join(WORKLOADS)} (CPU) or "
                   f"{', '.join(GPU_WORKLOADS)} (--backend cupy)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads for every row (default: all cores)")
    p.add_argument("--repeats", type=int, default=0, help="override the repetition count")
    p.add_argument("--no-peers", dest="peers", action="store_false", help="skip the peers")
    p.add_argument("--peers-in-process", action="store_true",
                   help="time the peers in this process, not each in its own with its floor")
    p.add_argument("--rows", default=",".join(IMPLS),
                   help=f"comma-separated subset of {', '.join(IMPLS)}")
    p.add_argument("--no-memory", action="store_true", help="skip the traced-memory pass")
    p.add_argument("--jit", default=os.environ.get("GPUGRAD_JIT", "now"),
                   choices=("now", "0", "1"),
                   help="GPUGRAD_JIT for gpugrad's rows: now (default: the native tier from "
                        "the warm-up on, the steady state a long run reaches), 0 (the NumPy "
                        "tier only), 1 (tiered, as a user's process)")
    args = p.parse_args(argv)
    known = GPU_WORKLOADS if args.backend == "cupy" else WORKLOADS
    args.workloads = [w.strip() for w in (args.workloads or ",".join(known)).split(",")
                      if w.strip()]
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [w for w in args.workloads if w not in known] + [
        r for r in args.rows if r not in IMPLS]
    if unknown:
        p.error(f"unknown workloads or rows {unknown}; choose from {', '.join(known)} and "
                f"{', '.join(IMPLS)}")
    try:
        report = run(args)
    except Exception as exc:
        from gpugrad import BackendError

        if not isinstance(exc, BackendError):
            raise
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
