"""What a jitted call costs before any work: the floor under the per-call targets of issue 7.

Usage::

    PYTHONPATH=. python benchmarks/call_floor.py [--reps 9]
    PYTHONPATH=. taskset -c 0 python benchmarks/call_floor.py   # the same on one core

Rows (medians of ``--reps`` alternating rounds; a call row is 300 calls from Python then one
block, a scan row is one jitted ``lax.scan`` of 100 steps, per step):

* ``floor``: the identity on the state, called with the state donated, as the prioritized
  workload calls its step. Nothing is computed or copied (every output aliases its input),
  so this is the cost of handing the state's arrays to XLA and back, per array.
* ``prio call`` / ``prio scan``: workload 4 (capacity 2^20, sample 256 then update their
  priorities) per donated call and per step of a scan, for jaxbuf and flashbax.
* ``sample call`` / ``sample scan``: workload 2 at 2^20 (uniform batch of 256) for jaxbuf.

The floor bounds what a per-call speed-up can reach: jaxbuf at ``k`` times flashbax per call
needs ``jaxbuf call <= flashbax call / k``, and at least ``floor`` of that is spent before
the work starts. Run it once as is and once under ``taskset -c 0``: with one CPU, XLA:CPU
does not split gathers and scatters over cores, which shows what that split costs per call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks import data, peers
from jaxbuf import PrioritizedVectorReplayBuffer, VectorReplayBuffer

CAP, BATCH, STEPS, CALLS = 1 << 20, 256, 100, 300


def _prio_step(buf, key):
    batch, idx = buf.sample(key, BATCH)
    return buf.update_weight(idx, jnp.abs(batch["rew"]) + 1e-3)


def _scan(step):
    def run(state, keys):
        return jax.lax.scan(lambda s, k: (step(s, k), None), state, keys)[0]

    return run


def _sum_scan(read):
    def run(state, keys):
        def body(acc, k):
            out = read(state, k)
            leaves = jax.tree_util.tree_leaves(out)
            return acc + sum(jnp.sum(x.astype(jnp.float32)) for x in leaves), None

        return jax.lax.scan(body, jnp.float32(0), keys)[0]

    return run


def _rows() -> dict:
    """name -> (compiled, state, argument, calls per round, steps per round, donated)."""
    keys = jax.random.split(jax.random.key(0), STEPS)
    key = jax.random.key(1)
    prio = PrioritizedVectorReplayBuffer.create(
        data.example(), CAP, data.N_ENV, alpha=0.6, beta=0.4, ignore_obs_next=True
    )
    prio = data.fill_by_scan(lambda b, x: b.add(x)[0], prio, data.step, CAP // data.N_ENV)
    uni = VectorReplayBuffer.create(data.example(), CAP, data.N_ENV, ignore_obs_next=True)
    uni = data.fill_by_scan(lambda b, x: b.add(x)[0], uni, data.step, CAP // data.N_ENV)
    states = {"jaxbuf": prio}
    steps = {"jaxbuf": _prio_step}
    fbx, why = peers.module("flashbax")
    if fbx is None:
        print(f"flashbax rows skipped: {why}")
    else:
        fb = fbx.make_prioritised_flat_buffer(
            max_length=CAP,
            min_length=BATCH,
            sample_batch_size=BATCH,
            add_batch_size=data.N_ENV,
            priority_exponent=0.6,
            device="cpu",
        )

        def fb_step(state, k):
            sample = fb.sample(state, k)
            prio = jnp.abs(sample.experience.first["rew"]) + 1e-3
            return fb.set_priorities(state, sample.indices, prio)

        states["flashbax"] = data.fill_by_scan(
            fb.add, fb.init(data.example()), data.step, CAP // data.N_ENV
        )
        steps["flashbax"] = fb_step

    def row(fn, state, arg, calls, steps, donate):
        jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
        state_copy = jax.tree_util.tree_map(jnp.copy, state) if donate else state
        return jitted.lower(state, arg).compile(), state_copy, arg, calls, steps, donate

    rows = {}
    for lib, state in states.items():
        n = len(jax.tree_util.tree_leaves(state))
        rows[f"{lib} floor ({n} arrays)"] = row(lambda s, k: s, state, key, CALLS, CALLS, True)
        rows[f"{lib} prio call"] = row(steps[lib], state, key, CALLS, CALLS, True)
        rows[f"{lib} prio scan"] = row(_scan(steps[lib]), state, keys, 1, STEPS, True)

    def sample(b, k):
        return b.sample(k, BATCH)

    rows["jaxbuf sample call"] = row(sample, uni, key, CALLS, CALLS, False)
    rows["jaxbuf sample scan"] = row(_sum_scan(sample), uni, keys, 1, STEPS, False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    rows = _rows()
    states = {name: row[1] for name, row in rows.items()}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.reps):
        for name, (fn, _, arg, calls, steps, donated) in rows.items():
            state, out = states[name], None
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(state, arg)
                if donated:
                    state = out
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / steps * 1e6)
            states[name] = state
    print(f"backend {jax.default_backend()}, {jax.local_device_count()} device(s)")
    for name, values in times.items():
        print(f"{name:32s} {statistics.median(values):8.1f} us (median of {args.reps})")


if __name__ == "__main__":
    main()
