"""Sampling a sharded buffer: shard-local draws, or the unsharded law with O(S) traffic.

``mode="global"`` draws ``n = S * B`` rows whose law is the unsharded buffer's, without
moving the storage: every shard all-gathers one scalar per shard (its mass: the number of
samplable transitions, or the sum of its priorities, and for priorities also its minimum),
draws from one shared key the shard of each of the ``n`` batch positions (identically on
every shard: ``P(shard s) = mass_s / sum(mass)``), draws a row within its own sub-buffers for
each position it owns (the shard-local law, key folded with ``s``), and the batch is
assembled with one reduce-scatter of the sampled rows (each position is non-zero on exactly
one shard; rows travel as their bit patterns, so the sum is exact). A position's row thus
has probability ``mass_s / sum(mass) * P_s(i) = P(i)``, independently across positions.
"""

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

from jaxbuf._core import random as fast_random
from jaxbuf._core import sampling
from jaxbuf.errors import InputError
from jaxbuf.prioritized.priorities import importance_weights
from jaxbuf.sharding._views import (
    check_buffer,
    core,
    globalize,
    is_prioritized,
    laid_out,
    local_count,
    local_view,
    offset,
    shard_count,
)
from jaxbuf.sharding.layout import partition_specs

SAMPLE_MODES = ("local", "global")
"""The ``mode`` values of :func:`shard_sample`."""


def shard_sample(
    buf: Any,
    key: chex.PRNGKey,
    batch_size_per_shard: int,
    mesh: Mesh,
    axis: str,
    *,
    mode: str = "local",
) -> tuple[dict, jax.Array]:
    """Sample ``S * batch_size_per_shard`` transitions; outputs sharded over ``axis``.

    ``mode="local"`` (default, no collectives): shard ``s`` draws ``B = batch_size_per_shard``
    indices from its own sub-buffers with ``buf_s.sample(jax.random.fold_in(key, s), B)``,
    where ``buf_s`` is the shard's local buffer of ``L`` sub-buffers; rows
    ``[s*B, (s+1)*B)`` of the result are shard ``s``'s draws. Plain buffers: uniform over
    the shard's stored transitions. Prioritized: ``P_s(i) = p_i^alpha / sum_{j in s}
    p_j^alpha`` from the shard's own tree, importance weights normalised by the shard's
    minimum (``weight_norm``: by the shard's batch maximum). Each shard contributes exactly
    B rows, not a share proportional to its mass. An empty shard returns its first slot B
    times.

    ``mode="global"`` (opt-in): draws with the law of the unsharded buffer, independently per
    row: uniform over all stored transitions, or ``P(i) = p_i^alpha / sum_all p^alpha`` with
    weights ``(p_i^alpha / min_all p^alpha) ** -beta`` (``weight_norm``: divided by their
    maximum over the whole batch). Cross-device traffic: an all-gather of ``S`` scalars (two
    for priorities), an all-reduce of the batch's ``S*B`` leaf values (prioritized only) and
    one reduce-scatter of the ``S*B`` sampled rows and indices; the storage and the trees
    never move. Each shard does ``S*B`` local draws. The draws are not those of
    ``buf.sample`` on the unsharded buffer with the same key (same law, other generator).

    Returns:
      ``(batch, indices)``: ``batch`` as ``buf[indices]`` (leading axis ``S*B``; with
      ``weight`` for a prioritized buffer), ``indices`` int32[S*B] global slots.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env", alpha=0.6, beta=0.4)
      >>> rows = jax.tree.map(lambda x: jnp.stack([x] * 2), ex)
      >>> buf, _ = shd.shard_add(buf, rows, mesh, "env")
      >>> batch, idx = shd.shard_sample(buf, jax.random.key(0), 3, mesh, "env", mode="global")
      >>> batch["weight"].shape, idx.shape
      ((3,), (3,))
    """
    check_buffer(buf)
    local_count(buf.buffer_num, mesh, axis)
    if isinstance(batch_size_per_shard, bool) or (
        not isinstance(batch_size_per_shard, int | np.integer) or batch_size_per_shard < 1
    ):
        raise InputError(
            f"jaxbuf: batch_size_per_shard must be an int >= 1, got {batch_size_per_shard!r}"
        )
    if mode not in SAMPLE_MODES:
        raise InputError(f"jaxbuf: mode must be one of {SAMPLE_MODES}, got {mode!r}")
    b = int(batch_size_per_shard)
    if mode == "global":
        return _sample_global(buf, key, batch_size=b, mesh=mesh, axis=axis)
    return _sample_local(buf, key, batch_size=b, mesh=mesh, axis=axis)


