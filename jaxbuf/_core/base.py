"""``Buffer``: the complete read API, written once for every buffer kind.

Every buffer class derives from :class:`Buffer` and supplies a handful of primitives: its
:class:`~jaxbuf._core.layout.Layout` (how the global slots are cut into sub-buffers), the
per-sub-buffer counters ``insertion_idx``/``lengths``/``last_index``, a raw gather of the
stored fields (:meth:`Buffer._gather`), the static options ``stack_num``, ``sample_avail``
and ``ignore_obs_next``, and the two halves of an add (:meth:`Buffer.check_batch`, which
validates at trace time, and :meth:`Buffer.add_rows`, the pure update). Everything else —
episode links, stacking, indices, sampling, reading, ``len`` — follows from those here, so a
variant (prioritized, HER, cached) overrides only what it changes.

:class:`Wrapper` is the base of buffers that hold a core :class:`jaxbuf.ReplayBuffer` in a
``buffer`` field and add state beside it (priorities, relabelling): it takes the primitives
from the wrapped buffer once, for all of them.

Run-time conditions inside ``jit`` have one documented result each (use
:func:`jaxbuf.checked` to raise instead): indices are taken modulo ``maxsize``; sampling an
empty buffer returns slot 0 for every draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import layout as links
from jaxbuf._core import sampling, stacking
from jaxbuf._core.checks import global_index, is_traced, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf.errors import FieldError, InputError, message

STACKED_KEYS = ("obs", "obs_next", "info", "policy")
"""Fields that frame stacking applies to; every other field is read unstacked, as Tianshou."""

_FLAGS = ("terminated", "truncated")


class Buffer(struct.PyTreeNode):
    """The read API shared by every buffer class (abstract: see the module docstring).

    Subclasses define ``layout``, ``insertion_idx``, ``lengths``, ``last_index``,
    ``_gather``, ``input_spec``, ``global_storage``, ``check_batch``, ``add_rows`` and the
    static options ``stack_num``, ``sample_avail``, ``ignore_obs_next``.
    """

    # ------------------------------------------------------------------ sizes
    @property
    def maxsize(self) -> int:
        """Total number of slots (static)."""
        return self.layout.maxsize

    @property
    def size(self) -> jax.Array:
        """Number of stored transitions as an int32 array (traceable)."""
        return jnp.sum(self.lengths)

    def __len__(self) -> int:
        """Number of stored transitions (eager only; use ``buf.size`` under ``jit``)."""
        if is_traced(self.lengths):
            raise TypeError("jaxbuf: len(buf) is eager only; use buf.size inside jit")
        return int(np.sum(np.asarray(self.lengths)))

    @property
    def subbuffer_edges(self) -> np.ndarray:
        """Tianshou's ``subbuffer_edges``: the first slot of each sub-buffer, then ``maxsize``."""
        return self.layout.edges

    def fields(self) -> tuple[str, ...]:
        """The stored field names (keys of :meth:`input_spec`)."""
        return tuple(self.input_spec())

    # ------------------------------------------------------------------ add
    def add(self, batch: dict, buffer_ids: chex.Array | None = None) -> tuple[Any, Any]:
        """Write transitions; return the new buffer and per-row episode statistics.

        Args:
          batch: dict shaped like the example. With a leading axis of k rows: k equals
            ``buffer_num`` when ``buffer_ids`` is None, else row j goes to sub-buffer
            ``buffer_ids[j]`` (duplicates write consecutive slots, in row order). A
            one-sub-buffer buffer also takes one transition without the leading axis. A
            ``done`` key is accepted only if it equals ``terminated | truncated``.
          buffer_ids: int[k] sub-buffer per row, or None.
        Returns:
          ``(buffer, result)``: see :class:`jaxbuf.AddResult` (each field has a leading axis
          of k). Episode return and length are zero unless the row ends its episode.
        """
        rows, ids = self.check_batch(batch, buffer_ids)
        return self.add_rows(rows, ids)

    # ------------------------------------------------------------------ raw reads
    def _index(self, index: Any) -> jax.Array:
        return global_index(index, self.maxsize)

    def read(self, index: chex.Array) -> dict:
        """The stored fields at global slots ``index`` (any shape), unstacked, no ``done``."""
        return self._gather(self._index(index))

    def _done_at(self, index: jax.Array) -> jax.Array:
        flags = self._gather(index, _FLAGS)
        return flags["terminated"] | flags["truncated"]

    def _part(self, index: jax.Array) -> jax.Array:
        return self.layout.part_of(index)

    # ------------------------------------------------------------------ episode links
    @compiled_when_eager()
    def prev(self, index: chex.Array) -> jax.Array:
        """Previous slot of the same episode; ``index`` itself at an episode start.

        A slot is an episode start when the slot before it is done, or is the write head
        (so the oldest slot of a full sub-buffer is a start). Never crosses sub-buffers.
        Shape and int32 dtype follow ``index``.
        """
        return links.prev(
            self.layout, self._index(index), self._done_at, self.lengths, self.last_index
        )

    @compiled_when_eager()
    def next(self, index: chex.Array) -> jax.Array:
        """Next slot of the same episode; ``index`` itself at an episode end (done or head)."""
        return links.next_(
            self.layout, self._index(index), self._done_at, self.lengths, self.last_index
        )

    @compiled_when_eager()
    def is_episode_end(self, index: chex.Array) -> jax.Array:
        """bool: the slot is done, or is the latest write of its sub-buffer (unfinished head)."""
        index = self._index(index)
        return self._done_at(index) | (index == self.last_index[self._part(index)])

    @compiled_when_eager()
    def is_unfinished(self, index: chex.Array) -> jax.Array:
        """bool: the slot is the latest write of a non-empty sub-buffer and is not done."""
        index = self._index(index)
        part = self._part(index)
        head = (index == self.last_index[part]) & (self.lengths[part] > 0)
        return head & ~self._done_at(index)

    @compiled_when_eager()
    def unfinished_index(self) -> jax.Array:
        """int32[sub-buffers]: the head of each sub-buffer's unfinished episode, or -1."""
        last = self.last_index
        open_ = (self.lengths > 0) & ~self._done_at(last)
        return jnp.where(open_, last, -1).astype(jnp.int32)

    def unfinished_index_compact(self) -> np.ndarray:
        """Tianshou's variable-length ``unfinished_index()`` (eager): the heads that exist."""
        heads = np.asarray(self.unfinished_index())
        return heads[heads >= 0].astype(np.int64)

    # ------------------------------------------------------------------ index sets
    @compiled_when_eager()
    def all_indices(self) -> tuple[jax.Array, jax.Array]:
        """Every sampleable slot in chronological order: ``(int32[maxsize], bool[maxsize])``.

        The order of Tianshou's ``sample_indices(0)``: each sub-buffer oldest to newest,
        sub-buffers in order, valid entries first and padded with -1 (mask false). With
        ``sample_avail`` and ``stack_num > 1`` only available slots are valid.
        """
        idx, mask = links.chronological(self.layout, self.insertion_idx, self.lengths)
        if self._samples_available_only:
            keep = mask & self._avail_mask()[jnp.maximum(idx, 0)]
            order = jnp.argsort(~keep, stable=True)
            mask = keep[order]
            idx = jnp.where(mask, idx[order], -1)
        return idx, mask

    def chronological_indices(self) -> np.ndarray:
        """Tianshou's ``sample_indices(0)`` (eager): the valid part of :meth:`all_indices`."""
        idx, mask = self.all_indices()
        return np.asarray(idx)[np.asarray(mask)].astype(np.int64)

    def valid_mask(self) -> jax.Array:
        """bool[maxsize]: slots that hold a stored transition."""
        return links.stored_mask(self.layout, self.lengths)

    @property
    def _samples_available_only(self) -> bool:
        return bool(self.sample_avail) and self.stack_num > 1

    def _avail_mask(self) -> jax.Array:
        """bool[maxsize]: valid slots whose stack of ``stack_num`` frames needs no padding."""
        frames = stacking.frame_indices(
            jnp.arange(self.maxsize, dtype=jnp.int32), self.prev, self.stack_num
        )
        return self.valid_mask() & (frames[:, 0] != frames[:, 1])

    # ------------------------------------------------------------------ sampling
    @compiled_when_eager(("batch_size",))
    def sample_indices(self, key: chex.PRNGKey, batch_size: int) -> jax.Array:
        """int32[batch_size] uniform draws with replacement over stored transitions.

        Sub-buffers are weighted by their length (O(batch_size)). With ``sample_avail`` and
        ``stack_num > 1`` draws are uniform over available slots (O(maxsize)). An empty
        buffer, or one where no slot is available yet, gives slot 0 for every draw
        (``jaxbuf.checked`` raises instead).
        """
        runtime_check(self.size > 0, "jaxbuf: sampling from an empty buffer")
        if self._samples_available_only:
            return sampling.from_mask(key, batch_size, self._avail_mask())
        return links.uniform(self.layout, key, batch_size, self.lengths)

    @compiled_when_eager(("batch_size",))
    def sample(self, key: chex.PRNGKey, batch_size: int) -> tuple[dict, jax.Array]:
        """``(buf[indices], indices)`` for ``indices = sample_indices(key, batch_size)``."""
        indices = self.sample_indices(key, batch_size)
        return self._read(indices), indices

    @compiled_when_eager(("batch_size",))
    def epoch_indices(self, key: chex.PRNGKey, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """Every stored transition exactly once, shuffled, in minibatches (jittable).

        Returns ``(indices, mask)`` shaped ``[ceil(maxsize / batch_size), batch_size]``;
        stored slots come first in random order, padding is -1 with mask false. Scan over
        the first axis for one epoch of minibatch updates without replacement.
        """
        if batch_size < 1:
            raise InputError(message("epoch_indices", f"batch_size must be >= 1, got {batch_size}"))
        return sampling.epoch(key, batch_size, self.valid_mask())

    def split(
        self, key: chex.PRNGKey | None, size: int, shuffle: bool = True, merge_last: bool = False
    ) -> Iterator[tuple[dict, np.ndarray]]:
        """Host-side minibatch iterator over the stored transitions (Tianshou's ``split``).

        Yields ``(batch, indices)`` chunks of ``size`` (``-1``: everything at once) in
        chronological order, or shuffled with ``key``. With ``merge_last`` a short final
        chunk is merged into the one before it.
        """
        idx = self.chronological_indices()
        if size != -1 and size < 1:
            raise InputError(message("split", f"size must be -1 or >= 1, got {size}"))
        if shuffle:
            if key is None:
                raise InputError(message("split", "shuffle=True needs a PRNG key"))
            idx = idx[np.asarray(jax.random.permutation(key, len(idx)))]
        size = len(idx) if size == -1 else size
        starts = list(range(0, len(idx), max(size, 1)))
        if merge_last and len(starts) > 1 and len(idx) % size:
            starts.pop()
        for j, start in enumerate(starts):
            end = starts[j + 1] if j + 1 < len(starts) else len(idx)
            chunk = idx[start:end]
            yield self[jnp.asarray(chunk, jnp.int32)], chunk

    @compiled_when_eager(("batch_size", "length"))
    def sample_sequences(
        self, key: chex.PRNGKey, batch_size: int, length: int
    ) -> tuple[dict, jax.Array, jax.Array]:
        """Windows of ``length`` consecutive steps that never cross an episode end.

        Starts are drawn like :meth:`sample_indices`; each window follows ``next`` links.
        Returns ``(batch, indices, mask)``: ``batch`` fields shaped ``[B, length, ...]``,
        ``indices`` int32[B, length], ``mask`` bool[B, length] false after the step that ends
        the episode (done or the write head); masked steps repeat the last valid index.
        """
        start = self.sample_indices(key, batch_size)
        idx, mask = sampling.sequences(start, length, self.next, self.is_episode_end)
        return self._read(idx), idx, mask

    # ------------------------------------------------------------------ reading
    def _frames(self, index: jax.Array, stack_num: int) -> jax.Array:
        """``index`` itself (``stack_num == 1``) or its ``[..., stack_num]`` frame slots."""
        if stack_num == 1:
            return index
        return stacking.frame_indices(index, self.prev, stack_num)

    @compiled_when_eager(("key", "stack_num"))
    def get(self, index: chex.Array, key: str, stack_num: int | None = None) -> Any:
        """Field ``key`` at ``index``, stacked over ``stack_num`` frames (default: the buffer's).

        With ``K > 1`` the output has shape ``[*index.shape, K, ...]``, frames oldest first,
        padded by repeating an episode's first frame.
        """
        if key not in self.fields():
            raise FieldError(
                message("get", f"no field '{key}'; fields are {sorted(self.fields())}")
            )
        k = self.stack_num if stack_num is None else stack_num
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InputError(message("get", f"stack_num must be an int >= 1, got {k!r}"))
        return self._gather(self._frames(self._index(index), int(k)), (key,))[key]

    def __getitem__(self, index: Any) -> dict:
        """The transitions at ``index`` as a dict of arrays.

        ``index`` is an int or int array of global slots (any shape), or a slice, which
        applies to the chronological order of stored transitions (eager only). The result has
        ``obs, act, rew, terminated, truncated, done``, ``obs_next`` (stored, or rebuilt as
        ``obs[next(i)]`` with ``ignore_obs_next``), and ``info``/``policy``/extra keys when
        present. ``obs``, ``obs_next``, ``info``, ``policy`` are frame-stacked with
        ``stack_num > 1``; the other fields never are.
        """
        if isinstance(index, slice):
            index = jnp.asarray(self.chronological_indices()[index], jnp.int32)
        return self._read(index)

    @compiled_when_eager()
    def _read(self, index: chex.Array) -> dict:
        """``buf[index]`` for an int or int array ``index`` (frame slots computed once)."""
        index = self._index(index)
        keys = self.fields()
        stacked = tuple(k for k in keys if k in STACKED_KEYS) if self.stack_num > 1 else ()
        plain = tuple(k for k in keys if k not in stacked)
        out = self._gather(index, plain)
        if stacked:
            out.update(self._gather(self._frames(index, self.stack_num), stacked))
        out = {k: out[k] for k in keys}
        out["done"] = out["terminated"] | out["truncated"]
        if self.ignore_obs_next:
            after = self._frames(self.next(index), self.stack_num)
            out["obs_next"] = self._gather(after, ("obs",))["obs"]
        return out

    # ------------------------------------------------------------------ bulk load
    def extend(self, rows: dict, buffer_ids: chex.Array | None = None) -> tuple[Any, Any]:
        """Append N rows (every field with a leading axis of N) in one compiled computation.

        The result equals N single adds in row order. ``buffer_ids`` (int[N]) routes each
        row; when None, a vector buffer sends whole episodes round-robin (episode ``e`` of
        the call to sub-buffer ``e mod buffer_num``) and a ``lockstep`` buffer reads the rows
        as time-major steps of its envs (see :mod:`jaxbuf._core.extend`). A consistent
        ``done`` column is accepted. Returns ``(buffer, result)`` with one result row per row.
        """
        from jaxbuf._core import extend

        return extend.extend(self, rows, buffer_ids)


class Wrapper(Buffer):
    """Base of the buffers that hold a core ``ReplayBuffer`` in ``buffer`` and add state.

    The storage, layout, counters, options and the add of the wrapped buffer are this
    buffer's too; a subclass overrides what it changes (e.g. ``add_rows`` to also update
    priorities, ``sample`` to relabel goals) and the rest of the API comes from
    :class:`Buffer`.
    """

    buffer: Any

    # The primitives, taken from the wrapped core buffer.
    layout = property(lambda self: self.buffer.layout, doc="The wrapped buffer's layout.")
    insertion_idx = property(lambda self: self.buffer.insertion_idx, doc="Next local slots.")
    lengths = property(lambda self: self.buffer.lengths, doc="Stored transitions per part.")
    last_index = property(lambda self: self.buffer.last_index, doc="Latest global slots.")
    stack_num = property(lambda self: self.buffer.stack_num, doc="Frames per stacked read.")
    sample_avail = property(lambda self: self.buffer.sample_avail, doc="See ``create``.")
    ignore_obs_next = property(lambda self: self.buffer.ignore_obs_next, doc="See ``create``.")
    subbuffer_size = property(lambda self: self.buffer.subbuffer_size, doc="Slots per part.")
    buffer_num = property(lambda self: self.buffer.buffer_num, doc="Number of sub-buffers.")
    storage = property(lambda self: self.buffer.storage, doc="The time-major storage dict.")

    def _gather(self, index: jax.Array, keys: tuple[str, ...] | None = None) -> dict:
        return self.buffer._gather(index, keys)

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        return self.buffer.input_spec()

    def global_storage(self) -> dict:
        """The storage as ``[maxsize, ...]`` arrays in global-slot order (a copy)."""
        return self.buffer.global_storage()

    def check_batch(self, batch: dict, buffer_ids: Any = None) -> tuple[dict, Any]:
        """The wrapped buffer's :meth:`~jaxbuf.ReplayBuffer.check_batch`."""
        return self.buffer.check_batch(batch, buffer_ids)

    @compiled_when_eager()
    def add_rows(self, rows: dict, ids: jax.Array | None) -> tuple[Any, Any]:
        """The wrapped buffer's add of checked rows; returns this buffer around the result."""
        buffer, result = self.buffer.add_rows(rows, ids)
        return self.replace(buffer=buffer), result
