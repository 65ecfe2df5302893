"""Shared pieces of :mod:`jaxbuf.sharding`: shard counts, kinds, local views, placement.

Inside ``jax.shard_map`` shard ``s`` sees the blocks of its ``L`` sub-buffers. For a plain
buffer the local view is the blocks with ``buffer_num = L``; for a prioritized buffer the
priority tree of the sharded layout is a stack of per-shard trees (leading axis ``S``, each
over the shard's ``L * m`` slots), so the local view also takes the shard's tree out of the
stack. Every single-device kernel then runs on the view unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbuf.buffers import ReplayBuffer
from jaxbuf.errors import InputError
from jaxbuf.prioritized.buffer import PrioritizedReplayBuffer
from jaxbuf.prioritized.priority_tree import PriorityTree
from jaxbuf.prioritized.tree import Tree

SHARDABLE = (ReplayBuffer, PrioritizedReplayBuffer)


def shard_count(mesh: Mesh, axis: str) -> int:
    """Number of shards along ``axis`` of ``mesh`` (a ``ValueError`` names a missing axis).

    Example:
      >>> import jax
      >>> from jaxbuf import sharding as shd
      >>> shd.shard_count(jax.make_mesh((1,), ("env",)), "env")
      1
    """
    if not isinstance(mesh, Mesh):
        raise InputError(f"jaxbuf: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.shape:
        raise InputError(
            f"jaxbuf: mesh axis '{axis}' not found; the mesh has axes {tuple(mesh.axis_names)}"
        )
    return int(mesh.shape[axis])


def local_count(buffer_num: int, mesh: Mesh, axis: str) -> int:
    """Sub-buffers per shard, ``buffer_num / S``; a ``ValueError`` if it does not divide.

    Example:
      >>> import jax
      >>> from jaxbuf import sharding as shd
      >>> shd.local_count(4, jax.make_mesh((1,), ("env",)), "env")
      4
    """
    shards = shard_count(mesh, axis)
    if buffer_num % shards:
        raise InputError(
            f"jaxbuf: buffer_num={buffer_num} must be divisible by the size {shards} of mesh "
            f"axis '{axis}' so that every device holds whole sub-buffers"
        )
    return buffer_num // shards


def check_buffer(buf: Any) -> None:
    """A ``TypeError`` unless ``buf`` is a plain or prioritized (vector) buffer."""
    if not isinstance(buf, SHARDABLE):
        raise InputError(
            "jaxbuf: expected a ReplayBuffer/VectorReplayBuffer or a "
            f"PrioritizedReplayBuffer/PrioritizedVectorReplayBuffer, got {type(buf).__name__}"
        )


def is_prioritized(buf: Any) -> bool:
    return isinstance(buf, PrioritizedReplayBuffer)


def tree_shards(buf: PrioritizedReplayBuffer) -> int:
    """How many per-shard trees ``buf`` holds: 0 for the single tree of an unsharded buffer."""
    return 0 if buf.tree.leaves.ndim == 1 else int(buf.tree.leaves.shape[0])


def core(buf: Any) -> ReplayBuffer:
    """The core buffer (storage and counters) of a plain or prioritized buffer."""
    return buf.buffer if is_prioritized(buf) else buf


def with_core(buf: Any, new_core: ReplayBuffer) -> Any:
    return buf.replace(buffer=new_core) if is_prioritized(buf) else new_core


# ---------------------------------------------------------------------- priority trees
def global_priorities(tree: PriorityTree) -> jax.Array:
    """float[maxsize]: the leaves of a single tree, or of a stack of per-shard trees in
    global slot order (shard ``s`` holds slots ``[s*c, (s+1)*c)``)."""
    return tree.leaves[..., : tree.capacity].reshape(-1)


def tree_over(values: jax.Array, shards: int) -> PriorityTree:
    """The single tree over ``values`` (``shards == 0``), or ``shards`` stacked trees over
    its consecutive blocks; built bottom-up, equal bit for bit to trees written leaf by
    leaf."""
    kind = "sum+min"
    if shards:
        values = values.reshape(shards, -1)
    t = Tree.from_values(values, kind)
    return PriorityTree(t.leaves, t.bottom, t.upper, t.capacity)


def in_layout(buf: Any, shards: int) -> Any:
    """``buf`` with its priority tree as ``shards`` stacked trees (0: one tree); plain
    buffers unchanged."""
    if not is_prioritized(buf) or tree_shards(buf) == shards:
        return buf
    return buf.replace(tree=tree_over(global_priorities(buf.tree), shards))


def local_view(b: Any, n_local: int) -> Any:
    """Inside ``shard_map``: the shard's blocks as a buffer of ``n_local`` sub-buffers."""
    c = core(b).replace(buffer_num=n_local)
    if not is_prioritized(b):
        return c
    t = b.tree
    return b.replace(
        buffer=c, tree=t.replace(leaves=t.leaves[0], bottom=t.bottom[0], upper=t.upper[0])
    )


def global_view(local: Any, like: Any) -> Any:
    """The inverse of :func:`local_view`: the local blocks with the global ``buffer_num``."""
    c = core(local).replace(buffer_num=like.buffer_num)
    if not is_prioritized(local):
        return c
    t = local.tree
    tree = t.replace(leaves=t.leaves[None], bottom=t.bottom[None], upper=t.upper[None])
    return local.replace(buffer=c, tree=tree)


# ---------------------------------------------------------------------- placement
def is_spec(x: Any) -> bool:
    return isinstance(x, P)


def named(mesh: Mesh, specs: Any) -> Any:
    """A tree of ``PartitionSpec`` as the same tree of ``NamedSharding`` on ``mesh``."""
    return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=is_spec)


def laid_out(tree: Any, mesh: Mesh, specs: Any) -> Any:
    """Constrain ``tree`` (inside ``jit``) to ``NamedSharding(mesh, spec)`` leaf by leaf.

    ``specs`` is one ``PartitionSpec`` or a tree of them shaped like ``tree``. A no-op for
    inputs already laid out that way; anything else is moved by XLA first. Explicit-sharding
    meshes need ``reshard``, automatic ones a sharding constraint.
    """
    if is_spec(specs):
        specs = jax.tree_util.tree_map(lambda _: specs, tree)
    shardings = named(mesh, specs)
    if AxisType.Explicit in mesh.axis_types:
        return jax.sharding.reshard(tree, shardings)
    return jax.lax.with_sharding_constraint(tree, shardings)


def offset(buf: Any, axis: str, n_local: int) -> jax.Array:
    """Global slot of this shard's first row, ``axis_index * L * m`` (inside shard_map)."""
    return jax.lax.axis_index(axis).astype(jnp.int32) * (n_local * buf.subbuffer_size)


def globalize(index: jax.Array, off: jax.Array) -> jax.Array:
    """Local slots to global ones; -1 (no slot) stays -1."""
    return jnp.where(index >= 0, index + off, index).astype(jnp.int32)
