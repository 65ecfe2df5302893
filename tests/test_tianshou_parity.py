"""Tianshou-style code that must just work, or fail with an error that says what to do.

Each test is the regression test of one behaviour found by porting Tianshou code; those that
hold for every buffer class run on each (``filled`` fixture, conftest.BUILDERS).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows, step

import jaxbuf
from conftest import observation

KEY = jax.random.key(0)


def _two_rows(name):
    """Two rows in the form every builder's buffer takes (a HER buffer has goal obs)."""
    batch = rows([7.0, 8.0])
    if name == "HERReplayBuffer":
        obs = batch["obs"]
        batch["obs"] = {"observation": obs, "achieved_goal": obs, "desired_goal": obs}
        batch["obs_next"] = batch["obs"]
    return batch


# ------------------------------------------------------------------ iteration
def test_iteration_ends_and_numpy_holds_the_buffer(filled):
    name, buf = filled
    with pytest.raises(TypeError, match="not iterable.*buf\\[:\\]"):
        list(buf)
    with pytest.raises(TypeError, match="not iterable"):
        for _ in buf:
            pass
    arr = np.array([buf], dtype=object)
    assert arr.shape == (1,) and arr[0] is buf, name
    empty = buf.reset()
    assert np.array([empty]).dtype == object


# ------------------------------------------------------------------ lists and scalars
def test_lists_and_python_scalars_as_values():
    ex = dict(obs=[0.0, 0.0, 0.0], act=0, rew=0.0, terminated=False, truncated=False)
    buf = jaxbuf.ReplayBuffer.create(ex, 4)
    assert buf.input_spec()["obs"].shape == (3,)
    buf, _ = buf.add(dict(obs=[1.0, 2.0, 3.0], act=1, rew=1.0, terminated=False, truncated=True))
    vec = jaxbuf.VectorReplayBuffer.create(dict(EXAMPLE, act=np.zeros(1, np.int32)), 4, 2)
    vec, res = vec.add(
        dict(
            obs=[1.0, 2.0],
            act=[[1], [2]],
            rew=[0, 0],
            terminated=[False, True],
            truncated=[False, False],
        ),
        buffer_ids=[1, 0],
    )
    np.testing.assert_array_equal(buf[0]["obs"], [1.0, 2.0, 3.0])
    assert bool(buf[0]["done"]) and int(buf[0]["act"]) == 1
    assert np.asarray(res.index).tolist() == [2, 0]
    np.testing.assert_array_equal(vec.get(jnp.asarray([2, 0]), "act"), [[1], [2]])


# ------------------------------------------------------------------ pytree fields
def test_dict_action_through_add_sample_get_stacking_and_checkpoint(tmp_path):
    act = {"move": np.zeros(2, np.float32), "fire": np.int32(0)}
    ex = dict(EXAMPLE, act=act)
    buf = jaxbuf.ReplayBuffer.create(ex, 8, stack_num=2)
    for t in range(5):
        buf, _ = buf.add(
            dict(
                step(t, terminated=t == 2),
                act={"move": np.full(2, t, np.float32), "fire": np.int32(t)},
            )
        )
    batch, idx = buf.sample(KEY, 6)
    np.testing.assert_array_equal(batch["act"]["fire"], idx)
    np.testing.assert_array_equal(buf.get(jnp.int32(4), "act", 1)["move"], [4.0, 4.0])
    # stacking: obs stacked, act never
    assert buf[jnp.int32(4)]["obs"].tolist() == [3.0, 4.0]
    assert buf.get(jnp.int32(4), "act", stack_num=2)["fire"].tolist() == [3, 4]
    pri = jaxbuf.PrioritizedReplayBuffer.create(ex, 8, alpha=0.6, beta=0.4)
    pri, _ = pri.add(dict(step(1), act={"move": np.ones(2, np.float32), "fire": np.int32(3)}))
    assert int(pri.sample(KEY, 2)[0]["act"]["fire"][0]) == 3
    jaxbuf.save(tmp_path / "ckpt", buf)
    back = jaxbuf.restore(tmp_path / "ckpt")
    np.testing.assert_array_equal(back.get(jnp.arange(5), "act", 1)["fire"], np.arange(5))
    with pytest.raises(ValueError, match="field 'act' expected structure"):
        buf.add(dict(step(0), act=np.int32(0)))


