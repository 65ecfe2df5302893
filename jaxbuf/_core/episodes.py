"""Per-sub-buffer episode bookkeeping: the counters and how one add updates them.

A buffer holds ``n`` sub-buffers of ``m`` slots each; sub-buffer ``k`` owns the global slots
``[k*m, (k+1)*m)``. Per sub-buffer the state keeps (Tianshou's names in brackets):

* ``insertion_idx`` [_insertion_idx] int32[n], local slot of the next write;
* ``lengths`` [len] int32[n], number of valid slots, ``min(#adds, m)``;
* ``last_slot`` int32[n], local slot of the latest write (0 if empty); Tianshou's global
  ``last_index`` is ``k*m + last_slot``;
* ``ep_return`` [_ep_return] float[n, *rew_shape], ``ep_len`` [_ep_len] int32[n] and
  ``ep_start`` [_ep_start_idx] int32[n] (local) of the unfinished episode.

In the buffer state the five int32 counters are packed into one ``int32[n, 5]`` array (columns
in the order above, named by :data:`INSERTION_IDX`, :data:`LENGTHS`, :data:`LAST_SLOT`,
:data:`EP_LEN` and :data:`EP_START`; see :func:`pack`), so the whole bookkeeping is two leaves:
fewer arguments per jitted call and one fused update per add. Every counter is local to its
sub-buffer, so a shard holding sub-buffers ``[s*L, (s+1)*L)`` reads its block as a buffer of
``L``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbuf._core import segments
from jaxbuf._core.segments import broadcast_rows


class AddResult(NamedTuple):
    """What ``add`` reports per row (leading axis k).

    Attributes:
      index: int32[k], global slot written (-1 for a dropped row with an invalid buffer id).
      episode_return: float[k, *rew_shape], the episode's return if the row ends it, else 0.
      episode_length: int32[k], the episode's length if the row ends it, else 0.
      episode_start: int32[k], global slot of the episode's first step that is still stored.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> buf = ReplayBuffer.create(ex, 4)
      >>> buf, res = buf.add(dict(ex, rew=jnp.float32(2), truncated=True))
      >>> res.index.tolist(), res.episode_return.tolist(), res.episode_length.tolist()
      ([0], [2.0], [1])
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

INSERTION_IDX, LENGTHS, LAST_SLOT, EP_LEN, EP_START = range(len(PACKED))
"""Column numbers of the packed counter array: ``packed[:, LAST_SLOT]`` is ``last_slot``."""


def pack(c: Counters) -> tuple[jax.Array, jax.Array]:
    """``(int32[n, 5], ep_return)``: the int32 counters as columns of one array."""
    packed = jnp.stack([jnp.asarray(getattr(c, f), jnp.int32) for f in PACKED], axis=-1)
    return packed, c.ep_return


def unpack(packed: jax.Array, ep_return: jax.Array) -> Counters:
    """Inverse of :func:`pack`."""
    return Counters(
        insertion_idx=packed[..., INSERTION_IDX],
        lengths=packed[..., LENGTHS],
        last_slot=packed[..., LAST_SLOT],
        ep_return=ep_return,
        ep_len=packed[..., EP_LEN],
        ep_start=packed[..., EP_START],
    )


def init_counters(n: int, rew_shape: tuple, rew_dtype) -> Counters:
    """Counters of ``n`` empty sub-buffers."""
    zeros = jnp.zeros((n,), jnp.int32)
    return Counters(zeros, zeros, zeros, jnp.zeros((n, *rew_shape), rew_dtype), zeros, zeros)


class EpisodeRuns(NamedTuple):
    """Where each row of an add stands in its episode, in the sorted order of ``grouping``.

    Attributes:
      grouping: the rows grouped by sub-buffer (:func:`segments.group_by_id`).
      buffer: int32[k], the row's sub-buffer (the out-of-range id of invalid rows clamped to
        the last sub-buffer; their values are meaningless and the callers mask them).
      segment_first: int32[k], sorted position of the first row of the row's episode in this
        add.
      steps_before: int32[k], rows of the same episode before it in this add.
      continues_open: bool[k], the episode began before the add (it is the group's first
        segment), so it continues the sub-buffer's unfinished episode.
      length: int32[k], the episode's length through the row.
      episode_return: float[k, *rew_shape], the episode's return through the row.
    """

    grouping: segments.Grouping
    buffer: jax.Array
    segment_first: jax.Array
    steps_before: jax.Array
    continues_open: jax.Array
    length: jax.Array
    episode_return: jax.Array


def episode_runs(
    counters: Counters, ids: jax.Array, done: jax.Array, rewards: jax.Array
) -> EpisodeRuns:
    """Episodes of an add of k rows (applied in row order): lengths and running returns.

    The rows of one sub-buffer form a group; an episode is a segment of its group that begins
    at the group's first row or after a done row. The group's first episode continues the
    sub-buffer's unfinished one, so its length and return start from ``counters.ep_len`` and
    ``counters.ep_return``; later episodes start from zero.

    Args:
      counters: counters before the add (n sub-buffers).
      ids: int32[k] sub-buffer of each row, invalid rows mapped to ``n``.
      done: bool[k], rows that end their episode.
      rewards: float[k, *rew_shape].
    Returns:
      The :class:`EpisodeRuns`.
    """
    num_buffers = counters.lengths.shape[0]
    grouping = segments.group_by_id(ids)
    starts = grouping.starts_after(done)
    segment_first = segments.segment_first_row(starts)
    continues_open = segment_first == segments.segment_first_row(grouping.first)
    buffer = jnp.minimum(grouping.sorted_ids, num_buffers - 1)
    steps_before = jnp.arange(ids.shape[0], dtype=jnp.int32) - segment_first
    length = jnp.where(continues_open, counters.ep_len[buffer], 0) + steps_before + 1
    rew_sorted = grouping.sort(rewards).astype(counters.ep_return.dtype)
    carried = jnp.where(broadcast_rows(grouping.first, rew_sorted), counters.ep_return[buffer], 0)
    episode_return = segments.segmented_sum(rew_sorted + carried, starts)
    return EpisodeRuns(
        grouping, buffer, segment_first, steps_before, continues_open, length, episode_return
    )


