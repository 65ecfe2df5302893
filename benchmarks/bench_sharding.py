"""Sharded-buffer throughput on 1, 2, 4, 8 devices: shard-local add, local and global sample.

Run: ``PYTHONPATH=. python benchmarks/bench_sharding.py [--devices 1 2 4 8] [--repeats N]``.
Each device count runs in its own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=D``
on CPU, or the first D accelerators with ``--platform gpu``). The buffer has 64 sub-buffers
(envs) of 4096 slots with 16-float ``obs`` and ``obs_next``; every figure times a jitted
``lax.scan`` of ``ITERS`` calls with the buffer donated, best of ``--repeats`` runs:

* add: ``shard_add`` of one row per env (64 rows) per call -> transitions/s;
* sample local: ``shard_sample`` of 1024 rows in total (1024/D per shard) -> rows/s;
* sample global: the same with ``mode="global"`` (cross-device collectives);
* the unsharded core buffer on one device (``buf.add`` / ``buf.sample``) as the baseline.

Forced CPU devices share the machine's cores, so on a small machine these figures measure
the overhead of sharding, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

N_ENV, SLOTS, OBS, BATCH, ITERS = 64, 4096, 16, 1024, 50


def measure(devices: int, repeats: int) -> dict:
    """Run in the child process: time every operation on a mesh of ``devices`` devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxbuf
    from jaxbuf import sharding as shd

    mesh = jax.make_mesh((devices,), ("env",), devices=jax.devices()[:devices])
    example = {
        "obs": jnp.zeros((OBS,), jnp.float32),
        "obs_next": jnp.zeros((OBS,), jnp.float32),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
    }
    rng = np.random.default_rng(0)
    steps = {
        "obs": rng.normal(size=(ITERS, N_ENV, OBS)).astype(np.float32),
        "obs_next": rng.normal(size=(ITERS, N_ENV, OBS)).astype(np.float32),
        "act": rng.integers(0, 4, (ITERS, N_ENV)).astype(np.int32),
        "rew": rng.normal(size=(ITERS, N_ENV)).astype(np.float32),
        "terminated": rng.random((ITERS, N_ENV)) < 0.01,
        "truncated": np.zeros((ITERS, N_ENV), bool),
    }
    step_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "env"))
    sharded_steps = jax.device_put(steps, step_sharding)
    keys = jax.random.split(jax.random.key(0), ITERS)

    def best(fn, make_state, *args) -> float:
        """Best wall time of ``fn(state, *args)`` over ``repeats`` runs (after a warm-up)."""
        jax.block_until_ready(fn(make_state(), *args))
        times = []
        for _ in range(repeats):
            state = jax.block_until_ready(make_state())
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, *args))
            times.append(time.perf_counter() - t0)
        return min(times)

    def sharded() -> jaxbuf.VectorReplayBuffer:
        return shd.create_sharded(example, N_ENV * SLOTS, N_ENV, mesh, "env")

    def plain() -> jaxbuf.VectorReplayBuffer:
        return jaxbuf.VectorReplayBuffer.create(example, N_ENV * SLOTS, N_ENV)

    def scan_add(add):
        return jax.jit(
            lambda b, xs: jax.lax.scan(lambda c, x: (add(c, x), None), b, xs)[0], donate_argnums=0
        )

    def scan_sample(sample):
        def run(b, ks):
            def body(total, k):
                rows, idx = sample(b, k)
                return total + jnp.sum(rows["obs"]) + jnp.sum(idx), None

            return jax.lax.scan(body, jnp.float32(0), ks)[0]

        return jax.jit(run)

    # A filled buffer to sample from (the whole step table, repeated to fill every slot).
    fill_sharded = scan_add(lambda c, x: shd.shard_add(c, x, mesh, "env")[0])
    full = sharded()
    for _ in range(SLOTS // ITERS + 1):
        full = fill_sharded(full, sharded_steps)
    per_shard = BATCH // devices
    out = {
        "devices": devices,
        "platform": jax.devices()[0].platform,
        "add_rows_per_s": N_ENV * ITERS / best(fill_sharded, sharded, sharded_steps),
        "sample_local_rows_per_s": BATCH
        * ITERS
        / best(
            scan_sample(lambda b, k: shd.shard_sample(b, k, per_shard, mesh, "env")),
            lambda: full,
            keys,
        ),
        "sample_global_rows_per_s": BATCH
        * ITERS
        / best(
            scan_sample(lambda b, k: shd.shard_sample(b, k, per_shard, mesh, "env", mode="global")),
            lambda: full,
            keys,
        ),
    }
    if devices == 1:
        fill_plain = scan_add(lambda c, x: c.add(x)[0])
        full_plain = plain()
        for _ in range(SLOTS // ITERS + 1):
            full_plain = fill_plain(full_plain, steps)
        out["core_add_rows_per_s"] = N_ENV * ITERS / best(fill_plain, plain, steps)
        out["core_sample_rows_per_s"] = (
            BATCH
            * ITERS
            / best(scan_sample(lambda b, k: b.sample(k, BATCH)), lambda: full_plain, keys)
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--platform", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.repeats)))
        return
    rows = []
    for d in args.devices:
        env = {**os.environ, "JAX_PLATFORMS": args.platform}
        if args.platform == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(d), "--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| devices | add (rows/s) | local sample (rows/s) | global sample (rows/s) |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['add_rows_per_s']:,.0f} | "
            f"{r['sample_local_rows_per_s']:,.0f} | {r['sample_global_rows_per_s']:,.0f} |"
        )
    for r in rows:
        if "core_add_rows_per_s" in r:
            print(
                f"\nunsharded core buffer, 1 device: add {r['core_add_rows_per_s']:,.0f} rows/s, "
                f"sample {r['core_sample_rows_per_s']:,.0f} rows/s"
            )


if __name__ == "__main__":
    main()
