"""Shared data for the sharding tests: example transition, deterministic rollouts, references.

Imported by the 8-device cases (``_sharding_cases.py``) and the multi-process worker
(``_multihost_worker.py``), which both run in their own processes.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from helpers import transition

import jaxbuf

N_ENV = 16
SIZE = 160  # 10 slots per sub-buffer
EXAMPLE = transition((3,), obs_next=True)
CONFIGS = {
    "stack2": {"stack_num": 2},
    "avail_no_next": {"stack_num": 3, "sample_avail": True, "ignore_obs_next": True},
}


def rows(t: int, envs: np.ndarray) -> dict:
    """Step ``t`` for the given env ids: distinct obs, episodes of varying length."""
    return {
        "obs": (t * 100 + envs[:, None] + np.arange(3) / 10).astype(np.float32),
        "obs_next": (t * 100 + 100 + envs[:, None] + np.arange(3) / 10).astype(np.float32),
        "act": (t + envs).astype(np.int32),
        "rew": (1.0 + envs / 10).astype(np.float32),
        "terminated": (t + envs) % 5 == 4,
        "truncated": (t + 2 * envs) % 7 == 6,
    }


def assert_trees_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


STEPS = 13  # wraps every 10-slot sub-buffer


def stacked_rows(envs: np.ndarray, steps: int = STEPS) -> dict:
    """``rows(t, envs)`` for ``t < steps`` stacked on a leading time axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[rows(t, envs) for t in range(steps)])


@functools.lru_cache
def builder(config: str, size: int, n: int):
    """A jitted function: scan ``add`` over stacked rows into a fresh unsharded buffer."""

    def build(xs):
        buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, size, n, **CONFIGS[config])
        return jax.lax.scan(lambda b, x: (b.add(x)[0], None), buf, xs)[0]

    return jax.jit(build)
