"""Sequence and whole-episode sampling over any buffer's primitives.

Everything here works on a buffer's layout, counters and done flags only, with arithmetic
inside each part (sub-buffer): step ``t`` after slot ``s`` of part ``p`` is
``o + (s - o + t) mod c`` with ``o = offset[p]`` and ``c = lengths[p]``, as long as no
episode end (a done flag or the part's write head) lies in between. So a window of ``L``
steps costs one gather of ``L`` done flags per row, and nothing in the compiled program has
the size of the buffer.

Laws (``S`` = the stored slots, drawn uniformly by :func:`jaxbuf._core.layout.uniform`):

* ``full_only`` / ``period``: each row draws ``tries`` candidate starts uniformly from ``S``
  and keeps the first one that qualifies (its window of ``length`` steps lies inside one
  episode, and/or its offset from the episode start is a multiple of ``period``). Given that
  some try qualifies, the start is exactly uniform over the qualifying starts. A row where no
  try qualifies has ``found`` false, an all-false mask and weight 0.
* Whole episodes: see :func:`episodes`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from jaxbuf._core import layout as links
from jaxbuf._core.checks import runtime_check
from jaxbuf.errors import InputError, message

DEFAULT_TRIES = 16
"""Candidate starts per row for ``full_only`` / ``period`` sampling."""

_CHUNK = 64
"""Slots examined per iteration of the walk back to an episode start (``period > 1``)."""


@struct.dataclass
class Sequences:
    """Sampled windows. Unpacks as ``batch, indices, mask = ...`` (the three first fields).

    Attributes:
      batch: the stored fields (as ``buf[indices]``), each shaped ``[B, L, ...]``.
      indices: int32[B, L] global slots; masked steps repeat the last valid slot.
      mask: bool[B, L], true on the steps of the window (false after the episode end, and
        everywhere in a row with ``found`` false).
      burn_in: bool[B, L], true on the first ``burn_in`` valid steps of each row.
      found: bool[B], the row satisfies the request (always true without ``full_only`` and
        ``period``, unless the buffer is empty).
      weight: float32[B], 1 for found rows and 0 for the others; prioritized buffers put the
        window's importance weight here.

    Example:
      One stored six-step episode; full windows of four steps, the first one burn-in:

      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> t = jnp.arange(6)
      >>> rows = dict(obs=t.astype(jnp.float32), act=t, rew=jnp.ones(6),
      ...             terminated=t == 5, truncated=t < 0)
      >>> buf, _ = ReplayBuffer.create(ex, 8).extend(rows)
      >>> seq = buf.sample_sequences(jax.random.key(0), 2, 4, burn_in=1, full_only=True)
      >>> batch, indices, mask = seq
      >>> batch["obs"].shape, bool(mask.all()), seq.found.tolist()
      ((2, 4), True, [True, True])
      >>> seq.burn_in[0].tolist()
      [True, False, False, False]
      >>> bool(jnp.all(jnp.diff(indices, axis=1) == 1))  # consecutive steps of one episode
      True
    """

    batch: dict
    indices: jax.Array
    mask: jax.Array
    burn_in: jax.Array
    found: jax.Array
    weight: jax.Array

    def __iter__(self):
        return iter((self.batch, self.indices, self.mask))


@struct.dataclass
class Episodes:
    """Sampled episodes, left-aligned. Unpacks as ``batch, indices, mask = ...``.

    Attributes:
      batch: the stored fields, each shaped ``[B, max_length, ...]``.
      indices: int32[B, max_length]; padding repeats the last valid slot.
      mask: bool[B, max_length], true on the episode's steps, false on the padding.
      whole: bool[B], the row holds its whole stored episode (start to end); false when the
        episode is longer than ``max_length`` (see :func:`episodes`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> t = jnp.arange(6)
      >>> rows = dict(obs=t.astype(jnp.float32), act=t, rew=jnp.ones(6),
      ...             terminated=t == 5, truncated=t < 0)
      >>> buf, _ = ReplayBuffer.create(ex, 8).extend(rows)
      >>> ep = buf.sample_episodes(jax.random.key(1), 2, 8)
      >>> ep.indices[0].tolist(), ep.mask[0].tolist()
      ([0, 1, 2, 3, 4, 5, 5, 5], [True, True, True, True, True, True, False, False])
    """

    batch: dict
    indices: jax.Array
    mask: jax.Array
    whole: jax.Array

    def __iter__(self):
        return iter((self.batch, self.indices, self.mask))


def _int(where: str, name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InputError(message(where, f"{name} must be an int >= {low}, got {value!r}"))
    return int(value)


def check_args(
    buf, where: str, batch_size, length, burn_in=0, period=1, tries=DEFAULT_TRIES, name="length"
) -> None:
    """Trace-time checks of the static arguments (InputError naming the argument)."""
    _int(where, "batch_size", batch_size, 1)
    _int(where, name, length, 1)
    _int(where, "burn_in", burn_in, 0)
    _int(where, "period", period, 1)
    _int(where, "tries", tries, 1)
    largest = max(buf.layout.sizes)
    if length > largest:
        raise InputError(
            message(where, f"{name} {length} does not fit a sub-buffer of {largest} slots")
        )
    if burn_in >= length:
        raise InputError(
            message(
                where,
                f"burn_in must be < length ({length}) to leave a step to train on, got {burn_in}",
            )
        )


# ---------------------------------------------------------------- ring arithmetic
def ring(buf, start: jax.Array, steps: jax.Array) -> jax.Array:
    """int32[*start.shape, T]: the slots ``steps`` (int32[T], may be negative) away from
    ``start`` inside its part, modulo the part's stored length."""
    part = buf.layout.part_of(start)
    o = buf.layout.offset(part)[..., None]
    c = jnp.maximum(buf.lengths[part], 1)[..., None]
    return (o + jnp.mod(start[..., None] - o + steps, c)).astype(jnp.int32)


def _is_end(buf, slots: jax.Array) -> jax.Array:
    """bool: the slot is done or is its part's latest write (an episode end)."""
    return buf._done_at(slots) | (slots == buf.last_index[buf.layout.part_of(slots)])


def fits(buf, start: jax.Array, length: int) -> jax.Array:
    """bool: the ``length`` steps from ``start`` stay in its episode (no end before the last)."""
    if length == 1:
        return jnp.ones(start.shape, bool)
    slots = ring(buf, start, jnp.arange(length - 1, dtype=jnp.int32))
    return ~jnp.any(_is_end(buf, slots), axis=-1)


def offset_in_episode(buf, start: jax.Array) -> jax.Array:
    """int32: how many steps of its episode precede ``start``.

    A walk back in chunks of ``_CHUNK`` slots until the slot before is an episode end; it
    stops within the part's length (the write head is an end), and costs
    ``O(distance / _CHUNK)`` iterations of ``O(start.size * _CHUNK)`` work.
    """
    back = -1 - jnp.arange(_CHUNK, dtype=jnp.int32)

    limit = buf.maxsize + _CHUNK

    def cond(state):
        return ~jnp.all(state[1]) & (state[2] < limit)

    def body(state):
        dist, done, base = state
        ends = _is_end(buf, ring(buf, start, back - base))
        hit = jnp.any(ends, axis=-1)
        first = jnp.argmax(ends, axis=-1).astype(jnp.int32)
        dist = jnp.where(~done & hit, base + first, dist)
        return dist, done | hit, base + _CHUNK

    stored = links.stored_at(buf.layout, start, buf.lengths)
    init = (jnp.zeros(start.shape, jnp.int32), ~stored, jnp.int32(0))
    return lax.while_loop(cond, body, init)[0]


def qualifies(buf, start: jax.Array, length: int, full_only: bool, period: int) -> jax.Array:
    """bool: ``start`` holds a stored transition and meets ``full_only`` and ``period``."""
    ok = links.stored_at(buf.layout, start, buf.lengths) & (buf.size > 0)
    if full_only:
        ok &= fits(buf, start, length)
    if period > 1:
        ok &= jnp.mod(offset_in_episode(buf, start), period) == 0
    return ok


def first_qualifying(cand: jax.Array, ok: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of ``cand`` (int32[B, K]), the first candidate with ``ok``, and whether any is."""
    first = jnp.argmax(ok, axis=1)
    rows = jnp.arange(cand.shape[0])
    return cand[rows, first], ok[rows, first]


# ---------------------------------------------------------------- draws
def uniform_starts(
    buf, key: chex.PRNGKey, batch_size: int, length: int, full_only: bool, period: int, tries: int
) -> tuple[jax.Array, jax.Array]:
    """``(start int32[B], found bool[B])``: uniform over qualifying starts, by rejection."""
    cand = links.uniform(buf.layout, key, batch_size * tries, buf.lengths)
    ok = qualifies(buf, cand, length, full_only, period)
    return first_qualifying(cand.reshape(batch_size, tries), ok.reshape(batch_size, tries))


def window(buf, start: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
    """``(indices, mask)`` int32/bool[B, length]: ``start`` and the steps after it, cut after
    the episode end; masked steps repeat the last valid slot (as following ``next``)."""
    idx = ring(buf, start, jnp.arange(length, dtype=jnp.int32))
    ends = _is_end(buf, idx)
    before = jnp.cumsum(ends, axis=1) - ends  # ends strictly before each step
    mask = before == 0
    last = jnp.take_along_axis(idx, jnp.sum(mask, axis=1, keepdims=True) - 1, axis=1)
    return jnp.where(mask, idx, last), mask


def assemble(buf, start, found, length: int, burn_in: int, read) -> Sequences:
    """The :class:`Sequences` of windows from ``start``; rows without ``found`` masked out."""
    idx, mask = window(buf, start, length)
    mask &= found[:, None]
    burn = mask & (jnp.arange(length) < burn_in)[None, :]
    return Sequences(read(idx), idx, mask, burn, found, found.astype(jnp.float32))


def _check_found(found, length: int, full_only: bool, period: int, tries: int) -> None:
    runtime_check(
        jnp.any(found),
        f"jaxbuf: sample_sequences: no window of length {length} (full_only={full_only}, "
        f"period={period}) found in {found.shape[0] * tries} tries; the buffer may hold none",
    )


def sample(
    buf,
    key: chex.PRNGKey,
    batch_size: int,
    length: int,
    burn_in: int,
    full_only: bool,
    period: int,
    tries: int,
) -> Sequences:
    """The body of :meth:`jaxbuf._core.base.Buffer.sample_sequences` (arguments checked)."""
    runtime_check(buf.size > 0, "jaxbuf: sampling from an empty buffer")
    if not full_only and period == 1:
        start = buf.sample_indices(key, batch_size)
        found = jnp.broadcast_to(buf.size > 0, (batch_size,))
    else:
        start, found = uniform_starts(buf, key, batch_size, length, full_only, period, tries)
        _check_found(found, length, full_only, period, tries)
    return assemble(buf, start, found, length, burn_in, buf._read)


def episodes(buf, key: chex.PRNGKey, batch_size: int, max_length: int) -> Episodes:
    """Whole stored episodes, left-aligned and padded to ``max_length``.

    Law: a step ``u`` is drawn uniformly from the stored steps, so each stored episode comes
    with probability proportional to its stored length. An episode of ``n <= max_length``
    steps is returned whole. For a longer one the row holds ``max_length`` consecutive steps
    of it: its first ones when ``u`` is among its first ``max_length`` steps, else the ones
    ending at ``u`` (so window start 0 has probability ``max_length / n`` and each later
    start ``1 .. n - max_length`` probability ``1 / n``). Cost ``O(batch_size * max_length)``.
    """
    runtime_check(buf.size > 0, "jaxbuf: sampling from an empty buffer")
    u = links.uniform(buf.layout, key, batch_size, buf.lengths)
    back = _is_end(buf, ring(buf, u, -1 - jnp.arange(max_length, dtype=jnp.int32)))
    near = jnp.any(back, axis=1)  # the episode start is at most max_length - 1 steps back
    offset = jnp.where(near, jnp.argmax(back, axis=1), max_length - 1).astype(jnp.int32)
    start = ring(buf, u, -offset[:, None])[:, 0]
    idx, mask = window(buf, start, max_length)
    mask &= buf.size > 0
    ended = jnp.any(_is_end(buf, idx) & mask, axis=1)
    return Episodes(buf._read(idx), idx, mask, near & ended)


def priority_starts(
    buf, key: chex.PRNGKey, batch_size: int, length: int, full_only: bool, period: int, tries: int
) -> tuple[jax.Array, jax.Array]:
    """``(start, found)`` with window probability proportional to its summed step priority.

    Each try draws a step ``j`` with probability ``leaf_j / total`` from ``buf.tree`` and an
    offset ``k`` uniform on ``{0, ..., length - 1}``; the candidate start is ``k`` steps
    before ``j``, rejected if that crosses the start of ``j``'s episode (then ``j`` would not
    be in the window) or if it fails ``full_only`` / ``period``. A start ``s`` is proposed
    with probability ``sum_{j in window(s)} leaf_j / (length * total)``, so given success the
    law is proportional to the window's summed priority (its mean, for full windows).
    """
    key_step, key_off = jax.random.split(key)
    n = batch_size * tries
    step = buf.tree.sample(key_step, n, False)[0].astype(jnp.int32)
    k = jax.random.randint(key_off, (n,), 0, length, dtype=jnp.int32)
    behind = jnp.arange(1, length, dtype=jnp.int32)
    ends = _is_end(buf, ring(buf, step, -behind))
    crosses = jnp.any(ends & (behind[None, :] <= k[:, None]), axis=1)
    cand = ring(buf, step, -k[:, None])[:, 0]
    ok = ~crosses & qualifies(buf, cand, length, full_only, period)
    return first_qualifying(cand.reshape(batch_size, tries), ok.reshape(batch_size, tries))


SEQUENCE_PRIORITIES = ("sum", "start")
"""The window laws of a prioritized buffer's ``sample_sequences`` (``priority=...``)."""


def start_priority_starts(
    buf, key: chex.PRNGKey, batch_size: int, length: int, full_only: bool, period: int, tries: int
) -> tuple[jax.Array, jax.Array]:
    """``(start, found)`` with the start drawn proportionally to its own leaf.

    Each try draws a slot ``s`` with probability ``leaf_s / total`` from ``buf.tree`` (the
    leaf of ``s`` holding the priority of the window that starts at ``s``) and keeps the first
    that meets ``full_only`` / ``period``. Given success the start has probability
    ``leaf_s / sum_{q in Q} leaf_q`` over the qualifying stored starts ``Q``.
    """
    cand = buf.tree.sample(key, batch_size * tries, False)[0].astype(jnp.int32)
    ok = qualifies(buf, cand, length, full_only, period)
    return first_qualifying(cand.reshape(batch_size, tries), ok.reshape(batch_size, tries))


def window_priority(td_error: jax.Array, mask: jax.Array, eta: float) -> jax.Array:
    """float32[B]: R2D2's ``eta * max + (1 - eta) * mean`` of ``|td_error|`` over ``mask``.

    ``td_error`` real ``[B, L]``, ``mask`` bool ``[B, L]``; rows with no valid step get 0.
    """
    err = jnp.where(mask, jnp.abs(td_error), 0.0).astype(jnp.float32)
    count = jnp.sum(mask, axis=1)
    mean = jnp.sum(err, axis=1) / jnp.maximum(count, 1)
    return jnp.where(count > 0, eta * jnp.max(err, axis=1) + (1 - eta) * mean, 0.0)


def sample_prioritized(
    buf,
    key,
    batch_size: int,
    length: int,
    burn_in: int,
    full_only: bool,
    period: int,
    tries,
    read,
    priority: str = "sum",
) -> Sequences:
    """Windows from :func:`priority_starts` (``priority="sum"``) or
    :func:`start_priority_starts` (``"start"``); weights left at 1 / 0 for the caller."""
    runtime_check(buf.size > 0, "jaxbuf: sampling from an empty buffer")
    draw = start_priority_starts if priority == "start" else priority_starts
    start, found = draw(buf, key, batch_size, length, full_only, period, tries)
    _check_found(found, length, full_only, period, tries)
    return assemble(buf, start, found, length, burn_in, read)
