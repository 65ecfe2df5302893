"""Benchmarks of jaxbuf against its peers: every workload, one timing harness, one report.

Usage (from the repository root)::

    python -m benchmarks.run                      # the CPU profile's workloads, full sizes
    python -m benchmarks.run --quick              # the same at small sizes (a minute or two)
    python -m benchmarks.run --list               # every workload, with its profiles
    python -m benchmarks.run --workload add sample prioritized
    python -m benchmarks.run --workload all --quick
    python -m benchmarks.run --profile gpu        # the accelerator set (benchmarks/gpu.sh)

Prints a table of medians per workload and at the end, with ``peer / jaxbuf`` time ratios and
the targets, and writes ``<stamp>.json``, ``latest.json`` and ``latest.md`` (and the capacity
plots when matplotlib is installed) to ``--out``: by default ``$OUT/benchmarks`` when ``OUT``
is set, else ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jax

from benchmarks import report
from benchmarks.config import PROFILES, smallest
from benchmarks.harness import Case, Result, measure
from benchmarks.workloads import WORKLOADS, default

ROOT = Path(__file__).resolve().parent


def default_out() -> Path:
    """``$OUT/benchmarks`` when ``OUT`` is set, else ``benchmarks/results``."""
    out = os.environ.get("OUT")
    return Path(out) / "benchmarks" if out else ROOT / "results"


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


def listing() -> str:
    """One line per workload: name, profiles that run it by default, what it measures."""
    lines = []
    for name, w in WORKLOADS.items():
        where = ",".join(w.profiles) or "-"
        lines.append(f"{name:14s} {where:8s} {w.summary}")
    return "\n".join(["workload       profiles what it measures", *lines])


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument(
        "--workload",
        "--only",
        nargs="+",
        choices=[*WORKLOADS, "all"],
        default=None,
        metavar="NAME",
        help="workloads to run (default: the profile's; 'all': every one; see --list)",
    )
    parser.add_argument(
        "--smallest",
        action="store_true",
        help="only the smallest size of each list, one repetition (a smoke test)",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument("--reps", type=int, default=None, help="override repetitions")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        print(listing())
        return 0
    cfg = PROFILES[(args.profile, args.quick)]
    if args.smallest:
        cfg = smallest(cfg)
    if args.reps:
        cfg = type(cfg)(**{**cfg.__dict__, "reps": args.reps})
    names = args.workload or default(args.profile)
    if "all" in names:
        names = list(WORKLOADS)
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__} on {device.platform} ({device.device_kind}), {os.cpu_count()} "
        f"cpus; profile {cfg.profile}{' quick' if cfg.quick else ''}",
        flush=True,
    )
    t0 = time.perf_counter()
    results: list[Result] = []
    for name in names:
        print(f"== {name}", flush=True)
        results += run_workload(name, cfg)
    wall = time.perf_counter() - t0

    print("\n== all results (median; peer/jaxbuf > 1 means jaxbuf is faster/smaller)")
    print(report.text_table(results))
    tgt = report.targets(results, cfg.profile)
    print("\n== targets")
    print(report.targets_text(tgt))
    print(f"\nwall time {wall:.0f} s")

    out = args.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta = {
        "stamp": stamp,
        "profile": cfg.profile,
        "quick": cfg.quick,
        "config": cfg.__dict__,
        "wall_s": wall,
        "commit": _commit(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": device.device_kind,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "workloads": names,
    }
    for path in (out / f"{stamp}.json", out / "latest.json"):
        report.write_json(path, meta, results)
    (out / "latest.md").write_text(report.markdown(meta, results, tgt))
    if report.plot(out / "capacity.png", results):
        report.plot(out / "capacity_cpu.png", results, "cpu")
    print(f"results: {out / 'latest.json'}, {out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
