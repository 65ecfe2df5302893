"""Planning one add of the cached buffer: cache slots, episode moves into main, counters.

The cached buffer has ``K`` caches of ``L`` slots (a core ``VectorReplayBuffer``, one
sub-buffer per env) and a main ring of ``M`` slots (a core ``ReplayBuffer``). Each cache
holds exactly the steps of its env's unfinished episode, starting at its slot 0 (at most the
last ``L`` of them once an over-long episode wraps). An add of ``k`` rows is defined as the
rows applied one at a time in row order (tianshou-semantics.md section 9.2):

1. row ``j`` is written to cache ``e = ids[j]`` at the cache's write head;
2. if the row ends its episode (``terminated | truncated``), the cache's chronological
   content (the episode's last ``W = min(n, L)`` steps, ``n`` its length) is appended to
   main at main's write head, and the cache is reset (length 0, head at slot 0).

This module computes the result of that sequence without a loop over rows: rows are
grouped by cache with a stable sort, episodes are segments of a group that restart after a
done row, running returns are segmented scans, and every finishing row gets a window of
``L`` static positions (masked to ``W``) whose sources are either a row of the old cache or
a row of the batch. The moved windows are laid out in main one after another in row order,
so window position ``q`` of finishing row ``j`` goes to main slot
``(head + offset_j + q) mod M`` with ``offset_j`` the exclusive cumulative sum of the
windows of the finishing rows before ``j``. Writes that a later write of the same add would
overwrite are dropped, so every scatter has unique destinations (last writer wins, as in
the sequential definition).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbuf._core.episodes import Counters


class CachedAddResult(NamedTuple):
    """What ``CachedReplayBuffer.add`` reports per row (leading axis k), Tianshou's convention.

    Attributes:
      index: int32[k], global slot: for a row that ends an episode, the **last main slot**
        written by the move; otherwise the cache slot written. -1 for a dropped row (buffer
        id out of range).
      episode_return: float[k, *rew_shape], the episode's return (every step, including
        dropped ones) if the row ends it, else 0.
      episode_length: int32[k], the episode's length (every step) if the row ends it, else 0.
      episode_start: int32[k], for a row that ends an episode the **first main slot**
        written; otherwise the cache slot of the oldest stored step of the episode.
      episode_dropped: int32[k], for a row that ends an episode, how many of its first steps
        did not reach main because the episode was longer than ``max_episode_length``
        (``episode_length - max_episode_length`` or 0; Tianshou drops them silently, E28);
        0 for other rows.
    """

    index: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    episode_start: jax.Array
    episode_dropped: jax.Array


class MainHead(NamedTuple):
    """Main buffer write position: ``insertion_idx``, ``lengths``, ``last_slot`` (all int32[1])."""

    insertion_idx: jax.Array
    lengths: jax.Array
    last_slot: jax.Array


class CachePlan(NamedTuple):
    """Everything ``CachedReplayBuffer.add`` needs to apply one add.

    Attributes:
      cache_slots: int32[k], slot of the caches storage each row is written to; ``K*L`` for
        rows not written (invalid id, or overwritten later in the same add).
      from_cache: bool[k, L], whether window position q of row j is read from the old
        caches storage (else from the batch).
      src_cache: int32[k, L], slot of the old caches storage to read.
      src_row: int32[k, L], row of the batch to read.
      main_slots: int32[k, L], main slot to write; ``M`` where nothing is written.
      result: the :class:`CachedAddResult`.
      caches: the caches' counters after the add.
      main: main's :class:`MainHead` after the add.
    """

    cache_slots: jax.Array
    from_cache: jax.Array
    src_cache: jax.Array
    src_row: jax.Array
    main_slots: jax.Array
    result: CachedAddResult
    caches: Counters
    main: MainHead


def _bcast(flag: jax.Array, like: jax.Array) -> jax.Array:
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def _segmented_sum(values: jax.Array, starts: jax.Array) -> jax.Array:
    """Inclusive cumulative sum along axis 0 that restarts at every ``starts`` row."""

    def combine(a, b):
        fa, va = a
        fb, vb = b
        return fa | fb, jnp.where(_bcast(fb, vb), vb, va + vb)

    return lax.associative_scan(combine, (starts, values))[1]


def plan_add(
    c: Counters,
    cache_len: int,
    ids: jax.Array | None,
    rew: jax.Array,
    done: jax.Array,
    main: MainHead,
    main_size: int,
) -> CachePlan:
    """Plan one add of k rows (see the module docstring for the definition).

    Args:
      c: the caches' counters before the add (K sub-buffers of ``cache_len`` slots).
      cache_len: ``L``, slots per cache (``max_episode_length``).
      ids: int32[k] cache of each row, or None for "row j goes to cache j" (k == K).
      rew: float[k, *rew_shape]; done: bool[k].
      main: main's write position before the add.
      main_size: ``M``.
    Returns:
      The :class:`CachePlan`.
    """
    n_caches = c.lengths.shape[0]
    k = done.shape[0]
    i32 = jnp.int32
    if ids is None:
        ids = jnp.arange(k, dtype=i32)
    valid = (ids >= 0) & (ids < n_caches)
    gid = jnp.where(valid, ids, n_caches).astype(i32)
    fin = done & valid

    # Group rows by cache (stable, so row order is kept inside a group); segments are the
    # episodes of a group: they restart after every done row.
    order = jnp.argsort(gid, stable=True).astype(i32)
    pos = jnp.arange(k, dtype=i32)
    sg = gid[order]
    first = jnp.concatenate([jnp.ones((1,), bool), sg[1:] != sg[:-1]])
    last = jnp.concatenate([sg[1:] != sg[:-1], jnp.ones((1,), bool)])
    seg = first | jnp.concatenate([jnp.zeros((1,), bool), fin[order][:-1]])
    seg_start = lax.cummax(jnp.where(seg, pos, 0))
    first_seg = seg_start == lax.cummax(jnp.where(first, pos, 0))
    g = jnp.minimum(sg, n_caches - 1)
    s = pos - seg_start  # steps of this segment before the row
    carried = jnp.where(first_seg, c.ep_len[g], 0)  # steps already in the cache
    n_s = carried + s + 1  # episode length through the row
    ring_s = (jnp.where(first_seg, c.insertion_idx[g], 0) + s) % cache_len
    r_sorted = rew[order].astype(c.ep_return.dtype)
    ret_s = _segmented_sum(r_sorted + jnp.where(_bcast(first, r_sorted), c.ep_return[g], 0), seg)

    # Back to row order.
    inv = jnp.zeros((k,), i32).at[order].set(pos)
    e = g[inv]
    n, ring, ret = n_s[inv], ring_s[inv], ret_s[inv]
    carried_r, seg_start_r, first_seg_r = carried[inv], seg_start[inv], first_seg[inv]

    # Windows of the finishing rows: the episode's last W = min(n, L) steps. Step t < carried
    # is in the old cache, chronological position t - (carried - len); later steps are rows.
    w = jnp.where(fin, jnp.minimum(n, cache_len), 0)
    q = jnp.arange(cache_len, dtype=i32)[None, :]
    t = (n - w)[:, None] + q
    in_win = q < w[:, None]
    from_cache = t < carried_r[:, None]
    old_len = c.lengths[e][:, None]
    oldest = (c.insertion_idx[e] - c.lengths[e]) % cache_len
    chrono = t - (carried_r[:, None] - old_len)
    src_cache = e[:, None] * cache_len + (oldest[:, None] + chrono) % cache_len
    src_row = order[jnp.clip(seg_start_r[:, None] + t - carried_r[:, None], 0, k - 1)]
    offset = jnp.cumsum(w) - w
    total = jnp.sum(w)
    p = offset[:, None] + q
    keep_main = in_win & (p >= total - main_size)
    main_slots = jnp.where(keep_main, (main.insertion_idx[0] + p) % main_size, main_size)

    # Cache writes: last writer wins.
    cslot = jnp.where(valid, e * cache_len + ring, n_caches * cache_len)
    winner = jnp.full((n_caches * cache_len,), -1, i32).at[cslot].max(pos, mode="drop")
    keep_cache = valid & (winner[jnp.minimum(cslot, n_caches * cache_len - 1)] == pos)
    cache_slots = jnp.where(keep_cache, cslot, n_caches * cache_len).astype(i32)

    head = main.insertion_idx[0]
    zero_ret = jnp.zeros_like(ret)
    oldest_open = jnp.where(n > cache_len, (ring + 1) % cache_len, 0)
    result = CachedAddResult(
        index=jnp.where(
            valid,
            jnp.where(fin, (head + offset + w - 1) % main_size, main_size + e * cache_len + ring),
            -1,
        ).astype(i32),
        episode_return=jnp.where(_bcast(fin, ret), ret, zero_ret),
        episode_length=jnp.where(fin, n, 0).astype(i32),
        episode_start=jnp.where(
            valid,
            jnp.where(fin, (head + offset) % main_size, main_size + e * cache_len + oldest_open),
            -1,
        ).astype(i32),
        episode_dropped=jnp.where(fin, n - w, 0).astype(i32),
    )

    # Counters of every touched cache come from its last row: reset if that row ends the
    # episode, else the open episode through that row.
    last_rows = jnp.full((n_caches + 1,), -1, i32).at[jnp.where(last, sg, n_caches)].set(order)
    last_rows = last_rows[:n_caches]
    touched = last_rows >= 0
    lr = jnp.maximum(last_rows, 0)
    reset = fin[lr]

    def pick(open_value, reset_value, old):
        new = jnp.where(_bcast(reset, open_value), reset_value, open_value)
        return jnp.where(_bcast(touched, new), new, old).astype(old.dtype)

    caches = Counters(
        insertion_idx=pick((ring[lr] + 1) % cache_len, 0, c.insertion_idx),
        lengths=pick(jnp.minimum(n[lr], cache_len), 0, c.lengths),
        last_slot=pick(ring[lr], 0, c.last_slot),
        ep_return=pick(ret[lr], jnp.zeros_like(ret[lr]), c.ep_return),
        ep_len=pick(n[lr], 0, c.ep_len),
        ep_start=pick(jnp.where(first_seg_r[lr], c.ep_start, 0), 0, c.ep_start),
    )
    new_main = MainHead(
        insertion_idx=((main.insertion_idx + total) % main_size).astype(i32),
        lengths=jnp.minimum(main.lengths + total, main_size).astype(i32),
        last_slot=jnp.where(total > 0, (head + total - 1) % main_size, main.last_slot).astype(i32),
    )
    return CachePlan(
        cache_slots,
        from_cache,
        src_cache.astype(i32),
        src_row.astype(i32),
        main_slots.astype(i32),
        result,
        caches,
        new_main,
    )
