"""``buf.extend``: N rows in one call equal N single adds in row order, for every class."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxbuf
from conftest import GOAL_EXAMPLE, goal_reward
from jaxbuf.errors import InputError

CONFIGS = {
    "ReplayBuffer": lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 7),
    "VectorReplayBuffer": lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 3),
    "lockstep": lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2, lockstep=True),
    "PrioritizedReplayBuffer": lambda: jaxbuf.PrioritizedVectorReplayBuffer.create(
        EXAMPLE, 10, 2, alpha=0.6, beta=0.4
    ),
    "HERReplayBuffer": lambda: jaxbuf.HERVectorReplayBuffer.create(
        GOAL_EXAMPLE, 10, 2, goal_reward, horizon=3
    ),
    "CachedReplayBuffer": lambda: jaxbuf.CachedReplayBuffer.create(EXAMPLE, 9, 2, 3),
}
SIZES = (1, 4, 11, 24)
"""Row counts drawn by the property test (few, so each compiles once); 24 wraps every buffer."""


_jit_extend = jax.jit(lambda buf, rows, ids: buf.extend(rows, ids))


def make_rows(n: int, flags: list, rewards: list, goal: bool) -> dict:
    """n rows: obs = 100 + row number, exact rewards, the drawn flags."""
    obs = 100.0 + np.arange(n, dtype=np.float32)
    out = {
        "obs": obs,
        "act": np.arange(n, dtype=np.int32),
        "rew": np.asarray(rewards[:n], np.float32),
        "terminated": np.asarray([f == 1 for f in flags[:n]]),
        "truncated": np.asarray([f == 2 for f in flags[:n]]),
    }
    if goal:
        out["obs"] = {"observation": obs, "achieved_goal": obs, "desired_goal": obs * 0}
        out["obs_next"] = {k: v + 1 for k, v in out["obs"].items()}
    return out


def take(rows: dict, index) -> dict:
    return jax.tree_util.tree_map(lambda x: x[index], rows)


def route(rows: dict, n: int) -> np.ndarray:
    """The documented round-robin: episode e of the call goes to sub-buffer e mod n."""
    done = (rows["terminated"] | rows["truncated"]).astype(int)
    return (np.cumsum(done) - done) % n


def num_ids(buf) -> int:
    return buf.cached_buffer_num if hasattr(buf, "caches") else buf.buffer_num


def single_adds(buf, rows: dict, ids, lockstep: bool):
    """The reference: one ``add`` per row (per step of all envs for a lockstep buffer)."""
    n = len(rows["act"])
    results = []
    if lockstep:
        k = buf.buffer_num
        for t in range(0, n, k):
            buf, res = buf.add(take(rows, slice(t, t + k)))
            results.append(res)
    else:
        for j in range(n):
            buf, res = buf.add(take(rows, slice(j, j + 1)), jnp.asarray(ids[j : j + 1], jnp.int32))
            results.append(res)
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *results)
    return buf, stacked


def assert_same(actual, expected, what: str) -> None:
    a_leaves, a_def = jax.tree_util.tree_flatten(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten(expected)
    assert a_def == e_def, what
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=f"{what} leaf {i}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_extend_equals_single_adds(name, data):
    buf = CONFIGS[name]()
    lockstep = name == "lockstep"
    goal = name == "HERReplayBuffer"
    k = num_ids(buf)
    n = data.draw(st.sampled_from(SIZES), label="n")
    if lockstep:
        n = max(k, n - n % k)
    flags = data.draw(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n))
    rewards = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, -2.0]), min_size=n, max_size=n))
    routed = data.draw(st.booleans(), label="routed") and not lockstep
    prefill = data.draw(st.sampled_from([0, 0, 2 * k]), label="prefill")
    rows = make_rows(n, flags, rewards, goal)
    if prefill:  # a started state: unfinished episodes that the new rows continue
        pre = make_rows(prefill, [0] * prefill, [1.0] * prefill, goal)
        buf, _ = single_adds(buf, pre, np.arange(prefill) % k, lockstep)
    if routed:
        ids = np.asarray(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
        given_ids = jnp.asarray(ids, jnp.int32)
    else:
        ids, given_ids = route(rows, k), None
    if data.draw(st.booleans(), label="done column"):
        rows["done"] = rows["terminated"] | rows["truncated"]
    expected = single_adds(buf, {k_: v for k_, v in rows.items() if k_ != "done"}, ids, lockstep)
    assert_same(buf.extend(rows, given_ids), expected, f"{name} eager")
    jitted = _jit_extend(buf, rows, given_ids)
    assert_same(jitted, expected, f"{name} jit")


def test_round_robin_by_episode_is_documented_rule():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 3)
    rows = make_rows(7, [0, 1, 2, 0, 1, 1, 0], [1.0] * 7, goal=False)
    buf, res = buf.extend(rows)
    # Episodes [0,1], [2], [3,4], [5], [6 (open)] go to sub-buffers 0, 1, 2, 0, 1.
    np.testing.assert_array_equal(res.index, [0, 1, 4, 8, 9, 2, 5])
    np.testing.assert_array_equal(res.episode_length, [0, 2, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(buf.lengths, [3, 2, 2])


def test_prioritized_rows_get_max_priority():
    buf = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 8, alpha=0.5, beta=0.4)
    buf, _ = buf.extend(make_rows(3, [0, 0, 1], [1.0] * 3, goal=False))
    buf = buf.update_weight(jnp.asarray([0]), jnp.asarray([9.0]))
    buf, res = buf.extend(make_rows(2, [0, 0], [1.0] * 2, goal=False))
    prio = np.asarray(buf.priorities())
    np.testing.assert_allclose(prio[np.asarray(res.index)], (9.0 + 2**-23) ** 0.5, rtol=1e-6)
    np.testing.assert_allclose(prio[[1, 2]], 1.0)


def test_bad_rows_are_refused():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 8)
    with pytest.raises(InputError, match=r"leading axis of N rows: field 'act'"):
        buf.extend(make_rows(1, [0], [0.0], goal=False) | {"act": np.int32(0)})
    with pytest.raises(ValueError, match="field 'done' disagrees"):
        buf.extend(make_rows(2, [0, 1], [0.0] * 2, goal=False) | {"done": np.zeros(2, bool)})
    lock = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2, lockstep=True)
    with pytest.raises(InputError, match="needs a multiple of 2 rows, got 3"):
        lock.extend(make_rows(3, [0] * 3, [0.0] * 3, goal=False))
    with pytest.raises(InputError, match="call extend with buffer_ids=None"):
        lock.extend(make_rows(2, [0] * 2, [0.0] * 2, goal=False), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="field 'obs' expected shape"):
        buf.extend(make_rows(2, [0] * 2, [0.0] * 2, goal=False) | {"obs": np.zeros(3, np.float32)})
