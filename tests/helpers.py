"""Small builders shared by the core tests."""

from __future__ import annotations

import numpy as np


def transition(obs_shape: tuple = (), *, obs_next: bool = False, **extra) -> dict:
    """An example transition: float32 ``obs`` of ``obs_shape`` (and ``obs_next`` if asked),
    int32 ``act``, float32 ``rew``, bool flags, plus ``extra`` fields as given."""
    out = {
        "obs": np.zeros(obs_shape, np.float32),
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
    }
    if obs_next:
        out["obs_next"] = np.zeros(obs_shape, np.float32)
    return {**out, **extra}


EXAMPLE = transition()


def step(obs, rew=0.0, terminated=False, truncated=False, act=0) -> dict:
    """One scalar-obs transition without a batch axis."""
    return {
        "obs": np.float32(obs),
        "act": np.int32(act),
        "rew": np.float32(rew),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
    }


def rows(obs, rew=None, terminated=None, truncated=None, act=None) -> dict:
    """k scalar-obs transitions with a leading axis."""
    obs = np.asarray(obs, np.float32)
    k = obs.shape[0]
    z = np.zeros(k, bool)
    return {
        "obs": obs,
        "act": np.zeros(k, np.int32) if act is None else np.asarray(act, np.int32),
        "rew": np.zeros(k, np.float32) if rew is None else np.asarray(rew, np.float32),
        "terminated": z if terminated is None else np.asarray(terminated, bool),
        "truncated": z if truncated is None else np.asarray(truncated, bool),
    }


def assert_close(actual, expected, what: str, atol: float = 1e-6) -> None:
    """Float comparison of recorded outputs (float64, 1e-6 relative, ``atol`` absolute)."""
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=1e-6,
        atol=atol,
        err_msg=what,
    )


def random_updates(tree, capacity: int, batch: int, steps: int, method: str = "set_unchecked"):
    """``tree`` after ``steps`` jitted ``tree.<method>`` calls of ``batch`` random leaves each.

    Indices are uniform over ``[0, capacity)`` (so duplicates occur), values ``U[0, 10)**3``
    with 20 % set to exactly 0, so the tree ends with empty leaves that must never be drawn.
    """
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(tree, key):
        def body(t, k):
            k_idx, k_val, k_zero = jax.random.split(k, 3)
            idx = jax.random.randint(k_idx, (batch,), 0, capacity)
            val = jax.random.uniform(k_val, (batch,), minval=0.0, maxval=10.0) ** 3
            val = jnp.where(jax.random.uniform(k_zero, (batch,)) < 0.2, 0.0, val)
            return getattr(t, method)(idx, val), None

        return jax.lax.scan(body, tree, jax.random.split(key, steps))[0]

    return run(tree, jax.random.key(0))
