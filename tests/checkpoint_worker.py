"""Subprocess side of tests/test_checkpoint_processes.py (needs a fresh JAX per device count).

Usage: ``python tests/checkpoint_worker.py MODE DIRECTORY``; prints ``OK`` (and facts the test
checks) on success. Modes:

* ``save8``: on 8 host devices, save a VectorReplayBuffer sharded one sub-buffer per device.
* ``restore4``: on 4 host devices, restore it onto a 4-device sharding and compare it (and
  a continued add + sample) with the same buffer built without saving.
* ``crash_async``: manager, step 1 committed, then ``os._exit`` right after starting the
  async save of step 2.
* ``crash_before_commit`` / ``crash_after_commit``: ``jaxbuf.save`` generation 1, then exit
  inside the save of generation 2 just before / just after orbax's commit rename.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from helpers import transition
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxbuf
import jaxbuf.checkpoint as ckpt

EXAMPLE = transition((4,))


def rows(n: int, step: int) -> dict:
    """Deterministic rows for ``n`` sub-buffers at ``step``."""
    ids = np.arange(n)
    return {
        "obs": jnp.asarray((step * 10 + ids[:, None] + np.arange(4)) % 89, jnp.float32),
        "act": jnp.asarray(ids + step, jnp.int32),
        "rew": jnp.asarray((ids + step) % 3, jnp.float32),
        "terminated": jnp.asarray((ids + step) % 5 == 4),
        "truncated": jnp.asarray((2 * ids + step) % 7 == 6),
    }


def filled(n: int, size: int, steps: int, start: int = 0) -> jaxbuf.VectorReplayBuffer:
    """A VectorReplayBuffer(size, n) after ``steps`` adds of :func:`rows`."""
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, size, n)
    batches = jax.tree_util.tree_map(
        lambda *x: jnp.stack(x), *[rows(n, s) for s in range(start, start + steps)]
    )
    return jax.jit(lambda b, x: jax.lax.scan(lambda bb, r: bb.add(r), b, x))(buf, batches)[0]


def sharded_buffer() -> jaxbuf.VectorReplayBuffer:
    """The buffer of the device test: 8 sub-buffers of 8 slots, 13 adds (wraps around)."""
    return filled(8, 64, 13)


def generation(g: int) -> jaxbuf.VectorReplayBuffer:
    """The buffer saved as generation/step ``g`` by the crash modes."""
    return filled(2, 16, 5, start=10 * g)


def _shard(tree, devices: int):
    """``tree`` as ShapeDtypeStructs split along their leading axis over ``devices``."""
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:devices]), ("d",)), PartitionSpec("d"))
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def _continue(buf):
    buf, res = buf.add(rows(8, 99))
    return buf, res, buf.sample(jax.random.key(5), 16)


def _exit_on_commit(directory: str, after: bool) -> None:
    """Make orbax's rename of a step directory into ``directory`` (the commit) exit."""
    from orbax.checkpoint._src.path import async_path

    rename = async_path.rename

    async def crashing_rename(src, dst):
        commit = os.path.dirname(os.fspath(dst)) == os.path.abspath(directory)
        if after or not commit:
            await rename(src, dst)
        if commit:
            print("crashing", "after" if after else "before", "commit", flush=True)
            os._exit(0)

    async_path.rename = crashing_rename


def main(mode: str, directory: str) -> None:
    if mode == "save8":
        assert jax.device_count() == 8, jax.devices()
        buf = sharded_buffer()
        buf = jax.device_put(buf, jax.tree_util.tree_map(lambda s: s.sharding, _shard(buf, 8)))
        assert len(buf.storage["obs"].sharding.device_set) == 8
        ckpt.save(directory, buf)
    elif mode == "restore4":
        assert jax.device_count() == 4, jax.devices()
        like = _shard(jax.eval_shape(lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 64, 8)), 4)
        got = ckpt.restore(directory, like=like)
        want = sharded_buffer()
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert len(a.sharding.device_set) == 4, a.sharding
            assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
        cont = jax.jit(_continue)
        for a, b in zip(
            jax.tree_util.tree_leaves(cont(got)), jax.tree_util.tree_leaves(cont(want))
        ):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        print("restored on", len(got.storage["obs"].sharding.device_set), "devices")
    elif mode == "crash_async":
        mngr = ckpt.checkpoint_manager(directory, async_save=True)
        mngr.save(1, buffer=generation(1), wait=True)
        big = jaxbuf.ReplayBuffer.create({**EXAMPLE, "obs": np.zeros(64, np.float32)}, 1 << 16)
        mngr.save(2, buffer=big)
        print("in flight:", mngr.orbax_manager.is_saving_in_progress(), flush=True)
        os._exit(0)
    elif mode in ("crash_before_commit", "crash_after_commit"):
        ckpt.save(directory, generation(1))
        _exit_on_commit(directory, after=mode == "crash_after_commit")
        ckpt.save(directory, generation(2))
        raise AssertionError("the save of generation 2 should have exited")
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
