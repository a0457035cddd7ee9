"""Ratios over several runs: the median and the range of each row's ratio to its floor.

    for i in 1 2 3; do python -m benchmarks --json run$i.json; done
    python -m benchmarks.summary run1.json run2.json run3.json

Runs on a shared machine move by tens of percent from one process to the next; read the
range, and compare rows of one run (or runs interleaved in time) rather than runs far apart.
"""

from __future__ import annotations

import json
import statistics
import sys


def ratios(reports: list[dict]) -> dict:
    """{(workload, row): [ratio in each report that ran it]}, in the first report's order."""
    out: dict = {}
    for report in reports:
        for wl, res in report["results"].items():
            for impl, row in res["rows"].items():
                if "ratio" in row:
                    out.setdefault((wl, impl), []).append(row["ratio"])
    return out


def table(reports: list[dict]) -> str:
    lines = [f"{len(reports)} runs; median ratio to the floor (range)", "",
             "| workload | row | ratio | range |", "|---|---|---|---|"]
    for (wl, impl), rs in ratios(reports).items():
        lines.append(f"| {wl} | {impl} | {statistics.median(rs):.2f}x | "
                     f"{min(rs):.2f}-{max(rs):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else list(argv)
    if not paths:
        print("usage: python -m benchmarks.summary run1.json [run2.json ...]", file=sys.stderr)
        return 2
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    print(table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
