"""Rate-limited replay with actor threads: inserted and sampled rows per second.

``jaxbuf.concurrent.RateLimitedBuffer`` over a MuJoCo-like ``VectorReplayBuffer`` with one
sub-buffer per actor; 1, 2 and 4 actor threads each insert ``ROWS`` rows per call, one
learner thread samples batches of ``cfg.batch_size``. Two limiters:

* ``MinSize``: nothing holds either side back once the buffer is warm, so both run as fast
  as the lock, the compiled add/sample and the Python threads let them;
* ``SampleToInsertRatio(8)``: the learner samples 8 rows per inserted row; the slower side
  sets the pace of both.

The reported value is wall seconds per row (so the table shows microseconds per row); the
note gives rows per second. torchrl's rate-limited buffer would be the peer; it is reported
as not available when torchrl is not installed.

Run on its own: ``python -m benchmarks.workloads.concurrent [--quick]``.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Result, unavailable

ROWS = 16
ACTORS = (1, 2, 4)
UNIT_INSERT = "us per inserted row"
UNIT_SAMPLE = "us per sampled row"


def _rows(k: int) -> dict:
    ex = {key: np.asarray(v) for key, v in data.example().items()}
    return {key: np.broadcast_to(v, (k, *v.shape)).copy() for key, v in ex.items()}


def run_once(n_actors: int, limiter_name: str, calls: int, batch_size: int, capacity: int):
    """``(inserted rows/s, sampled rows/s, wall seconds)`` of one run of ``calls`` inserts per
    actor and a learner that samples until the actors are done."""
    import jaxbuf
    from jaxbuf.concurrent import BufferClosedError, MinSize, RateLimitedBuffer, SampleToInsertRatio

    spi = 8.0
    if limiter_name == "MinSize":
        limiter = MinSize(batch_size)
    else:
        band = max((ROWS * spi + batch_size) / 2, (ROWS - 1) * spi)
        limiter = SampleToInsertRatio(spi, batch_size, band)
    buf = jaxbuf.VectorReplayBuffer.create(data.example(), capacity, n_actors)
    rb = RateLimitedBuffer(buf, limiter)
    rows = _rows(ROWS)
    ids = [np.full(ROWS, a, np.int32) for a in range(n_actors)]
    # Warm up: compile add and sample, fill to min size.
    while not rb.limiter.can_sample(batch_size):
        rb.insert(rows, ids[0], timeout=60)
    rb.sample(batch_size, timeout=60)
    start = rb.stats()

    def actor(a):
        for _ in range(calls):
            try:
                rb.insert(rows, ids[a])
            except BufferClosedError:
                return

    def learner():
        while True:
            try:
                rb.sample(batch_size)
            except BufferClosedError:
                return

    threads = [threading.Thread(target=actor, args=(a,)) for a in range(n_actors)]
    learn = threading.Thread(target=learner)
    t0 = time.perf_counter()
    for t in [*threads, learn]:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.perf_counter() - t0
    rb.close()
    learn.join(60)
    end = rb.stats()
    inserted = end.inserted_rows - start.inserted_rows
    sampled = end.sampled_rows - start.sampled_rows
    return inserted / wall, sampled / wall, wall


def groups(cfg):
    """One group: every (limiter, actors) pair, jaxbuf then torchrl (if installed)."""
    calls = 100 if cfg.quick else 1_000
    capacity = 2**16
    out: list = []
    for limiter_name in ("MinSize", "SampleToInsertRatio(8)"):
        for n in ACTORS:
            params = {"actors": n, "limiter": limiter_name, "rows_per_insert": ROWS}
            ins, smp, wall = run_once(n, limiter_name, calls, cfg.batch_size, capacity)
            note = f"{ins:,.0f} inserted rows/s, {smp:,.0f} sampled rows/s over {wall:.2f} s"
            out.append(
                Result("concurrent/insert", params, "jaxbuf", UNIT_INSERT, 1 / ins, note=note)
            )
            out.append(
                Result("concurrent/sample", params, "jaxbuf", UNIT_SAMPLE, 1 / max(smp, 1e-9))
            )
            torchrl, why = peers.module("torchrl")
            if torchrl is None:
                print(f"torchrl ({n} actors, {limiter_name}): skipped: not installed")
                out.append(unavailable("concurrent/insert", params, "torchrl", UNIT_INSERT, why))
    yield out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from benchmarks.config import FULL, QUICK

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 inserts per actor, not 1000")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    print(f"{'limiter':<24}{'actors':>7}{'inserted rows/s':>18}{'sampled rows/s':>17}")
    for group in groups(cfg):
        for r in group:
            if r.workload == "concurrent/insert" and r.lib == "jaxbuf":
                ins, smp = (float(x.split()[0].replace(",", "")) for x in r.note.split(", ")[:2])
                p = r.params
                print(f"{p['limiter']:<24}{p['actors']:>7}{ins:>18,.0f}{smp:>17,.0f}")


if __name__ == "__main__":
    main()
