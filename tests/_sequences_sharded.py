"""Shard-local sequence sampling on a buffer sharded over 4 CPU devices (a script).

Run by tests/test_sequences_sharded.py in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. Each shard samples windows of its
own sub-buffers inside ``jax.shard_map`` (no collective); the reference is an unsharded
buffer per shard holding that shard's sub-buffers, sampled with the key folded by the shard
index. Exits non-zero (an AssertionError) on any difference.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from _sharding_data import EXAMPLE, N_ENV, SIZE, STEPS, rows, stacked_rows
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxbuf
from jaxbuf import sharding as shd

SHARDS = 4
LOCAL = N_ENV // SHARDS  # sub-buffers per shard
B, L, BURN = 8, 4, 1
OPTIONS = dict(burn_in=BURN, full_only=True)


def filled(size: int, envs: np.ndarray):
    """An unsharded buffer of ``len(envs)`` sub-buffers fed ``rows(t, envs)`` for every t."""
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, size, len(envs))
    return jax.lax.scan(lambda b, x: (b.add(x)[0], None), buf, stacked_rows(envs))[0]


@functools.partial(jax.jit, static_argnames=("mesh",))
def shard_sequences(buf, key, mesh):
    """Each shard: ``sample_sequences`` on its local buffer of LOCAL sub-buffers; global slots."""

    def local(b, k):
        shard = jax.lax.axis_index("env")
        seq = b.replace(buffer_num=LOCAL).sample_sequences(
            jax.random.fold_in(k, shard), B, L, **OPTIONS
        )
        offset = shard.astype(np.int32) * (LOCAL * b.subbuffer_size)
        return seq.replace(indices=seq.indices + offset)

    spec = shd.partition_specs(buf, "env")
    fn = jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=P("env"), check_vma=False)
    return fn(buf, key)


def main() -> None:
    assert jax.device_count() == SHARDS, jax.device_count()
    mesh = jax.make_mesh((SHARDS,), ("env",), axis_types=(AxisType.Explicit,))
    envs = np.arange(N_ENV)
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env")
    for t in range(STEPS):  # wraps every 10-slot sub-buffer
        sb, _ = shd.shard_add(sb, rows(t, envs), mesh, "env")
    whole = filled(SIZE, envs)
    key = jax.random.key(3)
    got = shard_sequences(sb, key, mesh)
    assert shd.collectives(lambda b, k: shard_sequences(b, k, mesh), sb, key) == set()
    idx, mask, found = (np.asarray(x) for x in (got.indices, got.mask, got.found))
    assert idx.shape == (SHARDS * B, L) and found.mean() > 0.5
    assert (mask.all(1) == found).all() and (mask.any(1) == found).all()
    # reference: shard s is an unsharded buffer of its own sub-buffers, fed the same rows
    m = SIZE // N_ENV
    for s in range(SHARDS):
        mine = envs[s * LOCAL : (s + 1) * LOCAL]
        ref = filled(LOCAL * m, mine)
        want = ref.sample_sequences(jax.random.fold_in(key, s), B, L, **OPTIONS)
        rows_ = slice(s * B, (s + 1) * B)
        np.testing.assert_array_equal(idx[rows_], np.asarray(want.indices) + s * LOCAL * m)
        for name in ("mask", "burn_in", "found", "weight"):
            np.testing.assert_array_equal(
                np.asarray(getattr(got, name))[rows_], np.asarray(getattr(want, name))
            )
        for field in ("obs", "rew", "terminated"):
            np.testing.assert_array_equal(
                np.asarray(got.batch[field])[rows_], np.asarray(want.batch[field])
            )
    # windows stay inside one episode of one sub-buffer, checked on the whole buffer
    nxt = np.asarray(whole.next(idx))[found]
    end = np.asarray(whole.is_episode_end(idx))[found]
    assert (nxt[:, :-1] == idx[found, 1:]).all() and not end[:, :-1].any()
    assert (idx // m == idx[:, :1] // m).all()  # one sub-buffer per window
    obs = np.asarray(whole[idx]["obs"])
    np.testing.assert_array_equal(np.asarray(got.batch["obs"]), obs)
    print("ok: shard-local sample_sequences on", SHARDS, "devices")


if __name__ == "__main__":
    main()
