"""How each facade kind creates its pure state, and how to read that recipe back off a state.

A recipe is ``(kind, options)``: ``kind`` one of :data:`KINDS`, ``options`` the keyword
arguments of the pure class's ``create`` after the example. :func:`create` runs it;
:func:`recipe_of` recovers it from any pure buffer, so a wrapped state (``from_state``,
``load_hdf5``) can be re-created by ``reset`` exactly like one built by a constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.buffers import ReplayBuffer as PureReplayBuffer
from jaxbuf.cached import CachedReplayBuffer as PureCachedReplayBuffer
from jaxbuf.errors import ConfigError, InputError, message
from jaxbuf.her import HERReplayBuffer as PureHERReplayBuffer
from jaxbuf.prioritized import PrioritizedReplayBuffer as PurePrioritizedReplayBuffer

KINDS = ("core", "prioritized", "her", "cached")
CORE_KEYS = (
    "stack_num",
    "ignore_obs_next",
    "save_only_last_obs",
    "sample_avail",
    "lockstep",
    "storage_memory_kind",
)


class HostReward:
    """A NumPy ``compute_reward_fn`` (Tianshou style) made callable under ``jit``.

    The function runs on the host through ``jax.pure_callback`` on the batched goals and must
    return one float reward per sample. Hashable and equal by the wrapped function, so
    buffers holding the same function share compiled code.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, achieved: jax.Array, desired: jax.Array) -> jax.Array:
        probe = np.asarray(
            self.fn(
                np.zeros(achieved.shape, achieved.dtype), np.zeros(desired.shape, desired.dtype)
            )
        )
        out = jax.ShapeDtypeStruct(probe.shape, jnp.float32)

        def host(a, d):
            return np.asarray(self.fn(np.asarray(a), np.asarray(d)), np.float32)

        return jax.pure_callback(host, out, achieved, desired)

    def __hash__(self) -> int:
        return hash(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostReward) and other.fn == self.fn


def reward_fn_for(fn: Callable, goal: Any) -> Callable:
    """``fn`` itself if it traces with ``jax.numpy`` on batched goals, else :class:`HostReward`."""
    if isinstance(fn, HostReward) or not callable(fn):
        return fn
    spec = jax.ShapeDtypeStruct((1, *np.shape(goal)), jnp.asarray(goal).dtype)
    try:
        jax.eval_shape(fn, spec, spec)
    except Exception:  # NumPy code on tracers fails in many ways; run it on the host
        return HostReward(fn)
    return fn


def user_reward_fn(fn: Callable) -> Callable:
    """The function the user passed (unwrapping :class:`HostReward`)."""
    return fn.fn if isinstance(fn, HostReward) else fn


def create(kind: str, example: dict, options: dict) -> Any:
    """The empty pure buffer of recipe ``(kind, options)`` for transitions like ``example``."""
    if kind == "core":
        return PureReplayBuffer.create(example, **options)
    if kind == "prioritized":
        return PurePrioritizedReplayBuffer.create(example, **options)
    if kind == "her":
        options = dict(options)
        obs = example.get("obs") if isinstance(example, dict) else None
        if isinstance(obs, dict) and "achieved_goal" in obs:
            goal = obs["achieved_goal"]
            if isinstance(goal, jax.ShapeDtypeStruct):
                goal = np.zeros(goal.shape, goal.dtype)
            options["compute_reward_fn"] = reward_fn_for(options["compute_reward_fn"], goal)
        return PureHERReplayBuffer.create(example, **options)
    if kind == "cached":
        return PureCachedReplayBuffer.create(example, **options)
    raise ConfigError(message("facade", f"unknown facade kind {kind!r}"))


def _core_options(core: PureReplayBuffer) -> dict:
    return {k: getattr(core, k) for k in CORE_KEYS} | {"buffer_num": core.buffer_num}


def recipe_of(state: Any) -> tuple[str, dict]:
    """``(kind, options)`` that :func:`create` turns into an empty twin of ``state``."""
    if isinstance(state, PureReplayBuffer):
        return "core", {"size": state.maxsize, **_core_options(state)}
    if isinstance(state, PurePrioritizedReplayBuffer):
        opts = {"size": state.maxsize, "alpha": state.alpha, "beta": float(state.beta)}
        return "prioritized", {
            **opts,
            "weight_norm": state.weight_norm,
            **_core_options(state.buffer),
        }
    if isinstance(state, PureHERReplayBuffer):
        opts = {
            "size": state.maxsize,
            "compute_reward_fn": user_reward_fn(state.compute_reward_fn),
            "horizon": state.horizon,
            "future_k": state.future_k,
        }
        return "her", {**opts, **_core_options(state.buffer)}
    if isinstance(state, PureCachedReplayBuffer):
        core = _core_options(state.caches)
        core.pop("buffer_num")
        core.pop("lockstep")
        return "cached", {
            "main_size": state.main_size,
            "cached_buffer_num": state.cached_buffer_num,
            "max_episode_length": state.max_episode_length,
            **core,
        }
    raise InputError(
        message(
            "from_state",
            "expected a jaxbuf ReplayBuffer, PrioritizedReplayBuffer, HERReplayBuffer or "
            f"CachedReplayBuffer, got {type(state).__name__}",
        )
    )


def cores(state: Any) -> dict[str, PureReplayBuffer]:
    """The core buffers inside ``state`` by attribute path ("" for the state itself)."""
    if isinstance(state, PureReplayBuffer):
        return {"": state}
    if isinstance(state, PureCachedReplayBuffer):
        return {"main": state.main, "caches": state.caches}
    return {"buffer": state.buffer}


def with_cores(state: Any, new: dict[str, PureReplayBuffer]) -> Any:
    """``state`` with its core buffers replaced (inverse of :func:`cores`)."""
    if "" in new:
        return new[""]
    return state.replace(**new)


def route_count(state: Any) -> int:
    """How many buffer ids ``add`` accepts: caches for a cached buffer, else sub-buffers."""
    if isinstance(state, PureCachedReplayBuffer):
        return state.cached_buffer_num
    return state.buffer_num
