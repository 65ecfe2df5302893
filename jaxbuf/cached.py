"""``CachedReplayBuffer``: per-env caches that move finished episodes into a main buffer.

Tianshou's ``CachedReplayBuffer`` as a pure pytree, built by composition over the core: a
``ReplayBuffer`` of ``main_size`` slots (``main``) and a ``ReplayBuffer`` of
``cached_buffer_num`` caches of ``max_episode_length`` slots each (``caches``). Global
indices follow Tianshou's layout::

    | main (M) | cache_0 (L) | cache_1 (L) | ... | cache_{K-1} (L) |

so slot ``i < M`` is main slot ``i`` and slot ``M + e*L + j`` is slot ``j`` of cache ``e``.
Steps of an unfinished episode live in their env's cache; when a row ends the episode, the
episode is appended to main in one piece, so episodes in main are contiguous even when many
envs write at once. Episodes never span main and a cache: the read API of
:class:`~jaxbuf._core.base.Buffer` sees main and the caches as ``1 + K`` sub-buffers of one
layout, so ``prev``/``next``/stacking/sampling are those of the part an index falls in.

An episode longer than ``max_episode_length`` wraps inside its cache, so only its last
``max_episode_length`` steps reach main (as in Tianshou); unlike Tianshou this is not
silent: the add result reports the number of dropped steps in ``episode_dropped``.

Run-time conditions under ``jit`` (use :func:`jaxbuf.checked` to raise instead): indices are
taken modulo ``maxsize``; a row with a buffer id outside ``[0, cached_buffer_num)`` is
dropped (result row ``(-1, 0, 0, -1, 0)``); sampling an empty buffer returns slot 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxbuf._core import cache_plan, storage, validate
from jaxbuf._core.base import Buffer
from jaxbuf._core.cache_plan import CachedAddResult
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.layout import Layout
from jaxbuf.buffers import ReplayBuffer
from jaxbuf.errors import ConfigError, message


class CachedReplayBuffer(Buffer):
    """A main buffer fed with whole episodes from per-env caches (Tianshou's layout).

    Attributes:
      main: core ``ReplayBuffer`` of ``main_size`` slots holding finished episodes.
      caches: core ``ReplayBuffer`` with one sub-buffer of ``max_episode_length``
        slots per env, each holding its env's unfinished episode from slot 0.

    Example:
      Two envs; env 0 ends a two-step episode, which moves to main in one piece:

      >>> import jax.numpy as jnp
      >>> from jaxbuf import CachedReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> buf = CachedReplayBuffer.create(ex, main_size=8, cached_buffer_num=2,
      ...                                 max_episode_length=4)
      >>> def rows(t, ends):
      ...     return dict(obs=jnp.full(2, t, jnp.float32), act=jnp.zeros(2, jnp.int32),
      ...                 rew=jnp.ones(2), terminated=jnp.array(ends),
      ...                 truncated=jnp.zeros(2, bool))
      >>> ids = jnp.array([0, 1])
      >>> buf, _ = buf.add(rows(0, [False, False]), buffer_ids=ids)
      >>> buf, res = buf.add(rows(1, [True, False]), buffer_ids=ids)
      >>> res.index.tolist(), res.episode_start.tolist(), res.episode_return.tolist()
      ([1, 13], [0, 12], [2.0, 0.0])
      >>> len(buf.main), len(buf.caches), buf.maxsize  # main 8 + 2 caches of 4
      (2, 2, 16)
    """

    main: ReplayBuffer
    caches: ReplayBuffer

    @classmethod
    def create(
        cls,
        example: dict,
        main_size: int,
        cached_buffer_num: int,
        max_episode_length: int,
        **core_options: Any,
    ) -> CachedReplayBuffer:
        """An empty cached buffer.

        Args:
          example: one transition without a batch axis (see ``ReplayBuffer.create``).
          main_size: slots of the main buffer (>= 0). With 0 nothing is kept (Tianshou's
            "do not store"): an episode that ends is dropped from its cache; its row reports
            the return and length, with ``index`` and ``episode_start`` -1.
          cached_buffer_num: number of caches, one per env (> 0).
          max_episode_length: slots per cache (> 0); longer episodes lose their first steps
            and the add result says how many (``episode_dropped``).
          **core_options: ``stack_num``, ``ignore_obs_next``, ``save_only_last_obs``,
            ``sample_avail``, ``storage_memory_kind`` (see :meth:`jaxbuf.ReplayBuffer.create`),
            applied to main and caches alike.
        """
        where = "CachedReplayBuffer.create"
        validate.int_option(where, "main_size", main_size, minimum=0)
        for name, value in (
            ("cached_buffer_num", cached_buffer_num),
            ("max_episode_length", max_episode_length),
        ):
            validate.int_option(where, name, value, minimum=1)
        layout_options = sorted({"buffer_num", "lockstep"} & set(core_options))
        if layout_options:
            raise ConfigError(
                message(where, f"{layout_options} are set by the cached layout; do not pass them")
            )
        main = ReplayBuffer.create(example, max(main_size, 1), **core_options)
        if main_size == 0:  # a main of no slots: never written, never read
            main = main.replace(
                storage=jax.tree_util.tree_map(lambda x: x[:0], main.storage), subbuffer_size=0
            )
        caches = ReplayBuffer.create(
            example,
            cached_buffer_num * max_episode_length,
            buffer_num=cached_buffer_num,
            **core_options,
        )
        return cls(main=main, caches=caches)

    # ------------------------------------------------------------------ sizes and layout
    main_size = property(lambda self: self.main.maxsize, doc="``M``, slots of main (static).")
    cached_buffer_num = property(
        lambda self: self.caches.buffer_num, doc="``K``, number of caches (static)."
    )
    max_episode_length = property(
        lambda self: self.caches.subbuffer_size, doc="``L``, slots per cache (static)."
    )

    @property
    def layout(self) -> Layout:
        """Main (``M`` slots), then ``K`` caches of ``L`` slots (static)."""
        return Layout((self.main_size,) + (self.max_episode_length,) * self.cached_buffer_num)

    @property
    def insertion_idx(self) -> jax.Array:
        """int32[1+K]: local slot of the next write of main, then of each cache."""
        return jnp.concatenate([self.main.insertion_idx, self.caches.insertion_idx])

    @property
    def lengths(self) -> jax.Array:
        """int32[1+K]: stored transitions in main, then in each cache."""
        return jnp.concatenate([self.main.lengths, self.caches.lengths])

    @property
    def last_index(self) -> jax.Array:
        """int32[1+K]: global slot of the latest write of main, then of each cache."""
        return jnp.concatenate([self.main.last_index, self.caches.last_index + self.main_size])

    stack_num = property(lambda self: self.caches.stack_num, doc="Frames per stacked read.")
    storage_memory_kind = property(
        lambda self: self.caches.storage_memory_kind, doc="Where the storage lives (``create``)."
    )
    sample_avail = property(lambda self: self.caches.sample_avail, doc="See ``create``.")
    ignore_obs_next = property(lambda self: self.caches.ignore_obs_next, doc="See ``create``.")

    @property
    def storage(self) -> dict:
        """The storage in global-slot order, ``[maxsize, ...]`` (a concatenated copy)."""
        return jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a, b]),
            self.main.global_storage(),
            self.caches.global_storage(),
        )

    def global_storage(self) -> dict:
        """The storage in global-slot order, ``[maxsize, ...]`` (a concatenated copy)."""
        return self.storage

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        return self.caches.input_spec()

    def check_batch(self, batch: dict, buffer_ids: Any = None) -> tuple[dict, Any]:
        """Validate an ``add`` batch as the caches' :meth:`~jaxbuf.ReplayBuffer.check_batch`."""
        return self.caches.check_batch(batch, buffer_ids)

    @property
    def _stack_shape(self) -> tuple[int, ...]:
        return self.caches._stack_shape

    def _reset(self, keep_statistics: bool) -> CachedReplayBuffer:
        """Main and every cache emptied (``keep_statistics``: see ``reset``)."""
        return self.replace(
            main=self.main._reset(keep_statistics), caches=self.caches._reset(keep_statistics)
        )

    def _gather(self, index: jax.Array, keys: tuple[str, ...] | None = None) -> dict:
        """Stored fields at in-range global slots: from main below ``M``, else a cache."""
        if self.main_size == 0:
            return self.caches._gather(index, keys)
        in_main = index < self.main_size
        from_main = self.main._gather(jnp.where(in_main, index, 0), keys)
        from_caches = self.caches._gather(jnp.where(in_main, 0, index - self.main_size), keys)
        return jax.tree_util.tree_map(
            lambda a, b: jnp.where(
                in_main.reshape(in_main.shape + (1,) * (a.ndim - in_main.ndim)), a, b
            ),
            from_main,
            from_caches,
        )

    # ------------------------------------------------------------------ add
    @compiled_when_eager()
    def add_rows(
        self, rows: dict, ids: jax.Array | None
    ) -> tuple[CachedReplayBuffer, CachedAddResult]:
        """Write rows to their caches; move every episode that ends into main.

        Rows are applied in row order (a duplicate id writes consecutive steps of that env).
        A row that ends its episode moves the episode's stored steps (at most
        ``max_episode_length``) to main, after the episodes moved by earlier rows, and resets
        its cache. Under ``jit`` each move is a gather and a scatter of ``max_episode_length``
        masked rows per row of the batch (static shapes). ``add(batch, buffer_ids)`` takes k
        rows (k must equal ``cached_buffer_num`` when ``buffer_ids`` is None; ids are
        Tianshou's cache numbers 0..K-1) and returns ``(buffer, CachedAddResult)`` with
        Tianshou's convention: a row that ends an episode reports the last (``index``) and
        first (``episode_start``) main slots written.
        """
        done = rows["terminated"] | rows["truncated"]
        c = self.caches.episode_counters()
        main_c = self.main.episode_counters()
        head = cache_plan.MainHead(main_c.insertion_idx, main_c.lengths, main_c.last_slot)
        plan = cache_plan.plan_add(
            c, self.max_episode_length, ids, rows["rew"], done, head, max(self.main_size, 1)
        )
        if self.main_size == 0:
            return self._add_without_main(rows, plan)
        # Host (NumPy) rows reach here when add is traced; make them JAX arrays so that
        # they can be indexed by the traced plan.
        rows = jax.tree_util.tree_map(jnp.asarray, rows)
        stored = storage.to_stored(rows, save_only_last_obs=self.caches.save_only_last_obs)

        def window(old, new):
            sel = plan.from_cache.reshape(plan.from_cache.shape + (1,) * (old.ndim - 2))
            moved = jnp.where(sel, old, new[plan.src_row])
            return moved.reshape((-1, *old.shape[2:]))

        def move(main):
            from_caches = self.caches._gather(plan.src_cache)
            moved = jax.tree_util.tree_map(window, from_caches, stored)
            return main.write(plan.main_slots.reshape(-1), moved)

        # Most adds end no episode: skip the k*L-row gather/scatter then (under vmap the
        # cond becomes a select and both sides run).
        any_moved = jnp.any(plan.result.episode_length > 0)
        main = lax.cond(any_moved, move, lambda b: b, self.main)
        main = main.with_counters(main_c._replace(**plan.main._asdict()))
        caches = self.caches.write(plan.cache_slots, stored).with_counters(plan.caches)
        return self.replace(main=main, caches=caches), plan.result

    def _add_without_main(self, rows: dict, plan: Any) -> tuple[CachedReplayBuffer, Any]:
        """The add of a main of size 0: caches as usual, finished episodes dropped.

        The plan was made for a one-slot main, so cache slots in the result are shifted back
        by that slot and the main slots of finished rows become -1.
        """
        stored = storage.to_stored(rows, save_only_last_obs=self.caches.save_only_last_obs)
        caches = self.caches.write(plan.cache_slots, stored).with_counters(plan.caches)
        res = plan.result
        fin = res.episode_length > 0
        keep = res.index >= 0
        result = res._replace(
            index=jnp.where(fin | ~keep, -1, res.index - 1).astype(jnp.int32),
            episode_start=jnp.where(fin | ~keep, -1, res.episode_start - 1).astype(jnp.int32),
        )
        return self.replace(caches=caches), result


__all__ = ["CachedAddResult", "CachedReplayBuffer"]
