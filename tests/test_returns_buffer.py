"""Tests for returns over buffer indices: episodic_return (GAE / Monte Carlo) and n-step.

Expected values come from tianshou-semantics.md section 11 (worked examples, run with
Tianshou 2.0.1), the recorded oracle runs (tests/data), and small pure-Python references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import transition
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxbuf
from jaxbuf.returns import episodic_return, gae, nstep_return, nstep_targets

TOL = {"rtol": 1e-5, "atol": 1e-5}  # jaxbuf computes in float32, Tianshou in float64

EXAMPLE = transition(obs_next=True)


ADD = jax.jit(lambda buf, batch: buf.add(batch))
ADD_IDS = jax.jit(lambda buf, batch, ids: buf.add(batch, ids))


def filled(size: int, steps: list[tuple[float, bool, bool]]) -> jaxbuf.ReplayBuffer:
    """A ReplayBuffer(size) after adding ``(rew, terminated, truncated)`` steps in order."""
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, size)
    for i, (rew, term, trunc) in enumerate(steps):
        row = dict(
            EXAMPLE,
            obs=np.float32(i),
            rew=np.float32(rew),
            terminated=term,
            truncated=trunc,
            obs_next=np.float32(i + 1),
        )
        buf, _ = ADD(buf, row)
    return buf


# Section 11.1 / 11.2 worked example: ReplayBuffer(6), the last step is unfinished.
SECTION_11 = [
    (1, False, False),
    (2, True, False),
    (3, False, False),
    (4, False, True),
    (5, False, False),
]


# ----------------------------------------------------------------------------------------------
# Worked examples of tianshou-semantics.md section 11.


def test_section_11_gae_example():
    buf = filled(6, SECTION_11)
    idx = np.arange(5)
    v_s_ = np.array([10, 20, 30, 40, 50], np.float32)
    v_s = np.array([1, 2, 3, 4, 5], np.float32)
    ret, adv = episodic_return(buf, idx, v_s_, v_s, gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv, [5, 0, 20, 20, 25])
    np.testing.assert_allclose(ret, [6, 2, 23, 24, 30])
    ret, adv = episodic_return(buf, idx, v_s_, None, gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv, [-46, -8, 16.5, -6, -10])
    np.testing.assert_allclose(ret, [4, 2, 16.5, 24, 30])
    ret, adv = episodic_return(buf, idx, gamma=0.5, gae_lambda=1.0)  # Monte Carlo
    np.testing.assert_allclose(ret, [2, 2, 5, 4, 5])
    np.testing.assert_allclose(adv, ret)


def test_section_11_nstep_example():
    buf = filled(6, SECTION_11)
    idx = np.arange(5)
    q = jnp.array([100, 200, 300, 400, 500, 0], jnp.float32)
    expected = {
        1: ([0, 1, 2, 3, 4], [51, 2, 153, 204, 255]),
        2: ([1, 1, 3, 3, 4], [2, 2, 105, 204, 255]),
        3: ([1, 1, 3, 3, 4], [2, 2, 105, 204, 255]),
    }
    for n, (slots, returns) in expected.items():
        boot, partial, discount = nstep_targets(buf, idx, 0.5, n)
        np.testing.assert_array_equal(boot, slots)
        np.testing.assert_allclose(partial + discount * q[boot], returns)
        np.testing.assert_allclose(nstep_return(buf, idx, lambda b, i: q[i], 0.5, n), returns)


def test_section_11_nstep_wraparound_example():
    # ReplayBuffer(8), steps 0..9 with rewards 1..10: terminated at step 4, truncated at steps
    # 2 and 7; steps 8 and 9 overwrite slots 0 and 1, so episodes cross the storage end.
    steps = [(s + 1, s == 4, s in (2, 7)) for s in range(10)]
    buf = filled(8, steps)
    idx = np.array([2, 3, 4, 5, 6, 7, 0, 1])
    np.testing.assert_array_equal(buf.chronological_indices(), idx)
    q = lambda b, i: 100.0 * (i + 1)
    expected = {
        1: [273, 364, 5, 546, 637, 728, 99, 190],
        2: [273, 8.5, 5, 579.3, 662.2, 728, 180, 190],
        3: [273, 8.5, 5, 601.98, 662.2, 728, 180, 190],
    }
    for n, returns in expected.items():
        np.testing.assert_allclose(nstep_return(buf, idx, q, 0.9, n), returns, **TOL)


def test_e25_any_index_order_gives_the_same_value_per_slot():
    # tianshou_edge_cases.py E25: ReplayBuffer(5), rewards 1..7, terminated at the 3rd add.
    buf = filled(5, [(r, r == 3, False) for r in range(1, 8)])
    chrono = buf.chronological_indices()
    np.testing.assert_array_equal(chrono, [2, 3, 4, 0, 1])
    ret, _ = episodic_return(buf, chrono, gamma=1.0, gae_lambda=1.0)
    np.testing.assert_allclose(ret, [3, 22, 18, 13, 7])  # = Tianshou
    physical = np.arange(5)
    ret, _ = episodic_return(buf, physical, gamma=1.0, gae_lambda=1.0)
    # Tianshou gives [13 7 3 9 5] here (array order cuts the episode at the array end);
    # following the buffer's links gives every slot the same value as in chronological order.
    np.testing.assert_allclose(ret, [13, 7, 3, 22, 18])


# ----------------------------------------------------------------------------------------------
# The recorded Tianshou runs.


def ref_episodic(indices, v_s_, v_s, gamma, lam, snap):
    """Pure-Python GAE following the recorded ``next`` links (not jaxbuf's)."""
    data, nxt = snap["data"], snap["next"]
    term = np.asarray(data["terminated"])[indices]
    rew = np.asarray(data["rew"], np.float64)[indices]
    v_next = np.zeros(len(indices)) if v_s_ is None else np.asarray(v_s_) * ~term
    v_cur = np.roll(v_next, 1) if v_s is None else np.asarray(v_s)
    end = np.asarray(data["done"], bool) | np.isin(np.arange(len(nxt)), snap["unfinished_index"])
    position = {int(s): i for i, s in enumerate(indices)}
    delta = rew + gamma * v_next - v_cur

    def advantage(i):
        s = indices[i]
        if end[s] or nxt[s] not in position:
            return delta[i]
        return delta[i] + gamma * lam * advantage(position[nxt[s]])

    adv = np.array([advantage(i) for i in range(len(indices))])
    return adv + v_cur, adv


RETURNS_TYPES = (
    "ReplayBuffer",
    "VectorReplayBuffer",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "CachedReplayBuffer",
)


def oracle_returns_cases():
    """(scenario name, buffer type, op, last snapshot) for every recorded gae / nstep op."""
    cases = []
    for scn in oracle.scenarios(*RETURNS_TYPES):
        snap = None
        for op in scn["ops"]:
            if op["op"] == "snapshot":
                snap = op
            elif op["op"] in ("gae", "nstep"):
                cases.append((scn, op, snap))
    return cases


def replay_adds(scn):
    """Rebuild the scenario's buffer. Priorities do not change episode links or storage, so
    a prioritized scenario is replayed into its core buffer."""
    buf = oracle.build(scn)
    return buf.buffer if scn["buffer"]["type"].startswith("Prioritized") else buf


def replay_add(buf, op):
    """``oracle.add`` with a jitted add (one compilation per batch shape)."""
    batch = oracle.rows_of(op, op["call_form"] == "single")
    ids = op["buffer_ids"]
    if ids is None or getattr(buf, "buffer_num", 0) == 1:
        return ADD(buf, batch)[0]
    return ADD_IDS(buf, batch, np.asarray(ids))[0]


@pytest.fixture(scope="module")
def oracle_buffers():
    """Buffer state at each recorded snapshot label, per scenario id (file stem and name)."""
    states = {}
    for scn, _, snap in oracle_returns_cases():
        key = (scn["id"], snap["label"])
        if key in states:
            continue
        buf = replay_adds(scn)
        for op in scn["ops"]:
            if op["op"] == "add":
                buf = replay_add(buf, op)
            if op is snap:
                break
        states[key] = buf
    return states


CASES = oracle_returns_cases()


def test_oracle_covers_every_recorded_returns_op():
    """No recorded gae / nstep op is left out (every scenario type that records them)."""
    recorded = [
        op
        for scn in oracle.scenarios(*RETURNS_TYPES)
        for op in scn["ops"]
        if op["op"] in ("gae", "nstep")
    ]
    assert len(CASES) == len(recorded) >= 27


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{s['id']}-{op['op']}-{i}" for i, (s, op, _) in enumerate(CASES)]
)
def test_oracle_returns_op(case, oracle_buffers):
    scn, op, snap = case
    buf = oracle_buffers[(scn["id"], snap["label"])]
    idx = np.asarray(op["indices"])
    if op["op"] == "nstep":
        q = jnp.asarray(op["q_table"], jnp.float32)
        boot, _, _ = nstep_targets(buf, idx, op["gamma"], op["n_step"])
        np.testing.assert_array_equal(boot, op["output"]["target_q_fn_indices"])
        got = nstep_return(buf, idx, lambda b, i: q[i], op["gamma"], op["n_step"])
        np.testing.assert_allclose(got, op["output"]["returns"], **TOL)
        return
    v_s_ = None if op["v_s_"] is None else np.asarray(op["v_s_"], np.float32)
    v_s = None if op["v_s"] is None else np.asarray(op["v_s"], np.float32)
    ret, adv = episodic_return(buf, idx, v_s_, v_s, op["gamma"], op["gae_lambda"])
    ref_ret, ref_adv = ref_episodic(idx, op["v_s_"], op["v_s"], op["gamma"], op["gae_lambda"], snap)
    # E25: for indices that are not chronological, Tianshou follows array order and cuts an
    # episode that crosses the array's end; jaxbuf follows the links, so the expectation is
    # always the link-following reference, itself checked against Tianshou on chronological
    # indices. (In the public cases no episode crosses the array end, so both agree there;
    # test_e25_any_index_order_gives_the_same_value_per_slot has a case where they differ.)
    if list(idx) == snap["chronological_indices"]:
        np.testing.assert_allclose(ref_ret, op["output"]["returns"], **TOL)
        np.testing.assert_allclose(ref_adv, op["output"]["advantages"], **TOL)
    np.testing.assert_allclose(ret, ref_ret, **TOL)
    np.testing.assert_allclose(adv, ref_adv, **TOL)


