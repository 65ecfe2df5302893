"""Per-sub-buffer episode bookkeeping: add counters, prev/next links, unfinished episodes.

A buffer holds ``n`` sub-buffers of ``m`` slots each; sub-buffer ``k`` owns the global slots
``[k*m, (k+1)*m)``. Per sub-buffer the state keeps (Tianshou's names in brackets, see
tianshou-semantics.md sections 3.4 and 4):

* ``insertion_idx`` [_insertion_idx] int32[n], local slot of the next write;
* ``lengths`` [len] int32[n], number of valid slots, ``min(#adds, m)``;
* ``last_slot`` int32[n], local slot of the latest write (0 if empty); Tianshou's global
  ``last_index`` is ``k*m + last_slot``;
* ``ep_return`` [_ep_return] float[n, *rew_shape], ``ep_len`` [_ep_len] int32[n] and
  ``ep_start`` [_ep_start_idx] int32[n] (local) of the unfinished episode.

In the buffer state the five int32 counters are packed into one ``int32[n, 5]`` array (columns
in the order above, see :func:`pack`), so the whole bookkeeping is two leaves: fewer arguments
per jitted call and one fused update per add. Every counter is local to its sub-buffer, so a
shard holding sub-buffers ``[s*L, (s+1)*L)`` reads its block as a buffer of ``L``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class AddResult(NamedTuple):
    """What ``add`` reports per row (leading axis k).

    Attributes:
      index: int32[k], global slot written (-1 for a dropped row with an invalid buffer id).
      episode_return: float[k, *rew_shape], the episode's return if the row ends it, else 0.
      episode_length: int32[k], the episode's length if the row ends it, else 0.
      episode_start: int32[k], global slot of the episode's first step that is still stored.
    """

    index: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    episode_start: jax.Array


class Counters(NamedTuple):
    """The per-sub-buffer counters, as a group (each int32[n], ``ep_return`` float[n, ...])."""

    insertion_idx: jax.Array
    lengths: jax.Array
    last_slot: jax.Array
    ep_return: jax.Array
    ep_len: jax.Array
    ep_start: jax.Array


PACKED = ("insertion_idx", "lengths", "last_slot", "ep_len", "ep_start")
"""Columns of the packed ``int32[n, 5]`` counter array, in order."""


def pack(c: Counters) -> tuple[jax.Array, jax.Array]:
    """``(int32[n, 5], ep_return)``: the int32 counters as columns of one array."""
    packed = jnp.stack([jnp.asarray(getattr(c, f), jnp.int32) for f in PACKED], axis=-1)
    return packed, c.ep_return


def unpack(packed: jax.Array, ep_return: jax.Array) -> Counters:
    """Inverse of :func:`pack`."""
    cols = {f: packed[..., j] for j, f in enumerate(PACKED)}
    return Counters(ep_return=ep_return, **cols)


def init_counters(n: int, rew_shape: tuple, rew_dtype) -> Counters:
    """Counters of ``n`` empty sub-buffers."""
    zeros = jnp.zeros((n,), jnp.int32)
    return Counters(zeros, zeros, zeros, jnp.zeros((n, *rew_shape), rew_dtype), zeros, zeros)


def _bcast(flag: jax.Array, like: jax.Array) -> jax.Array:
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def _segmented(values, starts: jax.Array, op):
    """Inclusive scan of ``op`` along axis 0 that restarts at every ``starts`` row."""

    def combine(a, b):
        fa, va = a
        fb, vb = b
        merged = jax.tree_util.tree_map(lambda x, y: jnp.where(_bcast(fb, y), y, op(x, y)), va, vb)
        return fa | fb, merged

    return lax.associative_scan(combine, (starts, values))[1]


def plan_add(c: Counters, m: int, ids: jax.Array | None, rew: jax.Array, done: jax.Array):
    """Bookkeeping of one add of k rows, applied in row order as Tianshou does.

    Rows with the same id go to consecutive slots of that sub-buffer (E14); an episode that
    ends on row j restarts at the next row of the same id. Everything is vectorised over
    the k rows: rows are grouped by id with a stable sort and the running return, length
    and start are segmented scans that restart at a group's first row or after a done row.

    Args:
      c: counters before the add.
      m: slots per sub-buffer.
      ids: int32[k] sub-buffer of each row, or None for "row j goes to sub-buffer j".
      rew: float[k, *rew_shape]; done: bool[k].
    Returns:
      ``(slots, result, counters)``: ``slots`` int32[k] global slots to write (``n*m`` for rows
      to drop), the :class:`AddResult`, and the counters after the add.
    """
    n = c.lengths.shape[0]
    k = done.shape[0]
    rew = rew.astype(c.ep_return.dtype)
    if ids is None:
        # One row per sub-buffer: every sub-buffer takes exactly its own row, so the counters
        # update elementwise with no grouping and no gathers.
        w = c.insertion_idx
        ret = c.ep_return + rew
        length = c.ep_len + 1
        gid = jnp.arange(n, dtype=jnp.int32)
        slots = gid * m + w
        result = _report(
            gid * m + w, gid * m + _reported_start(w, length, c.ep_start, m), ret, length, done
        )
        after = _after(c, m, w, done, ret, length, c.ep_start, 1)
        return slots, result, after

    valid = (ids >= 0) & (ids < n)
    gid = jnp.where(valid, ids, n).astype(jnp.int32)
    order = jnp.argsort(gid, stable=True)
    sg = gid[order]
    pos = jnp.arange(k)
    first = jnp.concatenate([jnp.ones((1,), bool), sg[1:] != sg[:-1]])
    last = jnp.concatenate([sg[1:] != sg[:-1], jnp.ones((1,), bool)])
    rank_sorted = pos - lax.cummax(jnp.where(first, pos, 0))
    counts = jnp.zeros((n + 1,), jnp.int32).at[gid].add(1)[:n]
    sgc = jnp.minimum(sg, n - 1)
    w_sorted = (c.insertion_idx[sgc] + rank_sorted) % m
    d_sorted = done[order]
    prev_done = jnp.concatenate([jnp.zeros((1,), bool), d_sorted[:-1]])
    seg = first | prev_done
    r_sorted = rew[order]
    ret_s = _segmented(
        r_sorted + jnp.where(_bcast(first, r_sorted), c.ep_return[sgc], 0), seg, jnp.add
    )
    len_s = _segmented(1 + jnp.where(first, c.ep_len[sgc], 0), seg, jnp.add)
    start_s = _segmented(jnp.where(first, c.ep_start[sgc], w_sorted), seg, lambda a, b: a)
    inv = jnp.zeros((k,), jnp.int32).at[order].set(pos.astype(jnp.int32))
    w, ret, length, start = w_sorted[inv], ret_s[inv], len_s[inv], start_s[inv]
    rank = rank_sorted[inv]
    # A row is overwritten later in this same add if m or more rows of its id follow it.
    keep = valid & (rank >= counts[jnp.minimum(gid, n - 1)] - m)
    slots = jnp.where(keep, gid * m + w, n * m).astype(jnp.int32)
    result = _report(
        jnp.where(valid, gid * m + w, -1),
        jnp.where(valid, gid * m + _reported_start(w, length, start, m), -1),
        ret,
        length,
        done & valid,
    )
    # The last row of each id decides that sub-buffer's counters; untouched ones keep theirs.
    lr = (
        jnp.full((n + 1,), -1, jnp.int32)
        .at[jnp.where(last, sg, n)]
        .set(order.astype(jnp.int32))[:n]
    )
    touched = lr >= 0
    lr = jnp.maximum(lr, 0)
    after = _after(c, m, w[lr], done[lr], ret[lr], length[lr], start[lr], counts)
    after = Counters(*(jnp.where(_bcast(touched, new), new, old) for new, old in zip(after, c)))
    return slots, result, after


def _reported_start(w, length, start, m):
    """The start slot ``add`` reports (local).

    Tianshou reports the start slot even when the episode is longer than its sub-buffer and
    that slot was overwritten (E7); jaxbuf reports the oldest step still stored instead.
    """
    return jnp.where(length > m, (w + 1) % m, start)


def _report(index, start, ret, length, done) -> AddResult:
    """The :class:`AddResult`: return and length only for rows that end their episode."""
    return AddResult(
        index=index.astype(jnp.int32),
        episode_return=jnp.where(_bcast(done, ret), ret, jnp.zeros_like(ret)),
        episode_length=jnp.where(done, length, 0).astype(jnp.int32),
        episode_start=start.astype(jnp.int32),
    )


def _after(c: Counters, m: int, w, done, ret, length, start, counts) -> Counters:
    """Counters of every sub-buffer after its last written row ``w`` (local slot)."""
    new = Counters(
        insertion_idx=(c.insertion_idx + counts) % m,
        lengths=jnp.minimum(c.lengths + counts, m),
        last_slot=w,
        ep_return=jnp.where(_bcast(done, ret), jnp.zeros_like(ret), ret),
        ep_len=jnp.where(done, 0, length),
        ep_start=jnp.where(done, (w + 1) % m, start),
    )
    return Counters(*(x.astype(o.dtype) for x, o in zip(new, c)))
