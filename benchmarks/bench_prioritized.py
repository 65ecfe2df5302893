"""Cost of one prioritized-replay training step on ``PrioritizedReplayBuffer``.

One step = ``sample(B)`` (batch with importance weights) then ``update_weight`` of the B
sampled indices with new priorities; optionally preceded by an ``add`` of B transitions.
The buffer is full (N transitions, obs float32[4]) and donated, so everything is in place.

Reports for each N: median wall time per jitted call (includes dispatch), the time per step
inside one jitted ``lax.scan`` of 500 steps, and the compiled HLO's non-in-place operations
whose result has a leading dimension of N or 2N (an O(N) step would show up there).

Usage: PYTHONPATH=. python benchmarks/bench_prioritized.py [--log2n 16 20 22] [--batch 256]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.prioritized import PrioritizedReplayBuffer

_PLUMBING = {
    "parameter",
    "scatter",
    "fusion",
    "while",
    "tuple",
    "get-tuple-element",
    "bitcast",
    "dynamic-update-slice",
    "copy-start",
    "copy-done",
}


def _example() -> dict:
    return {
        "obs": np.zeros(4, np.float32),
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
        "obs_next": np.zeros(4, np.float32),
    }


def _rows(key: jax.Array, k: int) -> dict:
    obs = jax.random.normal(key, (k, 4))
    return {
        "obs": obs,
        "act": jnp.zeros((k,), jnp.int32),
        "rew": jnp.ones((k,), jnp.float32),
        "terminated": jnp.zeros((k,), bool),
        "truncated": jnp.zeros((k,), bool),
        "obs_next": obs + 1,
    }


def _full_buffer(n: int) -> PrioritizedReplayBuffer:
    buf = PrioritizedReplayBuffer.create(_example(), n, alpha=0.6, beta=0.4)
    chunk = min(n, 4096)

    @jax.jit
    def fill(buf: PrioritizedReplayBuffer) -> PrioritizedReplayBuffer:
        def body(b, key):
            b, _ = b.add(_rows(key, chunk), jnp.zeros((chunk,), jnp.int32))
            return b, None

        return jax.lax.scan(body, buf, jax.random.split(jax.random.key(0), n // chunk))[0]

    return fill(buf)


def _train_step(buf, key, batch: int, with_add: bool):
    k_add, k_sample, k_td = jax.random.split(key, 3)
    if with_add:
        buf, _ = buf.add(_rows(k_add, batch), jnp.zeros((batch,), jnp.int32))
    sample, idx = buf.sample(k_sample, batch)
    td = jax.random.normal(k_td, (batch,)) * sample["weight"]
    return buf.update_weight(idx, td), td.sum()


def _big_ops(hlo: str, sizes: tuple[int, ...]) -> list[str]:
    dims = "|".join(str(s) for s in sizes)
    found = re.findall(rf"=\s*\(?[a-z0-9]+\[(?:{dims})(?:,\d+)*\]\S*\s+([a-z\-]+)\(", hlo)
    return sorted(set(op for op in found if op not in _PLUMBING))


def bench(log2n: int, batch: int, repeats: int, with_add: bool) -> dict:
    n = 2**log2n
    buf = _full_buffer(n)
    assert len(buf) == n
    call = jax.jit(_train_step, static_argnums=(2, 3), donate_argnums=0)
    hlo = call.lower(buf, jax.random.key(0), batch, with_add).compile().as_text()
    key = jax.random.key(1)
    buf, out = call(buf, key, batch, with_add)
    out.block_until_ready()
    times, cpu = [], []
    for _ in range(repeats):
        key, sub = jax.random.split(key)
        t0, c0 = time.perf_counter(), time.process_time()
        buf, out = call(buf, sub, batch, with_add)
        out.block_until_ready()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    steps = 500

    @jax.jit
    def many(buf, key):
        def body(b, k):
            return _train_step(b, k, batch, with_add)[0], None

        return jax.lax.scan(body, buf, jax.random.split(key, steps))[0]

    jax.block_until_ready(many(buf, key))
    scan_times, scan_cpu = [], []
    for r in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(many(buf, jax.random.key(r)))
        scan_times.append((time.perf_counter() - t0) / steps)
        scan_cpu.append((time.process_time() - c0) / steps)
    return {
        "call_us": 1e6 * statistics.median(times),
        "call_cpu_us": 1e6 * statistics.median(cpu),
        "scan_us": 1e6 * statistics.median(scan_times),
        "scan_cpu_us": 1e6 * statistics.median(scan_cpu),
        "big_ops": _big_ops(hlo, (n, 2 * n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--log2n", type=int, nargs="+", default=[16, 20, 22])
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    print(f"backend={jax.default_backend()} batch={args.batch}")
    for with_add in (False, True):
        label = "add+sample+update" if with_add else "sample+update"
        for log2n in args.log2n:
            r = bench(log2n, args.batch, args.repeats, with_add)
            print(
                f"{label:18s} N=2^{log2n:<2d} call median {r['call_us']:7.1f} us "
                f"(cpu {r['call_cpu_us']:7.1f})  in-scan {r['scan_us']:7.1f} us/step "
                f"(cpu {r['scan_cpu_us']:7.1f})   N-sized non-in-place ops: {r['big_ops']}"
            )


if __name__ == "__main__":
    main()
