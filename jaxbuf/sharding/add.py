"""Shard-local ``add``: each shard writes its own rows into its own sub-buffers."""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxbuf._core.checks import is_traced
from jaxbuf._core.episodes import AddResult
from jaxbuf.errors import InputError
from jaxbuf.sharding._views import (
    check_buffer,
    global_view,
    globalize,
    laid_out,
    local_count,
    local_view,
    offset,
    shard_count,
)
from jaxbuf.sharding.layout import global_batch, partition_specs


def shard_add(
    buf: Any,
    batch: dict,
    mesh: Mesh,
    axis: str,
    buffer_ids: chex.Array | None = None,
) -> tuple[Any, AddResult]:
    """Shard-local ``add``: shard ``s`` writes its block of rows into its own sub-buffers.

    Args:
      buf: a buffer in the layout of :func:`buffer_sharding`.
      batch: dict of rows with leading axis k, sharded (or to be placed) over ``axis``;
        numpy leaves are placed with :func:`global_batch`. With ``buffer_ids=None``,
        ``k = buffer_num`` and row j goes to sub-buffer j. Otherwise ``k`` is a multiple of
        ``S`` and shard ``s`` receives rows ``[s*k/S, (s+1)*k/S)``, whose ids must lie in its
        sub-buffers ``[s*L, (s+1)*L)``; a row aimed at another shard's sub-buffer raises when
        the ids are concrete and is dropped (result row ``(-1, 0, 0, -1)``) under ``jit``,
        as the core does with an invalid id.
      mesh: the mesh the buffer is placed on.
      axis: the mesh axis the buffer is sharded over.
      buffer_ids: int[k] global sub-buffer ids, or None.
    Returns:
      ``(buffer, AddResult)`` exactly as ``buf.add(batch, buffer_ids)`` on the unsharded
      buffer would return them (global slots), with every output sharded over ``axis``.
      The compiled program has no cross-device collective.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> buf, res = shd.shard_add(buf, rows, mesh, "env")  # one row per sub-buffer
      >>> res.index.tolist()
      [0, 4]
    """
    check_buffer(buf)
    n_local = local_count(buf.buffer_num, mesh, axis)
    shards = shard_count(mesh, axis)
    if not isinstance(batch, dict):
        raise InputError(f"jaxbuf: shard_add expects a dict batch, got {type(batch).__name__}")
    k = _rows_of(batch)
    if buffer_ids is None:
        if k != buf.buffer_num:
            raise InputError(
                f"jaxbuf: with buffer_ids=None the batch needs buffer_num={buf.buffer_num} "
                f"rows, got {k}"
            )
    else:
        if k % shards:
            raise InputError(
                f"jaxbuf: the batch has {k} rows, which must be a multiple of the {shards} "
                f"shards of mesh axis '{axis}'"
            )
        _check_routing(buffer_ids, k, shards, n_local, buf.buffer_num)
        buffer_ids = _placed(buffer_ids, mesh, axis)
    batch = jax.tree_util.tree_map(lambda x: _placed(x, mesh, axis), batch)
    return _add(buf, batch, buffer_ids, mesh=mesh, axis=axis)


def _rows_of(batch: dict) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else 0 for x in leaves}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(
            f"jaxbuf: every batch leaf needs the same leading row axis, got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _check_routing(ids: Any, k: int, shards: int, n_local: int, buffer_num: int) -> None:
    """Raise if a concrete id is a valid sub-buffer of a shard other than its row's shard."""
    if np.shape(ids) != (k,):
        raise InputError(f"jaxbuf: buffer_ids expected shape ({k},), got {np.shape(ids)}")
    if is_traced(ids) or not getattr(ids, "is_fully_addressable", True):
        return
    ids = np.asarray(ids)
    row_shard = np.repeat(np.arange(shards), k // shards)
    valid = (ids >= 0) & (ids < buffer_num)
    wrong = valid & (ids // n_local != row_shard)
    if wrong.any():
        j = int(np.argmax(wrong))
        raise InputError(
            f"jaxbuf: buffer_ids[{j}]={int(ids[j])} belongs to shard {int(ids[j]) // n_local}, "
            f"but row {j} is on shard {row_shard[j]}; shard s must receive rows for its own "
            f"sub-buffers [s*{n_local}, (s+1)*{n_local}) (shard_add does not move rows "
            "between devices)"
        )


def _placed(x: Any, mesh: Mesh, axis: str) -> Any:
    """Leave jax arrays and tracers as they are; place host data with ``global_batch``."""
    if isinstance(x, jax.Array | jax.core.Tracer):
        return x
    return global_batch(x, mesh, axis)


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _add(buf, batch, buffer_ids, *, mesh, axis):
    n_local = local_count(buf.buffer_num, mesh, axis)

    def local_add(b, rows, ids):
        off = offset(b, axis, n_local)
        if ids is not None:
            ids = ids - jax.lax.axis_index(axis).astype(ids.dtype) * n_local
        new, res = local_view(b, n_local).add(rows, ids)
        res = res._replace(
            index=globalize(res.index, off), episode_start=globalize(res.episode_start, off)
        )
        return global_view(new, b), res

    # check_vma=False: the core's scans start from shard-invariant carries (``arange``) that
    # become shard-varying, which shard_map's varying-axes type check rejects; every output
    # is per-shard by construction and nothing reduces across shards.
    spec, buf_spec = P(axis), partition_specs(buf, axis)
    buf = laid_out(buf, mesh, buf_spec)
    batch, buffer_ids = laid_out((batch, buffer_ids), mesh, spec)
    out_specs = (buf_spec, spec)
    if buffer_ids is None:
        fn = jax.shard_map(
            lambda b, rows: local_add(b, rows, None),
            mesh=mesh,
            in_specs=(buf_spec, spec),
            out_specs=out_specs,
            check_vma=False,
        )
        return fn(buf, batch)
    fn = jax.shard_map(
        local_add,
        mesh=mesh,
        in_specs=(buf_spec, spec, spec),
        out_specs=out_specs,
        check_vma=False,
    )
    return fn(buf, batch, buffer_ids)