# ----------------------------------------------------------------------------------------------
# Random buffers: order independence, Tianshou's array-order formula, n-step reference.


def random_vector_buffer(seed: int, adds: int):
    rng = np.random.default_rng(seed)
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 3)
    for _ in range(adds):
        flags = rng.random((2, 3))
        batch = {
            "obs": rng.normal(size=3).astype(np.float32),
            "act": np.zeros(3, np.int32),
            "rew": rng.normal(size=3).astype(np.float32),
            "terminated": flags[0] < 0.2,
            "truncated": flags[1] < 0.15,
            "obs_next": rng.normal(size=3).astype(np.float32),
        }
        buf, _ = ADD(buf, batch)
    return buf


def tianshou_array_order(buf, idx, v_s_, v_s, gamma, lam):
    """Section 11.1 verbatim: the recursion over array order with Tianshou's end flags."""
    stored = buf.global_storage()
    term = np.asarray(stored["terminated"])[idx]
    end = term | np.asarray(stored["truncated"])[idx]
    end |= np.isin(idx, buf.unfinished_index_compact())
    v_next = v_s_ * ~term
    delta = np.asarray(stored["rew"])[idx] + gamma * v_next - v_s
    adv = np.zeros(len(idx))
    nxt = 0.0
    for t in reversed(range(len(idx))):
        nxt = delta[t] + gamma * lam * (1 - end[t]) * nxt
        adv[t] = nxt
    return adv + v_s, adv


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), adds=st.integers(1, 9), lam=st.floats(0.0, 1.0))
def test_random_buffers_match_tianshou_and_ignore_index_order(seed, adds, lam):
    buf = random_vector_buffer(seed, adds)
    rng = np.random.default_rng(seed)
    # The padded, static-shape form of buf.all_indices(): one compilation for all examples.
    idx, mask = (np.asarray(x) for x in buf.all_indices())
    v_s_ = np.where(mask, rng.normal(size=buf.maxsize), 0).astype(np.float32)
    v_s = np.where(mask, rng.normal(size=buf.maxsize), 0).astype(np.float32)
    ret, adv = (np.asarray(x) for x in episodic_return(buf, idx, v_s_, v_s, 0.9, lam))
    exp_ret, exp_adv = tianshou_array_order(buf, idx[mask], v_s_[mask], v_s[mask], 0.9, lam)
    np.testing.assert_allclose(ret[mask], exp_ret, **TOL)
    np.testing.assert_allclose(adv[mask], exp_adv, **TOL)
    np.testing.assert_array_equal(ret[~mask], 0.0)
    np.testing.assert_array_equal(adv[~mask], 0.0)
    # Any order (padding included) gives every slot the same value.
    perm = rng.permutation(buf.maxsize)
    p_ret, p_adv = episodic_return(buf, idx[perm], v_s_[perm], v_s[perm], 0.9, lam)
    np.testing.assert_allclose(p_ret, ret[perm], **TOL)
    np.testing.assert_allclose(p_adv, adv[perm], **TOL)


