"""Run every issue-7 workload for jaxbuf and its peers in one process and report.

Usage (from the repository root)::

    python -m benchmarks.run            # full run (issue 7's sizes), ~10 minutes on 2 cores
    python -m benchmarks.run --quick    # smoke run, ~1-2 minutes
    python -m benchmarks.run --only add sample

Prints the table of medians with the speed-up ``peer time / jaxbuf time`` and the issue-7
targets, and writes ``benchmarks/results/<stamp>.json``, ``latest.json``, ``latest.md`` and
``capacity.png`` / ``capacity_cpu.png`` (add and sample cost against capacity, wall and CPU
medians).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jax

from benchmarks import report
from benchmarks.config import FULL, QUICK
from benchmarks.harness import Case, Result, measure
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"


def run_workload(name: str, cfg) -> list[Result]:
    """All groups of one workload; each group is timed in alternation, then freed."""
    out: list[Result] = []
    for group in WORKLOADS[name].groups(cfg):
        cases = [g for g in group if isinstance(g, Case)]
        done = [g for g in group if isinstance(g, Result)]
        timed = measure(cases, cfg.reps, cfg.target_s) if cases else []
        by_id = {id(c): r for c, r in zip(cases, timed)}
        out += [by_id[id(g)] if isinstance(g, Case) else g for g in group]
        print(report.text_table(done + timed), flush=True)
        del group, cases, timed, by_id
        gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--only", nargs="+", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--reps", type=int, default=None, help="override repetitions")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg = type(cfg)(**{**cfg.__dict__, "reps": args.reps})
    names = args.only or list(WORKLOADS)
    t0 = time.perf_counter()
    results: list[Result] = []
    for name in names:
        print(f"== {name}", flush=True)
        results += run_workload(name, cfg)
    wall = time.perf_counter() - t0

    print("\n== all results (median; peer/jaxbuf > 1 means jaxbuf is faster/smaller)")
    print(report.text_table(results))
    tgt = report.targets(results)
    print("\n== issue 7 targets")
    print(report.targets_text(tgt))
    print(f"\nwall time {wall:.0f} s")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta = {
        "stamp": stamp,
        "quick": cfg.quick,
        "config": cfg.__dict__,
        "wall_s": wall,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "workloads": names,
    }
    for path in (out / f"{stamp}.json", out / "latest.json"):
        report.write_json(path, meta, results)
    (out / "latest.md").write_text(
        report.markdown_table(results) + "\n\n" + report.targets_markdown(tgt) + "\n"
    )
    if report.plot(out / "capacity.png", results):
        report.plot(out / "capacity_cpu.png", results, "cpu")
        print(f"plots: {out / 'capacity.png'}, {out / 'capacity_cpu.png'}")
    print(f"results: {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
