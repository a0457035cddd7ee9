"""Weak scaling of data-parallel training: the mlp workload under ``mpiexec -n 1`` and
``-n 2``, one BLAS thread per rank, the same per-rank batch.

    python -m benchmarks --distributed            # or: python -m benchmarks.distributed
    python -m benchmarks.distributed --quick --json out.json

Each rank runs four kinds of step, taking turns step by step, each on its own copy of the
model, with a barrier before and after every step (so a step of N ranks lasts until the
slowest rank is done), and reports the median:
``plain`` (the optimizer alone, no communication: the compute a rank does), ``blocking``
(DistributedOptimizer's default, overlap off: all allreduces after backward, buckets of
``--bucket-mb``), ``overlap`` (allreduces started from inside backward, buckets of
``--overlap-bucket-mb``; a group of one never overlaps, so on 1 rank it is blocking too)
and ``unsharded`` (blocking with ``shard=False``: ranks on one machine each receive the whole
averaged gradient and run the whole update, instead of each summing and updating its chunk
of shared parameters; on 1 rank, blocking again).
The time a step spends in allreduce is the step's time minus the plain step's, on the same
ranks in the same run.

The two launches run at different moments, and on a shared VM one process's speed moves by
a third from minute to minute, so their ratio wanders (1.0-2.1x in six runs of 2026-12-02).
The 2-rank job therefore also takes turns with an ``alone`` step: rank 0 runs the plain step
by itself while rank 1 sleeps (polling a non-blocking barrier every 0.2 ms, so it leaves its
core idle, as a machine running one process would). ``2 ranks vs 1 alone`` is the median,
over the rounds, of each round's samples/s of the 2-rank step over twice rank 0's alone:
both measured within the same round, side by side like the other benchmarks. It also measures the allreduce's latency and bandwidth on this
machine, for the ring-allreduce cost model.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # ``python benchmarks/distributed.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import numpy as np  # noqa: E402

from . import sizes  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = ("plain", "blocking", "overlap", "unsharded")


def mpiexec() -> str:
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("benchmarks --distributed: no mpiexec; pip install gpugrad[mpi]")
    return found


# --- one rank ---------------------------------------------------------------------------------

def worker(quick: bool, rounds: int, steps: int, bucket_mb: float, overlap_mb: float) -> None:
    import gpugrad as gg
    from gpugrad import distributed as dist

    group = dist.init()
    cfg = (sizes.QUICK if quick else sizes.FULL)["mlp"]
    rng = np.random.default_rng(sizes.SEED + group.rank)  # each rank its own data
    x = rng.standard_normal((cfg["batch"], cfg["sizes"][0])).astype(np.float32)
    y = rng.integers(0, cfg["sizes"][-1], cfg["batch"]).astype(np.int64)
    models, opts = {}, {}
    for mode in MODES:  # one model each: an overlap hook must not see another mode's sweep
        model = models[mode] = gg.nn.MLP(list(cfg["sizes"]), activation="sigmoid",
                                         seed=sizes.SEED)
        opt = gg.optim.SGD(model.parameters(), lr=cfg["lr"])
        opts[mode] = opt if mode == "plain" else dist.DistributedOptimizer(
            opt, overlap_mb if mode == "overlap" else bucket_mb, overlap=(mode == "overlap"),
            shard=(mode != "unsharded"))
    xb = gg.asarray(x)
    n_bytes = sum(int(np.prod(p.shape)) * 4 for p in models["plain"].parameters())

    def step(mode):
        opt = opts[mode]
        opt.zero_grad()
        gg.nn.cross_entropy(models[mode](xb), y).backward()
        opt.step()

    times: dict[str, list] = {m: [] for m in MODES}
    alone: list = []  # rank 0's plain step while the other ranks sleep (2 ranks and more)
    for mode in MODES:  # warm-up
        for _ in range(2):
            step(mode)
    for _ in range(rounds * steps):  # the modes take turns, step by step
        for mode in MODES:
            group.barrier()
            t0 = time.perf_counter()
            step(mode)
            group.barrier()  # a step of N ranks lasts until the slowest is done
            times[mode].append(time.perf_counter() - t0)
        if group.size > 1:
            group.barrier()
            if group.rank == 0:
                t0 = time.perf_counter()
                step("plain")
                alone.append(time.perf_counter() - t0)
            idle_barrier(group)
    result = {"ranks": group.size, "batch_per_rank": cfg["batch"], "sizes": cfg["sizes"],
              "grad_bytes": n_bytes, "bucket_mb": bucket_mb, "overlap_bucket_mb": overlap_mb,
              "buckets": len(opts["blocking"].average.buckets),
              "overlap_buckets": len(opts["overlap"].average.buckets),
              "step_s": {m: statistics.median(v) for m, v in times.items()}}
    if group.size > 1:
        result["alone_s"] = statistics.median(alone) if alone else None
        # per round: samples/s of N ranks over N x rank 0's alone, in the same round
        result["vs_alone"] = {m: statistics.median(a / t for a, t in zip(alone, times[m]))
                              for m in MODES} if alone else None
        result["allreduce"] = latency_bandwidth(group, quick)
    if group.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def idle_barrier(group) -> None:
    """A barrier that sleeps while it waits (MPI's own spins on its core)."""
    req = group.comm.Ibarrier()
    while not req.Test():
        time.sleep(0.0002)


def latency_bandwidth(group, quick: bool) -> dict:
    """Median time of one blocking allreduce of 8 bytes (latency) and of 16 MiB (from which
    the bandwidth, under the ring model with N=2: t = bytes/bw + 2 * latency)."""
    out = {}
    for label, n in (("small", 1), ("large", (1 << 20) if quick else (4 << 20))):
        buf = np.ones(n, np.float64 if n == 1 else np.float32)  # reused: no page faults
        ts = []
        for _ in range(5 if quick else 20):
            group.barrier()
            t0 = time.perf_counter()
            group.start_allreduce(buf).finish()  # in place on a NumPy buffer
            ts.append(time.perf_counter() - t0)
            buf[...] = 1.0
        out[label] = {"bytes": int(buf.nbytes), "median_s": statistics.median(ts)}
    lat = out["small"]["median_s"] / 2.0  # 2(N-1) latencies with N=2
    big = out["large"]
    out["latency_s"] = lat
    out["bandwidth_Bps"] = big["bytes"] / max(big["median_s"] - 2 * lat, 1e-12)
    return out


def ring_allreduce_s(nbytes: float, n: int, bandwidth: float, latency: float) -> float:
    """The standard ring-allreduce cost: 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency.

    >>> round(ring_allreduce_s(1e9, 2, 1e9, 1e-6), 6)
    1.000002
    """
    return 2.0 * (n - 1) / n * nbytes / bandwidth + 2.0 * (n - 1) * latency


# --- the driver -------------------------------------------------------------------------------

def launch(n: int, quick: bool, rounds: int, steps: int, bucket_mb: float,
           overlap_mb: float) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    env.pop("GPUGRAD_BACKEND", None)
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "benchmarks.distributed",
           "--worker", "--rounds", str(rounds), "--steps", str(steps),
           "--bucket-mb", str(bucket_mb), "--overlap-bucket-mb", str(overlap_mb)] + (
               ["--quick"] if quick else [])
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"benchmarks --distributed: mpiexec -n {n} failed:\n{res.stderr}")
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"benchmarks --distributed: no result from -n {n}:\n{res.stdout}")


