"""CachedReplayBuffer: oracle replay, a sequential reference model, over-long episodes (E28).

The oracle scenario ``cached_main10_2x4`` is replayed op by op (every add result, the state
after every add, and every snapshot's storage, prev/next, unfinished_index and
``sample_indices(0)``). It has no episode longer than its cache, so nothing is skipped; the
one deliberate difference from Tianshou (E28: an over-long episode's dropped steps are
reported in ``episode_dropped``) is checked by the hand-built cases below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import assert_close, transition
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

from jaxbuf.cached import CachedReplayBuffer

SCENARIOS = oracle.scenarios("CachedReplayBuffer")


def _check_state(buf: CachedReplayBuffer, state: dict, what: str) -> None:
    assert len(buf) == state["len"], what
    np.testing.assert_array_equal(buf.last_index, state["last_index"], err_msg=what)
    parts = [(buf.main, 0)] + [(buf.caches, k) for k in range(buf.cached_buffer_num)]
    edges = buf.subbuffer_edges
    for j, ((part, k), sub) in enumerate(zip(parts, state["subbuffers"])):
        assert sub["offset"] == edges[j] and sub["maxsize"] == edges[j + 1] - edges[j], what
        m = part.subbuffer_size
        assert int(part.lengths[k]) == sub["len"], what
        assert int(part.insertion_idx[k]) == sub["insertion_idx"], what
        assert int(part.last_index[k]) - k * m == sub["last_index"], what
        assert int(part.ep_len[k]) == sub["ep_len"], what
        assert int(part.ep_start[k]) == sub["ep_start_idx"], what
        assert_close(part.ep_return[k], sub["ep_return"], what + " ep_return")


@jax.jit
def _links(buf: CachedReplayBuffer):
    idx = jnp.arange(buf.maxsize)
    return buf.prev(idx), buf.next(idx), buf.unfinished_index(), buf.all_indices(), buf.storage


@pytest.mark.parametrize(("scn", "jit"), oracle.replay_params(SCENARIOS))
def test_oracle_replay(scn, jit):
    """Adds run eagerly or jitted; the snapshot reads are jitted (their eager path is
    exercised by the hand-built cases)."""
    buf = oracle.build(scn)
    assert buf.maxsize == scn["layout"]["maxsize"]
    np.testing.assert_array_equal(buf.subbuffer_edges, scn["layout"]["subbuffer_edges"])
    limit = scn["buffer"]["args"]["max_episode_length"]
    add = jax.jit(lambda b, x, i: b.add(x, i)) if jit else (lambda b, x, i: b.add(x, i))
    snapshots = 0
    for n, op in enumerate(scn["ops"]):
        what = f"{scn['id']} op {n} ({op['op']})"
        if op["op"] == "add":
            ids = op["buffer_ids"]
            ids = np.arange(buf.cached_buffer_num) if ids is None else np.asarray(ids)
            buf, res = add(buf, oracle.rows_of(op, single=False), ids)
            out = op["output"]
            np.testing.assert_array_equal(res.index, out["insertion_idx"], err_msg=what)
            # E7 in a cache: an unfinished episode longer than its cache reports the oldest
            # stored step as its start; Tianshou reports the slot already overwritten.
            subs = op["state_after"]["subbuffers"][1:]
            running = np.asarray([subs[i]["ep_len"] for i in ids])
            stale = (running > limit) | (np.asarray(out["ep_len"]) > limit)
            np.testing.assert_array_equal(
                np.asarray(res.episode_start)[~stale],
                np.asarray(out["ep_start_idx"])[~stale],
                err_msg=what,
            )
            np.testing.assert_array_equal(res.episode_length, out["ep_len"], err_msg=what)
            assert_close(res.episode_return, out["ep_return"], what)
            # E28: Tianshou silently keeps only the last max_episode_length steps of a longer
            # episode; jaxbuf stores the same steps and reports how many were dropped.
            dropped = np.maximum(np.asarray(out["ep_len"]) - limit, 0)
            np.testing.assert_array_equal(res.episode_dropped, dropped, err_msg=what)
            _check_state(buf, op["state_after"], what)
        elif op["op"] == "snapshot":
            _check_state(buf, op["state"], what)
            if op["prev"] is None:
                # E5: Tianshou raises on an empty buffer; nothing recorded to compare.
                assert len(buf) == 0, what
                continue
            prev, next_, unfinished, (idx, mask), store = _links(buf)
            for key, rows in op["data"].items():
                got = store["terminated"] | store["truncated"] if key == "done" else store[key]
                assert_close(got, rows, what + " data " + key)
            np.testing.assert_array_equal(prev, op["prev"], err_msg=what + " prev")
            np.testing.assert_array_equal(next_, op["next"], err_msg=what + " next")
            unfinished = np.asarray(unfinished)
            np.testing.assert_array_equal(
                unfinished[unfinished >= 0], op["unfinished_index"], err_msg=what
            )
            np.testing.assert_array_equal(
                np.asarray(idx)[np.asarray(mask)], op["sample_indices_0"], err_msg=what
            )
            snapshots += 1
        elif op["op"] == "getitem":
            oracle.check_getitem(buf, op, what)
        elif op["op"] == "get":
            oracle.check_get(buf, op, what)
        elif op["op"] == "sample_indices":
            expected = np.asarray(op["output"])
            idx, mask = buf.all_indices()
            allowed = set(np.asarray(idx)[np.asarray(mask)].tolist())
            if op["batch_size"] == 0:
                np.testing.assert_array_equal(sorted(allowed), sorted(expected), err_msg=what)
            else:
                got = buf.sample_indices(jax.random.key(n), 16)
                oracle.check_sample_support(got, expected, allowed, what)
        elif op["op"] in ("gae", "nstep"):
            continue  # replayed by the returns tests
        else:
            raise AssertionError(f"unhandled op {op['op']}")
    assert snapshots >= 1


# ---------------------------------------------------------------------- reference model
class Reference:
    """The cached buffer applied one row at a time, in plain Python (section 9.2 + E28 fix)."""

    def __init__(self, m: int, k: int, length: int):
        self.m, self.k, self.L = m, k, length
        self.main = np.zeros(m)
        self.main_done = np.zeros(m, bool)
        self.main_ins = self.main_len = self.main_last = 0
        self.cache = np.zeros(k * length)
        self.cache_done = np.zeros(k * length, bool)
        self.ins = [0] * k
        self.len = [0] * k
        self.ep_len = [0] * k
        self.ep_ret = [0.0] * k

    def add_row(self, obs: float, e: int, rew: float, done: bool):
        L = self.L
        slot = e * L + self.ins[e]
        self.cache[slot], self.cache_done[slot] = obs, done
        self.ins[e] = (self.ins[e] + 1) % L
        self.len[e] = min(self.len[e] + 1, L)
        self.ep_len[e] += 1
        self.ep_ret[e] += rew
        if not done:
            oldest = (self.ins[e] - self.len[e]) % L
            return self.m + slot, self.m + e * L + oldest, 0.0, 0, 0
        written = []
        for j in range(self.len[e]):
            src = e * L + (self.ins[e] - self.len[e] + j) % L
            dst = self.main_ins
            self.main[dst], self.main_done[dst] = self.cache[src], self.cache_done[src]
            written.append(dst)
            self.main_ins = (self.main_ins + 1) % self.m
            self.main_len = min(self.main_len + 1, self.m)
            self.main_last = dst
        out = (
            written[-1],
            written[0],
            self.ep_ret[e],
            self.ep_len[e],
            self.ep_len[e] - self.len[e],
        )
        self.ins[e] = self.len[e] = self.ep_len[e] = 0
        self.ep_ret[e] = 0.0
        return out


def _example():
    return transition(obs_next=True)


def _batch(obs, rew, done):
    obs = np.asarray(obs, np.float32)
    return {
        "obs": obs,
        "act": np.zeros(len(obs), np.int32),
        "rew": np.asarray(rew, np.float32),
        "terminated": np.asarray(done, bool),
        "truncated": np.zeros(len(obs), bool),
        "obs_next": obs + 0.5,
    }


_ADD = jax.jit(lambda b, x, i: b.add(x, i))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 2), min_size=4, max_size=4),
            st.lists(st.booleans(), min_size=4, max_size=4),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([(7, 3), (5, 4), (12, 2)]),
)
def test_matches_sequential_reference(adds, sizes):
    """Batched adds with duplicate ids and over-long episodes equal row-by-row application."""
    m, length = sizes
    buf = CachedReplayBuffer.create(_example(), m, 3, length)
    ref = Reference(m, 3, length)
    counter = 0
    for ids, done in adds:
        obs = np.arange(counter, counter + 4, dtype=np.float32) + 1
        rew = obs / 10
        counter += 4
        buf, res = _ADD(buf, _batch(obs, rew, done), np.asarray(ids, np.int32))
        expected = [ref.add_row(o, e, r, d) for o, e, r, d in zip(obs, ids, rew, done)]
        idx, start, ret, length_, dropped = map(np.asarray, zip(*expected))
        np.testing.assert_array_equal(res.index, idx)
        np.testing.assert_array_equal(res.episode_start, start)
        np.testing.assert_allclose(res.episode_return, ret, rtol=1e-5)
        np.testing.assert_array_equal(res.episode_length, length_)
        np.testing.assert_array_equal(res.episode_dropped, dropped)
        main, caches = buf.main.global_storage(), buf.caches.global_storage()
        np.testing.assert_array_equal(main["obs"], ref.main)
        np.testing.assert_array_equal(main["obs_next"], ref.main + 0.5 * (ref.main > 0))
        np.testing.assert_array_equal(main["terminated"], ref.main_done)
        np.testing.assert_array_equal(caches["obs"], ref.cache)
        assert int(buf.main.insertion_idx[0]) == ref.main_ins
        assert int(buf.main.lengths[0]) == ref.main_len
        assert int(buf.main.last_index[0]) == ref.main_last
        np.testing.assert_array_equal(buf.caches.insertion_idx, ref.ins)
        np.testing.assert_array_equal(buf.caches.lengths, ref.len)
        np.testing.assert_array_equal(buf.caches.ep_len, ref.ep_len)
        np.testing.assert_allclose(buf.caches.ep_return, ref.ep_ret, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- hand-built cases
def _steps(buf, rows):
    """Add rows given as (env, obs, done) lists, one jitted add per list; return the results."""
    results = []
    for envs, obs, done in rows:
        buf, res = _ADD(buf, _batch(obs, np.ones(len(obs)), done), np.asarray(envs, np.int32))
        results.append(res)
    return buf, results


def test_over_long_episode_is_reported_not_silent():
    """E28: a 5-step episode in a 3-slot cache keeps its last 3 steps and reports 2 dropped."""
    buf = CachedReplayBuffer.create(_example(), 10, 2, 3)
    steps = [
        ([0, 1], [1, 101], [False, False]),
        ([0, 1], [2, 102], [False, True]),  # env 1 finishes a 2-step episode
        ([0], [3], [False]),
        ([0], [4], [False]),  # env 0's cache wraps: step 1 is lost
        ([0, 1], [5, 201], [True, False]),
    ]  # env 0 finishes a 5-step episode
    buf, res = _steps(buf, steps)
    np.testing.assert_array_equal(res[1].index, [11, 1])
    np.testing.assert_array_equal(res[1].episode_start, [10, 0])
    np.testing.assert_array_equal(res[3].episode_start, [11])  # oldest stored step (E7 rule)
    last = res[4]
    np.testing.assert_array_equal(last.index, [4, 13])
    np.testing.assert_array_equal(last.episode_start, [2, 13])
    np.testing.assert_array_equal(last.episode_length, [5, 0])
    np.testing.assert_array_equal(last.episode_dropped, [2, 0])
    np.testing.assert_allclose(last.episode_return, [5.0, 0.0])
    np.testing.assert_array_equal(buf.main.global_storage()["obs"][:5], [101, 102, 3, 4, 5])
    # The kept part is one contiguous episode in main, linked by prev/next.
    np.testing.assert_array_equal(buf.next(np.arange(2, 5)), [3, 4, 4])
    np.testing.assert_array_equal(buf.prev(np.arange(2, 5)), [2, 2, 3])
    np.testing.assert_array_equal(buf.unfinished_index_compact(), [13])
    np.testing.assert_array_equal(buf.chronological_indices(), [0, 1, 2, 3, 4, 13])


def test_default_ids_and_global_reads():
    """buffer_ids=None means row j -> cache j; reads span main and caches."""
    ex = _example()
    buf = CachedReplayBuffer.create(ex, 6, 2, 4, ignore_obs_next=True)
    for obs, done in (
        ([1, 11], [False, False]),
        ([2, 12], [True, False]),
        ([3, 13], [False, False]),
    ):
        b = _batch(obs, [0.5, 1.0], done)
        b.pop("obs_next")
        buf, res = buf.add(b)
    # main: env 0's episode [1, 2]; cache 0 (slot 6): [3]; cache 1 (slot 10..): [11, 12, 13]
    np.testing.assert_array_equal(buf.chronological_indices(), [0, 1, 6, 10, 11, 12])
    got = buf[np.asarray([0, 1, 6, 10, 12])]
    np.testing.assert_array_equal(got["obs"], [1, 2, 3, 11, 13])
    # ignore_obs_next: obs_next = obs[next(i)], which stays put at an end or head (E26).
    np.testing.assert_array_equal(got["obs_next"], [2, 2, 3, 12, 13])
    np.testing.assert_array_equal(got["done"], [False, True, False, False, False])
    np.testing.assert_array_equal(
        buf.get(np.asarray([10, 0]), "obs", stack_num=2), [[11, 11], [1, 1]]
    )
    np.testing.assert_array_equal(buf.is_episode_end(np.arange(6)), [False, True] + [False] * 4)
    np.testing.assert_array_equal(buf.unfinished_index(), [-1, 6, 12])
    sliced = buf[1:3]
    np.testing.assert_array_equal(sliced["obs"], [2, 3])
    assert len(buf) == 6 and int(buf.size) == 6


def test_invalid_buffer_id_is_dropped_under_jit():
    buf = CachedReplayBuffer.create(_example(), 6, 2, 3)
    buf, res = _ADD(buf, _batch([1, 2], [1, 1], [False, True]), np.asarray([0, 5], np.int32))
    np.testing.assert_array_equal(res.index, [6, -1])
    np.testing.assert_array_equal(res.episode_start, [6, -1])
    np.testing.assert_array_equal(res.episode_length, [0, 0])
    assert len(buf) == 1 and int(buf.main.lengths[0]) == 0


def test_sampling_covers_main_and_caches_uniformly():
    buf = CachedReplayBuffer.create(_example(), 6, 2, 3)
    buf, _ = _steps(
        buf,
        [([0, 1], [1, 11], [False, False]), ([0, 1], [2, 12], [True, False]), ([0], [3], [False])],
    )
    allowed = buf.chronological_indices()
    np.testing.assert_array_equal(allowed, [0, 1, 6, 9, 10])
    draws = np.asarray(jax.jit(buf.sample_indices, static_argnums=1)(jax.random.key(3), 20000))
    counts = np.array([(draws == a).sum() for a in allowed])
    assert counts.sum() == len(draws)  # nothing outside the stored slots
    expected = len(draws) / len(allowed)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom, p = 0.001
    batch, idx = buf.sample(jax.random.key(4), 8)
    np.testing.assert_array_equal(batch["obs"], np.asarray(buf.storage["obs"])[np.asarray(idx)])


def test_vmap_over_stacked_buffers():
    bufs = [CachedReplayBuffer.create(_example(), 6, 2, 3) for _ in range(2)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *bufs)
    batch = _batch([1, 2], [1, 1], [True, False])
    batches = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), batch)
    batches["obs"] = batches["obs"].at[1].add(10)
    ids = jnp.asarray([[1, 0], [0, 0]], jnp.int32)
    out, res = jax.jit(jax.vmap(lambda b, x, i: b.add(x, i)))(stacked, batches, ids)
    for j in range(2):
        one = jax.tree_util.tree_map(lambda x, j=j: x[j], batches)
        single, sres = _ADD(bufs[j], one, ids[j])
        np.testing.assert_array_equal(out.main.storage["obs"][j], single.main.storage["obs"])
        np.testing.assert_array_equal(out.caches.storage["obs"][j], single.caches.storage["obs"])
        np.testing.assert_array_equal(res.index[j], sres.index)


def test_config_and_batch_errors():
    with pytest.raises(ValueError, match="max_episode_length must be >= 1"):
        CachedReplayBuffer.create(_example(), 4, 2, 0)
    with pytest.raises(TypeError, match="main_size must be an int"):
        CachedReplayBuffer.create(_example(), 4.0, 2, 3)
    buf = CachedReplayBuffer.create(_example(), 4, 2, 3)
    with pytest.raises(ValueError, match="buffer_num=2"):
        buf.add(_batch([1, 2, 3], [0, 0, 0], [False] * 3))


def test_stacked_reads_and_sample_avail():
    """Frame stacks never cross main/cache boundaries; sample_avail skips episode starts."""
    buf = CachedReplayBuffer.create(_example(), 6, 2, 3, stack_num=2, sample_avail=True)
    buf, _ = _steps(
        buf,
        [([0, 1], [1, 11], [False, False]), ([0, 1], [2, 12], [True, False]), ([0], [3], [False])],
    )
    # main [1, 2] (slots 0, 1); cache 0: [3] (slot 6); cache 1: [11, 12] (slots 9, 10)
    np.testing.assert_array_equal(buf.chronological_indices(), [1, 10])
    got = buf[np.asarray([0, 1, 6, 9, 10])]
    np.testing.assert_array_equal(got["obs"], [[1, 1], [1, 2], [3, 3], [11, 11], [11, 12]])
    draws = np.asarray(jax.jit(buf.sample_indices, static_argnums=1)(jax.random.key(0), 500))
    assert set(draws.tolist()) == {1, 10}


def test_checked_raises_on_bad_index_and_empty_sampling():
    import jaxbuf

    buf = CachedReplayBuffer.create(_example(), 6, 2, 3)
    with pytest.raises(checkify.JaxRuntimeError, match="empty buffer"):
        jaxbuf.checked(lambda b, k: b.sample_indices(k, 4))(buf, jax.random.key(0))
    with pytest.raises(checkify.JaxRuntimeError, match="out of range"):
        jaxbuf.checked(lambda b, i: b.prev(i))(buf, jnp.asarray([12]))
    with pytest.raises(checkify.JaxRuntimeError, match="buffer_ids out of range"):
        jaxbuf.checked(lambda b, x, i: b.add(x, i))(
            buf, _batch([1], [0], [False]), jnp.asarray([2], jnp.int32)
        )


def test_sample_avail_with_no_full_stack_draws_slot_0_and_checked_raises():
    import jaxbuf

    buf = CachedReplayBuffer.create(_example(), 6, 2, 3, stack_num=2, sample_avail=True)
    # one-step episodes only: main gets [1] and [11], nothing has a predecessor to stack
    buf, _ = _steps(buf, [([0, 1], [1, 11], [True, True])])
    assert buf.chronological_indices().size == 0
    draws = jax.jit(buf.sample_indices, static_argnums=1)(jax.random.key(0), 8)
    np.testing.assert_array_equal(draws, np.zeros(8, np.int32))
    with pytest.raises(checkify.JaxRuntimeError, match="no stored slot has a full stack"):
        jaxbuf.checked(lambda b, k: b.sample_indices(k, 8))(buf, jax.random.key(0))
