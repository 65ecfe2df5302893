"""Tables (text and Markdown), the target check, JSON and the capacity plot.

Speed-ups are ``peer time / jaxbuf time`` (above 1: jaxbuf is faster), from the wall-time
medians and, in a second column, from the CPU-time medians; for memory, ``peer bytes / jaxbuf
bytes``. Tianshou has no jitted scan, so ``*/scan`` rows compare jaxbuf's scan
with Tianshou's per-call loop (marked ``tianshou (loop)``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from benchmarks.harness import Result

BASE = "jaxbuf"


def _params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items())


def _key(r: Result) -> tuple:
    return r.workload, tuple(sorted(r.params.items()))


def _fmt_value(r: Result, value: float | None = None) -> str:
    value = r.value if value is None else value
    if value is None:
        return "n/a"
    if r.unit.startswith("bytes"):
        return f"{value:,.0f} B"
    if r.unit.endswith("env step"):
        return f"{1 / value:,.0f} steps/s"
    us = value * 1e6
    return f"{us:,.1f} us" if us >= 10 else f"{us:.2f} us"


def _lookup(results: list[Result]) -> dict:
    table = {}
    for r in results:
        table[(_key(r), r.lib)] = r
    return table


def reference(table: dict, r: Result, lib: str) -> tuple[Result | None, str]:
    """The peer row a jaxbuf row ``r`` is compared with, and the label to show."""
    peer = table.get((_key(r), lib))
    if peer is None and lib == "tianshou" and r.workload.endswith("/scan"):
        loop = r.workload.rsplit("/", 1)[0] + "/call"
        peer = table.get(((loop, _key(r)[1]), lib))
        return peer, "tianshou (loop)"
    return peer, lib


def speedup(base: Result | None, peer: Result | None, field: str = "value") -> float | None:
    """peer / jaxbuf for times (``field`` "value" = wall, "cpu") and bytes (>1: jaxbuf better)."""
    if base is None or peer is None:
        return None
    a, b = getattr(base, field), getattr(peer, field)
    if a is None or b is None:
        return None
    return b / a


def rows(results: list[Result]) -> list[tuple]:
    """``(workload, params, lib, wall, cpu, compile, speedup wall, speedup cpu, status)``."""
    table = _lookup(results)
    order: dict = defaultdict(list)
    for r in results:
        order[_key(r)].append(r)
    out = []
    for key, group in order.items():
        base = table.get((key, BASE))
        libs = [r.lib for r in group]
        if key[0].endswith("/scan") and "tianshou" not in libs and base is not None:
            peer, _ = reference(table, base, "tianshou")
            if peer is not None and peer.value is not None:
                group = [*group, peer]
        for r in group:
            label = r.lib
            if r.workload != key[0]:
                label = "tianshou (loop)"
            own = r.lib.startswith(BASE) or r.lib == "payload"
            sp = None if own else speedup(base, r)
            spc = None if own else speedup(base, r, "cpu")
            comp = "" if r.compile_s is None else f"{r.compile_s:.2f} s"
            cpu = "" if r.cpu is None else _fmt_value(r, r.cpu)
            out.append(
                (
                    key[0],
                    _params(dict(key[1])),
                    label,
                    _fmt_value(r),
                    cpu,
                    comp,
                    "" if sp is None else f"{sp:.2f}x",
                    "" if spc is None else f"{spc:.2f}x",
                    "" if r.status == "ok" else r.status,
                )
            )
    return out


HEADER = (
    "workload",
    "params",
    "library",
    "wall",
    "cpu",
    "compile",
    "peer/jaxbuf",
    "(cpu)",
    "status",
)


def text_table(results: list[Result]) -> str:
    """A fixed-width table of every row."""
    body = rows(results)
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *body)]
    widths[-1] = 0
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(HEADER, widths))]
    prev = None
    for row in body:
        shown = list(row)
        if prev is not None and row[:2] == prev[:2]:
            shown[0] = shown[1] = ""
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(shown, widths)).rstrip())
        prev = row
    return "\n".join(lines)


def markdown_table(results: list[Result]) -> str:
    """The same rows as a Markdown table."""
    body = rows(results)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in body:
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in row) + " |")
    return "\n".join(lines)


def targets(results: list[Result], profile: str = "cpu") -> list[tuple[str, str, str]]:
    """``(target, measured, verdict)`` rows; the GPU profile's targets are higher for add."""
    table = _lookup(results)
    out = []

    def ratio_check(workload_prefix: str, lib: str, need: float, label: str, base=BASE):
        for r in results:
            if r.lib != base or not r.workload.startswith(workload_prefix):
                continue
            peer, shown = reference(table, r, lib)
            if peer is None or peer.value is None:
                continue  # the peer is skipped; its row in the table says why
            sp, spc = speedup(r, peer), speedup(r, peer, "cpu")
            measured = "n/a" if sp is None else f"{sp:.2f}x"
            if spc is not None:
                measured += f" (cpu {spc:.2f}x)"
            verdict = "n/a" if sp is None else ("met" if sp >= need else "NOT met")
            who = "" if base == BASE else f" {base}"
            out.append(
                (
                    f"{label}{who} {r.workload} {_params(r.params)} vs {shown} >= {need}x",
                    measured,
                    verdict,
                )
            )

    ratio_check("add/", "flashbax", 10.0 if profile == "gpu" else 1.0, "speed")
    ratio_check("sample/", "flashbax", 1.0, "speed")
    for w in ("add/", "sample/"):
        ratio_check(w, "tianshou", 10.0, "speed")
    ratio_check("add/", "flashbax", 1.0, "speed", base="jaxbuf[routed]")
    for w in ("add/scan", "add/call"):
        caps = sorted(
            r.params["capacity"]
            for r in results
            if r.workload == w and r.lib == BASE and r.value is not None
        )
        if len(caps) >= 2:
            lo = table[((w, (("capacity", caps[0]),)), BASE)]
            hi = table[((w, (("capacity", caps[-1]),)), BASE)]
            x = hi.value / lo.value
            cpu = f" (cpu {hi.cpu / lo.cpu:.2f})" if hi.cpu and lo.cpu else ""
            out.append(
                (
                    f"jaxbuf {w}: cost at {caps[-1]} / cost at {caps[0]} <= 1.3",
                    f"{x:.2f}{cpu}",
                    "met" if x <= 1.3 else "NOT met",
                )
            )
    out += capacity_ratios(results, ("sequences/call", "sequences/scan"))
    ratio_check("prioritized/", "flashbax", 2.0, "speed")
    # shard-local sampling against one flashbax buffer per device: both draw each device's
    # share locally, so this is the like-for-like sharded comparison
    ratio_check(
        "sharded_prioritized/", "flashbax[per-device]", 2.0, "speed", base="jaxbuf[sharded]"
    )
    ratio_check("gae/", "rlax", 1.0, "speed")
    ratio_check("gae/", "rlax[+returns]", 1.0, "speed")
    for r in results:
        if r.workload == "memory" and r.lib == BASE and r.value is not None:
            pay = table.get((_key(r), "payload"))
            x = r.value / pay.value
            out.append(
                (
                    "memory: jaxbuf bytes per transition <= 1.1x payload",
                    f"{x:.3f}x ({r.value:,.0f} / {pay.value:,.0f} B)",
                    "met" if x <= 1.1 else "NOT met",
                )
            )
    return out