def table(one: dict, two: dict) -> str:
    b = one["batch_per_rank"]
    rows = [f"mlp {tuple(one['sizes'])}, batch {b} per rank, float32, 1 BLAS thread per rank; "
            f"gradients {one['grad_bytes'] / 2**20:.2f} MiB in {one['buckets']} bucket(s) of at "
            f"most {one['bucket_mb']:g} MiB (overlap: {one['overlap_buckets']} of at most "
            f"{one['overlap_bucket_mb']:g} MiB)",
            f"{'ranks':<6}{'mode':<10}{'step ms':>9}{'samples/s':>11}{'allreduce ms':>14}"
            f"{'efficiency':>12}"]
    base = b / one["step_s"]["plain"]  # one process training alone
    for rep in (one, two):
        n = rep["ranks"]
        for mode in MODES:
            s = rep["step_s"][mode]
            rate = n * b / s
            comm = "" if mode == "plain" else f"{(s - rep['step_s']['plain']) * 1e3:.2f}"
            eff = f"{rate / (n * base):.2f}"
            rows.append(f"{n:<6}{mode:<10}{s * 1e3:>9.2f}{rate:>11.0f}{comm:>14}{eff:>12}")
    ar = two.get("allreduce")
    if ar:
        rows.append(f"allreduce, 2 ranks: latency {ar['latency_s'] * 1e6:.1f} us (8 bytes: "
                    f"{ar['small']['median_s'] * 1e6:.1f} us), bandwidth "
                    f"{ar['bandwidth_Bps'] / 1e9:.2f} GB/s ({ar['large']['bytes'] / 2**20:.0f}"
                    f" MiB: {ar['large']['median_s'] * 1e3:.2f} ms)")
    rows.append("efficiency = samples/s of N ranks / (N x samples/s of 1 process, plain)")
    if two.get("vs_alone"):
        rows.append(f"2 ranks vs 1 alone, interleaved in the 2-rank job (rank 0's plain step "
                    f"alone: {two['alone_s'] * 1e3:.2f} ms; median of per-round ratios of "
                    "samples/s):")
        rows.append("  " + "   ".join(f"{m} {2 * two['vs_alone'][m]:.2f}x" for m in MODES))
    if ar:
        compute = one["step_s"]["plain"]
        rows.append(f"ring model, {one['grad_bytes'] / 2**20:.2f} MiB of gradients, measured "
                    f"latency and bandwidth; efficiency if not overlapped with a "
                    f"{compute * 1e3:.1f} ms step:")
        for n in (2, 4, 8, 16, 64):
            t = ring_allreduce_s(one["grad_bytes"], n, ar["bandwidth_Bps"], ar["latency_s"])
            rows.append(f"  N={n:<3} allreduce {t * 1e3:7.2f} ms   efficiency "
                        f"{compute / (compute + t):.2f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few steps")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--json", help="write both reports to this path")
    p.add_argument("--bucket-mb", type=float, default=25.0,
                   help="DistributedOptimizer bucket size of the blocking mode (default 25, "
                   "the library's)")
    p.add_argument("--overlap-bucket-mb", type=float, default=1.0,
                   help="bucket size of the overlap mode (default 1: a few buckets, so the "
                   "overlap has something to overlap)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    steps = args.steps or (3 if args.quick else 10)
    if args.worker:
        worker(args.quick, rounds, steps, args.bucket_mb, args.overlap_bucket_mb)
        return 0
    one = launch(1, args.quick, rounds, steps, args.bucket_mb, args.overlap_bucket_mb)
    two = launch(2, args.quick, rounds, steps, args.bucket_mb, args.overlap_bucket_mb)
    print(table(one, two))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"1": one, "2": two}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
