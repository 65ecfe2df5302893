"""Placement of a sharded buffer: partition specs, creation, conversion, host-local rows."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbuf.buffers import VectorReplayBuffer
from jaxbuf.errors import InputError
from jaxbuf.prioritized.buffer import PrioritizedVectorReplayBuffer
from jaxbuf.sharding._views import (
    check_buffer,
    core,
    in_layout,
    is_prioritized,
    local_count,
    named,
    shard_count,
    tree_shards,
)

PRIORITY_OPTIONS = ("alpha", "beta", "weight_norm")
"""``create_sharded`` options that make the buffer a ``PrioritizedVectorReplayBuffer``."""


def partition_specs(buf: Any, axis: str) -> Any:
    """The ``PartitionSpec`` of every leaf of ``buf``, split over the sub-buffer axis.

    Storage leaves ``[m, buffer_num, ...]`` get ``P(None, axis)``; ``counters`` and
    ``ep_return`` (leading axis ``buffer_num``) get ``P(axis)``. A prioritized buffer must be
    in the sharded layout (its ``tree`` a stack of per-shard trees, leading axis ``S``): the
    tree's arrays get ``P(axis)``, ``max_prio`` and ``beta`` are replicated (``P()``). Same
    pytree structure as ``buf`` (a buffer or its abstract value).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> specs = shd.partition_specs(jaxbuf.VectorReplayBuffer.create(ex, 8, 2), "env")
      >>> specs.storage["obs"], specs.counters
      (P(None, 'env'), P('env',))
    """
    check_buffer(buf)
    c = core(buf)
    specs = c.replace(
        storage=jax.tree_util.tree_map(lambda _: P(None, axis), c.storage),
        counters=P(axis),
        ep_return=P(axis),
    )
    if not is_prioritized(buf):
        return specs
    if tree_shards(buf) == 0:
        raise InputError(
            "jaxbuf: this prioritized buffer has one priority tree over all slots; place it "
            "with shard_buffer (or describe the target with sharded_like) to get one tree per "
            "shard"
        )
    t = buf.tree
    return buf.replace(
        buffer=specs,
        tree=t.replace(leaves=P(axis), bottom=P(axis), upper=P(axis)),
        max_prio=P(),
        beta=P(),
    )


def buffer_sharding(buf: Any, mesh: Mesh, axis: str) -> Any:
    """The ``NamedSharding`` of every leaf of ``buf`` (see :func:`partition_specs`).

    ``buf`` is a buffer or its abstract value (``jax.eval_shape``); the result has the same
    pytree structure, usable as ``out_shardings``, for ``jax.device_put`` or as the target
    shardings of a checkpoint restore. Checks that ``buffer_num`` divides over the axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> s = shd.buffer_sharding(jaxbuf.VectorReplayBuffer.create(ex, 8, 2), mesh, "env")
      >>> type(s.counters).__name__, s.counters.spec
      ('NamedSharding', P('env',))
    """
    local_count(buf.buffer_num, mesh, axis)
    if is_prioritized(buf) and tree_shards(buf) != shard_count(mesh, axis):
        raise InputError(
            f"jaxbuf: the buffer holds {tree_shards(buf)} per-shard priority trees, mesh axis "
            f"'{axis}' has {shard_count(mesh, axis)} shards; use sharded_like / shard_buffer"
        )
    return named(mesh, partition_specs(buf, axis))


def _relayout_abstract(buf: Any, shards: int) -> Any:
    if not is_prioritized(buf):
        return buf
    bare = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), buf)
    return jax.eval_shape(lambda b: in_layout(b, shards), bare)


def sharded_like(buf: Any, mesh: Mesh, axis: str) -> Any:
    """The abstract value of ``buf`` laid out over ``mesh``: ``ShapeDtypeStruct`` leaves.

    ``buf`` is a buffer (any layout) or ``jax.eval_shape`` of one. For a plain buffer the
    result is the ``like`` for restoring a checkpoint onto this mesh, whatever device count it
    was saved from::

        buf = jaxbuf.restore(path, like=sharded_like(saved_like, mesh4, "env"))

    A prioritized buffer's abstract value has one priority tree per shard of ``mesh``; to
    restore one saved on another device count use :func:`jaxbuf.sharding.restore_sharded`.
    Each leaf carries its ``NamedSharding``; orbax reads only the blocks each device needs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> saved = jax.eval_shape(lambda: jaxbuf.VectorReplayBuffer.create(ex, 8, 2))
      >>> like = shd.sharded_like(saved, mesh, "env")
      >>> like.storage["obs"].shape, like.storage["obs"].sharding.spec
      ((4, 2, 2), P(None, 'env'))
    """
    check_buffer(buf)
    buf = _relayout_abstract(buf, shard_count(mesh, axis))
    shardings = buffer_sharding(buf, mesh, axis)
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), buf, shardings
    )


def create_sharded(
    example: dict, total_size: int, buffer_num: int, mesh: Mesh, axis: str, **options: Any
) -> Any:
    """An empty vector buffer allocated directly in its sharded layout.

    Same arguments as ``VectorReplayBuffer.create`` (``options``: ``stack_num``,
    ``ignore_obs_next``, ``save_only_last_obs``, ``sample_avail``, ``lockstep``) plus the mesh
    and the axis whose shards each hold ``buffer_num / S`` sub-buffers. With ``alpha`` and
    ``beta`` (and optionally ``weight_norm``) among the options the buffer is a
    ``PrioritizedVectorReplayBuffer`` whose priority tree is split into ``S`` per-shard trees
    (``tree.leaves: float32[S, bound]``, each over its shard's ``L * m`` slots). No device
    ever holds the whole buffer. Multi-host: call it on every process with the same
    arguments.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env", alpha=0.6, beta=0.4)
      >>> buf.tree.leaves.shape     # one tree per shard over its 8 slots
      (1, 8)
    """
    local_count(buffer_num, mesh, axis)
    shards = shard_count(mesh, axis)
    prioritized = any(k in options for k in PRIORITY_OPTIONS)
    cls = PrioritizedVectorReplayBuffer if prioritized else VectorReplayBuffer

    def make() -> Any:
        return in_layout(cls.create(example, total_size, buffer_num, **options), shards)

    shardings = buffer_sharding(jax.eval_shape(make), mesh, axis)
    return jax.jit(make, out_shardings=shardings)()


def shard_buffer(buf: Any, mesh: Mesh, axis: str) -> Any:
    """Place an existing buffer in the sharded layout of ``mesh``.

    A plain buffer is moved with ``jax.device_put``. A prioritized buffer (one tree over all
    slots, or per-shard trees of another mesh) also gets its priority tree rebuilt as one tree
    per shard from the priorities per slot (``O(maxsize)``, exact: the rebuilt trees equal
    trees written leaf by leaf). Multi-host: every process must pass the same (host-resident)
    buffer; each keeps the blocks of its own devices.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = shd.shard_buffer(jaxbuf.VectorReplayBuffer.create(ex, 8, 2), mesh, "env")
      >>> buf.storage["obs"].sharding.spec
      P(None, 'env')
    """
    check_buffer(buf)
    shards = shard_count(mesh, axis)
    local_count(buf.buffer_num, mesh, axis)
    if not is_prioritized(buf):
        return jax.device_put(buf, buffer_sharding(buf, mesh, axis))
    target = sharded_like(buf, mesh, axis)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, target)
    if tree_shards(buf) != shards:  # the rebuild reads every priority: replicate them first
        buf = buf.replace(tree=jax.device_put(buf.tree, NamedSharding(mesh, P())))
    return jax.jit(lambda b: in_layout(b, shards), out_shardings=shardings)(buf)


def unshard(buf: Any) -> Any:
    """The ordinary single-device buffer holding the same data as a sharded one.

    A prioritized buffer gets its one priority tree over all ``maxsize`` slots back, so every
    method of the unsharded class works on the result (``sample``, ``update_weight``, reads
    with weights). The arrays go to the first local device; single-process only (multi-host,
    gather with ``global_apply`` or restore a checkpoint instead). ``O(maxsize)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env", alpha=0.6, beta=0.4)
      >>> buf, _ = shd.shard_add(buf, rows, mesh, "env")
      >>> buf.tree.leaves.shape, shd.unshard(buf).tree.leaves.shape  # per shard -> one tree
      ((1, 8), (8,))
    """
    check_buffer(buf)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    buf = jax.device_put(buf, one)
    return jax.jit(lambda b: in_layout(b, 0))(buf) if is_prioritized(buf) else buf


def process_subbuffers(buffer_num: int, mesh: Mesh, axis: str) -> np.ndarray:
    """int[]: ids of the sub-buffers held by this process's devices, ascending.

    Multi-host, these are the envs this process steps; its rows for :func:`global_batch` come
    in this order. Single-process, every id ``0 .. buffer_num - 1``.

    Example:
      >>> import jax
      >>> from jaxbuf import sharding as shd
      >>> shd.process_subbuffers(4, jax.make_mesh((1,), ("env",)), "env").tolist()
      [0, 1, 2, 3]
    """
    local_count(buffer_num, mesh, axis)
    index_map = NamedSharding(mesh, P(axis)).addressable_devices_indices_map((buffer_num,))
    held = {i for (block,) in index_map.values() for i in range(buffer_num)[block]}
    return np.array(sorted(held), dtype=np.int32)


def global_batch(batch: Any, mesh: Mesh, axis: str) -> Any:
    """This process's rows of a batch as global arrays sharded over ``axis``.

    Every leaf's leading axis holds this process's rows: for a full-width add, the rows of
    :func:`process_subbuffers` in that order (``jax.make_array_from_process_local_data``);
    the global leading size is the sum over processes. Single-process, this is
    ``jax.device_put`` to ``P(axis)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> import numpy as np
      >>> local = {"obs": np.zeros((2, 2), np.float32)}
      >>> rows = shd.global_batch(local, mesh, "env")
      >>> rows["obs"].shape, rows["obs"].sharding.spec
      ((2, 2), P('env',))
    """
    sharding = NamedSharding(mesh, P(axis))
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def process_rank() -> tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``: this process's rank and the world size.

    For the RLinf file mode's rank-partitioned loading,
    ``load_checkpoint(path, is_distributed=True, local_rank=rank, world_size=world)``
    with ``rank, world = jaxbuf.sharding.process_rank()`` after
    ``jax.distributed.initialize``; single-process JAX gives ``(0, 1)``.

    Example:
      >>> from jaxbuf import sharding as shd
      >>> shd.process_rank()  # single-process JAX
      (0, 1)
    """
    return jax.process_index(), jax.process_count()
