"""Restoring a checkpoint straight into the sharded layout of a mesh, any device count."""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxbuf.checkpoint import orbax_io, schema
from jaxbuf.checkpoint.manager import BufferCheckpointManager, restore
from jaxbuf.sharding._views import (
    check_buffer,
    is_prioritized,
    local_count,
    named,
    shard_count,
    tree_shards,
)
from jaxbuf.sharding.layout import partition_specs, shard_buffer, sharded_like


def restore_sharded(
    directory: str | os.PathLike, mesh: Mesh, axis: str, *, step: int | None = None
) -> Any:
    """The buffer saved in ``directory``, restored onto ``mesh`` split over ``axis``.

    Works whatever the saving run's layout was (unsharded, or sharded over any device count
    dividing ``buffer_num``): the layout comes from the checkpoint's own description, so no
    ``like`` is needed. The storage and counters are read block by block onto the devices
    that hold them (as ``jaxbuf.restore(path, like=sharded_like(...))``). A prioritized
    buffer saved with another number of per-shard trees gets its trees rebuilt for this mesh
    from the saved priorities (``O(maxsize)``; the saved tree arrays are read sharded when
    the saved shard count is a multiple of this one, else replicated). Multi-host: collective,
    every process calls it with the same arguments.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> import tempfile
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env", alpha=0.6, beta=0.4)
      >>> buf, _ = shd.shard_add(buf, rows, mesh, "env")
      >>> path = tempfile.mkdtemp() + "/buf"
      >>> _ = jaxbuf.save(path, buf)
      >>> back = shd.restore_sharded(path, mesh, "env")
      >>> type(back).__name__, back.tree.leaves.shape, len(shd.unshard(back))
      ('PrioritizedReplayBuffer', (1, 8), 2)
    """
    with BufferCheckpointManager(directory, read_only=True) as mngr:
        step = mngr._check_step(step)
        meta = orbax_io.read_meta(mngr.orbax_manager, step)
    entries = meta["leaves"]
    saved = schema.build(meta, [schema.leaf_abstract(e, None) for e in entries], directory)
    check_buffer(saved)
    shards = shard_count(mesh, axis)
    local_count(saved.buffer_num, mesh, axis)
    if not is_prioritized(saved) or tree_shards(saved) == shards:
        return restore(directory, like=sharded_like(saved, mesh, axis), step=step)
    old = tree_shards(saved)
    tree_spec = P(axis) if old and old % shards == 0 else P()
    t = saved.tree
    specs = saved.replace(
        buffer=partition_specs(saved.buffer, axis),
        tree=t.replace(leaves=tree_spec, bottom=tree_spec, upper=tree_spec),
        max_prio=P(),
        beta=P(),
    )
    like = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), saved, named(mesh, specs)
    )
    return shard_buffer(restore(directory, like=like, step=step), mesh, axis)
