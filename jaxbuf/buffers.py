"""``ReplayBuffer`` and ``VectorReplayBuffer``: the pure-state core every other buffer composes.

A buffer is an immutable pytree (a ``flax.struct.PyTreeNode``): the storage dict, the
per-sub-buffer counters of :mod:`jaxbuf._core.episodes`, and static configuration. Every
method is a pure function that returns new values (``add`` returns a new buffer), so it runs
eagerly, under ``jax.jit``, inside ``lax.scan`` and under ``jax.vmap`` over a stack of buffers.
An eager call runs the method under ``jax.jit`` (compiled once per buffer structure and input
shapes, :mod:`jaxbuf._core.dispatch`); a traced call runs its operations directly.

Layout: ``buffer_num`` sub-buffers of ``subbuffer_size`` slots, sub-buffer ``k`` owning the
global slots ``[k*m, (k+1)*m)``, exactly as in Tianshou's ``VectorReplayBuffer``; a
``ReplayBuffer`` is the one-sub-buffer case. Every index in the API is such a global slot.
Physically the storage is time-major, ``[m, n, ...]`` with global slot ``g`` at
``[g % m, g // m]`` (see :mod:`jaxbuf._core.storage`); :meth:`ReplayBuffer.global_storage`
returns it in global-slot order.

Run-time conditions inside ``jit`` have one documented result each (use
:func:`jaxbuf.checked` to raise instead):

* indices passed to ``prev``/``next``/``get``/``[]`` are taken modulo ``maxsize``;
* sampling an empty buffer returns slot 0 for every draw;
* an ``add`` row whose ``buffer_id`` is outside ``[0, buffer_num)`` is dropped (its result
  row is ``(-1, 0, 0, -1)``);
* a ``done`` field that disagrees with ``terminated | truncated`` is ignored (``done`` is
  always derived); eagerly, with concrete values, it raises at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import episodes, sampling, stacking, storage, validate
from jaxbuf._core.checks import global_index, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.episodes import AddResult

STACKED_KEYS = ("obs", "obs_next", "info", "policy")
"""Fields that frame stacking applies to; everything else is read unstacked (E27)."""


class ReplayBuffer(struct.PyTreeNode):
    """A circular replay buffer with Tianshou's episode semantics, as a pure pytree.

    Attributes:
      storage: dict of time-major arrays ``[subbuffer_size, buffer_num, *field_shape]``
        (global slot ``g`` at ``[g % m, g // m]``); keys of the example (``obs_next``
        absent with ``ignore_obs_next``).
      counters: int32[buffer_num, 5], the packed per-sub-buffer counters
        (``insertion_idx, lengths, last_slot, ep_len, ep_start``, see
        :mod:`jaxbuf._core.episodes`), also readable one by one as properties.
      ep_return: float[buffer_num, *rew_shape], return of each unfinished episode.
      subbuffer_size, buffer_num, stack_num, ignore_obs_next, save_only_last_obs,
      sample_avail, obs_stack_len, lockstep: static configuration.
    """

    storage: dict
    counters: jax.Array
    ep_return: jax.Array
    subbuffer_size: int = struct.field(pytree_node=False)
    buffer_num: int = struct.field(pytree_node=False, default=1)
    stack_num: int = struct.field(pytree_node=False, default=1)
    ignore_obs_next: bool = struct.field(pytree_node=False, default=False)
    save_only_last_obs: bool = struct.field(pytree_node=False, default=False)
    sample_avail: bool = struct.field(pytree_node=False, default=False)
    obs_stack_len: int = struct.field(pytree_node=False, default=0)
    lockstep: bool = struct.field(pytree_node=False, default=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        example: dict,
        size: int,
        *,
        stack_num: int = 1,
        ignore_obs_next: bool = False,
        save_only_last_obs: bool = False,
        sample_avail: bool = False,
    ) -> ReplayBuffer:
        """An empty buffer of ``size`` slots for transitions shaped like ``example``.

        Args:
          example: one transition without a batch axis: a dict with the reserved keys
            ``obs, act, rew, terminated, truncated`` and optional ``obs_next``, ``info``
            (a nested pytree), ``policy`` and any extra keys. Arrays or
            ``jax.ShapeDtypeStruct``; only shapes and dtypes are used. Flags are stored as
            bool and integer rewards as float.
          size: number of slots (> 0).
          stack_num: frames per stacked read of ``obs``/``obs_next``/``info``/``policy``.
          ignore_obs_next: do not store ``obs_next``; read it as ``obs[next(i)]``.
          save_only_last_obs: ``obs`` (and ``obs_next``) arrive as frame stacks
            ``[F, ...]``; only the last frame is stored, and stacks are rebuilt on read.
          sample_avail: with ``stack_num > 1``, only sample indices whose stack needs no
            padding.
        """
        return cls._create(
            example, size, 1, stack_num, ignore_obs_next, save_only_last_obs, sample_avail, False
        )

    @classmethod
    def _create(
        cls,
        example,
        total_size,
        buffer_num,
        stack_num,
        ignore_obs_next,
        save_only_last_obs,
        sample_avail,
        lockstep,
    ):
        validate.check_config(total_size, buffer_num, stack_num, lockstep)
        example = validate.check_example(example)
        m = -(-total_size // buffer_num)
        spec = storage.input_spec(example, ignore_obs_next=ignore_obs_next)
        obs_stack_len = 0
        if save_only_last_obs:
            shapes = [s.shape for s in jax.tree_util.tree_leaves(spec["obs"])]
            if any(len(s) == 0 for s in shapes):
                raise ValueError(
                    "jaxbuf: save_only_last_obs needs 'obs' with a leading frame axis, "
                    f"got shape(s) {shapes}"
                )
            obs_stack_len = shapes[0][0]
        stored = storage.stored_spec(spec, save_only_last_obs=save_only_last_obs)
        rew = stored["rew"]
        counters, ep_return = episodes.pack(
            episodes.init_counters(buffer_num, rew.shape, rew.dtype)
        )
        return cls(
            storage=storage.allocate(stored, m, buffer_num),
            counters=counters,
            ep_return=ep_return,
            subbuffer_size=m,
            buffer_num=buffer_num,
            stack_num=stack_num,
            ignore_obs_next=ignore_obs_next,
            save_only_last_obs=save_only_last_obs,
            sample_avail=sample_avail,
            obs_stack_len=obs_stack_len,
            lockstep=bool(lockstep),
        )

    # ------------------------------------------------------------------ sizes
    @property
    def maxsize(self) -> int:
        """Total number of slots (static): ``buffer_num * subbuffer_size``."""
        return self.buffer_num * self.subbuffer_size

    @property
    def size(self) -> jax.Array:
        """Number of stored transitions as an int32 array (traceable)."""
        return jnp.sum(self.lengths)

    def __len__(self) -> int:
        """Number of stored transitions (eager only; use ``buf.size`` under ``jit``)."""
        if isinstance(self.lengths, jax.core.Tracer):
            raise TypeError("jaxbuf: len(buf) is eager only; use buf.size inside jit")
        return int(np.sum(np.asarray(self.lengths)))

    @property
    def subbuffer_edges(self) -> np.ndarray:
        """Tianshou's ``subbuffer_edges``: ``[0, m, 2m, ..., maxsize]``."""
        return np.arange(self.buffer_num + 1) * self.subbuffer_size

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        spec = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape[2:], x.dtype), self.storage
        )
        if self.save_only_last_obs:
            for key in ("obs", "obs_next"):
                if key in spec:
                    spec[key] = jax.tree_util.tree_map(
                        lambda s: jax.ShapeDtypeStruct((self.obs_stack_len, *s.shape), s.dtype),
                        spec[key],
                    )
        return spec

    # ------------------------------------------------------------------ counters
    @property
    def insertion_idx(self) -> jax.Array:
        """int32[buffer_num]: local slot of each sub-buffer's next write."""
        return self.counters[:, 0]

    @property
    def lengths(self) -> jax.Array:
        """int32[buffer_num]: stored transitions per sub-buffer."""
        return self.counters[:, 1]

    @property
    def last_index(self) -> jax.Array:
        """int32[buffer_num]: global slot of each sub-buffer's latest write (``k*m`` if empty)."""
        return (
            jnp.arange(self.buffer_num, dtype=jnp.int32) * self.subbuffer_size
            + (self.counters[:, 2])
        )

    @property
    def ep_len(self) -> jax.Array:
        """int32[buffer_num]: length of each sub-buffer's unfinished episode."""
        return self.counters[:, 3]

    @property
    def ep_start(self) -> jax.Array:
        """int32[buffer_num]: local start slot of each sub-buffer's unfinished episode."""
        return self.counters[:, 4]

    def episode_counters(self) -> episodes.Counters:
        """The per-sub-buffer counters, unpacked (``last_slot`` local)."""
        return episodes.unpack(self.counters, self.ep_return)

    def with_counters(self, counters: episodes.Counters) -> ReplayBuffer:
        """This buffer with the counters replaced (packed back into the state)."""
        packed, ep_return = episodes.pack(counters)
        return self.replace(counters=packed, ep_return=ep_return.astype(self.ep_return.dtype))

    def global_storage(self) -> dict:
        """The storage as ``[maxsize, *field_shape]`` arrays in global-slot order (a copy).

        ``buf.global_storage()[key][g]`` is field ``key`` of global slot ``g`` (Tianshou's
        ``buf._meta``); for inspection and export, jittable.
        """
        return storage.to_global_order(self.storage)

    def with_global_storage(self, arrays: dict) -> ReplayBuffer:
        """This buffer with its storage replaced by ``[maxsize, ...]`` arrays in slot order.

        The inverse of :meth:`global_storage` (for imports); ``arrays`` must have the
        storage's keys, and each leaf ``maxsize`` rows of the stored shape and dtype.
        """
        validate.check_same_layout(arrays, jax.eval_shape(self.global_storage))
        return self.replace(
            storage=storage.from_global_order(arrays, self.subbuffer_size, self.buffer_num)
        )

    def read(self, index: chex.Array) -> dict:
        """The stored fields at global slots ``index`` (any shape), unstacked, no ``done``."""
        return storage.gather(self.storage, self._index(index))

    def write(self, slots: chex.Array, rows: dict, *, unique: bool = False) -> ReplayBuffer:
        """This buffer with stored ``rows`` (leading axis k) written at global ``slots``.

        Low level (no counter update): for composed buffers that plan their own writes. A
        slot ``>= maxsize`` drops its row; ``rows`` are already in the stored form
        (``storage.to_stored``). ``unique`` promises distinct slots.
        """
        return self.replace(storage=storage.write(self.storage, slots, rows, unique=unique))

    # ------------------------------------------------------------------ add
    def add(self, batch: dict, buffer_ids: chex.Array | None = None) -> tuple[Any, AddResult]:
        """Write transitions; return the new buffer and per-row episode statistics.

        Args:
          batch: dict shaped like the example. With a leading axis of k rows: k equals
            ``buffer_num`` when ``buffer_ids`` is None, else row j goes to sub-buffer
            ``buffer_ids[j]`` (duplicates write consecutive slots, in row order). A plain
            ``ReplayBuffer`` also takes one transition without the leading axis. A ``done``
            key is accepted only if it equals ``terminated | truncated``.
          buffer_ids: int[k] sub-buffer per row, or None.
        Returns:
          ``(buffer, AddResult)``; see :class:`jaxbuf.AddResult` (each field has a leading
          axis of k). Episode return and length are zero unless the row ends its episode.

        With one row per sub-buffer in lock step (a ``lockstep`` buffer, or a plain
        ``ReplayBuffer`` with ``buffer_ids=None``) the rows are one contiguous block of the
        time-major storage and are written with ``dynamic_update_slice``; otherwise with a
        scatter. Both are in place when the state is donated or carried by ``lax.scan``.
        """
        rows, ids = self.check_batch(batch, buffer_ids)
        return self.add_rows(rows, ids)

    @compiled_when_eager()
    def add_rows(self, rows: dict, ids: jax.Array | None) -> tuple[Any, AddResult]:
        """:meth:`add` on rows already checked by :meth:`check_batch` (for composed buffers)."""
        done = rows["terminated"] | rows["truncated"]
        slots, result, counters = episodes.plan_add(
            self.episode_counters(), self.subbuffer_size, ids, rows["rew"], done
        )
        stored = storage.to_stored(rows, save_only_last_obs=self.save_only_last_obs)
        if ids is None and (self.lockstep or self.buffer_num == 1):
            head = self.counters[:, 0]
            runtime_check(
                jnp.all(head == head[0]),
                "jaxbuf: lockstep buffer whose sub-buffers are at different insertion slots",
            )
            new = self.replace(storage=storage.write_block(self.storage, head[0], stored))
        else:
            new = self.write(slots, stored, unique=ids is None)
        return new.with_counters(counters), result

    def check_batch(self, batch: dict, buffer_ids=None) -> tuple[dict, jax.Array | None]:
        """Validate an ``add`` batch; return its rows with a leading axis and the checked ids.

        Raises at trace time, naming the field, on a missing or extra key, or a shape/dtype
        that does not match :meth:`input_spec`; used by ``add`` and by composed buffers.
        """
        if not isinstance(batch, dict):
            raise TypeError(f"jaxbuf: add expects a dict batch, got {type(batch).__name__}")
        batch = dict(batch)
        if self.ignore_obs_next:
            batch.pop("obs_next", None)
        done = batch.pop("done", None)
        spec = self.input_spec()
        act = batch.get("act")
        act_ndim = np.ndim(act) if act is not None else None
        single = act_ndim == len(spec["act"].shape) and "act" in batch
        if single:
            if self.buffer_num != 1 or buffer_ids is not None:
                raise ValueError(
                    "jaxbuf: a batch without a leading axis is only accepted by a plain "
                    "ReplayBuffer with buffer_ids=None; field 'act' expected shape "
                    f"(k, *{spec['act'].shape}), got {np.shape(act)}"
                )
        k = 1 if single else (np.shape(act)[0] if np.ndim(act) > 0 else 1)
        if buffer_ids is None and not single and k != self.buffer_num:
            raise ValueError(
                f"jaxbuf: with buffer_ids=None the batch needs buffer_num={self.buffer_num} "
                f"rows, field 'act' has {k}"
            )
        rows = validate.flatten_checked(batch, spec, () if single else (k,))
        if single:
            rows = jax.tree_util.tree_map(lambda x: x[None], rows)
            done = None if done is None else jnp.asarray(done)[None]
        if done is not None:
            self._check_done(done, rows, k)
        ids = None
        if buffer_ids is not None and self.lockstep:
            raise ValueError(
                "jaxbuf: a lockstep buffer takes one row per sub-buffer in order; call add "
                "with buffer_ids=None (create the buffer with lockstep=False to route rows)"
            )
        if buffer_ids is not None:
            ids = validate.as_dtype(buffer_ids, None)
            if ids.shape != (k,) or not jnp.issubdtype(ids.dtype, jnp.integer):
                raise ValueError(
                    f"jaxbuf: buffer_ids expected an int array of shape ({k},), got shape "
                    f"{ids.shape} dtype {ids.dtype}"
                )
            ids = validate.as_dtype(ids, jnp.int32)
            if isinstance(ids, jax.core.Tracer):
                runtime_check(
                    jnp.all((ids >= 0) & (ids < self.buffer_num)),
                    f"jaxbuf: buffer_ids out of range [0, {self.buffer_num})",
                )
            elif self.buffer_num == 1 and np.any(np.asarray(ids) != 0):
                raise ValueError(
                    f"jaxbuf: a ReplayBuffer only has buffer id 0, got {np.asarray(ids)}"
                )
        return rows, ids

    @staticmethod
    def _check_done(done, rows, k) -> None:
        derived = rows["terminated"] | rows["truncated"]
        validate.check_leaf("done", done, (k,), jnp.dtype(bool))
        done = jnp.asarray(done, bool)
        if isinstance(done, jax.core.Tracer) or isinstance(derived, jax.core.Tracer):
            runtime_check(
                jnp.all(done == derived),
                "jaxbuf: field 'done' disagrees with terminated | truncated",
            )
        elif not bool(jnp.all(done == derived)):
            raise ValueError(
                "jaxbuf: field 'done' disagrees with terminated | truncated "
                f"(done={np.asarray(done)}, derived={np.asarray(derived)}); "
                "done is always derived, pass terminated and truncated"
            )

    # ------------------------------------------------------------------ episode links
    def _done_at(self, index: jax.Array) -> jax.Array:
        flags = storage.gather(
            {"terminated": self.storage["terminated"], "truncated": self.storage["truncated"]},
            index,
        )
        return flags["terminated"] | flags["truncated"]

    def _index(self, index) -> jax.Array:
        return global_index(index, self.maxsize)

    @compiled_when_eager()
    def prev(self, index: chex.Array) -> jax.Array:
        """Previous slot of the same episode; ``index`` itself at an episode start.

        A slot is an episode start when the slot before it is done, or is the write head
        (so the oldest slot of a full buffer is a start). Never crosses sub-buffers.
        Shape and int32 dtype follow ``index``.
        """
        return episodes.prev(
            self._index(index),
            self._done_at,
            self.lengths,
            self.counters[:, 2],
            self.subbuffer_size,
            self.buffer_num,
        )

    @compiled_when_eager()
    def next(self, index: chex.Array) -> jax.Array:
        """Next slot of the same episode; ``index`` itself at an episode end (done or head)."""
        return episodes.next_(
            self._index(index),
            self._done_at,
            self.lengths,
            self.counters[:, 2],
            self.subbuffer_size,
            self.buffer_num,
        )

    @compiled_when_eager()
    def is_episode_end(self, index: chex.Array) -> jax.Array:
        """bool: the slot is done, or is the latest write of its sub-buffer (unfinished head)."""
        i, k = episodes.locate(self._index(index), self.subbuffer_size, self.buffer_num)
        return self._done_at(i) | (i == self.last_index[k])

    @compiled_when_eager()
    def is_unfinished(self, index: chex.Array) -> jax.Array:
        """bool: the slot is the latest write of a non-empty sub-buffer and is not done."""
        i, k = episodes.locate(self._index(index), self.subbuffer_size, self.buffer_num)
        return (i == self.last_index[k]) & (self.lengths[k] > 0) & ~self._done_at(i)

    @compiled_when_eager()
    def unfinished_index(self) -> jax.Array:
        """int32[buffer_num]: the head of each sub-buffer's unfinished episode, or -1."""
        open_ = (self.lengths > 0) & ~self._done_at(self.last_index)
        return jnp.where(open_, self.last_index, -1).astype(jnp.int32)

    def unfinished_index_compact(self) -> np.ndarray:
        """Tianshou's variable-length ``unfinished_index()`` (eager): the heads that exist."""
        u = np.asarray(self.unfinished_index())
        return u[u >= 0].astype(np.int64)

    @compiled_when_eager()
    def all_indices(self) -> tuple[jax.Array, jax.Array]:
        """Every sampleable slot in chronological order: ``(int32[maxsize], bool[maxsize])``.

        The order of Tianshou's ``sample_indices(0)``: each sub-buffer oldest to newest,
        sub-buffers in order, valid entries first and padded with -1 (mask false). With
        ``sample_avail`` and ``stack_num > 1`` only available slots are valid.
        """
        idx, mask = episodes.chronological(self.insertion_idx, self.lengths, self.subbuffer_size)
        if self.sample_avail and self.stack_num > 1:
            avail = self._avail_mask()
            keep = mask & avail[jnp.maximum(idx, 0)]
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
        return episodes.physical_valid(self.lengths, self.subbuffer_size)

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
        if self.sample_avail and self.stack_num > 1:
            return sampling.from_mask(key, batch_size, self._avail_mask())
        return sampling.uniform(key, batch_size, self.lengths, self.subbuffer_size)

    @compiled_when_eager(("batch_size",))
    def sample(self, key: chex.PRNGKey, batch_size: int) -> tuple[dict, jax.Array]:
        """``(buf[indices], indices)`` for ``indices = sample_indices(key, batch_size)``."""
        indices = self.sample_indices(key, batch_size)
        return self[indices], indices

    @compiled_when_eager(("batch_size",))
    def epoch_indices(self, key: chex.PRNGKey, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """Every stored transition exactly once, shuffled, in minibatches (jittable).

        Returns ``(indices, mask)`` shaped ``[ceil(maxsize / batch_size), batch_size]``;
        stored slots come first in random order, padding is -1 with mask false. Scan over
        the first axis for one epoch of minibatch updates without replacement.
        """
        if batch_size < 1:
            raise ValueError(f"jaxbuf: batch_size must be >= 1, got {batch_size}")
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
            raise ValueError(f"jaxbuf: split size must be -1 or >= 1, got {size}")
        if shuffle:
            if key is None:
                raise ValueError("jaxbuf: split(shuffle=True) needs a PRNG key")
            idx = idx[np.asarray(jax.random.permutation(key, len(idx)))]
        size = len(idx) if size == -1 else size
        starts = list(range(0, len(idx), max(size, 1)))
        if merge_last and len(starts) > 1 and len(idx) % size:
            starts.pop()
        for j, s in enumerate(starts):
            e = starts[j + 1] if j + 1 < len(starts) else len(idx)
            chunk = idx[s:e]
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
        return self[idx], idx, mask

    # ------------------------------------------------------------------ reading
    @compiled_when_eager(("key", "stack_num"))
    def get(self, index: chex.Array, key: str, stack_num: int | None = None) -> Any:
        """Field ``key`` at ``index``, stacked over ``stack_num`` frames (default: the buffer's).

        With ``K > 1`` the output has shape ``[*index.shape, K, ...]``, frames oldest first,
        padded by repeating an episode's first frame.
        """
        if key not in self.storage:
            raise KeyError(f"jaxbuf: no field '{key}'; fields are {sorted(self.storage)}")
        k = self.stack_num if stack_num is None else stack_num
        if k < 1:
            raise ValueError(f"jaxbuf: stack_num must be >= 1, got {k}")
        index = self._index(index)
        return stacking.stacked_gather(self.storage[key], index, self, k)

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
        """``buf[index]`` for an int or int array ``index``."""
        index = self._index(index)
        out = {}
        for key, value in self.storage.items():
            k = self.stack_num if key in STACKED_KEYS else 1
            out[key] = stacking.stacked_gather(value, index, self, k)
        out["done"] = out["terminated"] | out["truncated"]
        if self.ignore_obs_next:
            out["obs_next"] = stacking.stacked_gather(
                self.storage["obs"], self.next(index), self, self.stack_num
            )
        return out


class VectorReplayBuffer(ReplayBuffer):
    """``buffer_num`` sub-buffers of ``ceil(total_size / buffer_num)`` slots, one per env.

    Same state and methods as :class:`ReplayBuffer`; ``add`` always takes a leading axis of
    rows. Episodes never cross sub-buffers.
    """

    @classmethod
    def create(
        cls,
        example: dict,
        total_size: int,
        buffer_num: int,
        *,
        stack_num: int = 1,
        ignore_obs_next: bool = False,
        save_only_last_obs: bool = False,
        sample_avail: bool = False,
        lockstep: bool = False,
    ) -> VectorReplayBuffer:
        """An empty vector buffer; see :meth:`ReplayBuffer.create` for the other options.

        Args:
          lockstep: promise that every ``add`` carries one row per sub-buffer
            (``buffer_ids=None``), as with ``buffer_num`` environments stepped together
            (``vmap``). The sub-buffers then share one insertion slot and an add writes one
            contiguous block (``dynamic_update_slice`` instead of a scatter; 10-15 % faster
            in a scan, benchmarks/README.md). ``add`` with ``buffer_ids`` raises at trace
            time; a state whose insertion slots differ (possible only through
            ``with_counters``) is reported by :func:`jaxbuf.checked`.
        """
        return cls._create(
            example,
            total_size,
            buffer_num,
            stack_num,
            ignore_obs_next,
            save_only_last_obs,
            sample_avail,
            lockstep,
        )
