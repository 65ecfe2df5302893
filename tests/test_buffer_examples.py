"""Hand-worked examples from tianshou-semantics.md (sections 3, 4, 6, 7) and the E-cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows, step

import jaxbuf


def _fill(buf, n, done_at=(), trunc_at=(), rew=None):
    out = []
    for s in range(n):
        r = s + 0.5 if rew is None else rew
        buf, res = buf.add(step(s, r, s in done_at, s in trunc_at))
        out.append(tuple(np.asarray(x)[0].item() for x in res))
    return buf, out


def test_add_results_section_3_4():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 5)
    buf, out = _fill(buf, 7, done_at=(2,), trunc_at=(5,))
    assert out == [
        (0, 0, 0, 0),
        (1, 0, 0, 0),
        (2, 4.5, 3, 0),
        (3, 0, 0, 3),
        (4, 0, 0, 3),
        (0, 13.5, 3, 3),
        (1, 0, 0, 1),
    ]
    assert len(buf) == 5 and int(buf.size) == 5


def test_prev_next_e6():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 5)
    buf, _ = _fill(buf, 8, done_at=(1, 5))
    np.testing.assert_array_equal(buf.global_storage()["obs"], [5, 6, 7, 3, 4])
    np.testing.assert_array_equal(buf.prev(jnp.arange(5)), [4, 1, 1, 3, 3])
    np.testing.assert_array_equal(buf.next(jnp.arange(5)), [0, 2, 2, 4, 0])
    np.testing.assert_array_equal(buf.unfinished_index(), [2])
    np.testing.assert_array_equal(buf.chronological_indices(), [3, 4, 0, 1, 2])
    # slices follow chronological order; ints are physical slots
    np.testing.assert_array_equal(buf[:]["obs"], [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(buf[-2:]["obs"], [6, 7])
    assert float(buf[0]["obs"]) == 5.0


def test_overlong_episode_start_is_oldest_stored_step_e7():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 3)
    buf, out = _fill(buf, 5, done_at=(4,), rew=1.0)
    # Tianshou reports (1, 5., 5, 0) with slot 0 already overwritten; jaxbuf reports the
    # oldest step of the episode that is still stored: slot 2 (obs 2), then 3 and 4.
    assert out[-1] == (1, 5.0, 5, 2)
    np.testing.assert_array_equal(buf.global_storage()["obs"], [3, 4, 2])
    start = out[-1][3]
    assert int(buf.prev(start)) == start  # it is an episode start for prev()


def test_vector_worked_example_section_7():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 10, 3)
    assert buf.maxsize == 12 and list(buf.subbuffer_edges) == [0, 4, 8, 12]
    buf, r1 = buf.add(rows([0, 1, 2], terminated=[0, 1, 0]), np.array([0, 1, 2]))
    buf, r2 = buf.add(rows([3, 4], rew=[1, 0], terminated=[1, 0]), np.array([2, 0]))
    np.testing.assert_array_equal(r2.index, [9, 1])
    np.testing.assert_allclose(r2.episode_return, [1.0, 0.0])
    np.testing.assert_array_equal(r2.episode_length, [2, 0])
    np.testing.assert_array_equal(r2.episode_start, [8, 0])
    for s in range(5):
        buf, _ = buf.add(rows([10 + s], terminated=[s == 3]), np.array([0]))
    np.testing.assert_array_equal(buf.last_index, [2, 4, 9])
    np.testing.assert_array_equal(buf.lengths, [4, 1, 2])
    idx = jnp.arange(12)
    np.testing.assert_array_equal(buf.prev(idx), [3, 0, 2, 3, 4, 4, 4, 4, 8, 8, 8, 8])
    np.testing.assert_array_equal(buf.next(idx), [1, 1, 2, 0, 4, 4, 4, 4, 9, 9, 9, 8])
    np.testing.assert_array_equal(buf.unfinished_index_compact(), [2])
    np.testing.assert_array_equal(buf.unfinished_index(), [2, -1, -1])
    np.testing.assert_array_equal(buf.chronological_indices(), [3, 0, 1, 2, 4, 8, 9])


def test_duplicate_buffer_ids_write_consecutive_slots_e14():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 6, 2)
    buf, res = buf.add(rows([1, 2], rew=[1, 2], terminated=[0, 1]), np.array([0, 0]))
    np.testing.assert_array_equal(res.index, [0, 1])
    np.testing.assert_allclose(res.episode_return, [0, 3])
    np.testing.assert_array_equal(res.episode_length, [0, 2])
    np.testing.assert_array_equal(res.episode_start, [0, 0])
    np.testing.assert_array_equal(buf.lengths, [2, 0])
    # more rows for one id than it has slots: the last ones win, counters count all
    buf, res = buf.add(
        rows([5, 6, 7, 8], rew=[1, 1, 1, 1], terminated=[0, 0, 0, 1]), np.array([1, 1, 1, 1])
    )
    np.testing.assert_array_equal(res.index, [3, 4, 5, 3])
    np.testing.assert_array_equal(buf.global_storage()["obs"][3:], [8, 6, 7])
    assert int(res.episode_length[-1]) == 4
    assert int(res.episode_start[-1]) == 4  # oldest stored step of the 4-step episode


def test_stacking_worked_example_section_6():
    ex = dict(EXAMPLE, obs_next=np.zeros((), np.float32))
    for ignore in (False, True):
        e = {k: v for k, v in ex.items() if not (ignore and k == "obs_next")}
        buf = jaxbuf.ReplayBuffer.create(e, 6, stack_num=3, ignore_obs_next=ignore)
        for s in range(8):
            t = step(s, terminated=s in (2, 6))
            if not ignore:
                t["obs_next"] = np.float32(s + 1)
            buf, _ = buf.add(t)
        out = buf[jnp.arange(6)]
        np.testing.assert_array_equal(
            out["obs"], [[4, 5, 6], [7, 7, 7], [2, 2, 2], [3, 3, 3], [3, 3, 4], [3, 4, 5]]
        )
        if ignore:
            np.testing.assert_array_equal(
                out["obs_next"], [[4, 5, 6], [7, 7, 7], [2, 2, 2], [3, 3, 4], [3, 4, 5], [4, 5, 6]]
            )
        assert out["act"].shape == (6,) and out["rew"].shape == (6,)
        assert buf.get(jnp.int32(1), "obs").shape == (3,)
        assert buf.get(jnp.arange(2), "obs", stack_num=1).shape == (2,)


def test_sample_avail_section_6():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 8, stack_num=3, sample_avail=True)
    for s in range(11):
        buf, _ = buf.add(step(s, terminated=s in (2, 6, 9)))
    # chrono is [3 4 5 6 7 0 1 2]; a stack of 3 needs two stored predecessors in the episode:
    # 3, 4 (oldest), 7, 0 (after the done at step 6) and 2 (after the done at 9) lack them.
    np.testing.assert_array_equal(buf.chronological_indices(), [5, 6, 1])
    draws = np.asarray(buf.sample_indices(jax.random.key(1), 300))
    assert set(draws.tolist()) == {5, 6, 1}


@pytest.mark.parametrize("jit", [False, True])
def test_sample_avail_with_no_full_stack_draws_slot_0_and_checked_raises(jit):
    """Non-empty, but every episode so far is one step long: no slot has 2 frames to stack."""
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 9, stack_num=2, sample_avail=True)
    for s in range(3):
        buf, _ = buf.add(step(s, terminated=True))
    assert len(buf) == 3 and buf.chronological_indices().size == 0
    draw = jax.jit(buf.sample_indices, static_argnums=1) if jit else buf.sample_indices
    np.testing.assert_array_equal(draw(jax.random.key(0), 8), np.zeros(8, np.int32))
    checked = jaxbuf.checked(lambda b, k: b.sample_indices(k, 8))
    with pytest.raises(Exception, match="no stored slot has a full stack"):
        checked(buf, jax.random.key(0))
    buf, _ = buf.add(step(3, terminated=False))
    buf, _ = buf.add(step(4, terminated=False))
    np.testing.assert_array_equal(buf.chronological_indices(), [4])
    np.testing.assert_array_equal(checked(buf, jax.random.key(0)), np.full(8, 4, np.int32))


def test_save_only_last_obs_rebuilds_stacks():
    ex = dict(EXAMPLE, obs=np.zeros((4, 2), np.uint8))
    buf = jaxbuf.ReplayBuffer.create(
        ex, 10, stack_num=4, save_only_last_obs=True, ignore_obs_next=True
    )
    assert buf.global_storage()["obs"].shape == (10, 2)
    frames = [np.full((2,), f, np.uint8) for f in range(20)]
    for s in range(6):
        stack = np.stack([frames[max(s - j, 0)] for j in (3, 2, 1, 0)])
        buf, _ = buf.add(dict(step(0, terminated=s == 5), obs=stack))
    out = buf[jnp.arange(6)]
    np.testing.assert_array_equal(
        out["obs"][:, :, 0],
        [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]],
    )
    assert out["obs"].dtype == np.uint8


def test_info_policy_stacked_extras_not_e27():
    ex = dict(
        EXAMPLE,
        info={"x": np.zeros((), np.int32)},
        policy={"logp": np.float32(0)},
        extra=np.float32(0),
    )
    buf = jaxbuf.ReplayBuffer.create(ex, 4, stack_num=2)
    for s in range(3):
        t = dict(
            step(s),
            info={"x": np.int32(s)},
            policy={"logp": np.float32(s / 2)},
            extra=np.float32(10 + s),
        )
        buf, _ = buf.add(t)
    out = buf[jnp.arange(3)]
    np.testing.assert_array_equal(out["info"]["x"], [[0, 0], [0, 1], [1, 2]])
    np.testing.assert_array_equal(out["policy"]["logp"], [[0, 0], [0, 0.5], [0.5, 1]])
    np.testing.assert_array_equal(out["extra"], [10, 11, 12])


def test_vector_reward_gives_vector_returns():
    ex = dict(EXAMPLE, rew=np.zeros(2, np.float32))
    buf = jaxbuf.VectorReplayBuffer.create(ex, 4, 2)
    b = rows([0, 0], terminated=[0, 1])
    b["rew"] = np.array([[1, 2], [3, 4]], np.float32)
    buf, res = buf.add(b)
    assert res.episode_return.shape == (2, 2)
    np.testing.assert_allclose(res.episode_return, [[0, 0], [3, 4]])


def test_sample_weights_subbuffers_by_length():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 200, 2)
    for s in range(60):
        buf, _ = buf.add(rows([s]), np.array([0]))
    for s in range(20):
        buf, _ = buf.add(rows([s]), np.array([1]))
    idx = np.asarray(buf.sample_indices(jax.random.key(0), 20000))
    assert set(np.unique(idx)) <= set(range(60)) | set(range(100, 120))
    frac = np.mean(idx < 100)
    assert abs(frac - 0.75) < 0.02
    counts = np.bincount(idx, minlength=200)[:60]
    assert counts.min() > 0


def test_epoch_indices_cover_every_transition_once():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 20, 4)
    for s in range(3):
        buf, _ = buf.add(rows([s] * 4))
    buf, _ = buf.add(rows([9]), np.array([2]))
    idx, mask = jax.jit(lambda b, k: b.epoch_indices(k, 4))(buf, jax.random.key(3))
    assert idx.shape == (5, 4)
    chosen = np.asarray(idx)[np.asarray(mask)]
    assert sorted(chosen.tolist()) == sorted(buf.chronological_indices().tolist())


def test_split_matches_tianshou_chunking_e31():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 10)
    for s in range(7):
        buf, _ = buf.add(step(s))
    sizes = [len(i) for _, i in buf.split(None, 3, shuffle=False, merge_last=True)]
    assert sizes == [3, 4]
    sizes = [len(i) for _, i in buf.split(None, 3, shuffle=False)]
    assert sizes == [3, 3, 1]
    chunks = [i for _, i in buf.split(jax.random.key(0), 3)]
    assert sorted(np.concatenate(chunks).tolist()) == list(range(7))
    assert [len(i) for _, i in buf.split(None, -1, shuffle=False)] == [7]


def test_sample_sequences_stop_at_episode_end():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 10)
    for s in range(8):
        buf, _ = buf.add(step(s, terminated=s == 3))
    batch, idx, mask = buf.sample_sequences(jax.random.key(0), 64, 3)
    idx, mask = np.asarray(idx), np.asarray(mask)
    obs = np.asarray(batch["obs"])
    assert obs.shape == (64, 3)
    for m, o in zip(mask, obs):
        assert m[0]
        valid = o[m]
        np.testing.assert_array_equal(np.diff(valid), 1)  # consecutive steps
        assert not (valid[:-1] == 3).any()  # never crosses the done at step 3
        assert not (valid[:-1] == 7).any()  # nor the write head
        if not m.all():
            assert valid[-1] in (3, 7)  # a window is cut only at an episode end


def test_pickle_round_trip():
    import pickle

    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2)
    buf, _ = buf.add(rows([1, 2], terminated=[1, 0]))
    back = pickle.loads(pickle.dumps(buf))
    assert type(back) is jaxbuf.ReplayBuffer and isinstance(back, jaxbuf.VectorReplayBuffer)
    for a, b in zip(jax.tree_util.tree_leaves(buf), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(a, b)
    assert back.buffer_num == 2 and len(back) == 2


@pytest.mark.parametrize("jit", [False, True])
def test_empty_buffer_documented_results(jit):
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2)
    f = (lambda fn: jax.jit(fn)) if jit else (lambda fn: fn)
    np.testing.assert_array_equal(
        f(lambda b: b.sample_indices(jax.random.key(0), 3))(buf), [0, 0, 0]
    )
    np.testing.assert_array_equal(f(lambda b: b.prev(jnp.arange(8)))(buf), [0] * 4 + [4] * 4)
    np.testing.assert_array_equal(f(lambda b: b.unfinished_index())(buf), [-1, -1])
    assert len(buf) == 0


def test_uniform_draws_are_uniform():
    from jaxbuf._core.sampling import randint_below

    for span in (1, 3, 7, 50):
        x = np.asarray(randint_below(jax.random.key(span), (50_000,), jnp.int32(span)))
        assert x.min() >= 0 and x.max() < span
        expected = 50_000 / span
        chi2 = ((np.bincount(x, minlength=span) - expected) ** 2 / expected).sum()
        # 99.9% quantile of chi-square with span-1 degrees of freedom is below 3*dof + 11
        assert chi2 < 3 * (span - 1) + 11, (span, chi2)
    big = np.asarray(randint_below(jax.random.key(0), (50_000,), jnp.int32((1 << 22) + 3)))
    assert big.max() < (1 << 22) + 3 and abs(big.mean() / ((1 << 22) + 3) - 0.5) < 0.01


def test_example_may_be_abstract():
    spec = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), EXAMPLE
    )
    spec["obs"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    buf = jaxbuf.VectorReplayBuffer.create(spec, 8, 2)
    assert buf.storage["obs"].shape == (4, 2, 3) and buf.storage["terminated"].dtype == bool
    assert buf.global_storage()["obs"].shape == (8, 3)
    abstract = jax.eval_shape(lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 16))
    assert abstract.storage["obs"].shape == (16, 1)
