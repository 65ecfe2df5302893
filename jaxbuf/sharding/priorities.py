"""Priority updates of a sharded prioritized buffer: each shard writes its own tree."""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxbuf._core.checks import is_traced
from jaxbuf.errors import IndexRangeError, InputError
from jaxbuf.prioritized.priorities import update_priorities
from jaxbuf.sharding._views import (
    is_prioritized,
    laid_out,
    local_count,
    local_view,
    offset,
    shard_count,
    tree_shards,
)
from jaxbuf.sharding.layout import partition_specs

UPDATE_MODES = ("global", "local")
"""The ``mode`` values of :func:`shard_update_weight`."""


def shard_update_weight(
    buf: Any,
    indices: chex.Array,
    weights: chex.Array,
    mesh: Mesh,
    axis: str,
    *,
    mode: str = "global",
) -> Any:
    """``buf.update_weight(indices, weights)`` of a sharded prioritized buffer, shard-locally.

    Every shard writes ``leaf[i] = (|w| + eps) ** alpha`` into its own tree for the entries
    whose global slot ``i`` it holds; the trees never move. ``max_prio`` becomes the maximum
    over all shards (one scalar all-reduce), so later adds give new rows exactly the priority
    of the unsharded buffer. Entries for slots that hold no transition, and non-finite
    weights, are ignored, as by the unsharded buffer under ``jit``.

    Args:
      buf: a prioritized buffer in the sharded layout (``create_sharded`` / ``shard_buffer``).
      indices: int[K] global slots, e.g. from :func:`shard_sample`; ``K`` a multiple of ``S``.
      weights: real ``[K]`` (e.g. TD errors; the sign is dropped).
      mesh: the mesh the buffer is placed on.
      axis: the mesh axis it is sharded over.
      mode: ``"global"`` (default, right for any indices, e.g. from
        ``shard_sample(mode="global")``): the ``K`` indices and weights are all-gathered
        (``2 K`` scalars) and each shard keeps its own. ``"local"``: block ``s`` of the
        indices (entries ``[s*K/S, (s+1)*K/S)``, as returned by
        ``shard_sample(mode="local")``) must hold slots of shard ``s``; nothing but
        ``max_prio`` crosses devices. A slot of another shard raises when the indices are
        concrete and is ignored under ``jit``.
    Returns:
      The updated buffer, in the same layout. Duplicates: the last occurrence wins, as in the
      unsharded buffer.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env", alpha=1.0, beta=0.4)
      >>> buf, _ = shd.shard_add(buf, jax.tree.map(lambda x: jnp.stack([x] * 2), ex), mesh, "env")
      >>> buf = shd.shard_update_weight(buf, jnp.array([0]), jnp.array([3.0]), mesh, "env")
      >>> round(float(buf.max_prio), 3)
      3.0
    """
    name = "shard_update_weight"
    if not is_prioritized(buf) or tree_shards(buf) == 0:
        raise InputError(
            f"jaxbuf: {name} expects a prioritized buffer in the sharded layout "
            f"(create_sharded with alpha/beta, or shard_buffer), got {type(buf).__name__}"
        )
    shards = shard_count(mesh, axis)
    n_local = local_count(buf.buffer_num, mesh, axis)
    if tree_shards(buf) != shards:
        raise InputError(
            f"jaxbuf: {name}: the buffer holds {tree_shards(buf)} per-shard trees, mesh axis "
            f"'{axis}' has {shards} shards"
        )
    if mode not in UPDATE_MODES:
        raise InputError(f"jaxbuf: {name}: mode must be one of {UPDATE_MODES}, got {mode!r}")
    idx = indices if isinstance(indices, jax.Array) else jnp.asarray(indices)
    w = weights if isinstance(weights, jax.Array) else jnp.asarray(weights)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise InputError(f"jaxbuf: {name}: indices must be integers, got dtype {idx.dtype}")
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise InputError(f"jaxbuf: {name}: weights must be real numbers, got dtype {w.dtype}")
    if idx.ndim != 1 or w.shape != idx.shape or idx.shape[0] % shards:
        raise InputError(
            f"jaxbuf: {name}: indices and weights must share one shape (K,) with K a multiple "
            f"of the {shards} shards, got {idx.shape} and {w.shape}"
        )
    _check_concrete(name, idx, buf.maxsize, n_local * buf.subbuffer_size, mode)
    return _update(buf, idx, w, mesh=mesh, axis=axis, mode=mode)


def _check_concrete(name: str, idx: jax.Array, maxsize: int, per_shard: int, mode: str) -> None:
    if is_traced(idx) or not getattr(idx, "is_fully_addressable", True):
        return
    host = np.asarray(idx)
    bad = (host < 0) | (host >= maxsize)
    if bad.any():
        raise IndexRangeError(
            f"jaxbuf: {name}: indices must lie in [0, {maxsize}), got {host[bad][:8].tolist()}"
        )
    if mode == "local":
        shards = maxsize // per_shard
        block = np.repeat(np.arange(shards), host.shape[0] // shards)
        wrong = host // per_shard != block
        if wrong.any():
            j = int(np.argmax(wrong))
            raise InputError(
                f"jaxbuf: {name}: indices[{j}]={int(host[j])} is a slot of shard "
                f"{int(host[j]) // per_shard}, but entry {j} is in block {block[j]}; with "
                "mode='local' block s must hold slots of shard s (use mode='global')"
            )


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "mode"))
def _update(buf, indices, weights, *, mesh, axis, mode):
    n_local = local_count(buf.buffer_num, mesh, axis)

    def local_update(b, idx, w):
        if mode == "global":
            idx = lax.all_gather(idx, axis, tiled=True)
            w = lax.all_gather(w, axis, tiled=True)
        local = local_view(b, n_local)
        rel = idx.astype(jnp.int32) - offset(b, axis, n_local)
        rel = jnp.where((rel >= 0) & (rel < local.maxsize), rel, -1)
        tree, max_prio, _ = update_priorities(
            local.tree,
            b.max_prio,
            local.layout,
            local.lengths,
            rel,
            w.astype(jnp.float32),
            alpha=b.alpha,
        )
        t = b.tree
        tree = t.replace(leaves=tree.leaves[None], bottom=tree.bottom[None], upper=tree.upper[None])
        return b.replace(tree=tree, max_prio=lax.pmax(max_prio, axis))

    buf_spec = partition_specs(buf, axis)
    fn = jax.shard_map(
        local_update,
        mesh=mesh,
        in_specs=(buf_spec, P(axis), P(axis)),
        out_specs=buf_spec,
        check_vma=False,
    )
    return fn(laid_out(buf, mesh, buf_spec), *laid_out((indices, weights), mesh, P(axis)))
