"""Shard-local n-step targets and GAE over the buffer's episode links (no collectives).

Episodes never cross sub-buffers, so the ``next`` links of a slot stay inside its shard and
the recursions of :mod:`jaxbuf.returns` run on each shard's local buffer unchanged.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxbuf import returns
from jaxbuf.errors import InputError
from jaxbuf.sharding._views import (
    check_buffer,
    core,
    globalize,
    laid_out,
    local_count,
    offset,
    shard_count,
)
from jaxbuf.sharding.layout import partition_specs


def _run(fn, buf, indices, extra, mesh, axis):
    """``fn(local core buffer, local slots, *extra)`` per shard; indices ``[K]`` in blocks of
    ``K / S`` per shard (as from ``shard_sample(mode="local")``); slots of other shards are
    padding (-1)."""
    check_buffer(buf)
    n_local = local_count(buf.buffer_num, mesh, axis)
    indices = jnp.asarray(indices)
    if indices.ndim != 1 or indices.shape[0] % shard_count(mesh, axis):
        raise InputError(
            f"jaxbuf: indices must have shape (K,) with K a multiple of the "
            f"{shard_count(mesh, axis)} shards, got {indices.shape}"
        )
    plain = core(buf)
    spec = partition_specs(plain, axis)

    def local(b, idx, *xs):
        off = offset(b, axis, n_local)
        view = b.replace(buffer_num=n_local)
        rel = idx - off
        rel = jnp.where((idx >= 0) & (rel >= 0) & (rel < view.maxsize), rel, -1)
        return fn(view, rel, off, *xs)

    in_specs = (spec, P(axis), *[P(axis) if x is not None else None for x in extra])
    f = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(axis), check_vma=False)
    args = laid_out((indices, *[x for x in extra if x is not None]), mesh, P(axis))
    it = iter(args[1:])
    placed = [next(it) if x is not None else None for x in extra]
    return f(laid_out(plain, mesh, spec), args[0], *placed)


def shard_nstep_targets(
    buf: Any, indices: chex.Array, gamma: float, n_step: int, mesh: Mesh, axis: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`jaxbuf.returns.nstep_targets` per shard: ``(bootstrap_index, partial_return,
    bootstrap_discount)`` for global slots ``indices`` (int[K], block ``s`` holding shard
    ``s``'s slots, as ``shard_sample(mode="local")`` returns them), outputs sharded over
    ``axis``, ``bootstrap_index`` global. Entries of another shard are treated as padding
    (outputs 0, index -1). The compiled program has no collective.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(1),
      ...           terminated=False, truncated=False)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> two = jax.tree.map(lambda x: jnp.stack([x] * 2), ex)
      >>> for _ in range(3):
      ...     buf, _ = shd.shard_add(buf, two, mesh, "env")
      >>> boot, ret, disc = shd.shard_nstep_targets(buf, jnp.array([0, 4]), 0.5, 2, mesh, "env")
      >>> ret.tolist(), boot.tolist()
      ([1.5, 1.5], [1, 5])
    """

    def fn(view, rel, off, gamma_):
        boot, part, disc = returns.nstep_targets(view, rel, gamma_, n_step)
        return globalize(jnp.where(rel >= 0, boot, -1), off), part, disc

    g = jnp.full(jnp.shape(indices), gamma, jnp.float32)
    return _run(fn, buf, indices, (g,), mesh, axis)


def shard_episodic_return(
    buf: Any,
    indices: chex.Array,
    v_s_: chex.Array,
    v_s: chex.Array,
    mesh: Mesh,
    axis: str,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    """:func:`jaxbuf.returns.episodic_return` (GAE) per shard: ``(returns, advantages)``
    float[K] for global slots ``indices`` laid out in shard blocks as for
    :func:`shard_nstep_targets`, with ``v_s_`` and ``v_s`` float[K] in the same order. The
    recursion follows the ``next`` links inside each shard; no collective.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(1),
      ...           terminated=False, truncated=False)
      >>> two = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> for _ in range(2):
      ...     buf, _ = shd.shard_add(buf, two, mesh, "env")
      >>> zeros = jnp.zeros(2)
      >>> ret, adv = shd.shard_episodic_return(buf, jnp.array([0, 4]), zeros, zeros, mesh,
      ...                                      "env", gamma=0.5, gae_lambda=1.0)
      >>> ret.tolist(), adv.tolist()  # r + gamma * v(s') - v(s), values zero here
      ([1.0, 1.0], [1.0, 1.0])
    """

    def fn(view, rel, off, vn, v):
        return returns.episodic_return(view, rel, vn, v, gamma, gae_lambda)

    return _run(fn, buf, indices, (jnp.asarray(v_s_), jnp.asarray(v_s)), mesh, axis)