def ref_nstep(buf, idx, gamma, n, q):
    nxt = np.asarray(buf.next(np.arange(buf.maxsize)))
    end = np.asarray(buf.is_episode_end(np.arange(buf.maxsize)))
    term = np.asarray(buf.global_storage()["terminated"])
    rew = np.asarray(buf.global_storage()["rew"], np.float64)
    out = []
    for s in idx:
        total, k = 0.0, 0
        while True:
            total += gamma**k * rew[s]
            k += 1
            if end[s] or k == n:
                break
            s = nxt[s]
        out.append(total + (0.0 if term[s] else gamma**k * q[s]))
    return np.array(out)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), adds=st.integers(1, 9), n=st.sampled_from([1, 2, 3, 6]))
def test_random_buffers_nstep_matches_reference(seed, adds, n):
    buf = random_vector_buffer(seed, adds)
    rng = np.random.default_rng(seed)
    idx = rng.choice(buf.chronological_indices(), size=7)  # random, with repeats
    q = rng.normal(size=buf.maxsize).astype(np.float32)
    got = nstep_return(buf, idx, lambda b, i: jnp.asarray(q)[i], 0.95, n)
    np.testing.assert_allclose(got, ref_nstep(buf, idx, 0.95, n, q), **TOL)


# ----------------------------------------------------------------------------------------------
# Consistency with the rollout functions, jit, grad, shapes, errors.