def test_save_only_last_obs_keeps_each_frame_count():
    ex = dict(EXAMPLE, obs=np.zeros((3, 2), np.float32), obs_next=np.zeros((2, 2), np.float32))
    buf = jaxbuf.ReplayBuffer.create(ex, 8, stack_num=3, save_only_last_obs=True)
    assert buf.input_spec()["obs"].shape == (3, 2)
    assert buf.input_spec()["obs_next"].shape == (2, 2)
    for t in range(3):
        frames = np.full((3, 2), t, np.float32)
        buf, _ = buf.add(dict(step(t), obs=frames, obs_next=frames[:2] + 1))
    assert buf.storage["obs"].shape == (8, 1, 2)
    np.testing.assert_array_equal(buf[jnp.int32(2)]["obs"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(buf[jnp.int32(2)]["obs_next"][:, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="field 'obs_next' expected shape \\(2, 2\\)"):
        buf.add(
            dict(step(0), obs=np.zeros((3, 2), np.float32), obs_next=np.zeros((3, 2), np.float32))
        )


# ------------------------------------------------------------------ derived fields
def test_get_reads_derived_fields(filled):
    name, buf = filled
    idx = jnp.asarray(buf.chronological_indices(), jnp.int32)
    np.testing.assert_array_equal(buf.get(idx, "done"), buf[idx]["done"], err_msg=name)
    assert np.asarray(buf.get(idx, "done")).any()
    with pytest.raises(KeyError, match="no field 'nope'.*'done'"):
        buf.get(idx, "nope")


def test_get_obs_next_with_ignore_obs_next():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 8, stack_num=2, ignore_obs_next=True)
    for t in range(4):
        buf, _ = buf.add(step(t, terminated=t == 3))
    idx = jnp.arange(4)
    np.testing.assert_array_equal(buf.get(idx, "obs_next"), buf[idx]["obs_next"])
    np.testing.assert_array_equal(buf.get(idx, "obs_next", stack_num=1), [1, 2, 3, 3])
    np.testing.assert_array_equal(buf.get(idx, "done", stack_num=1), [0, 0, 0, 1])


# ------------------------------------------------------------------ stacked buffers
STACKED = {
    "ReplayBuffer": lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 100),
    "PrioritizedReplayBuffer": lambda: jaxbuf.PrioritizedReplayBuffer.create(
        EXAMPLE, 100, 0.6, 0.4
    ),
    "CachedReplayBuffer": lambda: jaxbuf.CachedReplayBuffer.create(EXAMPLE, 100, 1, 10),
}


@pytest.mark.parametrize("name", sorted(STACKED))
def test_stacked_buffers_outside_vmap_raise_naming_the_stack_axis(name):
    bufs = jax.vmap(lambda _: STACKED[name]())(jnp.arange(4))

    def fill(b):
        for t in range(30):
            b, _ = b.add(rows([float(t)], terminated=[t % 7 == 6]), jnp.zeros(1, jnp.int32))
        return b

    bufs = jax.vmap(fill)(bufs)
    calls = {
        "len": lambda: len(bufs),
        "size": lambda: bufs.size,
        "[]": lambda: bufs[0],
        "sample": lambda: bufs.sample(KEY, 4),
        "unfinished_index": lambda: bufs.unfinished_index(),
        "prev": lambda: bufs.prev(jnp.int32(0)),
        "add": lambda: bufs.add(step(0)),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=r"stack of 4 buffers.*\(4,\).*jax.vmap"):
            call()
        assert what
    assert jax.vmap(lambda b: b.size)(bufs).tolist() == [30] * 4
    assert "len=[30, 30, 30, 30], stack=(4,)" in repr(bufs)


# ------------------------------------------------------------------ value-changing casts
@pytest.mark.parametrize(
    ("field", "dtype", "value", "match"),
    [
        ("act", np.int32, np.int64(2**31), "field 'act' holds .*2147483648.*int32"),
        ("act", np.int32, np.uint32(2**32 - 1), "field 'act' holds .*4294967295"),
        ("obs", np.float32, np.float64(1e39), "field 'obs' holds .*inf"),
        ("obs", np.uint8, np.int64(300), "field 'obs' holds .*300.*uint8"),
        ("obs", np.uint8, np.int64(-1), r"field 'obs' holds .*-1.*\[0, 255\]"),
    ],
)
def test_casts_that_change_values_raise_eagerly(field, dtype, value, match):
    ex = dict(EXAMPLE, **{field: np.zeros((), dtype)})
    buf = jaxbuf.ReplayBuffer.create(ex, 4)
    with pytest.raises(ValueError, match=match):
        buf.add(dict(step(0), **{field: value}))


def test_casts_that_keep_values_are_accepted():
    ex = dict(EXAMPLE, obs=np.zeros(2, np.uint8))
    buf = jaxbuf.ReplayBuffer.create(ex, 4)
    buf, _ = buf.add(dict(step(0), obs=np.array([0, 255], np.int64), act=np.int64(7)))
    buf, _ = buf.add(dict(step(0), obs=np.zeros(2, np.uint8), rew=np.float64(0.1)))
    assert buf[0]["obs"].tolist() == [0, 255] and int(buf[0]["act"]) == 7
    with pytest.raises(TypeError, match="got dtype int64; refusing a cast"):
        jaxbuf.ReplayBuffer.create(EXAMPLE, 4).add(dict(step(0), terminated=np.int64(1)))


# ------------------------------------------------------------------ batch sizes and keys
@pytest.mark.parametrize("bad", [0, -1, 2.5, None, True, np.float32(3)])
def test_one_batch_size_rule(filled, bad):
    name, buf = filled
    hint = "all_indices.*chronological_indices" if bad == 0 and bad is not True else ">= 1"
    for call in (
        lambda: buf.sample(KEY, bad),
        lambda: buf.sample_indices(KEY, bad),
        lambda: buf.epoch_indices(KEY, bad),
        lambda: buf.sample_sequences(KEY, bad, 2),
        lambda: buf.sample_sequences(KEY, 2, bad),
    ):
        with pytest.raises(ValueError, match=hint):
            call()
    assert buf.sample(KEY, np.int64(3))[1].shape == (3,), name


def test_key_comes_first_messages(filled):
    name, buf = filled
    with pytest.raises(TypeError, match="first argument must be a JAX PRNG key.*got int 42"):
        buf.sample(42, 4)
    with pytest.raises(TypeError, match="JAX PRNG key first.*buf.sample\\(jax.random.key"):
        buf.sample(4)
    raw = jax.random.PRNGKey(1)
    assert buf.sample_indices(raw, 2).shape == (2,), name
    # under jit the checks run at trace time
    assert jax.jit(lambda b, k: b.sample_indices(k, 3))(buf, KEY).shape == (3,)


# ------------------------------------------------------------------ buffer_ids
def test_out_of_range_buffer_ids_raise_eagerly(filled):
    name, buf = filled
    batch = _two_rows(name)
    for ids in ([0, 5], [-1, 0], np.array([0, 2**20])):
        with pytest.raises(IndexError, match=r"buffer_ids must lie in \[0, 2\)"):
            buf.add(batch, ids)
    new, res = jax.jit(lambda b, x, i: b.add(x, i))(buf, batch, jnp.asarray([0, 5]))
    assert int(res.index[1]) == -1 and int(res.index[0]) >= 0, name
    assert len(new) >= len(buf)


# ------------------------------------------------------------------ messages
def test_messages_name_the_problem():
    u8 = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, obs=np.zeros(2, np.uint8)), 4)
    with pytest.raises(TypeError, match="expected dtype uint8 .*got dtype float64"):
        u8.add(dict(step(0), obs=np.zeros(2, np.float64)))
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    with pytest.raises(ValueError, match="field 'obs' expected an array .* got a str 'abc'"):
        buf.add(dict(step(0), obs="abc"))
    with pytest.raises(ValueError, match="field 'obs' expected an array .* got a dict"):
        buf.add(dict(step(0), obs={"a": 1.0}))
    with pytest.raises(ValueError, match=r"has 3 .*buffer_ids=jnp.zeros\(3, jnp.int32\)"):
        buf.add(rows([0.0, 1.0, 2.0]))
    buf, _ = buf.add(rows([0.0, 1.0, 2.0]), np.zeros(3, np.int32))
    assert len(buf) == 3


