"""HER relabelling on a hand-built goal task.

Every step of episode ``e`` at step ``t`` achieves the goal ``A(e, t) = 100*env + 10*e + t``
before the transition and ``A(e, t+1)`` after it; the stored desired goal is -100, which is
never reached, so every stored reward is -1. A relabelled sample must carry a goal that was
achieved after some step ``t_f`` of its own episode with ``t <= t_f <= t + horizon - 1``, and
a reward recomputed against that goal (0 exactly when the goal is the sample's own
achieved goal).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import transition

from jaxbuf.her import HERReplayBuffer, HERVectorReplayBuffer

UNREACHED = -100.0
ADD = jax.jit(lambda b, x, i: b.add(x, i))


def reward(achieved, desired):
    """-1 unless the achieved goal is within 0.5 of the desired one (module level: hashable)."""
    return -(jnp.abs(achieved - desired).sum(-1) > 0.5).astype(jnp.float32)


def _obs(goal, n):
    return {
        "observation": np.zeros((n, 2), np.float32),
        "achieved_goal": np.asarray(goal, np.float32).reshape(n, 1),
        "desired_goal": np.full((n, 1), UNREACHED, np.float32),
    }


def _example():
    one = {k: v[0] for k, v in _obs([0.0], 1).items()}
    return {**transition(), "obs": one, "obs_next": one}


def _episodes(lengths, env=0, open_last=False):
    """Rows of consecutive episodes; returns (rows, episode id, step) per row."""
    ep = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    step = np.concatenate([np.arange(n) for n in lengths])
    goal = 100 * env + 10 * ep + step
    done = np.concatenate([np.arange(n) == n - 1 for n in lengths])
    if open_last:
        done[-lengths[-1] :] = False
    k = len(ep)
    rows = {
        "obs": _obs(goal, k),
        "act": np.zeros(k, np.int32),
        "rew": np.full(k, -1.0, np.float32),
        "terminated": done,
        "truncated": np.zeros(k, bool),
        "obs_next": _obs(goal + 1, k),
    }
    return rows, ep, step, done


LENGTHS = [3, 5, 1, 4, 3]  # the last episode is left unfinished (its head is the write head)


def _filled(ignore_obs_next=False, horizon=3, future_k=4.0):
    rows, ep, step, done = _episodes(LENGTHS, open_last=True)
    ex = _example()
    if ignore_obs_next:
        ex.pop("obs_next")
        rows.pop("obs_next")
    buf = HERReplayBuffer.create(ex, 16, reward, horizon, future_k, ignore_obs_next=ignore_obs_next)
    buf, _ = ADD(buf, rows, np.zeros(len(ep), np.int32))
    last = np.asarray([LENGTHS[e] - 1 for e in ep])
    return buf, ep, step, last


@pytest.mark.parametrize("ignore_obs_next", [False, True], ids=["obs_next", "ignore_obs_next"])
def test_relabelled_goals_and_rewards(ignore_obs_next):
    horizon = 3
    buf, ep, step, last = _filled(ignore_obs_next, horizon)
    idx = np.tile(np.arange(16), 300)
    batch = jax.jit(buf.relabel)(jax.random.key(0), idx)
    goal = np.asarray(batch["obs"]["desired_goal"])[:, 0]
    np.testing.assert_array_equal(goal, np.asarray(batch["obs_next"]["desired_goal"])[:, 0])
    relabelled = goal != UNREACHED
    e, t, end = ep[idx], step[idx], last[idx]

    # The goal achieved after step t_f is A(e, t_f + 1); with ignore_obs_next it is read from
    # obs[next(t_f)], which at the episode's last stored step is A(e, t_f) itself.
    def goal_step(t_f, n):
        return np.minimum(t_f + 1, n) if ignore_obs_next else t_f + 1

    v = goal[relabelled] - 10 * e[relabelled]  # the step whose achieved goal was taken
    assert np.all(v == np.round(v))  # a goal achieved in this episode, not a mixture
    tr, nr = t[relabelled], end[relabelled]
    assert np.all(v >= goal_step(tr, nr)), "future step before the sample"
    assert np.all(v <= goal_step(np.minimum(tr + horizon - 1, nr), nr)), "crossed horizon/end"
    # Every allowed future step occurs.
    pairs = {(int(a), int(b)) for a, b in zip(tr, v)}
    expected = {
        (int(a), int(goal_step(a + d, n)))
        for a, n in zip(step, last)
        for d in range(horizon)
        if a + d <= n
    }
    assert pairs == expected
    # Rewards: recomputed against the new goal for relabelled samples, stored -1 otherwise.
    ag_next = np.asarray(batch["obs_next"]["achieved_goal"])[:, 0]
    want = np.where(relabelled, -(np.abs(ag_next - goal) > 0.5).astype(np.float32), -1.0)
    np.testing.assert_array_equal(batch["rew"], want)
    assert np.any(relabelled & (want == 0)) and np.any(relabelled & (want == -1))
    # Other fields are the stored ones.
    plain = buf[idx]
    np.testing.assert_array_equal(batch["obs"]["achieved_goal"], plain["obs"]["achieved_goal"])
    np.testing.assert_array_equal(batch["act"], plain["act"])


def test_ignore_obs_next_reward_uses_new_goal_e34():
    """At an episode end with ignore_obs_next the new goal is the step's own achieved goal
    and obs_next is obs itself (E26), so the recomputed reward is a success (0). Tianshou
    computes it against the old goal and keeps -1 (E34)."""
    buf, ep, step, last = _filled(ignore_obs_next=True, future_k=1e9)
    ends = np.flatnonzero((step == last) & (ep < len(LENGTHS) - 1))
    batch = buf.relabel(jax.random.key(1), ends)
    np.testing.assert_array_equal(batch["obs"]["desired_goal"][:, 0], 10 * ep[ends] + step[ends])
    np.testing.assert_array_equal(batch["rew"], np.zeros(len(ends)))


def test_relabel_probability_and_uniform_future_step():
    buf, ep, step, last = _filled(horizon=3, future_k=4.0)
    n = 20000
    idx = np.full(n, 4)  # episode 1, step 1 of 5: the whole horizon window is available
    future, mask = jax.jit(buf.future_steps)(jax.random.key(2), idx)
    p = buf.future_p
    frac = float(np.mean(mask))
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n), (frac, p)
    counts = np.bincount(np.asarray(future) - 4, minlength=3)
    assert counts.sum() == n and len(counts) == 3  # only t, t+1, t+2
    chi2 = ((counts - n / 3) ** 2 / (n / 3)).sum()
    assert chi2 < 13.8  # 2 degrees of freedom, p = 0.001
    never = HERReplayBuffer.create(_example(), 4, reward, 3, future_k=1.0)
    assert never.future_p == 0.0
    assert not np.any(never.future_steps(jax.random.key(0), np.arange(4))[1])


def test_vector_buffer_never_crosses_envs():
    rows0, ep0, step0, _ = _episodes([4, 3], env=0)
    rows1, ep1, step1, _ = _episodes([2, 2, 3], env=1)
    rows = jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b]), rows0, rows1)
    buf = HERVectorReplayBuffer.create(_example(), 20, 2, reward, horizon=4, future_k=2.0)
    buf, _ = ADD(buf, rows, np.asarray([0] * 7 + [1] * 7, np.int32))
    batch, idx = jax.jit(buf.sample, static_argnums=1)(jax.random.key(3), 4000)
    goal = np.asarray(batch["obs"]["desired_goal"])[:, 0]
    achieved = np.asarray(batch["obs"]["achieved_goal"])[:, 0]
    relabelled = goal != UNREACHED
    assert 0.4 < relabelled.mean() < 0.6
    # Same env (hundreds) and episode (tens); the goal is 1 to 4 steps after the sample's.
    same = (goal // 10 == achieved // 10) & (goal - achieved >= 1) & (goal - achieved <= 4)
    assert np.all(same[relabelled])
    assert set(np.asarray(idx)[~relabelled].tolist()) <= set(range(7)) | set(range(10, 17))


def test_jit_equals_eager_and_vmap():
    buf, *_ = _filled()
    key = jax.random.key(7)
    eager_batch, eager_idx = buf.sample(key, 64)
    jit_batch, jit_idx = jax.jit(buf.sample, static_argnums=1)(key, 64)
    np.testing.assert_array_equal(eager_idx, jit_idx)
    jax.tree_util.tree_map(np.testing.assert_array_equal, eager_batch, jit_batch)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), buf)
    keys = jax.random.split(key, 2)
    vb, vidx = jax.jit(jax.vmap(lambda b, k: b.sample(k, 64)))(stacked, keys)
    one, one_idx = buf.sample(keys[1], 64)
    np.testing.assert_array_equal(vidx[1], one_idx)
    np.testing.assert_array_equal(vb["rew"][1], one["rew"])


def test_add_and_forwarded_reads():
    buf = HERReplayBuffer.create(_example(), 8, reward, 2)
    rows, *_ = _episodes([2])
    buf, res = jax.jit(lambda b, x: b.add(x, jnp.zeros(2, jnp.int32)))(buf, rows)
    np.testing.assert_array_equal(res.index, [0, 1])
    np.testing.assert_array_equal(res.episode_length, [0, 2])
    assert len(buf) == 2 and int(buf.size) == 2 and buf.maxsize == 8
    np.testing.assert_array_equal(buf.next(np.arange(2)), [1, 1])
    np.testing.assert_array_equal(buf.prev(np.arange(2)), [0, 0])
    np.testing.assert_array_equal(buf.unfinished_index(), [-1])
    np.testing.assert_array_equal(buf[np.arange(2)]["obs"]["desired_goal"], [[-100], [-100]])


class _Unhashable:
    __hash__ = None

    def __call__(self, a, d):
        return reward(a, d)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(horizon=0), ValueError, "horizon must be an int >= 1"),
        (dict(future_k=0.5), ValueError, "future_k must be a number >= 1"),
        (dict(stack_num=2), ValueError, "stack_num=1"),
        (dict(compute_reward_fn=_Unhashable()), TypeError, "hashable"),
        (
            dict(compute_reward_fn=lambda a, d: np.linalg.norm(np.asarray(a))),
            TypeError,
            "traceable",
        ),
        (dict(compute_reward_fn=lambda a, d: a), ValueError, "one reward per sample"),
        (dict(drop="desired_goal"), ValueError, "lacks the key"),
        (dict(goal_shape=(2,)), ValueError, "must match"),
        (dict(flat_obs=True), TypeError, "dict with keys"),
    ],
)
def test_config_errors(change, error, match):
    ex = _example()
    if "drop" in change:
        drop = change.pop("drop")
        ex["obs"] = {k: v for k, v in ex["obs"].items() if k != drop}
    if "goal_shape" in change:
        ex["obs"] = dict(ex["obs"], desired_goal=np.zeros(change.pop("goal_shape"), np.float32))
    if change.pop("flat_obs", False):
        ex["obs"] = np.zeros(3, np.float32)
    kwargs = dict(compute_reward_fn=reward, horizon=3)
    kwargs.update(change)
    create = functools.partial(HERReplayBuffer.create, ex, 8)
    with pytest.raises(error, match=match):
        create(**kwargs)


@pytest.mark.parametrize("vector", [False, True], ids=["plain", "vector"])
def test_future_window_follows_next_links(vector):
    """The one-gather window equals following next() (wrapped, full, empty sub-buffers)."""
    from jaxbuf._core.sampling import sequences

    rng = np.random.default_rng(0)
    n = 23
    rows, *_ = _episodes([1] * n)
    rows["terminated"] = rng.random(n) < 0.3
    if vector:
        buf = HERVectorReplayBuffer.create(_example(), 15, 3, reward, horizon=4)
        ids = rng.choice([0, 2], size=n).astype(np.int32)  # sub-buffer 1 stays empty
    else:
        buf = HERReplayBuffer.create(_example(), 10, reward, horizon=4)
        ids = np.zeros(n, np.int32)
    buf, _ = ADD(buf, rows, ids)
    idx = jnp.arange(buf.maxsize)
    window, mask = buf.future_window(idx)
    want, want_mask = sequences(idx, 4, buf.next, buf.buffer.is_episode_end)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(np.where(mask, window, -1), np.where(want_mask, want, -1))
