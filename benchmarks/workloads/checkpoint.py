"""Checkpoints: ``jaxbuf.checkpoint.save`` and ``restore`` of a full buffer (orbax).

A ``ReplayBuffer`` of ``episode_capacity`` slots (2^20 in the full profile) holding
``obs``/``obs_next`` float32[8] and the scalar fields, every slot written. Rows: a
synchronous ``save`` to a fresh folder (after removing the previous one), ``restore``
without a template and ``restore`` with ``like`` (the abstract buffer). The note gives
the buffer's bytes and the bytes on disk.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Case

UNIT = "us per checkpoint"


def full_buffer(size: int, obs_dim: int = 8):
    """A ``ReplayBuffer`` of ``size`` slots, all of them written (one bulk write)."""
    import jaxbuf

    obs = np.zeros(obs_dim, np.float32)
    example = {
        "obs": obs,
        "obs_next": obs,
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
    }
    buf = jaxbuf.ReplayBuffer.create(example, size)
    storage = {
        k: jnp.arange(v.size, dtype=jnp.float32).reshape(v.shape).astype(v.dtype)
        for k, v in buf.storage.items()
    }
    full = buf.episode_counters()._replace(
        lengths=jnp.full((1,), size, jnp.int32), last_slot=jnp.full((1,), size - 1, jnp.int32)
    )
    return buf.replace(storage=storage).with_counters(full)


def _disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def groups(cfg):
    """One group: save, restore, restore with ``like``."""
    import jaxbuf.checkpoint as ckpt

    size = cfg.episode_capacity
    buf = full_buffer(size)
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(buf))
    params = {"slots": size}
    counter = itertools.count()
    with tempfile.TemporaryDirectory(prefix="jaxbuf-bench-") as tmp:
        ref = os.path.join(tmp, "ref")
        ckpt.save(ref, buf)
        note = f"{nbytes:,} buffer bytes, {_disk_bytes(ref):,} on disk"
        like = jax.eval_shape(lambda: buf)

        def save():  # removes the previous save first, so the disk holds at most two
            n = next(counter)
            shutil.rmtree(os.path.join(tmp, f"s{n - 1}"), ignore_errors=True)
            ckpt.save(os.path.join(tmp, f"s{n}"), buf)

        yield [
            Case("checkpoint/save", params, "jaxbuf", save, 1, UNIT, note=note),
            Case(
                "checkpoint/restore",
                params,
                "jaxbuf",
                lambda: jax.block_until_ready(ckpt.restore(ref)),
                1,
                UNIT,
                note=note,
            ),
            Case(
                "checkpoint/restore",
                params,
                "jaxbuf[like]",
                lambda: jax.block_until_ready(ckpt.restore(ref, like=like)),
                1,
                UNIT,
                note=note,
            ),
        ]