def test_buffer_gae_equals_rollout_gae_and_gradients_agree():
    rng = np.random.default_rng(3)
    steps = [
        (float(r), bool(t), bool(u))
        for r, t, u in zip(rng.normal(size=9), rng.random(9) < 0.2, rng.random(9) < 0.2)
    ]
    buf = filled(10, steps)
    idx = np.arange(9)
    rewards = np.array([s[0] for s in steps], np.float32)
    term = np.array([s[1] for s in steps])
    trunc = np.array([s[2] for s in steps])
    values = rng.normal(size=9).astype(np.float32)
    next_values = rng.normal(size=9).astype(np.float32)

    def from_buffer(v):
        return episodic_return(buf, idx, next_values, v, 0.95, 0.9)

    def from_rollout(v):
        adv, ret = gae(rewards, v, next_values, term, trunc, 0.95, 0.9)
        return ret, adv

    for a, b in zip(from_buffer(values), from_rollout(values)):
        np.testing.assert_allclose(a, b, **TOL)
    loss = lambda f: lambda v: jnp.sum(f(v)[1] ** 2)
    grad = jax.grad(loss(from_buffer))(values)
    np.testing.assert_allclose(grad, jax.grad(loss(from_rollout))(values), **TOL)
    assert np.any(grad != 0)


