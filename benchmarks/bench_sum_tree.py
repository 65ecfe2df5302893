"""Cost of one prioritized step (sample B leaves, then set B leaves) on the sum tree.

Measures, for several capacities N:
  * ``call``: median wall time of one jitted, donated ``sample + set`` call (includes dispatch);
  * ``scan``: median time per step of 1000 steps inside one jitted ``lax.scan`` (no dispatch);
  * ``big_ops``: instructions in the compiled HLO that produce the leaf array or the largest
    level of rows, other than the in-place scatters / loop plumbing (a ``copy``,
    ``broadcast``, ``reduce`` ... of the tree would show up here; an O(N) step would also show
    as time growing with N).

Usage: PYTHONPATH=. python benchmarks/bench_sum_tree.py [--batch 256] [--log2n 16 20 22]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp

from jaxbuf.prioritized import SumTree

# HLO opcodes that may legitimately carry the whole tree: the in-place scatter (inside its
# fusion wrapper), loop plumbing and the entry parameter.
_PLUMBING = {"parameter", "scatter", "fusion", "while", "tuple", "get-tuple-element", "bitcast"}


def _step(tree: SumTree, key: jax.Array, batch: int) -> tuple[SumTree, jax.Array]:
    k_sample, k_prio = jax.random.split(key)
    idx = tree.sample(k_sample, batch)
    prio = jax.random.uniform(k_prio, (batch,), minval=0.1, maxval=2.0)
    return tree.set(idx, prio), idx


def _big_ops(hlo: str, shapes: list[str]) -> list[str]:
    dims = "|".join(re.escape(s) for s in shapes)
    pattern = re.compile(rf"=\s*\(?[a-z0-9]+\[(?:{dims})\]\S*\s+([a-z\-]+)\(")
    found = []
    for line in hlo.splitlines():
        m = pattern.search(line)
        if m and m.group(1) not in _PLUMBING:
            found.append(m.group(1))
    return found


def bench(log2n: int, batch: int, repeats: int) -> dict[str, float | int | list[str]]:
    n = 2**log2n
    tree = SumTree.create(n).set(jnp.arange(n), jnp.ones(n))
    call = jax.jit(_step, static_argnums=2, donate_argnums=0)
    hlo = call.lower(tree, jax.random.key(0), batch).compile().as_text()
    key = jax.random.key(1)
    tree, idx = call(tree, key, batch)
    idx.block_until_ready()
    times, cpu = [], []
    for _ in range(repeats):
        key, sub = jax.random.split(key)
        t0, c0 = time.perf_counter(), time.process_time()
        tree, idx = call(tree, sub, batch)
        idx.block_until_ready()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    steps = 1000

    @jax.jit
    def many(tree: SumTree, key: jax.Array) -> SumTree:
        def body(t: SumTree, k: jax.Array) -> tuple[SumTree, None]:
            return _step(t, k, batch)[0], None

        return jax.lax.scan(body, tree, jax.random.split(key, steps))[0]

    jax.block_until_ready(many(tree, key))
    scan_times, scan_cpu = [], []
    for r in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(many(tree, jax.random.key(r)))
        scan_times.append((time.perf_counter() - t0) / steps)
        scan_cpu.append((time.process_time() - c0) / steps)
    return {
        "N": n,
        "call_us": 1e6 * statistics.median(times),
        "call_cpu_us": 1e6 * statistics.median(cpu),
        "scan_us": 1e6 * statistics.median(scan_times),
        "scan_cpu_us": 1e6 * statistics.median(scan_cpu),
        "big_ops": _big_ops(hlo, [str(tree.bound), ",".join(map(str, tree.levels[-1].shape))]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--log2n", type=int, nargs="+", default=[16, 20, 22])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"backend={jax.default_backend()} batch={args.batch}")
    for log2n in args.log2n:
        r = bench(log2n, args.batch, args.repeats)
        print(
            f"N=2^{log2n:<2d} call median {r['call_us']:7.1f} us (cpu {r['call_cpu_us']:7.1f})  "
            f"in-scan {r['scan_us']:7.1f} us/step (cpu {r['scan_cpu_us']:7.1f})  "
            f"non-in-place N-sized HLO ops: {r['big_ops']}"
        )


if __name__ == "__main__":
    main()
