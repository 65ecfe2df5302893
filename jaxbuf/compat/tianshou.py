"""Tianshou's buffer classes, by name and constructor, as mutable objects over jaxbuf.

Port a Tianshou script by changing its import::

    from jaxbuf.compat.tianshou import ReplayBuffer, VectorReplayBuffer

Each object holds a pure jaxbuf buffer (``buf.state``), allocated at the first ``add`` from
that batch's shapes, and replaces it on every update through a jitted function that donates
the old state, so an eager ``add`` writes its rows in place. Reads return NumPy arrays
(batches as :class:`BatchDict`, a dict with attribute access). ``Facade.from_state`` wraps
a pure buffer, e.g. one filled under ``jit``. See docs/compat-tianshou.md for what differs.

Every class takes ``seed`` (or Tianshou's ``random_seed``) for its internal sampling key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.compat import _kinds
from jaxbuf.compat._batch import BatchDict, to_numpy
from jaxbuf.compat._facade import Facade, donated, rowwise
from jaxbuf.compat._persist import Persistence
from jaxbuf.errors import IndexRangeError, InputError, message

__all__ = [
    "BatchDict",
    "CachedReplayBuffer",
    "HERReplayBuffer",
    "HERVectorReplayBuffer",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "ReplayBuffer",
    "VectorReplayBuffer",
]


def _core(stack_num, ignore_obs_next, save_only_last_obs, sample_avail) -> dict:
    return dict(
        stack_num=stack_num,
        ignore_obs_next=ignore_obs_next,
        save_only_last_obs=save_only_last_obs,
        sample_avail=sample_avail,
    )


class ReplayBuffer(Persistence, Facade):
    """Tianshou's ``ReplayBuffer(size, stack_num=1, ignore_obs_next=False,
    save_only_last_obs=False, sample_avail=False)``; every other facade class derives from it.

    Example:
      >>> import numpy as np
      >>> def step(i, done=False):
      ...     return dict(obs=np.float32(i), act=np.int32(0), rew=np.float32(1), terminated=done,
      ...                 truncated=False, obs_next=np.float32(i + 1))
      >>> from jaxbuf.compat.tianshou import ReplayBuffer
      >>> buf = ReplayBuffer(size=4)
      >>> for i in range(3):
      ...     ptr, ep_rew, ep_len, ep_idx = buf.add(step(i, done=i == 1))
      >>> len(buf), buf[:].obs.tolist(), buf.next(np.arange(3)).tolist()
      (3, [0.0, 1.0, 2.0], [1, 1, 2])
      >>> batch, indices = buf.sample(2)
      >>> batch.obs.shape, indices.shape
      ((2,), (2,))
    """

    def __init__(
        self,
        size: int,
        stack_num: int = 1,
        ignore_obs_next: bool = False,
        save_only_last_obs: bool = False,
        sample_avail: bool = False,
        **kwargs: Any,
    ) -> None:
        opts = _core(stack_num, ignore_obs_next, save_only_last_obs, sample_avail)
        self._setup("core", {"size": size, **opts}, kwargs)

    @staticmethod
    def _class_for(kind: str, options: dict) -> type:
        vector = options.get("buffer_num", 1) > 1
        if kind == "core":
            return VectorReplayBuffer if vector else ReplayBuffer
        if kind == "prioritized":
            return PrioritizedVectorReplayBuffer if vector else PrioritizedReplayBuffer
        if kind == "her":
            return HERVectorReplayBuffer if vector else HERReplayBuffer
        return CachedReplayBuffer


class VectorReplayBuffer(ReplayBuffer):
    """Tianshou's ``VectorReplayBuffer(total_size, buffer_num, **kwargs)``: ``buffer_num``
    sub-buffers of ``ceil(total_size / buffer_num)`` slots, one per environment.

    Example:
      >>> import numpy as np
      >>> rows = dict(obs=np.zeros(2, np.float32), act=np.zeros(2, np.int32),
      ...             rew=np.ones(2, np.float32), terminated=np.array([False, True]),
      ...             truncated=np.zeros(2, bool), obs_next=np.ones(2, np.float32))
      >>> from jaxbuf.compat.tianshou import VectorReplayBuffer
      >>> buf = VectorReplayBuffer(total_size=8, buffer_num=2)
      >>> ptr, ep_rew, ep_len, ep_idx = buf.add(rows)  # one row per environment
      >>> ptr.tolist(), ep_rew.tolist(), buf.subbuffer_edges.tolist()
      ([0, 4], [0.0, 1.0], [0, 4, 8])
      >>> buf.unfinished_index().tolist()  # env 0's episode is still open
      [0]
    """

    def __init__(self, total_size: int, buffer_num: int, **kwargs: Any) -> None:
        _configure(self, "core", {"size": total_size, "buffer_num": buffer_num}, kwargs)


_CORE_DEFAULTS = (
    ("stack_num", 1),
    ("ignore_obs_next", False),
    ("save_only_last_obs", False),
    ("sample_avail", False),
)


def _configure(buf: Facade, kind: str, options: dict, kwargs: dict) -> None:
    """Set ``buf`` up as ``kind`` with ``options`` and the core options found in ``kwargs``
    (Tianshou's defaults for those not given); the rest of ``kwargs`` goes to ``_setup``."""
    core = _core(*(kwargs.pop(k, d) for k, d in _CORE_DEFAULTS))
    buf._setup(kind, {**options, **core}, kwargs)


class _Priorities:
    """``set_beta``, ``update_weight`` and ``get_weight`` of the prioritized facades."""

    def set_beta(self, beta: float) -> None:
        """Set the importance-sampling exponent (takes effect for vector buffers too)."""
        if self._state is None:
            self._options["beta"] = float(beta)
        else:
            self._state = self._state.set_beta(beta)

    def update_weight(self, index: Any, new_weight: Any) -> None:
        """Set the priorities of stored slots to ``|new_weight| + eps`` (to the ``alpha``)."""
        where = f"{type(self).__name__}.update_weight"
        state = self._ready("update_weight")
        idx = np.asarray(index)
        weight = np.asarray(getattr(new_weight, "detach", lambda: new_weight)(), np.float64)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim > 1:
            raise InputError(
                message(where, f"index must be ints of shape (B,), got {idx.dtype} {idx.shape}")
            )
        weight = np.broadcast_to(weight, idx.shape)
        bad = idx[(idx < 0) | (idx >= self.maxsize)]
        if bad.size:
            raise IndexRangeError(
                message(where, f"indices must lie in [0, {self.maxsize}), got {bad[:8].tolist()}")
            )
        edges = self.subbuffer_edges
        part = np.searchsorted(edges, idx, side="right") - 1
        stored = idx - edges[part] < np.asarray(state.lengths)[part]
        if not np.all(stored):
            raise InputError(
                message(where, f"slot(s) {idx[~stored][:8].tolist()} hold no transition")
            )
        if not np.all(np.isfinite(weight)):
            raise InputError(
                message(where, f"new_weight must be finite, got {weight[:8].tolist()}")
            )
        self._state = donated("update_weight")(
            state, jnp.asarray(idx, jnp.int32), jnp.asarray(weight, jnp.float32)
        )

    def get_weight(self, index: Any) -> np.ndarray:
        """Importance weights at ``index`` (standard PER normalisation, in ``(0, 1]``)."""
        return rowwise(self._ready("get_weight").get_weight, self._index(index, "get_weight"))

    def _carry_over(self, state: Any) -> dict:
        return {"beta": state.beta, "max_prio": state.max_prio}


class PrioritizedReplayBuffer(_Priorities, ReplayBuffer):
    """Tianshou's ``PrioritizedReplayBuffer(size, alpha, beta, weight_norm=True, **kwargs)``.

    Example:
      >>> import numpy as np
      >>> def step(i, done=False):
      ...     return dict(obs=np.float32(i), act=np.int32(0), rew=np.float32(1), terminated=done,
      ...                 truncated=False, obs_next=np.float32(i + 1))
      >>> from jaxbuf.compat.tianshou import PrioritizedReplayBuffer
      >>> buf = PrioritizedReplayBuffer(4, alpha=1.0, beta=1.0)
      >>> for i in range(2):
      ...     _ = buf.add(step(i))
      >>> buf.update_weight(np.array([0, 1]), np.array([2.0, 0.5]))
      >>> [round(float(w), 2) for w in buf.get_weight(np.arange(2))]  # (p / min p) ** -beta
      [0.25, 1.0]
    """

    def __init__(
        self, size: int, alpha: float, beta: float, weight_norm: bool = True, **kwargs: Any
    ) -> None:
        prio = {"alpha": alpha, "beta": beta, "weight_norm": weight_norm}
        _configure(self, "prioritized", {"size": size, **prio}, kwargs)


class PrioritizedVectorReplayBuffer(PrioritizedReplayBuffer):
    """Tianshou's ``PrioritizedVectorReplayBuffer(total_size, buffer_num, alpha, beta, ...)``:
    one priority tree over every sub-buffer.

    Example:
      >>> import numpy as np
      >>> rows = dict(obs=np.zeros(2, np.float32), act=np.zeros(2, np.int32),
      ...             rew=np.ones(2, np.float32), terminated=np.array([False, True]),
      ...             truncated=np.zeros(2, bool), obs_next=np.ones(2, np.float32))
      >>> from jaxbuf.compat.tianshou import PrioritizedVectorReplayBuffer
      >>> buf = PrioritizedVectorReplayBuffer(8, 2, alpha=0.6, beta=0.4)
      >>> _ = buf.add(rows)
      >>> len(buf), buf.get_weight(np.array([0, 4])).tolist()  # equal priorities
      (2, [1.0, 1.0])
    """

    def __init__(
        self,
        total_size: int,
        buffer_num: int,
        alpha: float,
        beta: float,
        weight_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        prio = {"alpha": alpha, "beta": beta, "weight_norm": weight_norm}
        options = {"size": total_size, "buffer_num": buffer_num, **prio}
        _configure(self, "prioritized", options, kwargs)


class HERReplayBuffer(ReplayBuffer):
    """Tianshou's ``HERReplayBuffer(size, compute_reward_fn, horizon, future_k=8.0, **kwargs)``.

    ``compute_reward_fn(achieved_goal, desired_goal)`` gets batched goals; a ``jax.numpy``
    function runs compiled, a NumPy one on the host (``jax.pure_callback``).

    Example:
      >>> import numpy as np
      >>> def reward(achieved, desired):  # 0 at the goal, -1 elsewhere
      ...     return -(np.abs(achieved - desired).sum(-1) > 0.1).astype(np.float32)
      >>> def obs(i):
      ...     return dict(observation=np.float32([i]), achieved_goal=np.float32([i]),
      ...                 desired_goal=np.float32([9]))
      >>> from jaxbuf.compat.tianshou import HERReplayBuffer
      >>> buf = HERReplayBuffer(8, reward, horizon=3, future_k=4.0)
      >>> for i in range(3):
      ...     _ = buf.add(dict(obs=obs(i), act=np.int32(0), rew=np.float32(-1), terminated=i == 2,
      ...                      truncated=False, obs_next=obs(i + 1)))
      >>> batch, indices = buf.sample(4)  # relabelled goals and rewards
      >>> batch.obs.desired_goal.shape, set(batch.rew.tolist()) <= {0.0, -1.0}
      ((4, 1), True)
    """

    def __init__(
        self,
        size: int,
        compute_reward_fn: Callable,
        horizon: int,
        future_k: float = 8.0,
        **kwargs: Any,
    ) -> None:
        her = {"compute_reward_fn": compute_reward_fn, "horizon": horizon, "future_k": future_k}
        _configure(self, "her", {"size": size, **her}, kwargs)

    def _read_sampled(self, idx: np.ndarray) -> BatchDict:
        # Every sample is relabelled, sample(0) included (as Tianshou).
        key = self._next_key()
        state = self._state
        return to_numpy(rowwise(lambda i: state.relabel(key, i), idx))


class HERVectorReplayBuffer(HERReplayBuffer):
    """Tianshou's ``HERVectorReplayBuffer(total_size, buffer_num, compute_reward_fn, horizon,
    future_k=8.0, **kwargs)``.

    Example:
      >>> import numpy as np
      >>> def reward(achieved, desired):  # 0 at the goal, -1 elsewhere
      ...     return -(np.abs(achieved - desired).sum(-1) > 0.1).astype(np.float32)
      >>> def obs(i):
      ...     return dict(observation=np.float32([i]), achieved_goal=np.float32([i]),
      ...                 desired_goal=np.float32([9]))
      >>> from jaxbuf.compat.tianshou import HERVectorReplayBuffer
      >>> buf = HERVectorReplayBuffer(8, 2, reward, horizon=3)
      >>> row = dict(obs=obs(0), act=np.int32(0), rew=np.float32(-1), terminated=False,
      ...            truncated=False, obs_next=obs(1))
      >>> import jax
      >>> ptr, *_ = buf.add(jax.tree.map(lambda x: np.stack([x, x]), row))  # a row per env
      >>> ptr.tolist(), buf.maxsize
      ([0, 4], 8)
    """

    def __init__(
        self,
        total_size: int,
        buffer_num: int,
        compute_reward_fn: Callable,
        horizon: int,
        future_k: float = 8.0,
        **kwargs: Any,
    ) -> None:
        her = {"compute_reward_fn": compute_reward_fn, "horizon": horizon, "future_k": future_k}
        options = {"size": total_size, "buffer_num": buffer_num, **her}
        _configure(self, "her", options, kwargs)


class CachedReplayBuffer(ReplayBuffer):
    """Tianshou's ``CachedReplayBuffer(main_buffer, cached_buffer_num, max_episode_length)``.

    ``main_buffer`` (a facade :class:`ReplayBuffer`) gives the main size and the options; its
    stored data, if any, is copied in (later adds do not reach ``main_buffer`` itself).

    Example:
      >>> import numpy as np
      >>> rows = dict(obs=np.zeros(2, np.float32), act=np.zeros(2, np.int32),
      ...             rew=np.ones(2, np.float32), terminated=np.array([False, True]),
      ...             truncated=np.zeros(2, bool), obs_next=np.ones(2, np.float32))
      >>> from jaxbuf.compat.tianshou import CachedReplayBuffer, ReplayBuffer
      >>> buf = CachedReplayBuffer(ReplayBuffer(8), cached_buffer_num=2, max_episode_length=4)
      >>> ptr, ep_rew, *_ = buf.add(rows)  # row 1 ends its episode: moved to the main buffer
      >>> ptr.tolist(), ep_rew.tolist(), len(buf), buf.maxsize
      ([8, 0], [0.0, 1.0], 2, 16)
    """

    def __init__(
        self, main_buffer: ReplayBuffer, cached_buffer_num: int, max_episode_length: int, **kwargs
    ) -> None:
        if type(main_buffer) is not ReplayBuffer:
            raise InputError(
                message(
                    "CachedReplayBuffer",
                    f"main_buffer must be a jaxbuf.compat.tianshou.ReplayBuffer, got "
                    f"{type(main_buffer).__name__}",
                )
            )
        opts = {k: main_buffer._options[k] for k, _ in _CORE_DEFAULTS}
        options = {
            "main_size": main_buffer.maxsize,
            "cached_buffer_num": cached_buffer_num,
            "max_episode_length": max_episode_length,
            **opts,
        }
        self._setup("cached", options, kwargs)
        main = main_buffer.state
        if main is not None:
            fresh = _kinds.create("cached", main.input_spec(), options)
            self._state = fresh.replace(main=jax.tree_util.tree_map(jnp.copy, main))
