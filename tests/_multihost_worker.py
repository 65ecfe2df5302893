"""One process of a two-process JAX run on localhost (CPU, gloo collectives).

Usage: ``python _multihost_worker.py PROCESS_ID PORT CHECKPOINT_DIR`` with ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=2``; tests/test_sharding.py starts two.
The mesh spans the 4 devices of both processes; the buffer has 8 sub-buffers, so each
process owns 4 (2 per device). Each process feeds only its own envs' rows
(``global_batch``) and checks the blocks it can address against an unsharded reference it
builds locally from all envs' rows. Finally both processes save the buffer to
``CHECKPOINT_DIR`` (each writes the shards it owns) and restore it collectively onto the same
mesh. Prints ``process I ok`` on success.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxbuf import sharding as shd

PROCESS_ID, PORT, CHECKPOINT_DIR = int(sys.argv[1]), sys.argv[2], sys.argv[3]
N_ENV, SIZE, STEPS, B = 8, 80, 13, 5


def check_blocks(global_array: jax.Array, reference) -> None:
    """Every block this process holds equals the same block of ``reference``."""
    reference = np.asarray(reference)
    for shard in global_array.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), reference[shard.index])


def main() -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID
    )
    assert shd.process_rank() == (PROCESS_ID, 2), shd.process_rank()
    assert jax.device_count() == 4 and jax.local_device_count() == 2

    # Imported after initialize: the module creates arrays, which must not precede it.
    from _sharding_data import EXAMPLE, builder, rows, stacked_rows

    import jaxbuf

    mesh = jax.make_mesh((4,), ("env",))
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", stack_num=2)
    mine = shd.process_subbuffers(N_ENV, mesh, "env")  # this host's environments
    np.testing.assert_array_equal(mine, np.arange(4) + 4 * PROCESS_ID)
    results = []
    for t in range(STEPS):
        batch = shd.global_batch(rows(t, mine), mesh, "env")
        assert batch["act"].shape == (N_ENV,)
        sb, res = shd.shard_add(sb, batch, mesh, "env")
        results.append(res)

    # The unsharded reference, on this process's first device.
    with jax.default_device(jax.local_devices()[0]):
        ref = builder("stack2", SIZE, N_ENV)(stacked_rows(np.arange(N_ENV), STEPS))
        for leaf, want in zip(jax.tree_util.tree_leaves(sb), jax.tree_util.tree_leaves(ref)):
            check_blocks(leaf, want)
        m = SIZE // N_ENV
        check_blocks(results[-1].index, np.arange(N_ENV) * m + (STEPS - 1) % m)

        # Shard-local sampling: shard s equals a 2-sub-buffer buffer sampled with fold_in(key, s).
        sample = jax.jit(lambda b, k, n: b.sample(k, n), static_argnums=2)
        key = jax.random.key(7)
        batch, idx = shd.shard_sample(sb, key, B, mesh, "env")
        want = np.zeros(4 * B, np.int32)
        for s in range(4):
            local = builder("stack2", SIZE // 4, 2)(stacked_rows(np.arange(2 * s, 2 * s + 2)))
            local_idx = sample(local, jax.random.fold_in(key, s), B)[1]
            want[s * B : (s + 1) * B] = np.asarray(local_idx) + s * 2 * m
        check_blocks(idx, want)
        check_blocks(batch["obs"], jax.jit(lambda b, i: b.get(i, "obs"))(ref, want))

        # Global sampling crosses processes (gloo collectives): the rows at the drawn slots.
        batch, idx = shd.shard_sample(sb, key, B, mesh, "env", mode="global")
        every = np.asarray(multihost_utils.process_allgather(idx, tiled=True))
        assert every.shape == (4 * B,) and ((every >= 0) & (every < SIZE)).all()
        check_blocks(batch["obs"], jax.jit(lambda b, i: b.get(i, "obs"))(ref, every))

        # Checkpoint: a collective save, then a collective restore onto the global mesh.
        jaxbuf.save(CHECKPOINT_DIR, sb)
        restored = jaxbuf.restore(CHECKPOINT_DIR, like=shd.sharded_like(sb, mesh, "env"))
        for leaf, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(ref)):
            check_blocks(leaf, want)
        prioritized(mesh, mine, ref)
    print(f"process {PROCESS_ID} ok", flush=True)


def prioritized(mesh, mine, ref_plain) -> None:
    """The prioritized buffer: host-local adds, global sample, update, collective save."""
    from _sharding_data import EXAMPLE, rows

    import jaxbuf

    opts = {"alpha": 0.6, "beta": 0.4, "stack_num": 2}
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", **opts)
    ref = jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, **opts)
    for t in range(STEPS):
        sb, _ = shd.shard_add(sb, shd.global_batch(rows(t, mine), mesh, "env"), mesh, "env")
        ref, _ = ref.add(rows(t, np.arange(N_ENV)))
    batch, idx = shd.shard_sample(sb, jax.random.key(3), B, mesh, "env", mode="global")
    every = np.asarray(multihost_utils.process_allgather(idx, tiled=True))
    check_blocks(batch["obs"], ref_plain.get(every, "obs"))
    weights = np.linspace(0.5, 3.0, 4 * B).astype(np.float32)
    sb = shd.shard_update_weight(sb, idx, weights, mesh, "env")
    ref = ref.update_weight(every, weights)
    want = np.asarray(ref.priorities()).reshape(4, -1)
    check_blocks(sb.tree.leaves, np.pad(want, ((0, 0), (0, sb.tree.leaves.shape[1] - 20))))
    assert float(sb.max_prio.addressable_shards[0].data) == float(ref.max_prio)
    jaxbuf.save(CHECKPOINT_DIR + "_per", sb)


if __name__ == "__main__":
    main()
