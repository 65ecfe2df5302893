"""Planning one add of the cached buffer: cache slots, episode moves into main, counters.

The cached buffer has ``K`` caches of ``L`` slots (a core ``VectorReplayBuffer``, one
sub-buffer per env) and a main ring of ``M`` slots (a core ``ReplayBuffer``). A cache holds
exactly the steps of its env's unfinished episode, from its slot 0 on (the last ``L`` of
them once an over-long episode wraps). An add of ``k`` rows means the rows applied one at a
time in row order, as Tianshou does:

1. row ``j`` is written to cache ``ids[j]`` at that cache's write head;
2. if the row ends its episode (``terminated | truncated``), the episode's last
   ``min(length, L)`` steps (the cache's content, oldest first) are appended to main at
   main's write head, and the cache is emptied (length 0, head at slot 0).

The plan gets the result of that sequence without a loop over rows. Rows are grouped by
cache and cut into episodes (:func:`jaxbuf._core.episodes.episode_runs`). Every row that
ends an episode gets a *window* of ``L`` static positions, of which the first
``min(length, L)`` are used; position ``q`` holds the episode's step
``length - min(length, L) + q``, read from the cache as it was before the add if that step
was stored before it, else from a row of the batch. The windows are laid out in main one
after another in row order, so position ``q`` of row ``j``'s window goes to main slot
``(head + offset_j + q) mod M``, ``offset_j`` being the summed window sizes of the rows
before ``j``. A write that a later write of the same add overwrites is dropped, so every
scatter has unique destinations and the last writer wins, as in the sequential definition.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbuf._core import segments
from jaxbuf._core.episodes import Counters, EpisodeRuns, episode_runs
from jaxbuf._core.segments import broadcast_rows


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
        (``episode_length - max_episode_length`` or 0; Tianshou drops them silently);
        0 for other rows.

    Example:
      :class:`jaxbuf.CachedReplayBuffer`'s example shows one from an add; its fields:

      >>> import jaxbuf
      >>> jaxbuf.CachedAddResult._fields
      ('index', 'episode_return', 'episode_length', 'episode_start', 'episode_dropped')
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


class _RowSteps(NamedTuple):
    """Where each row lands (row order, leading axis k).

    Attributes:
      cache: int32[k], the row's cache (invalid rows clamped to the last one).
      slot: int32[k], local slot of the cache the row is written to.
      length: int32[k], the episode's length through the row.
      episode_return: float[k, *rew_shape], the episode's return through the row.
      carried: int32[k], steps of the episode that were in the cache before the add.
      segment_first: int32[k], sorted position (in ``runs.grouping``) of the episode's first
        row in this add.
      continues_open: bool[k], the episode began before the add.
    """

    cache: jax.Array
    slot: jax.Array
    length: jax.Array
    episode_return: jax.Array
    carried: jax.Array
    segment_first: jax.Array
    continues_open: jax.Array


class _Windows(NamedTuple):
    """The moves into main: one window of ``L`` positions per row (leading axes k, L).

    Attributes:
      size: int32[k], positions used (``min(length, L)`` for a row that ends its episode,
        else 0).
      offset: int32[k], where the window starts in the block appended to main.
      total: int32[], steps appended to main.
      from_cache, src_cache, src_row, main_slots: as in :class:`CachePlan`.
    """

    size: jax.Array
    offset: jax.Array
    total: jax.Array
    from_cache: jax.Array
    src_cache: jax.Array
    src_row: jax.Array
    main_slots: jax.Array


def plan_add(
    counters: Counters,
    cache_len: int,
    buffer_ids: jax.Array | None,
    rewards: jax.Array,
    done: jax.Array,
    main: MainHead,
    main_size: int,
) -> CachePlan:
    """Plan one add of k rows (see the module docstring for the definition).

    Args:
      counters: the caches' counters before the add (K sub-buffers of ``cache_len`` slots).
      cache_len: ``L``, slots per cache (``max_episode_length``).
      buffer_ids: int32[k] cache of each row, or None for "row j goes to cache j" (k == K).
      rewards: float[k, *rew_shape].
      done: bool[k], rows that end their episode.
      main: main's write position before the add.
      main_size: ``M``.
    Returns:
      The :class:`CachePlan`.
    """
    num_caches = counters.lengths.shape[0]
    if buffer_ids is None:
        buffer_ids = jnp.arange(done.shape[0], dtype=jnp.int32)
    valid = (buffer_ids >= 0) & (buffer_ids < num_caches)
    finishes = done & valid
    cache_ids = jnp.where(valid, buffer_ids, num_caches).astype(jnp.int32)
    runs = episode_runs(counters, cache_ids, finishes, rewards)
    rows = _row_steps(counters, cache_len, runs)
    windows = _windows(counters, cache_len, rows, finishes, runs.grouping.order, main, main_size)
    return CachePlan(
        cache_slots=_cache_slots(rows, valid, cache_len, num_caches),
        from_cache=windows.from_cache,
        src_cache=windows.src_cache,
        src_row=windows.src_row,
        main_slots=windows.main_slots,
        result=_result(rows, windows, valid, finishes, main.insertion_idx[0], cache_len, main_size),
        caches=_caches_after(counters, cache_len, rows, finishes, runs.grouping),
        main=_main_after(main, windows.total, main_size),
    )


def _row_steps(counters: Counters, cache_len: int, runs: EpisodeRuns) -> _RowSteps:
    """Cache slot and episode of every row, back in row order.

    An episode that continues the cache's unfinished one goes on at the cache's write head;
    one that begins in this add starts at slot 0 (the cache was emptied by the row before).
    """
    carried = jnp.where(runs.continues_open, counters.ep_len[runs.buffer], 0)
    head = jnp.where(runs.continues_open, counters.insertion_idx[runs.buffer], 0)
    slot = (head + runs.steps_before) % cache_len
    sorted_fields = (
        runs.buffer,
        slot,
        runs.length,
        runs.episode_return,
        carried,
        runs.segment_first,
        runs.continues_open,
    )
    return _RowSteps(*map(runs.grouping.unsort, sorted_fields))


def _windows(
    counters: Counters,
    cache_len: int,
    rows: _RowSteps,
    finishes: jax.Array,
    order: jax.Array,
    main: MainHead,
    main_size: int,
) -> _Windows:
    """Sources and main slots of every window position (see the module docstring).

    Step ``t`` of an episode with ``carried`` steps stored before the add is, for
    ``t < carried``, ``carried - t`` steps behind the cache's old write head; otherwise it is
    the batch row at sorted position ``segment_first + t - carried``.
    """
    num_rows = finishes.shape[0]
    size = jnp.where(finishes, jnp.minimum(rows.length, cache_len), 0)
    position = jnp.arange(cache_len, dtype=jnp.int32)[None, :]
    step = (rows.length - size)[:, None] + position
    steps_after_old_head = step - rows.carried[:, None]
    old_head = counters.insertion_idx[rows.cache][:, None]
    src_cache = rows.cache[:, None] * cache_len + (old_head + steps_after_old_head) % cache_len
    sorted_row = jnp.clip(rows.segment_first[:, None] + steps_after_old_head, 0, num_rows - 1)
    offset = jnp.cumsum(size) - size
    total = jnp.sum(size)
    in_main = offset[:, None] + position
    # Of the block appended to main, only the last ``main_size`` steps survive the add.
    kept = (position < size[:, None]) & (in_main >= total - main_size)
    main_slots = jnp.where(kept, (main.insertion_idx[0] + in_main) % main_size, main_size)
    return _Windows(
        size=size,
        offset=offset,
        total=total,
        from_cache=steps_after_old_head < 0,
        src_cache=src_cache.astype(jnp.int32),
        src_row=order[sorted_row].astype(jnp.int32),
        main_slots=main_slots.astype(jnp.int32),
    )


def _cache_slots(rows: _RowSteps, valid: jax.Array, cache_len: int, num_caches: int):
    """int32[k]: caches-storage slot of each row, ``K*L`` where a later row of the add
    overwrites it or the row is dropped."""
    nowhere = num_caches * cache_len
    target = jnp.where(valid, rows.cache * cache_len + rows.slot, nowhere)
    kept = valid & segments.last_occurrence(target, nowhere)
    return jnp.where(kept, target, nowhere).astype(jnp.int32)


def _result(
    rows: _RowSteps,
    windows: _Windows,
    valid: jax.Array,
    finishes: jax.Array,
    main_head: jax.Array,
    cache_len: int,
    main_size: int,
) -> CachedAddResult:
    """The :class:`CachedAddResult`: main slots for rows that end an episode, cache slots
    (global, after main's ``M``) for the others, -1 for dropped rows."""
    cache_zero = main_size + rows.cache * cache_len
    oldest_open = jnp.where(rows.length > cache_len, (rows.slot + 1) % cache_len, 0)
    first_moved = (main_head + windows.offset) % main_size
    last_moved = (main_head + windows.offset + windows.size - 1) % main_size
    index = jnp.where(finishes, last_moved, cache_zero + rows.slot)
    start = jnp.where(finishes, first_moved, cache_zero + oldest_open)
    zero_return = jnp.zeros_like(rows.episode_return)
    return CachedAddResult(
        index=jnp.where(valid, index, -1).astype(jnp.int32),
        episode_return=jnp.where(
            broadcast_rows(finishes, rows.episode_return), rows.episode_return, zero_return
        ),
        episode_length=jnp.where(finishes, rows.length, 0).astype(jnp.int32),
        episode_start=jnp.where(valid, start, -1).astype(jnp.int32),
        episode_dropped=jnp.where(finishes, rows.length - windows.size, 0).astype(jnp.int32),
    )


def _caches_after(
    counters: Counters,
    cache_len: int,
    rows: _RowSteps,
    finishes: jax.Array,
    grouping: segments.Grouping,
) -> Counters:
    """Counters of every cache after the add.

    A cache the add touches takes them from its last row: emptied if that row ends the
    episode, else the unfinished episode through that row. Other caches keep theirs.
    """
    last_rows = segments.last_row_per_group(grouping, counters.lengths.shape[0])
    touched = last_rows >= 0
    last = jnp.maximum(last_rows, 0)
    emptied = finishes[last]

    def pick(open_value, empty_value, before):
        updated = jnp.where(broadcast_rows(emptied, open_value), empty_value, open_value)
        return jnp.where(broadcast_rows(touched, updated), updated, before).astype(before.dtype)

    last_slot = rows.slot[last]
    last_return = rows.episode_return[last]
    return Counters(
        insertion_idx=pick((last_slot + 1) % cache_len, 0, counters.insertion_idx),
        lengths=pick(jnp.minimum(rows.length[last], cache_len), 0, counters.lengths),
        last_slot=pick(last_slot, 0, counters.last_slot),
        ep_return=pick(last_return, jnp.zeros_like(last_return), counters.ep_return),
        ep_len=pick(rows.length[last], 0, counters.ep_len),
        ep_start=pick(
            jnp.where(rows.continues_open[last], counters.ep_start, 0), 0, counters.ep_start
        ),
    )


def _main_after(main: MainHead, total: jax.Array, main_size: int) -> MainHead:
    """Main's write position after ``total`` steps were appended."""
    last_written = (main.insertion_idx[0] + total - 1) % main_size
    return MainHead(
        insertion_idx=((main.insertion_idx + total) % main_size).astype(jnp.int32),
        lengths=jnp.minimum(main.lengths + total, main_size).astype(jnp.int32),
        last_slot=jnp.where(total > 0, last_written, main.last_slot).astype(jnp.int32),
    )
