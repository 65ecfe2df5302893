"""Shared test builders: example transitions and filled buffers of every kind.

``BUILDERS`` makes each buffer class from the same stream of steps (:data:`STREAM`), so a
test parametrized over it checks one behaviour on every class.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows

import jaxbuf

# Doctests run over every module under the test paths; the helper scripts and workers here
# are not test modules (some read sys.argv or need the recording-only extras), so skip them.
_HERE = Path(__file__).parent
collect_ignore = [
    str(path.relative_to(_HERE))
    for path in _HERE.rglob("*.py")
    if not path.name.startswith("test_") and path.name != "conftest.py"
]

_GOAL_OBS = {
    "observation": np.zeros((), np.float32),
    "achieved_goal": np.zeros((), np.float32),
    "desired_goal": np.zeros((), np.float32),
}
GOAL_EXAMPLE = {
    "obs": _GOAL_OBS,
    "obs_next": _GOAL_OBS,
    "act": np.int32(0),
    "rew": np.float32(0),
    "terminated": False,
    "truncated": False,
}
"""A HER transition: scalar observation and goals."""

STREAM = [
    # (obs of env 0, obs of env 1, env 0 ends, env 1 ends): 2 envs stepping together.
    (1, 101, False, False),
    (2, 102, False, True),
    (3, 103, True, False),
    (4, 104, False, False),
    (5, 105, False, True),
    (6, 106, False, False),
]
"""Env 0 plays episodes [1, 2, 3] and [4, 5, 6 (unfinished)]; env 1 plays [101, 102],
[103, 104, 105] and [106 (unfinished)]."""

EPISODES = {(1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (101.0, 102.0), (103.0, 104.0, 105.0), (106.0,)}
"""The episodes of :data:`STREAM`, as tuples of observations."""


def goal_reward(achieved, desired):
    """HER reward: 0 at the goal, -1 elsewhere (module level, so buffers share jit caches)."""
    return -(jnp.abs(achieved - desired) > 0.5).astype(jnp.float32)


def stream_batches(goal: bool = False):
    """The batches of :data:`STREAM`, two rows each (env 0, env 1)."""
    for a, b, end_a, end_b in STREAM:
        batch = rows([a, b], terminated=[end_a, end_b], rew=[a / 10, b / 10])
        if goal:
            obs = batch["obs"]
            batch["obs"] = {"observation": obs, "achieved_goal": obs, "desired_goal": obs * 0}
            batch["obs_next"] = {k: v + 1 for k, v in batch["obs"].items()}
        yield batch


def _fill(buf, goal: bool = False):
    for batch in stream_batches(goal):
        buf, _ = buf.add(batch, jnp.asarray([0, 1], jnp.int32))
    return buf


BUILDERS = {
    "ReplayBuffer": lambda: _fill(jaxbuf.ReplayBuffer.create(EXAMPLE, 16, buffer_num=2)),
    "VectorReplayBuffer": lambda: _fill(jaxbuf.VectorReplayBuffer.create(EXAMPLE, 16, 2)),
    "PrioritizedReplayBuffer": lambda: _fill(
        jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, 16, 2, alpha=0.6, beta=0.4)
    ),
    "HERReplayBuffer": lambda: _fill(
        jaxbuf.HERVectorReplayBuffer.create(GOAL_EXAMPLE, 16, 2, goal_reward, horizon=3),
        goal=True,
    ),
    "CachedReplayBuffer": lambda: _fill(jaxbuf.CachedReplayBuffer.create(EXAMPLE, 10, 2, 4)),
}
"""Every buffer class, filled with :data:`STREAM`."""


def observation(obs):
    """The scalar observation of a read (a HER read holds it in ``obs.observation``)."""
    return obs["observation"] if isinstance(obs, dict) else obs


@pytest.fixture
def example() -> dict:
    """One scalar-obs transition (:data:`helpers.EXAMPLE`)."""
    return dict(EXAMPLE)


@pytest.fixture(params=sorted(BUILDERS))
def filled(request):
    """``(name, buffer)`` for every buffer class, filled with :data:`STREAM`."""
    return request.param, BUILDERS[request.param]()


@pytest.fixture(autouse=True)
def no_leaked_writer_threads():
    """Fail a test that leaves a file-mode buffer's background writer running (a buffer
    neither closed nor used as a context manager); the leaked writers are closed first."""
    from jaxbuf.trajectory import writer

    before = set(writer._LIVE)
    yield
    leaked = [w for w in writer._LIVE if w not in before]
    for w in leaked:
        w.close()
    assert not leaked, f"{len(leaked)} background writer(s) left running: close the buffer"
