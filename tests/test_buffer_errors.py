"""Bad input: clear errors at construction and at trace time; checked mode at run time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows, step

import jaxbuf


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size=0), "size must be >= 1"),
        (dict(size=-3), "size must be >= 1"),
        (dict(size=4, stack_num=0), "stack_num must be >= 1"),
        (dict(size=2.5), "size must be an int"),
    ],
)
def test_bad_config_fails_at_create(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jaxbuf.ReplayBuffer.create(EXAMPLE, **kwargs)


def test_buffer_num_above_total_size():
    with pytest.raises(ValueError, match=r"buffer_num \(5\) must not exceed total_size \(4\)"):
        jaxbuf.VectorReplayBuffer.create(EXAMPLE, 4, 5)


def test_example_needs_reserved_keys_and_a_consistent_done():
    with pytest.raises(ValueError, match=r"lacks the reserved key\(s\) \['truncated'\]"):
        jaxbuf.ReplayBuffer.create({k: v for k, v in EXAMPLE.items() if k != "truncated"}, 4)
    with pytest.raises(ValueError, match="'done' is derived"):
        jaxbuf.ReplayBuffer.create(dict(EXAMPLE, done=True), 4)
    assert "done" not in jaxbuf.ReplayBuffer.create(dict(EXAMPLE, done=False), 4).fields()
    with pytest.raises(ValueError, match="save_only_last_obs needs 'obs' with a leading frame"):
        jaxbuf.ReplayBuffer.create(EXAMPLE, 4, save_only_last_obs=True)


@pytest.mark.parametrize("jit", [False, True])
def test_shape_mismatch_names_field(jit):
    buf = jaxbuf.VectorReplayBuffer.create(dict(EXAMPLE, obs=np.zeros(3, np.float32)), 8, 2)
    bad = rows([0, 0])
    bad["obs"] = np.zeros((2, 4), np.float32)
    add = jax.jit(lambda b, x: b.add(x)) if jit else (lambda b, x: b.add(x))
    with pytest.raises(
        ValueError,
        match=r"field 'obs' expected shape \(2, 3\) dtype float32, "
        r"got shape \(2, 4\) dtype float32",
    ):
        add(buf, bad)


def test_dtype_kind_change_is_refused_e9():
    buf = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, obs=np.zeros(2, np.int32)), 4)
    t = dict(step(0), obs=np.array([2.7, 1.0]))
    with pytest.raises(TypeError, match=r"field 'obs' expected dtype int32 .* got dtype float"):
        buf.add(t)
    # same-kind narrowing (float64 -> float32) and weak Python scalars are accepted
    buf2 = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    buf2, _ = buf2.add(dict(step(0), obs=np.float64(1.5), rew=2))
    assert buf2.storage["obs"].dtype == np.float32 and float(buf2.global_storage()["obs"][0]) == 1.5


def test_flag_must_be_bool():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    with pytest.raises(TypeError, match="field 'terminated' expected dtype bool"):
        buf.add(dict(step(0), terminated=np.float32(1.0)))


def test_key_structure_mismatch():
    buf = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, info={"a": np.float32(0)}), 4)
    with pytest.raises(ValueError, match=r"missing \['info'\]"):
        buf.add(step(0))
    with pytest.raises(ValueError, match=r"unexpected \['foo'\]"):
        buf.add(dict(step(0), info={"a": np.float32(0)}, foo=1))
    with pytest.raises(ValueError, match="field 'info' expected structure"):
        buf.add(dict(step(0), info={"b": np.float32(0)}))
    with pytest.raises(ValueError, match=r"field 'info.a' expected shape \(\)"):
        buf.add(dict(step(0), info={"a": np.zeros(2, np.float32)}))


def test_row_count_and_buffer_ids():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2)
    with pytest.raises(ValueError, match="needs buffer_num=2 rows, field 'act' has 3"):
        buf.add(rows([0, 1, 2]))
    with pytest.raises(ValueError, match=r"buffer_ids expected an int array of shape \(2,\)"):
        buf.add(rows([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="only accepted by a plain ReplayBuffer"):
        buf.add(step(0))
    plain = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    with pytest.raises(ValueError, match=r"buffer_ids must lie in \[0, 1\) \(this buffer has 1"):
        plain.add(rows([0]), np.array([1]))  # Tianshou accepts this silently (E12)


def test_user_done_must_agree_e8():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    with pytest.raises(ValueError, match="'done' disagrees with terminated | truncated"):
        buf.add(dict(step(0, terminated=False), done=True))
    buf, _ = buf.add(dict(step(0, truncated=True), done=True))
    assert bool(buf[0]["done"])


def test_failed_add_leaves_state_untouched_e13():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2)
    with pytest.raises(ValueError):
        buf.add(rows([0, 1, 2]), np.array([0, 1]))
    assert len(buf) == 0 and np.asarray(buf.last_index).tolist() == [0, 4]


def test_getitem_and_get_errors():
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 4)
    with pytest.raises(KeyError, match="no field 'obs_next'"):
        buf.get(jnp.arange(2), "obs_next")
    with pytest.raises(TypeError, match="indices must be integers"):
        buf.prev(jnp.array([0.5]))
    with pytest.raises(TypeError, match="len\\(buf\\) is eager only"):
        jax.jit(lambda b: len(b))(buf)


def test_checked_mode_raises_at_run_time():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2)
    sample = jaxbuf.checked(lambda b, k: b.sample_indices(k, 4))
    with pytest.raises(Exception, match="sampling from an empty buffer"):
        sample(buf, jax.random.key(0))
    add = jaxbuf.checked(lambda b, x, i: b.add(x, i))
    with pytest.raises(Exception, match=r"buffer_ids out of range \[0, 2\)"):
        add(buf, rows([0, 1]), jnp.array([0, 5]))
    buf, _ = add(buf, rows([0, 1]), jnp.array([0, 1]))
    prev = jaxbuf.checked(lambda b, i: b.prev(i))
    with pytest.raises(Exception, match=r"index out of range \[0, 8\)"):
        prev(buf, jnp.array([9]))
    done = jaxbuf.checked(lambda b, x: b.add(x))
    bad = dict(rows([0, 1]), done=np.array([True, False]))
    with pytest.raises(Exception, match="'done' disagrees"):
        done(buf, bad)
    # documented unchecked behaviour: out-of-range ids are dropped, indices wrap modulo maxsize
    new, res = jax.jit(lambda b, x, i: b.add(x, i))(buf, rows([5, 6]), jnp.array([0, 7]))
    np.testing.assert_array_equal(res.index, [1, -1])
    np.testing.assert_array_equal(new.lengths, [2, 1])
    np.testing.assert_array_equal(
        jax.jit(lambda b: b.prev(jnp.array([9])))(buf), buf.prev(jnp.array([1]))
    )