def capacity_ratios(results: list[Result], workloads: tuple[str, ...]) -> list[tuple]:
    """``cost at the largest capacity / cost at the smallest`` for every library of each
    workload (rows that differ only in ``capacity``); jaxbuf's are checked against 1.3,
    the peers' are shown for comparison (verdict ``info``)."""
    out = []
    for w in workloads:
        series: dict = defaultdict(dict)
        for r in results:
            if r.workload == w and r.value is not None and "capacity" in r.params:
                rest = tuple(sorted((k, v) for k, v in r.params.items() if k != "capacity"))
                series[(r.lib, rest)][r.params["capacity"]] = r
        for (lib, rest), by_cap in series.items():
            if len(by_cap) < 2:
                continue
            lo, hi = by_cap[min(by_cap)], by_cap[max(by_cap)]
            x = hi.value / lo.value
            cpu = f" (cpu {hi.cpu / lo.cpu:.2f})" if hi.cpu and lo.cpu else ""
            own = lib.startswith(BASE)
            verdict = ("met" if x <= 1.3 else "NOT met") if own else "info"
            out.append(
                (
                    f"{lib} {w} {_params(dict(rest))}: cost at {max(by_cap)} / cost at "
                    f"{min(by_cap)}{' <= 1.3' if own else ''}",
                    f"{x:.2f}{cpu}",
                    verdict,
                )
            )
    return out


def targets_text(rows_: list[tuple[str, str, str]]) -> str:
    w = max(len(r[0]) for r in rows_) if rows_ else 10
    return "\n".join(f"{a.ljust(w)}  {b:>28}  {c}" for a, b, c in rows_)


def targets_markdown(rows_: list[tuple[str, str, str]]) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows_]
    return "\n".join(lines)


def markdown(meta: dict, results: list[Result], tgt: list[tuple[str, str, str]]) -> str:
    """``latest.md``: the run's context line, the results table and the targets."""
    quick = " --quick" if meta["quick"] else ""
    head = (
        f"Profile {meta['profile']}{quick}, jax {meta['jax']} on {meta['backend']} "
        f"({meta['device_kind']}, {meta['cpus']} cpus), commit {meta['commit']}, "
        f"{meta['stamp']}, {meta['wall_s']:.0f} s."
    )
    return f"{head}\n\n{markdown_table(results)}\n\n{targets_markdown(tgt)}\n"


def write_json(path: Path, meta: dict, results: list[Result]) -> None:
    path.write_text(json.dumps({"meta": meta, "results": [r.as_dict() for r in results]}, indent=1))


def plot(path: Path, results: list[Result], field: str = "value") -> bool:
    """Add and sample cost against capacity (log-log) from the wall (``field="value"``) or
    CPU (``"cpu"``) medians; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, op in zip(axes, ("add", "sample")):
        series: dict = defaultdict(list)
        for r in results:
            value = getattr(r, field)
            if r.workload.startswith(op + "/") and value is not None:
                mode = r.workload.split("/")[1]
                series[(r.lib, mode)].append((r.params["capacity"], value * 1e6))
        for (lib, mode), pts in sorted(series.items()):
            pts.sort()
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                linestyle="-" if mode == "scan" else "--",
                label=f"{lib} ({mode})",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("capacity (transitions)")
        ax.set_ylabel(f"median {'wall' if field == 'value' else 'CPU'} us per operation")
        ax.set_title(f"{op}: 64 envs per add" if op == "add" else f"{op}: batch of 256")
        ax.grid(True, which="both", alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
