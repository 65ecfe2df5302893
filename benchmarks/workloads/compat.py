"""Eager add of one Atari transition through the Tianshou facade, against Tianshou itself.

A Tianshou-style loop: ``ReplayBuffer(N, stack_num=4, ignore_obs_next=True,
save_only_last_obs=True)`` and one ``add`` per Python call of a single transition
(``obs uint8[4, 84, 84]``, a frame stack of which only the last frame is stored). Measured:
the median time per add (jaxbuf.compat.tianshou, and Tianshou 2.0.1 in the same run when it
is installed) and the resident-set growth over the timed adds, read from
``/proc/self/statm`` (the storage is touched once, at allocation, so growth means a copy).

Run on its own (the default size is 2^20 slots, a 6.6 GiB buffer)::

    python -m benchmarks.workloads.compat --size 1048576 --adds 2000

``groups(cfg)`` gives the same rows to the harness (size ``cfg.stack_capacity``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import numpy as np

from benchmarks import peers
from benchmarks.harness import Result, unavailable

UNIT = "ms per eager add of one transition"
OPTIONS = dict(stack_num=4, ignore_obs_next=True, save_only_last_obs=True)


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def transitions(count: int, seed: int = 0) -> list[dict]:
    """Pre-built Atari steps (frame stacks of random uint8 frames), one episode per 1000."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (count + 4, 84, 84), dtype=np.uint8)
    return [
        dict(
            obs=frames[t : t + 4],
            act=np.int64(t % 6),
            rew=np.float32(1.0),
            terminated=t % 1000 == 999,
            truncated=False,
            obs_next=frames[t + 1 : t + 5],
            info={},
        )
        for t in range(count)
    ]


def time_adds(buf, steps: list[dict], chunk: int = 100) -> tuple[list[float], float]:
    """Seconds per add for each chunk of ``chunk`` adds, and the RSS growth in MiB."""
    for s in steps[:chunk]:  # warm-up: compilation and first touches
        buf.add(s)
    gc.collect()
    before = rss_mib()
    per_add = []
    for start in range(0, len(steps), chunk):
        part = steps[start : start + chunk]
        t0 = time.perf_counter()
        for s in part:
            buf.add(s)
        per_add.append((time.perf_counter() - t0) / len(part))
    return per_add, rss_mib() - before


def measure(size: int, adds: int) -> list[Result]:
    """The result rows for the facade and (when installed) Tianshou at ``size`` slots."""
    from jaxbuf.compat.tianshou import ReplayBuffer

    params = {"capacity": size, "stack": 4}
    steps = transitions(adds)
    out = []
    libs = [("jaxbuf.compat", lambda: ReplayBuffer(size, **OPTIONS))]
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("compat/eager-add", params, "tianshou", UNIT, why))
    else:
        libs.append(("tianshou", lambda: ts.ReplayBuffer(size, **OPTIONS)))
    for lib, make in libs:
        r0 = rss_mib()
        t0 = time.perf_counter()
        buf = make()
        buf.add(steps[0])
        first = time.perf_counter() - t0
        samples, growth = time_adds(buf, steps)
        held = rss_mib() - r0
        note = (
            f"first add (allocation + compile) {first:.2f} s; RSS +{held:.0f} MiB held, "
            f"+{growth:.1f} MiB over {len(steps)} timed adds"
        )
        ms = [s * 1e3 for s in samples]
        out.append(
            Result("compat/eager-add", params, lib, UNIT, statistics.median(ms), ms, note=note)
        )
        out.append(Result("compat/rss-growth", params, lib, "MiB over the timed adds", growth))
        del buf
        gc.collect()
    return out


def groups(cfg):
    """One group of finished rows (the adds are timed here, not by the harness)."""
    yield measure(cfg.stack_capacity, 200 if cfg.quick else 2000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2**20, help="buffer slots")
    parser.add_argument("--adds", type=int, default=2000, help="timed adds")
    args = parser.parse_args(argv)
    for r in measure(args.size, args.adds):
        value = "skipped" if r.value is None else f"{r.value:.4g}"
        print(f"{r.workload:18s} {r.lib:14s} {value:>10s} {r.unit}  {r.status} {r.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
