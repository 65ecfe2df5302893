"""Sharded buffer on every device of the process: shard-local add, local and global sample.

A ``jaxbuf.sharding.create_sharded`` buffer of 64 sub-buffers (envs) split over a mesh of all
``jax.devices()`` along ``"env"``, against the unsharded ``VectorReplayBuffer`` (``jaxbuf``)
on one device:

* ``sharding/add``: ``shard_add`` of one step of the 64 envs per step of a jitted scan;
* ``sharding/sample``: ``shard_sample`` of 1024 rows in all per scan step, ``mode="local"``
  (each shard samples its own rows, no collectives) and ``mode="global"``.

Shard-local programs are checked to be free of collectives first. On a CPU the process has
one device unless started with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``; such
forced devices share the machine's cores, so the figures then measure the overhead of
sharding, not a speed-up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data
from benchmarks.harness import Case, compile_jit
from benchmarks.workloads.common import Cell

ADD_UNIT, SAMPLE_UNIT = "us per add of 64 envs", "us per sample of 1024"
BATCH = 1024


def _steps(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "obs": rng.normal(size=(n, data.N_ENV, 16)).astype(np.float32),
        "act": rng.integers(0, 4, (n, data.N_ENV)).astype(np.int32),
        "rew": rng.normal(size=(n, data.N_ENV)).astype(np.float32),
        "terminated": rng.random((n, data.N_ENV)) < 0.01,
        "truncated": np.zeros((n, data.N_ENV), bool),
    }


def _add_case(lib, add, buf, xs, params, steps) -> Case:
    def run(b, xs):
        return jax.lax.scan(lambda c, x: (add(c, x), None), b, xs)[0]

    cell = Cell(buf)
    compiled, secs = compile_jit(run, buf, xs, donate_argnums=(0,))

    def chunk():
        cell.value = compiled(cell.value, xs)
        return jax.block_until_ready(cell.value)

    return Case("sharding/add", params, lib, chunk, steps, ADD_UNIT, secs), cell


def _sample_case(lib, sample, buf, keys, acc, params) -> Case:
    def run(b, ks, acc):
        def body(acc, k):
            rows, idx = sample(b, k)
            return acc + jnp.sum(rows["obs"], axis=-1) + idx, None  # keeps the gathers alive

        return jax.lax.scan(body, acc, ks)[0]

    compiled, secs = compile_jit(run, buf, keys, acc)
    chunk = lambda: jax.block_until_ready(compiled(buf, keys, acc))
    return Case("sharding/sample", params, lib, chunk, len(keys), SAMPLE_UNIT, secs)


def groups(cfg):
    """One group: sharded and unsharded add and sample."""
    import jaxbuf
    from jaxbuf import sharding as shd

    devices = jax.devices()
    d = max(k for k in range(1, len(devices) + 1) if data.N_ENV % k == 0)
    mesh = jax.make_mesh((d,), ("env",), devices=devices[:d])
    slots = max(64, cfg.episode_capacity // data.N_ENV)
    steps = max(16, cfg.scan_steps // 10)
    example = {k: v[0, 0] for k, v in _steps(1).items()}
    xs = _steps(steps)
    spec = jax.sharding.PartitionSpec
    xs_sharded = jax.device_put(xs, jax.sharding.NamedSharding(mesh, spec(None, "env")))
    keys = jax.random.split(jax.random.key(0), steps)
    acc = jnp.zeros((BATCH,), jnp.float32)
    acc_sharded = jax.device_put(acc, jax.sharding.NamedSharding(mesh, spec("env")))
    params = {"devices": d, "capacity": slots * data.N_ENV}

    def add_sharded(b, x):
        return shd.shard_add(b, x, mesh, "env")[0]

    sharded = shd.create_sharded(example, data.N_ENV * slots, data.N_ENV, mesh, "env")
    add_s, cell_s = _add_case("jaxbuf[sharded]", add_sharded, sharded, xs_sharded, params, steps)
    plain = jaxbuf.VectorReplayBuffer.create(example, data.N_ENV * slots, data.N_ENV)
    add_p, cell_p = _add_case("jaxbuf", lambda b, x: b.add(x)[0], plain, xs, params, steps)
    for _ in range(slots // steps + 1):  # fill every slot (and wrap) before sampling
        add_s.chunk()
        add_p.chunk()
    # The add cases go on donating their buffers while the group is timed: sample copies.
    full_s = jax.tree_util.tree_map(lambda x: x.copy(), cell_s.value)
    full_p = jax.tree_util.tree_map(lambda x: x.copy(), cell_p.value)
    local = lambda b, k: shd.shard_sample(b, k, BATCH // d, mesh, "env")
    glob = lambda b, k: shd.shard_sample(b, k, BATCH // d, mesh, "env", mode="global")
    assert shd.collectives(local, full_s, keys[0]) == set()
    yield [
        add_p,
        add_s,
        _sample_case("jaxbuf", lambda b, k: b.sample(k, BATCH), full_p, keys, acc, params),
        _sample_case("jaxbuf[sharded]", local, full_s, keys, acc_sharded, params),
        _sample_case("jaxbuf[sharded-global]", glob, full_s, keys, acc_sharded, params),
    ]
