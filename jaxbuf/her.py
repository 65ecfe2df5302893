"""Hindsight Experience Replay: ``HERReplayBuffer`` (and its ``HERVectorReplayBuffer`` name).

Tianshou's HER buffers with the "future" strategy, as a pure pytree that wraps a core buffer
(a :class:`~jaxbuf._core.wrapper.Wrapper`: the whole read API of :class:`jaxbuf.ReplayBuffer`
works here, and only ``sample`` relabels). ``obs`` (and ``obs_next``) are dicts with the keys
``observation``, ``achieved_goal`` and ``desired_goal``. The stored data is never changed:
relabelling is a pure function of the sampled indices and a PRNG key, applied to the batch
that ``sample`` returns, so there is no cache to restore.

For each sampled index ``i`` (independently):

1. With probability ``future_p = 1 - 1/future_k`` the sample is relabelled.
2. The future step is drawn uniformly from the window ``i, next(i), ..., next^{h-1}(i)`` cut
   after the first step that ends the episode (done, or the write head of an unfinished
   episode), with ``h = horizon``: ``t_f = next^d(i)`` with ``d ~ U{0, ..., r-1}`` and ``r``
   the number of steps in the cut window (``1 <= r <= horizon``). ``t_f`` therefore never
   leaves the episode of ``i`` and is at most ``horizon - 1`` steps after it.
3. The new goal is the achieved goal after step ``t_f``: ``obs_next[t_f].achieved_goal``, or
   ``obs[next(t_f)].achieved_goal`` with ``ignore_obs_next`` (at an episode end that is the
   step's own achieved goal, since the final observation is not stored; as in Tianshou).
4. ``obs.desired_goal`` and ``obs_next.desired_goal`` become the new goal and
   ``rew = compute_reward_fn(obs_next.achieved_goal, new_goal)``; with ``ignore_obs_next``
   too, where Tianshou keeps the old reward (see docs/differences-from-tianshou.md).

``compute_reward_fn(achieved_goal, desired_goal)`` takes batched goals ``[B, *goal_shape]``
and returns rewards ``[B, *rew_shape]``; it must be traceable (``jax.numpy``). It is a
static field of the buffer, so it must be hashable, and buffers compare equal (share jit
caches) only when they hold the *same* function object: pass a module-level function (or
one ``functools.partial``), not a fresh ``lambda`` per buffer.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.kinds import VectorKind
from jaxbuf._core.wrapper import Wrapper
from jaxbuf.buffers import ReplayBuffer
from jaxbuf.errors import ConfigError, InputError

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
"""Keys every HER ``obs`` dict must have."""


def relabel_batch(batch: dict, goal: Any, mask: jax.Array, compute_reward_fn: Callable) -> dict:
    """Replace the goal of the masked samples of ``batch`` and recompute their reward.

    Args:
      batch: a buffer read (``buf[indices]``) with ``obs``/``obs_next`` dicts, leading axis B.
      goal: the new desired goal per sample, shaped like ``obs.desired_goal`` ([B, *g]).
      mask: bool[B], which samples take the new goal.
      compute_reward_fn: ``(achieved_goal [B, *g], desired_goal [B, *g]) -> rew``.
    Returns:
      A new batch: ``obs.desired_goal`` and ``obs_next.desired_goal`` are ``goal`` where
      ``mask``, and ``rew`` is ``compute_reward_fn(obs_next.achieved_goal, goal)`` there
      (cast to the stored reward dtype); everything else is unchanged.
    """
    out = dict(batch)
    for key in ("obs", "obs_next"):
        part = dict(batch[key])
        old = part["desired_goal"]
        part["desired_goal"] = jnp.where(_bcast(mask, old), goal, old)
        out[key] = part
    rew = batch["rew"]
    new_rew = jnp.asarray(compute_reward_fn(batch["obs_next"]["achieved_goal"], goal))
    if new_rew.shape != rew.shape:
        raise InputError(
            f"jaxbuf: compute_reward_fn returned shape {new_rew.shape}, expected the reward "
            f"shape {rew.shape} (one reward per sample)"
        )
    out["rew"] = jnp.where(_bcast(mask, rew), new_rew.astype(rew.dtype), rew)
    return out


def _bcast(flag: jax.Array, like: jax.Array) -> jax.Array:
    return flag.reshape(flag.shape + (1,) * (jnp.ndim(like) - flag.ndim))


class HERReplayBuffer(Wrapper):
    """A replay buffer whose samples are relabelled with future achieved goals.

    Attributes:
      buffer: the wrapped core buffer (a ``ReplayBuffer`` of any ``buffer_num``).
      compute_reward_fn: static, ``(achieved_goal, desired_goal) -> rew`` on batches.
      horizon: static, the future step is at most ``horizon - 1`` steps ahead.
      future_k: static, relabelling probability ``1 - 1/future_k``.

    Example:
      A 1-D goal task (reward: minus the distance to the goal); one four-step episode
      walks from 0 to 4 towards a goal at 9, and samples get goals achieved later on:

      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import HERReplayBuffer
      >>> def reward(achieved, desired):
      ...     return -jnp.abs(achieved - desired).sum(-1)
      >>> def obs(x):
      ...     x = jnp.asarray(x, jnp.float32)[:, None]
      ...     return dict(observation=x, achieved_goal=x, desired_goal=jnp.full_like(x, 9))
      >>> t = jnp.arange(4)
      >>> rows = dict(obs=obs(t), obs_next=obs(t + 1), act=t, rew=-(8.0 - t),
      ...             terminated=t < 0, truncated=t == 3)
      >>> ex = jax.tree.map(lambda x: x[0], rows)
      >>> buf = HERReplayBuffer.create(ex, 8, reward, horizon=4, future_k=4)
      >>> buf, _ = buf.extend(rows)
      >>> batch, indices = buf.sample(jax.random.key(0), 4)
      >>> obs, obs_next = batch["obs"], batch["obs_next"]
      >>> desired = obs["desired_goal"]
      >>> relabelled = desired[:, 0] < 9
      >>> bool(relabelled.any())
      True
      >>> achieved = obs_next["achieved_goal"]
      >>> bool(jnp.all(batch["rew"] == reward(achieved, desired)))
      True
    """

    compute_reward_fn: Callable = struct.field(pytree_node=False)
    horizon: int = struct.field(pytree_node=False)
    future_k: float = struct.field(pytree_node=False, default=8.0)

    @classmethod
    def create(
        cls,
        example: dict,
        size: int,
        compute_reward_fn: Callable,
        horizon: int,
        future_k: float = 8.0,
        **core_options: Any,
    ) -> HERReplayBuffer:
        """An empty HER buffer of ``size`` slots.

        Args:
          example: one transition (see ``ReplayBuffer.create``) whose ``obs`` (and
            ``obs_next``) is a dict with ``observation``, ``achieved_goal``,
            ``desired_goal``; the two goals share shape and dtype.
          size: number of slots.
          compute_reward_fn: hashable, traceable ``(achieved [B, *g], desired [B, *g]) ->
            rew [B, *rew_shape]``.
          horizon: >= 1; future goals come from at most ``horizon - 1`` steps ahead.
          future_k: >= 1; a sample is relabelled with probability ``1 - 1/future_k``.
          **core_options: options of :meth:`jaxbuf.ReplayBuffer.create` (``buffer_num``,
            ``ignore_obs_next``, ``sample_avail``, ``lockstep``, ``storage_memory_kind``).
            ``stack_num`` must be 1
            and ``save_only_last_obs`` False (goal dicts are not frame-stacked).
        """
        _check_config(
            example,
            compute_reward_fn,
            horizon,
            future_k,
            core_options.get("stack_num", 1),
            core_options.get("save_only_last_obs", False),
            core_options.get("ignore_obs_next", False),
        )
        return cls(
            buffer=ReplayBuffer.create(example, size, **core_options),
            compute_reward_fn=compute_reward_fn,
            horizon=int(horizon),
            future_k=float(future_k),
        )

    @property
    def future_p(self) -> float:
        """Probability that a sample is relabelled: ``1 - 1/future_k``."""
        return 1.0 - 1.0 / self.future_k

    # ------------------------------------------------------------------ relabelling
    @compiled_when_eager()
    def future_steps(self, key: chex.PRNGKey, indices: chex.Array) -> tuple[jax.Array, jax.Array]:
        """Draw the relabelling decisions for ``indices`` (int32[B]).

        Returns ``(future, relabel)``: int32[B] future step ``t_f`` (see the module
        docstring: uniform over the horizon window cut at the episode end) and bool[B],
        true with probability ``future_p``. Samples with ``relabel`` false keep their goal.
        """
        indices = jnp.asarray(indices)
        if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
            raise InputError(
                f"jaxbuf: indices must be integers of shape (B,), got shape {indices.shape} "
                f"dtype {indices.dtype}"
            )
        key_mask, key_step = jax.random.split(key)
        relabel = jax.random.uniform(key_mask, indices.shape) < self.future_p
        window, alive = self.future_window(indices)
        reach = jnp.sum(alive, axis=1)
        d = jax.random.randint(key_step, indices.shape, 0, reach)
        future = jnp.take_along_axis(window, d[:, None], axis=1)[:, 0]
        return future.astype(jnp.int32), relabel

    @compiled_when_eager()
    def future_window(self, indices: chex.Array) -> tuple[jax.Array, jax.Array]:
        """The horizon window of each index: ``(int32[B, horizon], bool[B, horizon])``.

        Row b is ``i, next(i), ..., next^{horizon-1}(i)`` for ``i = indices[b]``, with the
        mask false after the first step that ends the episode (done or write head). Computed
        in one gather instead of ``horizon`` sequential ``next`` calls: inside an episode
        ``next(j) = o + ((j - o + 1) mod c)`` for a sub-buffer at offset ``o`` holding ``c``
        transitions, so the step ``s`` slots ahead is ``o + ((i - o + s) mod c)`` until the
        first episode end.
        """
        start = jnp.mod(jnp.asarray(indices).astype(jnp.int32), self.maxsize)
        part = self.layout.part_of(start)
        offset = self.layout.offset(part)
        count = jnp.maximum(self.lengths[part], 1)
        ahead = jnp.arange(self.horizon, dtype=jnp.int32)
        window = offset[:, None] + jnp.mod(start[:, None] - offset[:, None] + ahead, count[:, None])
        window = jnp.where(ahead == 0, start[:, None], window)  # i itself, even if not stored
        ends = self.is_episode_end(window).astype(jnp.int32)
        ended_before = jnp.cumsum(ends, axis=1) - ends
        return window.astype(jnp.int32), ended_before == 0

    def achieved_goal_after(self, index: chex.Array) -> Any:
        """The achieved goal after step ``index``: ``obs_next`` of it, or ``obs[next(index)]``."""
        if self.ignore_obs_next:
            obs = self.get(self.next(index), "obs", stack_num=1)
        else:
            obs = self.get(index, "obs_next", stack_num=1)
        return obs["achieved_goal"]

    @compiled_when_eager()
    def relabel(self, key: chex.PRNGKey, indices: chex.Array) -> dict:
        """``buf[indices]`` with HER relabelling (pure; the stored data is not touched)."""
        future, mask = self.future_steps(key, indices)
        return relabel_batch(
            self._read(indices), self.achieved_goal_after(future), mask, self.compute_reward_fn
        )

    @compiled_when_eager(("batch_size",))
    def sample(self, key: chex.PRNGKey, batch_size: int) -> tuple[dict, jax.Array]:
        """``(relabelled batch, indices)``: uniform indices, then :meth:`relabel`."""
        key_idx, key_her = jax.random.split(key)
        indices = self.sample_indices(key_idx, batch_size)
        return self.relabel(key_her, indices), indices


class HERVectorReplayBuffer(metaclass=VectorKind):
    """Tianshou's ``HERVectorReplayBuffer``: a :class:`HERReplayBuffer` with ``buffer_num``
    sub-buffers (one per env) and the same relabelling. ``isinstance(buf,
    HERVectorReplayBuffer)`` is true for a HER buffer with more than one sub-buffer.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf import HERReplayBuffer, HERVectorReplayBuffer
      >>> goal = jnp.zeros(2)
      >>> obs = dict(observation=jnp.zeros(3), achieved_goal=goal, desired_goal=goal)
      >>> ex = dict(obs=obs, obs_next=obs, act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> reward = lambda achieved, desired: -jnp.abs(achieved - desired).sum(-1)
      >>> buf = HERVectorReplayBuffer.create(ex, 8, 2, reward, horizon=4)
      >>> type(buf) is HERReplayBuffer, isinstance(buf, HERVectorReplayBuffer), buf.buffer_num
      (True, True, 2)
    """

    kind = HERReplayBuffer

    @staticmethod
    def create(
        example: dict,
        total_size: int,
        buffer_num: int,
        compute_reward_fn: Callable,
        horizon: int,
        future_k: float = 8.0,
        **core_options: Any,
    ) -> HERReplayBuffer:
        """An empty HER buffer of ``buffer_num`` sub-buffers; see :meth:`HERReplayBuffer.create`."""
        return HERReplayBuffer.create(
            example,
            total_size,
            compute_reward_fn,
            horizon,
            future_k,
            buffer_num=buffer_num,
            **core_options,
        )


def _goal_dict(example: Mapping, key: str) -> Mapping:
    obs = example.get(key)
    if not isinstance(obs, Mapping):
        raise ConfigError(
            f"jaxbuf: HER needs '{key}' to be a dict with keys {list(GOAL_KEYS)}, "
            f"got {type(obs).__name__}"
        )
    missing = [k for k in GOAL_KEYS if k not in obs]
    if missing:
        raise ConfigError(f"jaxbuf: HER '{key}' lacks the key(s) {missing}; has {sorted(obs)}")
    achieved, desired = (
        jax.ShapeDtypeStruct(np.shape(obs[k]), jnp.asarray(obs[k]).dtype)
        for k in ("achieved_goal", "desired_goal")
    )
    if achieved != desired:
        raise ConfigError(
            f"jaxbuf: HER '{key}.achieved_goal' ({achieved.shape}, {achieved.dtype}) and "
            f"'{key}.desired_goal' ({desired.shape}, {desired.dtype}) must match"
        )
    return obs


def _check_config(
    example, compute_reward_fn, horizon, future_k, stack_num, save_only_last_obs, ignore_obs_next
) -> None:
    """Reject a HER configuration that cannot work, naming the argument."""
    if not isinstance(example, Mapping):
        raise ConfigError(f"jaxbuf: the example must be a dict, got {type(example).__name__}")
    if not callable(compute_reward_fn):
        raise ConfigError(
            f"jaxbuf: compute_reward_fn must be callable, got {type(compute_reward_fn).__name__}"
        )
    try:
        hash(compute_reward_fn)
    except TypeError as err:
        raise ConfigError(
            "jaxbuf: compute_reward_fn must be hashable (it is a static field); "
            "pass a module-level function"
        ) from err
    if not isinstance(horizon, numbers.Integral) or isinstance(horizon, bool) or horizon < 1:
        raise ConfigError(f"jaxbuf: horizon must be an int >= 1, got {horizon!r}")
    if not isinstance(future_k, numbers.Real) or not future_k >= 1:
        raise ConfigError(f"jaxbuf: future_k must be a number >= 1, got {future_k!r}")
    if stack_num != 1 or save_only_last_obs:
        raise ConfigError(
            "jaxbuf: HER buffers do not frame-stack goal dicts; need stack_num=1 and "
            f"save_only_last_obs=False, got stack_num={stack_num}, "
            f"save_only_last_obs={save_only_last_obs}"
        )
    obs = _goal_dict(example, "obs")
    if not ignore_obs_next:
        if "obs_next" not in example:
            raise ConfigError(
                "jaxbuf: HER reads the achieved goal after each step from 'obs_next'; add "
                "'obs_next' to the example or pass ignore_obs_next=True"
            )
        _goal_dict(example, "obs_next")
    goal = jnp.asarray(obs["achieved_goal"])
    spec = jax.ShapeDtypeStruct((1, *goal.shape), goal.dtype)
    try:
        out = jax.eval_shape(compute_reward_fn, spec, spec)
    except Exception as err:  # any failure to trace is a configuration error
        raise ConfigError(
            "jaxbuf: compute_reward_fn must be traceable with jax.numpy on batched goals "
            f"of shape (B, *{tuple(goal.shape)}); tracing failed: {err}"
        ) from err
    rew_shape = (1, *np.shape(example.get("rew", 0.0)))
    if getattr(out, "shape", None) != rew_shape:
        raise ConfigError(
            f"jaxbuf: compute_reward_fn must return one reward per sample, shape "
            f"(B, *{rew_shape[1:]}); for B=1 it returned {getattr(out, 'shape', out)}"
        )
