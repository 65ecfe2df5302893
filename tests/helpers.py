"""Small builders shared by the core tests."""

from __future__ import annotations

import numpy as np

EXAMPLE = {
    "obs": np.zeros((), np.float32),
    "act": np.int32(0),
    "rew": np.float32(0),
    "terminated": False,
    "truncated": False,
}


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


def assert_close(actual, expected, what: str) -> None:
    """Float comparison of recorded outputs (float64, 1e-6 relative and absolute)."""
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=1e-6,
        atol=1e-6,
        err_msg=what,
    )