# ------------------------------------------------------------------ update
def test_update_appends_oldest_first_like_tianshou():
    src = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 6, 2)
    for t in range(4):  # sub-buffer 0: 0,1,2 (3 slots, 0 overwritten by 3); 1: 10..13
        src, _ = src.add(rows([t, 10 + t], terminated=[t == 1, False]))
    dst = jaxbuf.ReplayBuffer.create(EXAMPLE, 8)
    dst, _ = dst.add(step(-1, terminated=True))
    dst, res = dst.update(src)
    order = np.asarray(dst.get(jnp.asarray(dst.chronological_indices()), "obs")).tolist()
    assert order == [-1, 1, 2, 3, 11, 12, 13]  # src's sub-buffers oldest first, in order
    assert np.asarray(res.index).tolist() == [1, 2, 3, 4, 5, 6]
    jitted, _ = jax.jit(lambda d, s: d.update(s))(dst.reset(), src)
    np.testing.assert_array_equal(jitted.storage["obs"][:6, 0], [1, 2, 3, 11, 12, 13])
    assert bool(jitted.get(jnp.int32(0), "done"))  # episode links follow the copied flags
    with pytest.raises(ValueError, match="update needs the same fields"):
        dst.update(jaxbuf.ReplayBuffer.create(dict(EXAMPLE, extra=np.int32(0)), 4))


