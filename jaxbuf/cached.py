"""``CachedReplayBuffer``: per-env caches that move finished episodes into a main buffer.

Tianshou's ``CachedReplayBuffer`` (tianshou-semantics.md section 9.2) as a pure pytree,
built by composition over the core: a ``ReplayBuffer`` of ``main_size`` slots (``main``) and a
``VectorReplayBuffer`` of ``cached_buffer_num`` caches of ``max_episode_length`` slots
(``caches``). Global indices follow Tianshou's layout::

    | main (M) | cache_0 (L) | cache_1 (L) | ... | cache_{K-1} (L) |

so slot ``i < M`` is main slot ``i`` and slot ``M + e*L + j`` is slot ``j`` of cache ``e``.
Steps of an unfinished episode live in their env's cache; when a row ends the episode, the
episode is appended to main in one piece, so episodes in main are contiguous even when many
envs write at once. Episodes never span main and a cache, so ``prev``/``next``/stacking are
those of the part an index falls in.

An episode longer than ``max_episode_length`` wraps inside its cache, so only its last
``max_episode_length`` steps reach main (as in Tianshou, E28); unlike Tianshou this is not
silent: the add result reports the number of dropped steps in ``episode_dropped``.

Run-time conditions under ``jit`` (use :func:`jaxbuf.checked` to raise instead): indices are
taken modulo ``maxsize``; a row with a buffer id outside ``[0, cached_buffer_num)`` is
dropped (result row ``(-1, 0, 0, -1, 0)``); sampling an empty buffer returns slot 0.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from jaxbuf._core import cache_plan as _cache_moves
from jaxbuf._core import sampling, storage
from jaxbuf._core.cache_plan import CachedAddResult
from jaxbuf._core.checks import global_index, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf.buffers import ReplayBuffer, VectorReplayBuffer


class CachedReplayBuffer(struct.PyTreeNode):
    """A main buffer fed with whole episodes from per-env caches (Tianshou's layout).

    Attributes:
      main: core ``ReplayBuffer`` of ``main_size`` slots holding finished episodes.
      caches: core ``VectorReplayBuffer`` with one sub-buffer of ``max_episode_length``
        slots per env, each holding its env's unfinished episode from slot 0.
    """

    main: ReplayBuffer
    caches: VectorReplayBuffer

    @classmethod
    def create(
        cls,
        example: dict,
        main_size: int,
        cached_buffer_num: int,
        max_episode_length: int,
        *,
        stack_num: int = 1,
        ignore_obs_next: bool = False,
        save_only_last_obs: bool = False,
        sample_avail: bool = False,
    ) -> CachedReplayBuffer:
        """An empty cached buffer.

        Args:
          example: one transition without a batch axis (see ``ReplayBuffer.create``).
          main_size: slots of the main buffer (> 0).
          cached_buffer_num: number of caches, one per env (> 0).
          max_episode_length: slots per cache (> 0); longer episodes lose their first steps
            and the add result says how many (``episode_dropped``).
          stack_num, ignore_obs_next, save_only_last_obs, sample_avail: core options, applied
            to main and caches alike.
        """
        for name, value in (
            ("main_size", main_size),
            ("cached_buffer_num", cached_buffer_num),
            ("max_episode_length", max_episode_length),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"jaxbuf: {name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"jaxbuf: {name} must be >= 1, got {value}")
        opts = dict(
            stack_num=stack_num,
            ignore_obs_next=ignore_obs_next,
            save_only_last_obs=save_only_last_obs,
            sample_avail=sample_avail,
        )
        main = ReplayBuffer.create(example, main_size, **opts)
        caches = VectorReplayBuffer.create(
            example, cached_buffer_num * max_episode_length, cached_buffer_num, **opts
        )
        return cls(main=main, caches=caches)

    # ------------------------------------------------------------------ sizes and layout
    @property
    def main_size(self) -> int:
        """``M``, slots of the main buffer (static)."""
        return self.main.maxsize

    @property
    def cached_buffer_num(self) -> int:
        """``K``, number of caches (static)."""
        return self.caches.buffer_num

    @property
    def max_episode_length(self) -> int:
        """``L``, slots per cache (static)."""
        return self.caches.subbuffer_size

    @property
    def maxsize(self) -> int:
        """Total slots ``M + K*L`` (static)."""
        return self.main_size + self.caches.maxsize

    @property
    def subbuffer_edges(self) -> np.ndarray:
        """``[0, M, M+L, ..., M+K*L]``: main first, then the caches."""
        return np.concatenate([[0], self.main_size + self.caches.subbuffer_edges])

    @property
    def lengths(self) -> jax.Array:
        """int32[1+K]: stored transitions in main, then in each cache."""
        return jnp.concatenate([self.main.lengths, self.caches.lengths])

    @property
    def last_index(self) -> jax.Array:
        """int32[1+K]: global slot of the latest write of main, then of each cache."""
        return jnp.concatenate([self.main.last_index, self.caches.last_index + self.main_size])

    @property
    def size(self) -> jax.Array:
        """Number of stored transitions, main and caches (traceable int32)."""
        return self.main.size + self.caches.size

    def __len__(self) -> int:
        """Number of stored transitions (eager only; use ``buf.size`` inside ``jit``)."""
        return len(self.main) + len(self.caches)

    @property
    def storage(self) -> dict:
        """The storage in global-slot order, ``[maxsize, ...]`` (a concatenated copy)."""
        return jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a, b]),
            self.main.global_storage(),
            self.caches.global_storage(),
        )

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        return self.caches.input_spec()

    # ------------------------------------------------------------------ add
    def add(
        self, batch: dict, buffer_ids: chex.Array | None = None
    ) -> tuple[CachedReplayBuffer, CachedAddResult]:
        """Write rows to their caches; move every episode that ends into main.

        Rows are applied in row order (a duplicate id writes consecutive steps of that env).
        A row that ends its episode moves the episode's stored steps (at most
        ``max_episode_length``) to main, after the episodes moved by earlier rows, and resets
        its cache. Under ``jit`` each move is a gather and a scatter of ``max_episode_length``
        masked rows per row of the batch (static shapes).

        Args:
          batch: dict shaped like the example with a leading axis of k rows (k must equal
            ``cached_buffer_num`` when ``buffer_ids`` is None).
          buffer_ids: int[k] cache of each row (Tianshou's numbering, 0..K-1), or None.
        Returns:
          ``(buffer, CachedAddResult)`` with Tianshou's convention: a row that ends an
          episode reports the last (``index``) and first (``episode_start``) main slots
          written.
        """
        rows, ids = self.caches.check_batch(batch, buffer_ids)
        return self._add_rows(rows, ids)

    @compiled_when_eager()
    def _add_rows(
        self, rows: dict, ids: jax.Array | None
    ) -> tuple[CachedReplayBuffer, CachedAddResult]:
        """The body of :meth:`add` on rows checked by ``check_batch``."""
        done = rows["terminated"] | rows["truncated"]
        c = self.caches.episode_counters()
        main_c = self.main.episode_counters()
        head = _cache_moves.MainHead(main_c.insertion_idx, main_c.lengths, main_c.last_slot)
        plan = _cache_moves.plan_add(
            c, self.max_episode_length, ids, rows["rew"], done, head, self.main_size
        )
        stored = storage.to_stored(rows, save_only_last_obs=self.caches.save_only_last_obs)

        def window(old, new):
            sel = plan.from_cache.reshape(plan.from_cache.shape + (1,) * (old.ndim - 2))
            moved = jnp.where(sel, old, new[plan.src_row])
            return moved.reshape((-1, *old.shape[2:]))

        def move(main):
            from_caches = storage.gather(self.caches.storage, plan.src_cache)
            moved = jax.tree_util.tree_map(window, from_caches, stored)
            return main.write(plan.main_slots.reshape(-1), moved)

        # Most adds end no episode: skip the k*L-row gather/scatter then (under vmap the
        # cond becomes a select and both sides run).
        any_moved = jnp.any(plan.result.episode_length > 0)
        main = lax.cond(any_moved, move, lambda b: b, self.main)
        main = main.with_counters(main_c._replace(**plan.main._asdict()))
        caches = self.caches.write(plan.cache_slots, stored).with_counters(plan.caches)
        return self.replace(main=main, caches=caches), plan.result

    # ------------------------------------------------------------------ global indices
    def _split(self, index) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(in_main, main_index, cache_index)`` for global indices (taken modulo maxsize)."""
        index = global_index(index, self.maxsize)
        in_main = index < self.main_size
        return (
            in_main,
            jnp.where(in_main, index, 0),
            jnp.where(in_main, 0, index - self.main_size),
        )

    def _select(self, in_main, from_main, from_caches):
        return jax.tree_util.tree_map(
            lambda a, b: jnp.where(
                in_main.reshape(in_main.shape + (1,) * (a.ndim - in_main.ndim)), a, b
            ),
            from_main,
            from_caches,
        )

    @compiled_when_eager()
    def prev(self, index: chex.Array) -> jax.Array:
        """Previous slot of the same episode (``index`` itself at an episode start)."""
        in_main, mi, ci = self._split(index)
        return jnp.where(in_main, self.main.prev(mi), self.caches.prev(ci) + self.main_size)

    @compiled_when_eager()
    def next(self, index: chex.Array) -> jax.Array:
        """Next slot of the same episode (``index`` itself at an episode end)."""
        in_main, mi, ci = self._split(index)
        return jnp.where(in_main, self.main.next(mi), self.caches.next(ci) + self.main_size)

    @compiled_when_eager()
    def is_episode_end(self, index: chex.Array) -> jax.Array:
        """bool: the slot is done, or is the latest write of its part (main or a cache)."""
        in_main, mi, ci = self._split(index)
        return jnp.where(in_main, self.main.is_episode_end(mi), self.caches.is_episode_end(ci))

    @compiled_when_eager()
    def unfinished_index(self) -> jax.Array:
        """int32[1+K]: head of the unfinished episode of main, then of each cache, or -1.

        Main only receives finished episodes, so its entry is -1 in practice.
        """
        u = self.caches.unfinished_index()
        return jnp.concatenate(
            [self.main.unfinished_index(), jnp.where(u >= 0, u + self.main_size, -1)]
        ).astype(jnp.int32)

    def unfinished_index_compact(self) -> np.ndarray:
        """Tianshou's variable-length ``unfinished_index()`` (eager)."""
        u = np.asarray(self.unfinished_index())
        return u[u >= 0].astype(np.int64)

    @compiled_when_eager()
    def all_indices(self) -> tuple[jax.Array, jax.Array]:
        """Every sampleable slot, main then caches, each oldest first: ``(int32[N], bool[N])``.

        Valid entries come first, padding is -1 with mask false (``N = maxsize``).
        """
        mi, mm = self.main.all_indices()
        ci, cm = self.caches.all_indices()
        idx = jnp.concatenate([mi, jnp.where(cm, ci + self.main_size, -1)])
        mask = jnp.concatenate([mm, cm])
        order = jnp.argsort(~mask, stable=True)
        return idx[order], mask[order]

    def chronological_indices(self) -> np.ndarray:
        """Tianshou's ``sample_indices(0)`` (eager): the valid part of :meth:`all_indices`."""
        idx, mask = self.all_indices()
        return np.asarray(idx)[np.asarray(mask)].astype(np.int64)

    # ------------------------------------------------------------------ sampling
    @compiled_when_eager(("batch_size",))
    def sample_indices(self, key: chex.PRNGKey, batch_size: int) -> jax.Array:
        """int32[batch_size] uniform draws with replacement over main and caches.

        Each part is chosen with probability proportional to its length (O(batch_size));
        with ``sample_avail`` and ``stack_num > 1`` draws are uniform over available slots
        (O(maxsize)). An empty buffer, or one where no slot is available yet, gives slot 0
        for every draw (``jaxbuf.checked`` raises instead).
        """
        runtime_check(self.size > 0, "jaxbuf: sampling from an empty buffer")
        if self.caches.sample_avail and self.caches.stack_num > 1:
            idx, mask = self.all_indices()
            avail = (
                jnp.zeros((self.maxsize,), bool)
                .at[jnp.where(mask, idx, self.maxsize)]
                .set(True, mode="drop")
            )
            return sampling.from_mask(key, batch_size, avail)
        lengths = self.lengths
        starts = jnp.asarray(self.subbuffer_edges[:-1], jnp.int32)
        cum = jnp.cumsum(lengths)
        total = cum[-1]
        u = sampling.randint_below(key, (batch_size,), jnp.maximum(total, 1))
        part = jnp.minimum(sampling.sorted_position(cum, u), lengths.shape[0] - 1)
        local = u - (cum[part] - lengths[part])
        return jnp.where(total > 0, starts[part] + local, 0).astype(jnp.int32)

    @compiled_when_eager(("batch_size",))
    def sample(self, key: chex.PRNGKey, batch_size: int) -> tuple[dict, jax.Array]:
        """``(buf[indices], indices)`` for ``indices = sample_indices(key, batch_size)``."""
        indices = self.sample_indices(key, batch_size)
        return self[indices], indices

    # ------------------------------------------------------------------ reading
    @compiled_when_eager(("key", "stack_num"))
    def get(self, index: chex.Array, key: str, stack_num: int | None = None) -> Any:
        """Field ``key`` at global ``index``, frame-stacked like ``ReplayBuffer.get``."""
        in_main, mi, ci = self._split(index)
        return self._select(
            in_main, self.main.get(mi, key, stack_num), self.caches.get(ci, key, stack_num)
        )

    def __getitem__(self, index: Any) -> dict:
        """The transitions at global ``index`` (any int array shape, or an eager slice).

        Same fields and stacking as ``ReplayBuffer.__getitem__``; a slice applies to
        :meth:`chronological_indices`.
        """
        if isinstance(index, slice):
            index = jnp.asarray(self.chronological_indices()[index], jnp.int32)
        return self._read(index)

    @compiled_when_eager()
    def _read(self, index: chex.Array) -> dict:
        """``buf[index]`` for an int or int array ``index``."""
        in_main, mi, ci = self._split(index)
        return self._select(in_main, self.main[mi], self.caches[ci])


__all__ = ["CachedAddResult", "CachedReplayBuffer"]