def test_jit_equals_eager_and_buffer_is_a_traced_argument():
    buf = filled(6, SECTION_11)
    idx = jnp.arange(5)
    v_s_ = jnp.arange(10.0, 60.0, 10.0)

    @jax.jit
    def update(buf, idx, v_s_):
        ret, adv = episodic_return(buf, idx, v_s_, None, 0.5, 0.5)
        boot, partial, discount = nstep_targets(buf, idx, 0.5, 2)
        return ret, adv, boot, partial, discount

    jitted = update(buf, idx, v_s_)
    with jax.disable_jit():
        eager = update(buf, idx, v_s_)
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(jitted[0], [4, 2, 16.5, 24, 30])


def test_vmap_over_a_stack_of_buffers():
    bufs = [filled(6, SECTION_11), filled(6, [(r, r == 4, r == 2) for r in range(1, 9)])]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *bufs)
    idx = jnp.array([[0, 1, 2, 3, 4], [2, 3, 4, 5, 0]])
    v_s_ = jnp.arange(10.0).reshape(2, 5)

    def both(buf, i, v):
        return episodic_return(buf, i, v, None, 0.9, 0.8), nstep_targets(buf, i, 0.9, 3)

    batched = jax.vmap(both)(stacked, idx, v_s_)
    for k, buf in enumerate(bufs):
        single = both(buf, idx[k], v_s_[k])
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(a[k], b, **TOL)


def test_nstep_multi_dimensional_indices_and_q_heads():
    buf = filled(6, SECTION_11)
    idx = np.array([[0, 1, 2], [3, 4, -1]])  # -1: padding
    boot, partial, discount = nstep_targets(buf, idx, 0.5, 2)
    np.testing.assert_array_equal(boot, [[1, 1, 3], [3, 4, 0]])
    np.testing.assert_allclose(partial, [[2, 2, 5], [4, 5, 0]])
    np.testing.assert_allclose(discount, [[0, 0, 0.25], [0.5, 0.5, 0]])
    heads = jnp.stack([jnp.arange(6.0) * 100, jnp.ones(6)], axis=-1)  # Q with 2 heads: [M, 2]
    out = nstep_return(buf, idx, lambda b, i: heads[i], 0.5, 2)
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(out[..., 0], partial + discount * 100 * boot)
    np.testing.assert_allclose(out[..., 1], partial + discount)


def test_bad_input_raises_clear_errors():
    buf = filled(6, SECTION_11)
    idx = np.arange(5)
    with pytest.raises(TypeError, match=r"episodic_return: `indices` must be integers"):
        episodic_return(buf, idx.astype(np.float32), gae_lambda=1.0)
    with pytest.raises(ValueError, match=r"`indices` must have shape \[I\], got \(1, 5\)"):
        episodic_return(buf, idx[None], gae_lambda=1.0)
    with pytest.raises(ValueError, match=r"`v_s_` must hold one value per index \(5\)"):
        episodic_return(buf, idx, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"without `v_s_` .* `gae_lambda` must be 1, got 0.95"):
        episodic_return(buf, idx)
    with pytest.raises(TypeError, match=r"`v_s` must be floating"):
        episodic_return(buf, idx, np.zeros(5, np.float32), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match=r"nstep_targets: `n_step` must be a Python int >= 1"):
        nstep_targets(buf, idx, 0.9, 0)
    with pytest.raises(ValueError, match=r"leading shape equal to `indices` \(5,\), got \(4,\)"):
        nstep_return(buf, idx, lambda b, i: jnp.zeros(4), 0.9, 1)
    vector_rew = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, rew=np.zeros(2, np.float32)), 4)
    with pytest.raises(
        ValueError, match=r"needs scalar rewards \(field 'rew' of shape \(\)\), got \(2,\)"
    ):
        nstep_targets(vector_rew, idx[:2], 0.9, 1)