def test_update_works_for_every_class(filled):
    name, buf = filled
    new, res = buf.reset().update(buf)
    assert type(new) is type(buf)
    stored = {
        float(x) for x in observation(buf.get(jnp.asarray(buf.chronological_indices()), "obs"))
    }
    got = observation(new.get(jnp.asarray(new.chronological_indices()), "obs"))
    assert len(new) > 0 and {float(x) for x in got} <= stored, name
    assert res.index.shape[0] == buf.maxsize


# ------------------------------------------------------------------ reset
def test_reset_empties_every_class(filled):
    name, buf = filled
    empty = buf.reset()
    assert len(empty) == 0 and type(empty) is type(buf)
    assert np.asarray(empty.unfinished_index()).tolist() == [-1] * len(empty.lengths)
    again, _ = empty.add(_two_rows(name), [0, 1])
    assert len(again) == 2
    if name == "PrioritizedReplayBuffer":  # no stale priorities: only the new rows are drawn
        idx = np.asarray(again.sample_indices(KEY, 64))
        assert set(idx.tolist()) <= set(again.chronological_indices().tolist())
    assert len(jax.jit(lambda b: b.reset())(buf)) == 0


def test_reset_keep_statistics():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 8)
    buf, _ = buf.add(step(0, rew=1.0))
    buf, _ = buf.add(step(1, rew=2.0))
    kept = buf.reset(keep_statistics=True)
    _, res = kept.add(step(2, rew=4.0, terminated=True))
    assert int(res.episode_length[0]) == 3 and float(res.episode_return[0]) == 7.0
    _, res = buf.reset().add(step(2, rew=4.0, terminated=True))
    assert int(res.episode_length[0]) == 1 and float(res.episode_return[0]) == 4.0
    with pytest.raises(ValueError, match="keep_statistics must be a bool"):
        buf.reset(keep_statistics=1)


# ------------------------------------------------------------------ get_buffer_indices
def test_get_buffer_indices_tianshou_examples():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 10, 2)
    assert buf.get_buffer_indices(2, 4).tolist() == [2, 3]
    assert buf.get_buffer_indices(4, 2).tolist() == [4, 0, 1]
    assert buf.get_buffer_indices(8, 7).tolist() == [8, 9, 5, 6]
    assert buf.get_buffer_indices(5, 10).tolist() == [5, 6, 7, 8, 9]
    for start, stop in ((1, 6), (8, 1)):
        with pytest.raises(ValueError, match="must lie in one sub-buffer"):
            buf.get_buffer_indices(start, stop)
    with pytest.raises(IndexError, match="need 0 <= start < 10"):
        buf.get_buffer_indices(10, 2)


# ------------------------------------------------------------------ repr
def test_repr_is_short_and_names_fields(filled):
    name, buf = filled
    text = repr(buf)
    assert text.startswith(f"{type(buf).__name__}(maxsize={buf.maxsize}, len={len(buf)}, ")
    assert "obs: " in text and "terminated: bool[]" in text and len(text) < 400, text
    seen = []
    jax.jit(lambda b: seen.append(repr(b)) or b.size)(buf)
    assert "len=?" in seen[0] and "fields={" in seen[0]


# ------------------------------------------------------------------ cached over size-0 main
def test_cached_buffer_over_size_zero_main_drops_finished_episodes():
    buf = jaxbuf.CachedReplayBuffer.create(EXAMPLE, 0, 2, 4)
    assert buf.maxsize == 8 and buf.subbuffer_edges.tolist() == [0, 0, 4, 8]
    buf, res = buf.add(rows([1.0, 11.0], rew=[1.0, 0.0]), [0, 1])
    assert np.asarray(res.index).tolist() == [0, 4]
    buf, res = buf.add(rows([2.0, 12.0], rew=[2.0, 0.0], terminated=[True, False]), [0, 1])
    assert np.asarray(res.index).tolist() == [-1, 5]
    assert np.asarray(res.episode_start).tolist() == [-1, 4]
    assert int(res.episode_length[0]) == 2 and float(res.episode_return[0]) == 3.0
    assert len(buf) == 2 and buf.chronological_indices().tolist() == [4, 5]
    np.testing.assert_array_equal(buf[jnp.asarray([4, 5])]["obs"], [11.0, 12.0])
    assert buf.sample_indices(KEY, 16).tolist() and set(
        np.asarray(buf.sample_indices(KEY, 16)).tolist()
    ) <= {4, 5}
