"""``Buffer``: the complete read API, written once for every buffer kind.

Every buffer class derives from :class:`Buffer` and supplies a handful of primitives: its
:class:`~jaxbuf._core.layout.Layout` (how the global slots are cut into sub-buffers), the
per-sub-buffer counters ``insertion_idx``/``lengths``/``last_index``, a raw gather of the
stored fields (:meth:`Buffer._gather`), the static options ``stack_num``, ``sample_avail``
and ``ignore_obs_next``, and the two halves of an add (:meth:`Buffer.check_batch`, which
validates at trace time, and :meth:`Buffer.add_rows`, the pure update). Everything else —
episode links, stacking, indices, sampling, reading, ``len`` — follows from those here, so a
variant (prioritized, HER, cached) overrides only what it changes.

:class:`jaxbuf._core.wrapper.Wrapper` builds on it for the buffers that wrap a core buffer.

Run-time conditions inside ``jit`` have one documented result each (use
:func:`jaxbuf.checked` to raise instead): indices are taken modulo ``maxsize``; sampling an
empty buffer returns slot 0 for every draw.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import extend as bulk
from jaxbuf._core import layout as links
from jaxbuf._core import sampling, sequences, stacking
from jaxbuf._core.checks import global_index, is_traced, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.tianshou_api import TianshouAPI
from jaxbuf._core.validate import check_key, size_option
from jaxbuf.errors import FieldError, InputError, message

STACKED_KEYS = ("obs", "obs_next", "info", "policy")
"""Fields that frame stacking applies to; every other field is read unstacked, as Tianshou."""

_FLAGS = ("terminated", "truncated")

DERIVED_KEYS = ("done", "obs_next")
"""Fields a read derives when they are not stored: ``done`` always, ``obs_next`` with
``ignore_obs_next`` (the ``obs`` of the next step)."""

SAMPLING = ("sample_indices", "sample", "sample_sequences", "sample_episodes", "epoch_indices")
"""Methods taking ``(key, batch_size, ...)``; their arguments are checked once, here, for
every class (see :func:`sampling_entry`), overrides in subclasses included."""


def sampling_entry(method: Callable) -> Callable:
    """Check the arguments of a sampling method before it runs (eager and at trace time).

    The first argument must be a PRNG key and ``batch_size`` (and ``length``) Python ints
    >= 1, and the buffer must not be a stack of buffers; each violation raises
    :class:`~jaxbuf.errors.InputError` naming the method.
    """
    if getattr(method, "_sampling_entry", False):
        return method
    sig = inspect.signature(method)
    where = method.__name__
    sizes = [p for p in ("batch_size", "length") if p in sig.parameters]

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as err:
            raise InputError(
                message(
                    where,
                    f"takes (key, {', '.join(sizes)}) with a JAX PRNG key first ({err}); "
                    f"Tianshou's buf.{where}(32) is buf.{where}(jax.random.key(seed), 32)",
                )
            ) from None
        self._require_unstacked(where)
        check_key(where, bound.arguments["key"])
        for name in sizes:
            size_option(where, name, bound.arguments[name])
        return method(self, *args, **kwargs)

    wrapper._sampling_entry = True
    return wrapper


class Buffer(TianshouAPI, struct.PyTreeNode, repr=False):
    """The read API shared by every buffer class (abstract: see the module docstring).

    Subclasses define ``layout``, ``insertion_idx``, ``lengths``, ``last_index``,
    ``_gather``, ``input_spec``, ``global_storage``, ``check_batch``, ``add_rows``,
    ``_stack_shape``, ``_reset`` and the static options ``stack_num``, ``sample_avail``,
    ``ignore_obs_next``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.setdefault("repr", False)  # keep the short __repr__ of TianshouAPI
        super().__init_subclass__(**kwargs)
        for name in SAMPLING:
            if name in cls.__dict__:
                setattr(cls, name, sampling_entry(cls.__dict__[name]))

    # ------------------------------------------------------------------ stacks
    def _require_unstacked(self, where: str) -> None:
        """Raise unless this is one buffer (not a stack made by ``jax.vmap`` over ``create``).

        Inside ``jax.vmap`` each member is a plain buffer, so every method works there; a
        stack used outside it would mix its members into one wrong answer.
        """
        lead = self._stack_shape
        if lead:
            raise InputError(
                message(
                    where,
                    f"this {type(self).__name__} is a stack of {int(np.prod(lead))} buffers "
                    f"(every leaf has the leading stack axis of shape {lead}, as made by "
                    "jax.vmap over create); call its methods per member inside jax.vmap, e.g. "
                    "jax.vmap(lambda b: b.size)(bufs) or jax.vmap(lambda b, k: b.sample(k, "
                    "32))(bufs, keys)",
                )
            )

    # ------------------------------------------------------------------ sizes
    @property
    def maxsize(self) -> int:
        """Total number of slots (static)."""
        return self.layout.maxsize

    @property
    def size(self) -> jax.Array:
        """Number of stored transitions as an int32 array (traceable)."""
        self._require_unstacked("size")
        return jnp.sum(self.lengths)

    def __len__(self) -> int:
        """Number of stored transitions (eager only; use ``buf.size`` under ``jit``)."""
        self._require_unstacked("len")
        if is_traced(self.lengths):
            raise InputError("jaxbuf: len(buf) is eager only; use buf.size inside jit")
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
        self._require_unstacked("indexing")
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
    @sampling_entry
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

    @sampling_entry
    @compiled_when_eager(("batch_size",))
    def sample(self, key: chex.PRNGKey, batch_size: int) -> tuple[dict, jax.Array]:
        """``(buf[indices], indices)`` for ``indices = sample_indices(key, batch_size)``."""
        indices = self.sample_indices(key, batch_size)
        return self._read(indices), indices

    @sampling_entry
    @compiled_when_eager(("batch_size",))
    def epoch_indices(self, key: chex.PRNGKey, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """Every stored transition exactly once, shuffled, in minibatches (jittable).

        Returns ``(indices, mask)`` shaped ``[ceil(maxsize / batch_size), batch_size]``;
        stored slots come first in random order, padding is -1 with mask false. Scan over
        the first axis for one epoch of minibatch updates without replacement.
        """
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

    @sampling_entry
    def sample_sequences(
        self,
        key: chex.PRNGKey,
        batch_size: int,
        length: int,
        *,
        burn_in: int = 0,
        full_only: bool = False,
        period: int = 1,
        tries: int = sequences.DEFAULT_TRIES,
    ) -> sequences.Sequences:
        """Windows of ``length`` consecutive steps that never cross an episode end or the head.

        Without ``full_only`` and ``period``, starts are drawn like :meth:`sample_indices` and
        a window is cut (mask false) after the step that ends its episode. ``full_only``
        keeps only starts whose whole window lies inside one stored episode; ``period`` keeps
        only starts whose offset from their episode's first step is a multiple of
        ``period`` (``period=length``: disjoint windows). With either, each row draws
        ``tries`` uniform candidate starts and keeps the first that qualifies: given success
        the start is exactly uniform over the qualifying starts; a row where every try fails
        has ``found`` false, its mask all false and weight 0 (:func:`jaxbuf.checked` raises
        when no row of the batch found one). ``burn_in`` steps are the first of the
        ``length`` (marked by the ``burn_in`` mask). Cost ``O(batch_size * tries * length)``
        (``period > 1`` adds a walk back to the episode start), never ``O(maxsize)``. A
        prioritized buffer draws windows by priority (its ``priority`` option: summed step
        priorities, or the priority stored at the window's start) and sets ``weight`` to
        their importance weight (see docs/sequences.md).

        Returns:
          a :class:`jaxbuf._core.sequences.Sequences`, which unpacks as
          ``batch, indices, mask`` (fields ``[B, length, ...]``) and also carries
          ``burn_in``, ``found`` and ``weight``.
        Raises:
          InputError: at trace time, for a ``length`` larger than every sub-buffer, a
            ``burn_in >= length`` or a non-positive size, period or tries.
        """
        sequences.check_args(self, "sample_sequences", batch_size, length, burn_in, period, tries)
        return self._sample_sequences(
            key, batch_size, length, burn_in, bool(full_only), period, tries
        )

    @compiled_when_eager(("batch_size", "length", "burn_in", "full_only", "period", "tries"))
    def _sample_sequences(
        self, key, batch_size, length, burn_in, full_only, period, tries
    ) -> sequences.Sequences:
        return sequences.sample(self, key, batch_size, length, burn_in, full_only, period, tries)

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
        padded by repeating an episode's first frame. The derived fields read as in
        ``buf[index]``: ``done`` (``terminated | truncated``) and, with ``ignore_obs_next``,
        ``obs_next`` (the ``obs`` of :meth:`next`).
        """
        fields = self.fields()
        derived = ["done"] + (["obs_next"] if self.ignore_obs_next else [])
        if key not in fields and key not in derived:
            raise FieldError(
                message("get", f"no field '{key}'; fields are {sorted(fields + tuple(derived))}")
            )
        k = self.stack_num if stack_num is None else stack_num
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InputError(message("get", f"stack_num must be an int >= 1, got {k!r}"))
        index = self._index(index)
        if key == "done":
            flags = self._gather(self._frames(index, int(k)), _FLAGS)
            return flags["terminated"] | flags["truncated"]
        if key == "obs_next" and self.ignore_obs_next:
            return self._gather(self._frames(self.next(index), int(k)), ("obs",))["obs"]
        return self._gather(self._frames(index, int(k)), (key,))[key]

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
        return bulk.extend(self, rows, buffer_ids)

    # ------------------------------------------------------------------ episodes
    @sampling_entry
    def sample_episodes(
        self, key: chex.PRNGKey, batch_size: int, max_length: int
    ) -> sequences.Episodes:
        """Whole stored episodes, left-aligned and padded to ``max_length`` (mask false).

        Each stored episode is drawn with probability proportional to its stored length (a
        uniform step, then its episode); an unfinished episode counts up to the write head.
        An episode longer than ``max_length`` gives ``max_length`` of its steps (``whole``
        false): see :func:`jaxbuf._core.sequences.episodes` for the exact rule. Cost
        ``O(batch_size * max_length)``. An empty buffer gives all-false masks
        (:func:`jaxbuf.checked` raises).

        Returns:
          a :class:`jaxbuf._core.sequences.Episodes` (unpacks as ``batch, indices, mask``).
        """
        sequences.check_args(self, "sample_episodes", batch_size, max_length, name="max_length")
        return self._sample_episodes(key, batch_size, max_length)

    @compiled_when_eager(("batch_size", "max_length"))
    def _sample_episodes(self, key, batch_size, max_length) -> sequences.Episodes:
        return sequences.episodes(self, key, batch_size, max_length)