def plan_add(c: Counters, m: int, ids: jax.Array | None, rew: jax.Array, done: jax.Array):
    """Bookkeeping of one add of k rows, applied in row order as Tianshou does.

    Rows with the same id go to consecutive slots of that sub-buffer; an episode that
    ends on row j restarts at the next row of the same id. Everything is vectorised over
    the k rows: rows are grouped by id with a stable sort and the running return, length
    and start are segmented over the episodes of each group (:func:`episode_runs`).

    Args:
      c: counters before the add.
      m: slots per sub-buffer.
      ids: int32[k] sub-buffer of each row, or None for "row j goes to sub-buffer j".
      rew: float[k, *rew_shape]; done: bool[k].
    Returns:
      ``(slots, result, counters)``: ``slots`` int32[k] global slots to write (``n*m`` for rows
      to drop), the :class:`AddResult`, and the counters after the add.
    """
    if ids is None:
        return _plan_one_row_each(c, m, rew, done)
    num_buffers = c.lengths.shape[0]
    valid = (ids >= 0) & (ids < num_buffers)
    buffer_ids = jnp.where(valid, ids, num_buffers).astype(jnp.int32)
    runs = episode_runs(c, buffer_ids, done, rew)
    grouping = runs.grouping
    slot_sorted = (c.insertion_idx[runs.buffer] + grouping.rank) % m
    start_sorted = jnp.where(
        runs.continues_open, c.ep_start[runs.buffer], slot_sorted[runs.segment_first]
    )
    slot, start, length = map(grouping.unsort, (slot_sorted, start_sorted, runs.length))
    episode_return = grouping.unsort(runs.episode_return)
    rank = grouping.unsort(grouping.rank)
    offset = buffer_ids * m
    # A row is overwritten later in this same add if m or more rows of its id follow it.
    counts = segments.group_sizes(buffer_ids, num_buffers)
    keep = valid & (rank >= counts[jnp.minimum(buffer_ids, num_buffers - 1)] - m)
    slots = jnp.where(keep, offset + slot, num_buffers * m).astype(jnp.int32)
    result = _report(
        jnp.where(valid, offset + slot, -1),
        jnp.where(valid, offset + _reported_start(slot, length, start, m), -1),
        episode_return,
        length,
        done & valid,
    )
    # The last row of each id decides that sub-buffer's counters; untouched ones keep theirs.
    last_rows = segments.last_row_per_group(grouping, num_buffers)
    touched = last_rows >= 0
    last = jnp.maximum(last_rows, 0)
    after = _after(
        c, m, slot[last], done[last], episode_return[last], length[last], start[last], counts
    )
    after = Counters(
        *(
            jnp.where(broadcast_rows(touched, updated), updated, before)
            for updated, before in zip(after, c)
        )
    )
    return slots, result, after


def _plan_one_row_each(
    counters: Counters, subbuffer_size: int, rewards: jax.Array, done: jax.Array
):
    """:func:`plan_add` for ``ids=None``: row j goes to sub-buffer j (k == n).

    Every sub-buffer takes exactly its own row, so the counters update elementwise with no
    grouping and no gathers.
    """
    slot = counters.insertion_idx
    episode_return = counters.ep_return + rewards.astype(counters.ep_return.dtype)
    length = counters.ep_len + 1
    offset = jnp.arange(counters.lengths.shape[0], dtype=jnp.int32) * subbuffer_size
    result = _report(
        offset + slot,
        offset + _reported_start(slot, length, counters.ep_start, subbuffer_size),
        episode_return,
        length,
        done,
    )
    after = _after(
        counters, subbuffer_size, slot, done, episode_return, length, counters.ep_start, 1
    )
    return offset + slot, result, after


def _reported_start(slot, length, start, subbuffer_size):
    """The start slot ``add`` reports (local).

    Tianshou reports the start slot even when the episode is longer than its sub-buffer and
    that slot was overwritten; jaxbuf reports the oldest step still stored instead
    (docs/differences-from-tianshou.md, "Adding").
    """
    return jnp.where(length > subbuffer_size, (slot + 1) % subbuffer_size, start)


def _report(index, start, episode_return, length, done) -> AddResult:
    """The :class:`AddResult`: return and length only for rows that end their episode."""
    return AddResult(
        index=index.astype(jnp.int32),
        episode_return=jnp.where(
            broadcast_rows(done, episode_return), episode_return, jnp.zeros_like(episode_return)
        ),
        episode_length=jnp.where(done, length, 0).astype(jnp.int32),
        episode_start=start.astype(jnp.int32),
    )


def _after(
    counters: Counters, subbuffer_size: int, slot, done, episode_return, length, start, counts
) -> Counters:
    """Counters of every sub-buffer after its last written row (at local ``slot``)."""
    updated = Counters(
        insertion_idx=(counters.insertion_idx + counts) % subbuffer_size,
        lengths=jnp.minimum(counters.lengths + counts, subbuffer_size),
        last_slot=slot,
        ep_return=jnp.where(
            broadcast_rows(done, episode_return), jnp.zeros_like(episode_return), episode_return
        ),
        ep_len=jnp.where(done, 0, length),
        ep_start=jnp.where(done, (slot + 1) % subbuffer_size, start),
    )
    return Counters(*(value.astype(before.dtype) for value, before in zip(updated, counters)))