@functools.partial(jax.jit, static_argnames=("batch_size", "mesh", "axis"))
def _sample_local(buf, key, *, batch_size, mesh, axis):
    n_local = local_count(buf.buffer_num, mesh, axis)

    def local_sample(b, k):
        shard_key = jax.random.fold_in(k, lax.axis_index(axis))
        rows, idx = local_view(b, n_local).sample(shard_key, batch_size)
        return rows, globalize(idx, offset(b, axis, n_local))

    # check_vma=False: the core's scans start from shard-invariant carries (``arange``) that
    # become shard-varying, which shard_map's varying-axes type check rejects; every output
    # is per-shard by construction and nothing reduces across shards.
    buf_spec = partition_specs(buf, axis)
    fn = jax.shard_map(
        local_sample, mesh=mesh, in_specs=(buf_spec, P()), out_specs=P(axis), check_vma=False
    )
    return fn(laid_out(buf, mesh, buf_spec), laid_out(key, mesh, P()))


def _samplable(local: Any) -> jax.Array:
    """int32: how many slots the core's uniform sampling draws from in this shard."""
    c = core(local)
    if c._samples_available_only:
        return jnp.sum(c._avail_mask().astype(jnp.int32))
    return c.size.astype(jnp.int32)


def _owners(key, masses: jax.Array, n: int) -> jax.Array:
    """int32[n]: the shard of each batch position, ``P(s) = masses[s] / sum(masses)``.

    Integer masses (counts) give an exact integer draw; float masses (priority sums) a
    float one whose round-off is that of the unsharded tree descent. A shard of mass 0 is
    never chosen; when every mass is 0 every position goes to the last shard.
    """
    cum = jnp.cumsum(masses)
    if jnp.issubdtype(masses.dtype, jnp.integer):
        u = sampling.randint_below(key, (n,), jnp.maximum(cum[-1], 1))
    else:
        u = fast_random.uniform(key, n, masses.dtype) * cum[-1]
    owner = jnp.searchsorted(cum, u, side="right", method="scan_unrolled")
    positive = jnp.arange(masses.shape[0]) * (masses > 0)
    return jnp.minimum(owner, jnp.max(positive)).astype(jnp.int32)


def _as_bits(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint8)
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
        return x
    uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    return lax.bitcast_convert_type(x, uint)


def _from_bits(bits: jax.Array, like: jax.Array) -> jax.Array:
    if like.dtype == jnp.bool_:
        return bits.astype(jnp.bool_)
    if jnp.issubdtype(like.dtype, jnp.unsignedinteger):
        return bits
    return lax.bitcast_convert_type(bits, like.dtype)


def _assemble(rows: Any, mine: jax.Array, axis: str) -> Any:
    """Each shard's block of the batch: ``rows`` (leading axis ``n``) kept where ``mine``,
    zero elsewhere, summed over shards bit pattern by bit pattern and scattered in blocks
    of ``n / S`` (one reduce-scatter per leaf)."""

    def one(x):
        keep = mine.reshape((-1,) + (1,) * (x.ndim - 1))
        bits = jnp.where(keep, _as_bits(x), 0)
        out = lax.psum_scatter(bits, axis, scatter_dimension=0, tiled=True)
        return _from_bits(out, x)

    return jax.tree_util.tree_map(one, rows)


@functools.partial(jax.jit, static_argnames=("batch_size", "mesh", "axis"))
def _sample_global(buf, key, *, batch_size, mesh, axis):
    n_local = local_count(buf.buffer_num, mesh, axis)
    shards = shard_count(mesh, axis)
    n = shards * batch_size
    prioritized = is_prioritized(buf)

    def global_sample(b, k):
        s = lax.axis_index(axis)
        local = local_view(b, n_local)
        k_owner, k_row = jax.random.split(k)
        row_key = jax.random.fold_in(k_row, s)
        if prioritized:
            masses = lax.all_gather(local.tree.total(), axis)
            p_min = jnp.min(lax.all_gather(local.tree.min(), axis))
            idx, leaf = local.tree.sample(row_key, n)
        else:
            masses = lax.all_gather(_samplable(local), axis)
            idx = local.sample_indices(row_key, n)
        mine = _owners(k_owner, masses, n) == s
        rows = local.buffer._read(idx) if prioritized else local._read(idx)
        rows["_index"] = globalize(idx, offset(b, axis, n_local))
        out = _assemble(rows, mine, axis)
        index = out.pop("_index")
        if prioritized:
            leaf = lax.psum(jnp.where(mine, leaf, 0.0), axis)  # the batch's leaves
            weight = importance_weights(leaf, p_min, b.beta, batch_norm=b.weight_norm)
            out["weight"] = lax.dynamic_slice_in_dim(weight, s * batch_size, batch_size)
        return out, index

    buf_spec = partition_specs(buf, axis)
    fn = jax.shard_map(
        global_sample, mesh=mesh, in_specs=(buf_spec, P()), out_specs=P(axis), check_vma=False
    )
    return fn(laid_out(buf, mesh, buf_spec), laid_out(key, mesh, P()))
