"""Where each global slot lives, and the episode links that follow from it.

A buffer's global slots are cut into *parts* (sub-buffers): part ``p`` owns the slots
``[offset[p], offset[p] + size[p])``. A ``ReplayBuffer`` of ``buffer_num`` sub-buffers has
``buffer_num`` parts of one size ``m``; a ``CachedReplayBuffer`` has its main buffer and then
one part per cache. Episodes never cross parts, and inside part ``p`` holding ``c`` slots the
links are modular (Tianshou's rule):

    prev(i) = o + ((i - o - 1) mod c)   unless i starts an episode,
    next(i) = o + ((i - o + 1) mod c)   unless i ends one,

with ``o = offset[p]``. A slot starts an episode when the slot before it is done or is the
part's latest write, and ends one when it is done or is the latest write itself. The layout
is static; when every part after the first has one size (a vector buffer, or a cached buffer's
caches behind its main buffer) the part of a slot is found by arithmetic, not by a search.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.sampling import randint_below, sorted_position


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static cut of ``maxsize`` global slots into parts.

    Attributes:
      sizes: slots per part, in global order.

    Example:
      >>> layout = Layout((4, 2, 2))
      >>> layout.maxsize, layout.offsets.tolist()
      (8, [0, 4, 6])
    """

    sizes: tuple[int, ...]

    @classmethod
    def uniform(cls, part_size: int, part_num: int) -> Layout:
        """``part_num`` parts of ``part_size`` slots each."""
        return cls((int(part_size),) * int(part_num))

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """int32[parts]: the first global slot of each part."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int32)

    @property
    def edges(self) -> np.ndarray:
        """Tianshou's ``subbuffer_edges``: ``[offset_0, ..., offset_last, maxsize]``."""
        return np.append(self.offsets, self.maxsize)

    @property
    def maxsize(self) -> int:
        """Number of global slots."""
        return int(sum(self.sizes))

    @property
    def part_num(self) -> int:
        """Number of parts."""
        return len(self.sizes)

    @property
    def part_size(self) -> int | None:
        """The common part size, or None when parts differ."""
        return self.sizes[0] if len(set(self.sizes)) == 1 else None

    def part_of(self, index: jax.Array) -> jax.Array:
        """int32 part of each global slot (``index`` already in ``[0, maxsize)``)."""
        if self.part_size is not None:
            return index // self.part_size
        head, *rest = self.sizes
        if len(set(rest)) == 1:
            return jnp.where(index < head, 0, 1 + (index - head) // rest[0]).astype(jnp.int32)
        return sorted_position(jnp.asarray(self.offsets[1:]), index).astype(jnp.int32)

    def offset(self, part: jax.Array) -> jax.Array:
        """int32 first global slot of each ``part``."""
        if self.part_size is not None:
            return part * self.part_size
        return jnp.asarray(self.offsets)[part]

    def size(self, part: jax.Array) -> jax.Array:
        """int32 slots of each ``part``."""
        if self.part_size is not None:
            return jnp.full_like(part, self.part_size)
        return jnp.asarray(self.sizes, jnp.int32)[part]


def prev(
    layout: Layout, index: jax.Array, done_at: Callable, lengths: jax.Array, last: jax.Array
) -> jax.Array:
    """Previous step of the same episode, or ``index`` itself at an episode start.

    Args:
      layout: the buffer's parts.
      index: int32 global slots in ``[0, maxsize)``, any shape.
      done_at: ``done_at(slots) -> bool``, the stored done flag at global slots.
      lengths: int32[parts], stored transitions per part.
      last: int32[parts], global slot of each part's latest write.
    """
    part = layout.part_of(index)
    o = layout.offset(part)
    c = jnp.maximum(lengths[part], 1)
    j = o + jnp.mod(index - o - 1, c)
    start = done_at(j) | (j == last[part])
    return jnp.where(start, o + jnp.mod(index - o, c), j)


def next_(
    layout: Layout, index: jax.Array, done_at: Callable, lengths: jax.Array, last: jax.Array
) -> jax.Array:
    """Next step of the same episode, or ``index`` itself at an episode end (see :func:`prev`)."""
    part = layout.part_of(index)
    o = layout.offset(part)
    c = jnp.maximum(lengths[part], 1)
    end = done_at(index) | (index == last[part])
    return o + jnp.mod(index - o + 1 - end.astype(jnp.int32), c)


def chronological(
    layout: Layout, insertion_idx: jax.Array, lengths: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """All slots in Tianshou's ``sample_indices(0)`` order: ``(int32[maxsize], bool[maxsize])``.

    Each part from oldest to newest, parts in order; valid entries first, padded with -1.
    """
    slot = jnp.arange(layout.maxsize, dtype=jnp.int32)
    part = layout.part_of(slot)
    size = layout.size(part)
    local = slot - layout.offset(part)
    full = lengths[part] == size
    # The local slot holding the part's `local`-th oldest transition.
    oldest = jnp.where(full, jnp.mod(insertion_idx[part] + local, size), local)
    glob = layout.offset(part) + oldest
    valid = local < lengths[part]
    order = jnp.argsort(~valid, stable=True)
    mask = valid[order]
    return jnp.where(mask, glob[order], -1).astype(jnp.int32), mask


def stored_mask(layout: Layout, lengths: jax.Array) -> jax.Array:
    """bool[maxsize]: whether each global slot holds a stored transition."""
    slot = jnp.arange(layout.maxsize, dtype=jnp.int32)
    part = layout.part_of(slot)
    return slot - layout.offset(part) < lengths[part]


def stored_at(layout: Layout, index: jax.Array, lengths: jax.Array) -> jax.Array:
    """bool: whether global slots ``index`` (in range) hold a transition; O(1) per entry."""
    part = layout.part_of(index)
    return index - layout.offset(part) < lengths[part]


def uniform(layout: Layout, key: chex.PRNGKey, batch_size: int, lengths: jax.Array) -> jax.Array:
    """int32[batch_size] uniform draws with replacement over the stored transitions.

    A draw ``u ~ U{0, ..., sum(lengths) - 1}`` goes to the part whose cumulative-length
    interval holds it and then to slot ``offset + (u - cum[p-1])``: each part is chosen with
    probability proportional to its length, in ``O(batch_size log parts)``. Every draw is
    slot 0 when nothing is stored.
    """
    cum = jnp.cumsum(lengths)
    total = cum[-1]
    u = randint_below(key, (batch_size,), jnp.maximum(total, 1))
    part = jnp.minimum(sorted_position(cum, u), lengths.shape[0] - 1)
    local = u - (cum[part] - lengths[part])
    return jnp.where(total > 0, layout.offset(part) + local, 0).astype(jnp.int32)
