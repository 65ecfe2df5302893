"""Prioritized experience replay (Schaul et al. 2016) over the pure-state core buffer.

A :class:`PrioritizedReplayBuffer` is a :class:`~jaxbuf._core.wrapper.Wrapper`: a core
:class:`jaxbuf.ReplayBuffer` (any ``buffer_num``) in its ``buffer`` field, whose whole read
API it shares, with

* a :class:`~jaxbuf.prioritized.PriorityTree` over the ``maxsize`` global slots holding
  ``p_i ** alpha`` (0 for slots that hold no transition), with per node the sum (for
  proportional sampling) and the minimum over stored slots (the exact smallest stored
  ``p ** alpha``);
* ``max_prio``, the largest raw priority reported so far (starts at 1.0, as in Tianshou);
* ``beta`` as a traced scalar leaf, so it can be annealed inside ``jit`` / ``lax.scan``.

Semantics (Tianshou's, with the deliberate fixes listed in ``docs/prioritized.md``):

* ``add``: the core add, then every written slot gets ``max_prio ** alpha`` (the float
  maximum), overwritten slots included.
* ``update_weight(indices, new_weight)``: ``p = |w| + eps`` with ``eps = 2**-23`` (float32
  machine epsilon, as Tianshou), leaf ``= p ** alpha``; duplicates: the last one wins;
  ``max_prio = max(max_prio, max(p))`` over every given value.
* Sampling: ``P(i) = p_i^alpha / sum_k p_k^alpha`` (optionally stratified).
* Importance weight (Schaul et al. 2016, eq. 1 and section 3.4):
  ``w_i = (N * P(i)) ** -beta / max_j (N * P(j)) ** -beta = (p_i^alpha / p_min^alpha) ** -beta``
  where ``p_min^alpha`` is the smallest stored leaf, so ``w_i`` lies in ``(0, 1]`` for
  stored slots; slots holding no transition get weight 0, never inf or NaN. With
  ``weight_norm`` (default, as Tianshou) the weights of one read are further divided by
  their maximum.

Costs: ``add`` of k rows, ``update_weight`` of B indices and ``sample`` of B draws are
``O((k or B) log N)`` on top of the core's work, with no ``O(maxsize)`` step.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import sequences as seqs
from jaxbuf._core.checks import global_index, is_traced, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.episodes import AddResult
from jaxbuf._core.kinds import VectorKind
from jaxbuf._core.wrapper import Wrapper
from jaxbuf.buffers import CORE_OPTIONS, ReplayBuffer
from jaxbuf.errors import ConfigError, IndexRangeError, InputError, message
from jaxbuf.prioritized.priorities import (
    UpdateChecks,
    check_alpha_beta,
    importance_weights,
    update_priorities,
    write_max_priority,
)
from jaxbuf.prioritized.priority_tree import PriorityTree

__all__ = ["PrioritizedReplayBuffer", "PrioritizedVectorReplayBuffer"]


class PrioritizedReplayBuffer(Wrapper):
    """A replay buffer that samples proportionally to priority, as a pure pytree.

    Every method of :class:`jaxbuf.ReplayBuffer` works here too (``prev``, ``get``,
    ``all_indices``, ``sample_sequences``, ...); ``add``, ``sample`` and ``buf[index]`` also
    maintain and report priorities.

    Attributes:
      buffer: the core buffer (storage and episode counters).
      tree: ``p ** alpha`` per global slot, 0 where no transition is stored, with the sums
        and minimums of the priority tree.
      max_prio: float32 scalar, the largest raw priority ``|w| + eps`` seen (starts at 1).
      beta: float32 scalar, the importance-sampling exponent (a traced leaf).
      alpha: static float, the priority exponent.
      weight_norm: static bool, divide each read's weights by their maximum (Tianshou).

    Example:
      Four stored rows, one with five times the priority of the others (``alpha=1``): it is
      drawn with probability 5/8 and gets the smallest importance weight,
      ``(N P)^-beta`` divided by the largest: ``(4 * 5/8)^-0.5 / (4 * 1/8)^-0.5 = 0.447``.

      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxbuf import PrioritizedReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> buf = PrioritizedReplayBuffer.create(ex, 4, alpha=1.0, beta=0.5)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 4), ex)
      >>> buf, _ = buf.extend(rows)
      >>> buf = buf.update_weight(jnp.arange(4), jnp.array([1.0, 1.0, 1.0, 5.0]))
      >>> batch, indices = buf.sample(jax.random.key(0), 1000)
      >>> sorted({round(float(w), 3) for w in batch["weight"]})
      [0.447, 1.0]
      >>> bool(abs((indices == 3).mean() - 5 / 8) < 0.05)
      True
    """

    tree: PriorityTree
    max_prio: jax.Array
    beta: jax.Array
    alpha: float = struct.field(pytree_node=False)
    weight_norm: bool = struct.field(pytree_node=False, default=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        example: dict,
        size: int,
        alpha: float,
        beta: float,
        weight_norm: bool = True,
        **core_options: Any,
    ) -> PrioritizedReplayBuffer:
        """An empty prioritized buffer of ``size`` slots.

        Args:
          example: one transition without a batch axis (see :meth:`jaxbuf.ReplayBuffer.create`).
          size: number of slots (> 0).
          alpha: priority exponent (> 0): ``P(i) ~ p_i ** alpha``.
          beta: importance-sampling exponent (>= 0); change it with :meth:`set_beta`.
          weight_norm: divide the weights of each read / sample by their maximum.
          **core_options: the options of :meth:`jaxbuf.ReplayBuffer.create` (``buffer_num``,
            ``stack_num``, ``ignore_obs_next``, ``save_only_last_obs``, ``lockstep``,
            ``storage_memory_kind``).
            ``sample_avail`` with ``stack_num > 1`` is rejected: priority sampling cannot
            honour it (Tianshou silently ignores it).

        Example:
          >>> import jax, jax.numpy as jnp
          >>> from jaxbuf import PrioritizedReplayBuffer
          >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
          ...           terminated=False, truncated=False)
          >>> buf = PrioritizedReplayBuffer.create(ex, 16, alpha=0.6, beta=0.4)
          >>> rows = jax.tree.map(lambda x: jnp.stack([x] * 3), ex)
          >>> buf, _ = buf.add(rows, buffer_ids=jnp.zeros(3, jnp.int32))
          >>> buf = buf.update_weight(jnp.array([0, 1]), jnp.array([2.0, 0.5]))
          >>> batch, idx = buf.sample(jax.random.key(0), 4)
          >>> batch["weight"].shape
          (4,)
        """
        name = cls.__name__ + ".create"
        check_alpha_beta(name, alpha, beta)
        if not isinstance(weight_norm, bool | np.bool_):
            raise ConfigError(f"jaxbuf: {name}: weight_norm must be a bool, got {weight_norm!r}")
        unknown = sorted(set(core_options) - set(CORE_OPTIONS))
        if unknown:
            raise ConfigError(
                f"jaxbuf: {name}: unexpected option(s) {unknown}; core options are "
                f"{list(CORE_OPTIONS)}"
            )
        if core_options.get("sample_avail") and core_options.get("stack_num", 1) > 1:
            raise ConfigError(
                f"jaxbuf: {name}: sample_avail=True with stack_num > 1 is not supported by "
                f"prioritized "
                "buffers (sampling follows priorities only); pass sample_avail=False"
            )
        core = ReplayBuffer.create(example, size, **core_options)
        return cls(
            buffer=core,
            tree=PriorityTree.create(core.maxsize),
            max_prio=jnp.asarray(1.0, jnp.float32),
            beta=jnp.asarray(beta, jnp.float32),
            alpha=float(alpha),
            weight_norm=bool(weight_norm),
        )

    def _reset(self, keep_statistics: bool) -> PrioritizedReplayBuffer:
        """The core reset, and every priority cleared (no slot holds a transition any more);
        ``max_prio`` and ``beta`` are kept."""
        tree = PriorityTree.create(self.tree.capacity, self.tree.dtype)
        return super()._reset(keep_statistics).replace(tree=tree)

    # ------------------------------------------------------------------ writing
    @compiled_when_eager()
    def add_rows(
        self, rows: dict, ids: jax.Array | None
    ) -> tuple[PrioritizedReplayBuffer, AddResult]:
        """The core add; every written slot gets priority ``max_prio ** alpha`` (forgetting an
        overwritten slot's old priority). Rows dropped by the core (``index == -1``) leave the
        tree unchanged. Cost: the core add plus ``O(k log N)``."""
        new, result = super().add_rows(rows, ids)
        tree = write_max_priority(self.tree, self.max_prio, result.index, alpha=self.alpha)
        return new.replace(tree=tree), result

    def update_weight(self, indices: chex.Array, new_weight: chex.Array) -> PrioritizedReplayBuffer:
        """Set the priorities of stored slots: ``leaf[i] = (|w| + eps) ** alpha``.

        Args:
          indices: int array, shape ``()`` or ``(B,)``, global slots holding a transition.
            Duplicates: the last occurrence wins (Tianshou's order).
          new_weight: real values broadcastable to ``indices.shape`` (e.g. TD errors; the
            sign is dropped).

        Returns:
          The updated buffer; ``max_prio`` becomes ``max(max_prio, max(|w| + eps))`` over
          every accepted value. Cost ``O(B log N)``.

        Raises:
          TypeError: eagerly, for non-integer indices.
          IndexError: eagerly, for an index outside ``[0, maxsize)``.
          ValueError: eagerly, for bad shapes, a slot that holds no transition, or a
            non-finite weight. Inside ``jit`` such entries are ignored
            (:func:`jaxbuf.checked` raises).
        """
        name = f"{type(self).__name__}.update_weight"
        idx = jnp.asarray(indices)
        if not jnp.issubdtype(idx.dtype, jnp.integer):
            raise InputError(f"jaxbuf: {name}: indices must be integers, got dtype {idx.dtype}")
        if idx.ndim > 1:
            raise InputError(f"jaxbuf: {name}: indices must have shape () or (B,), got {idx.shape}")
        weight = jnp.asarray(new_weight)
        if not (
            jnp.issubdtype(weight.dtype, jnp.floating) or jnp.issubdtype(weight.dtype, jnp.integer)
        ):
            raise InputError(
                f"jaxbuf: {name}: new_weight must be real numbers, got dtype {weight.dtype}"
            )
        try:
            fits = np.broadcast_shapes(weight.shape, idx.shape) == idx.shape
        except ValueError:
            fits = False
        if not fits:
            raise InputError(
                f"jaxbuf: {name}: new_weight of shape {weight.shape} does not broadcast to the "
                f"indices' shape {idx.shape}"
            )
        new, checks = self._apply_update(idx, weight)
        if not is_traced(checks.ok):
            self._raise_bad_update(name, idx, weight, checks)
        else:
            runtime_check(
                jnp.all(checks.ok),
                "jaxbuf: update_weight got an index that holds no transition or a non-finite "
                "weight",
            )
        return new

    @compiled_when_eager()
    def _apply_update(
        self, idx: jax.Array, weight: jax.Array
    ) -> tuple[PrioritizedReplayBuffer, UpdateChecks]:
        """:meth:`update_weight` on validated inputs; also returns the per-entry checks."""
        tree, max_prio, checks = update_priorities(
            self.tree,
            self.max_prio,
            self.layout,
            self.lengths,
            idx.reshape(-1).astype(jnp.int32),
            jnp.broadcast_to(weight, idx.shape).reshape(-1).astype(jnp.float32),
            alpha=self.alpha,
        )
        return self.replace(tree=tree, max_prio=max_prio), checks

    def _raise_bad_update(self, name: str, idx: Any, weight: Any, checks: UpdateChecks) -> None:
        idx = np.asarray(idx).reshape(-1)
        weight = np.broadcast_to(np.asarray(weight), np.shape(idx)).reshape(-1)
        in_range, stored, finite = (np.asarray(x) for x in checks[:3])
        if not in_range.all():
            raise IndexRangeError(
                f"jaxbuf: {name}: indices must lie in [0, {self.maxsize}), got "
                f"{idx[~in_range][:8].tolist()}"
            )
        if not stored.all():
            raise InputError(
                f"jaxbuf: {name}: slot(s) {idx[~stored][:8].tolist()} hold no transition yet"
            )
        if not finite.all():
            raise InputError(
                f"jaxbuf: {name}: new_weight must be finite, got {weight[~finite][:8].tolist()}"
            )

    def set_beta(self, beta: chex.Numeric) -> PrioritizedReplayBuffer:
        """Return the buffer with a new importance-sampling exponent (a traced leaf, so it
        can be annealed inside ``jit``). Eagerly, ``beta`` must be a finite number >= 0."""
        beta = jnp.asarray(beta, jnp.float32)
        if beta.shape != ():
            raise InputError(
                f"jaxbuf: {type(self).__name__}.set_beta: beta must be a scalar, got shape "
                f"{beta.shape}"
            )
        if not is_traced(beta) and not (np.isfinite(float(beta)) and float(beta) >= 0):
            raise InputError(
                f"jaxbuf: {type(self).__name__}.set_beta: beta must be a finite number >= 0, "
                f"got {float(beta)}"
            )
        return self.replace(beta=beta)

    # ------------------------------------------------------------------ weights and reads
    def priorities(self) -> jax.Array:
        """float32[maxsize]: ``p ** alpha`` per slot (0 where no transition is stored)."""
        return self.tree.values()

    @compiled_when_eager()
    def get_weight(self, index: chex.Array) -> jax.Array:
        """Importance weights ``(p_i^alpha / p_min^alpha) ** -beta`` at ``index`` (any shape).

        This is Schaul et al.'s ``(N * P(i)) ** -beta`` divided by its largest possible value
        ``(N * p_min^alpha / total) ** -beta`` (``N`` and the total cancel), with ``p_min``
        the smallest priority currently stored. In ``(0, 1]`` for stored slots; 0 for slots
        that hold no transition. Indices are taken modulo ``maxsize``, like the core.
        """
        index = global_index(index, self.maxsize)
        return importance_weights(
            self.tree.get(index), self.tree.min(), self.beta, batch_norm=False
        )

    @compiled_when_eager()
    def _read(self, index: chex.Array) -> dict:
        """``buf[index]``: the core read plus ``weight``, :meth:`get_weight` divided by its
        maximum over this read when ``weight_norm`` (so one element always gets 1.0, and a
        read of only empty slots gets 0)."""
        index = global_index(index, self.maxsize)
        out = super()._read(index)
        out["weight"] = importance_weights(
            self.tree.get(index), self.tree.min(), self.beta, batch_norm=self.weight_norm
        )
        return out

    @compiled_when_eager(("batch_size", "stratified"))
    def sample_indices(
        self, key: chex.PRNGKey, batch_size: int, stratified: bool = False
    ) -> jax.Array:
        """int32[batch_size] draws with probability ``p_i^alpha / sum_k p_k^alpha``.

        ``stratified``: one draw in each of ``batch_size`` equal segments of the total mass
        (indices come out in ascending order). Only slots holding a transition are drawn;
        an empty buffer gives slot 0 for every draw (:func:`jaxbuf.checked` raises).
        Cost ``O(batch_size log N)``.
        """
        runtime_check(self.size > 0, "jaxbuf: sampling from an empty buffer")
        return self.tree.sample(key, batch_size, stratified)[0]

    @compiled_when_eager(("batch_size", "stratified"))
    def sample(
        self, key: chex.PRNGKey, batch_size: int, stratified: bool = False
    ) -> tuple[dict, jax.Array]:
        """``(buf[indices], indices)`` for ``indices = sample_indices(key, batch_size)``;
        the batch carries the importance weights under ``weight`` (computed from the leaf
        values the descent read, equal to ``buf[indices]["weight"]``)."""
        runtime_check(self.size > 0, "jaxbuf: sampling from an empty buffer")
        indices, leaf = self.tree.sample(key, batch_size, stratified)
        out = super()._read(indices)
        out["weight"] = importance_weights(
            leaf, self.tree.min(), self.beta, batch_norm=self.weight_norm
        )
        return out, indices

    # ------------------------------------------------------------------ sequences
    def sample_sequences(
        self,
        key: chex.PRNGKey,
        batch_size: int,
        length: int,
        *,
        burn_in: int = 0,
        full_only: bool = False,
        period: int = 1,
        tries: int = seqs.DEFAULT_TRIES,
        priority: str = "sum",
    ) -> seqs.Sequences:
        """Windows as :meth:`jaxbuf.ReplayBuffer.sample_sequences`, drawn by priority.

        ``priority="sum"`` (default): window ``W`` with probability proportional to
        ``S(W) = sum_{j in W} leaf_j`` (``leaf = p ** alpha`` per step), weight
        ``(S(W) / (length * p_min)) ** -beta``. Pair it with
        ``update_sequence_weight(..., on="steps")`` (or per-step :meth:`update_weight`).

        ``priority="start"``: the leaf of slot ``s`` is the priority of the window starting
        at ``s`` (new slots get ``max_prio ** alpha``, as every add); the start is drawn with
        probability ``leaf_s / total`` and, given success with ``full_only`` / ``period``,
        ``leaf_s / sum_{q in Q} leaf_q`` over the qualifying stored starts ``Q``. Weight
        ``(leaf_s / p_min) ** -beta``. Pair it with ``update_sequence_weight(..., on="start")``:
        windows are then drawn exactly proportionally to R2D2's priority to the power alpha.

        In both, ``p_min`` is the smallest stored leaf, weights are divided by their batch
        maximum with ``weight_norm`` and rows not found get weight 0. Cost
        ``O(batch_size * tries * (length + log N))``.

        Example:
          >>> import jax, jax.numpy as jnp
          >>> from jaxbuf import PrioritizedReplayBuffer
          >>> ex = dict(obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0),
          ...           terminated=False, truncated=False)
          >>> buf = PrioritizedReplayBuffer.create(ex, 16, alpha=0.6, beta=0.4)
          >>> rows = jax.tree.map(lambda x: jnp.stack([x] * 12), ex)
          >>> buf, _ = buf.add(rows, buffer_ids=jnp.zeros(12, jnp.int32))
          >>> seq = buf.sample_sequences(jax.random.key(0), 4, 5, full_only=True,
          ...                            priority="start")
          >>> td = jnp.ones((4, 5))
          >>> buf = buf.update_sequence_weight(seq.indices, seq.mask, td, on="start")
          >>> seq.weight.shape, seq.batch["obs"].shape
          ((4,), (4, 5))
        """
        seqs.check_args(self, "sample_sequences", batch_size, length, burn_in, period, tries)
        if priority not in seqs.SEQUENCE_PRIORITIES:
            raise InputError(
                message(
                    "sample_sequences",
                    f"priority must be one of {seqs.SEQUENCE_PRIORITIES}, got {priority!r}",
                )
            )
        return self._sample_sequences(
            key, batch_size, length, burn_in, bool(full_only), period, tries, priority
        )

    @compiled_when_eager(
        ("batch_size", "length", "burn_in", "full_only", "period", "tries", "priority")
    )
    def _sample_sequences(
        self, key, batch_size, length, burn_in, full_only, period, tries, priority="sum"
    ) -> seqs.Sequences:
        """The draw of :meth:`sample_sequences` (arguments checked); see there for the laws."""
        sizes = (batch_size, length, burn_in, full_only, period, tries)
        out = seqs.sample_prioritized(self, key, *sizes, super()._read, priority)
        if priority == "start":
            leaf = self.tree.get(out.indices[:, 0])
        else:
            leaf = jnp.sum(jnp.where(out.mask, self.tree.get(out.indices), 0.0), axis=1) / length
        leaf = jnp.where(out.found, leaf, 0.0)
        weight = importance_weights(leaf, self.tree.min(), self.beta, batch_norm=self.weight_norm)
        return out.replace(weight=weight)

    def update_sequence_weight(
        self,
        indices: chex.Array,
        mask: chex.Array,
        td_error: chex.Array,
        eta: float = 0.9,
        *,
        on: str = "steps",
    ) -> PrioritizedReplayBuffer:
        """Set R2D2's window priority ``P = eta * max|td| + (1 - eta) * mean|td|``.

        The max and mean run over each row's ``mask``; each ``P`` becomes a priority as in
        :meth:`update_weight` (leaf ``(P + eps) ** alpha``). ``on="steps"`` (default): every
        step with ``mask`` true gets ``P`` (steps shared by overlapping windows keep the
        latest update; with disjoint windows, ``period=length``, ``priority="sum"`` then
        draws each window proportionally to ``P ** alpha``). ``on="start"``: only the
        window's first slot ``indices[:, 0]`` gets ``P``, for rows with any ``mask`` true
        (so ``mask`` may leave out the burn-in); with ``priority="start"`` sampling that is
        the exact R2D2 law. Duplicated slots: the last row wins.

        Args:
          indices: int ``[B, L]`` from :meth:`sample_sequences` (``seq.indices``).
          mask: bool ``[B, L]``, the steps the TD errors count on (e.g.
            ``seq.mask & ~seq.burn_in``).
          td_error: real ``[B, L]``.
          eta: in ``[0, 1]``.
          on: ``"steps"`` or ``"start"``.
        Raises:
          ValueError: bad ``eta``/``on``/shapes, or (eagerly) a slot that holds no
            transition or a non-finite priority, as :meth:`update_weight`.
        """
        name = f"{type(self).__name__}.update_sequence_weight"
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0 <= eta <= 1:
            raise InputError(f"jaxbuf: {name}: eta must be a number in [0, 1], got {eta!r}")
        if on not in ("steps", "start"):
            raise InputError(f"jaxbuf: {name}: on must be 'steps' or 'start', got {on!r}")
        idx, mask, err = jnp.asarray(indices), jnp.asarray(mask, bool), jnp.asarray(td_error)
        if idx.ndim != 2 or mask.shape != idx.shape or err.shape != idx.shape:
            raise InputError(
                f"jaxbuf: {name}: indices, mask and td_error must share one [B, L] shape, got "
                f"{idx.shape}, {mask.shape}, {err.shape}"
            )
        prio = seqs.window_priority(err, mask, float(eta))
        if on == "start":
            keep = jnp.any(mask, axis=1)
            flat = jnp.where(keep, idx[:, 0], -1)
        else:
            prio = jnp.broadcast_to(prio[:, None], idx.shape).reshape(-1)
            flat, keep = jnp.where(mask, idx, -1).reshape(-1), mask.reshape(-1)
        new, checks = self._apply_update(flat, prio)
        if not is_traced(checks.ok, keep):
            keep = np.asarray(keep)
            sub = UpdateChecks(*(np.asarray(c)[keep] for c in checks))
            self._raise_bad_update(name, np.asarray(flat)[keep], np.asarray(prio)[keep], sub)
        return new


class PrioritizedVectorReplayBuffer(metaclass=VectorKind):
    """Tianshou's ``PrioritizedVectorReplayBuffer``: a :class:`PrioritizedReplayBuffer` with
    ``buffer_num`` sub-buffers (one per env) and one priority tree over all slots.

    Sampling is a global prefix-sum draw over all sub-buffers, as in Tianshou; unlike
    Tianshou, :meth:`~PrioritizedReplayBuffer.set_beta` takes effect. ``isinstance(buf,
    PrioritizedVectorReplayBuffer)`` is true for a prioritized buffer with more than one
    sub-buffer.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf import PrioritizedReplayBuffer, PrioritizedVectorReplayBuffer
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> buf = PrioritizedVectorReplayBuffer.create(ex, 8, 2, alpha=0.6, beta=0.4)
      >>> type(buf) is PrioritizedReplayBuffer, buf.buffer_num, buf.maxsize
      (True, 2, 8)
    """

    kind = PrioritizedReplayBuffer

    @staticmethod
    def create(
        example: dict,
        total_size: int,
        buffer_num: int,
        alpha: float,
        beta: float,
        weight_norm: bool = True,
        **core_options: Any,
    ) -> PrioritizedReplayBuffer:
        """An empty prioritized buffer of ``buffer_num`` sub-buffers with
        ``ceil(total_size / buffer_num)`` slots each; options as
        :meth:`PrioritizedReplayBuffer.create`."""
        return PrioritizedReplayBuffer.create(
            example, total_size, alpha, beta, weight_norm, buffer_num=buffer_num, **core_options
        )
