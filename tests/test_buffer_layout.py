"""The physical state layout: time-major storage, packed counters, global-order views."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows

import jaxbuf


def _vector(adds: int, m: int = 3, n: int = 4, ids=None):
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, m * n, n)
    for t in range(adds):
        k = n if ids is None else len(ids)
        obs = 100 * t + np.arange(k)
        buf, _ = buf.add(rows(obs, rew=np.ones(k), terminated=obs % 5 == 0), ids)
    return buf


def test_storage_is_time_major_with_global_slots():
    m, n = 3, 4
    buf = _vector(2, m, n)
    assert buf.storage["obs"].shape == (m, n) and buf.counters.shape == (n, 5)
    # Add t of env k went to local slot t of sub-buffer k: global slot k*m + t, row [t, k].
    np.testing.assert_array_equal(buf.storage["obs"][:2], [[0, 1, 2, 3], [100, 101, 102, 103]])
    glob = buf.global_storage()["obs"]
    assert glob.shape == (m * n,)
    for k in range(n):
        for t in range(2):
            assert glob[k * m + t] == 100 * t + k == buf[k * m + t]["obs"]
    np.testing.assert_array_equal(buf.read(jnp.asarray([1, 4]))["obs"], [100, 101])


def test_counter_properties_read_the_packed_leaf():
    buf = _vector(4, ids=np.array([0, 0, 2], np.int32))  # 8 rows to sub-buffer 0, 4 to 2
    c = np.asarray(buf.counters)
    np.testing.assert_array_equal(buf.insertion_idx, c[:, 0])
    np.testing.assert_array_equal(buf.lengths, [3, 0, 3, 0])
    np.testing.assert_array_equal(buf.last_index, np.arange(4) * 3 + c[:, 2])
    np.testing.assert_array_equal(buf.last_index, [1, 3, 6, 9])
    np.testing.assert_array_equal(buf.ep_len, c[:, 3])
    np.testing.assert_array_equal(buf.ep_start, c[:, 4])
    assert buf.episode_counters().last_slot.tolist() == c[:, 2].tolist()


def test_with_counters_and_global_storage_round_trip():
    buf = _vector(5, ids=np.array([1, 1, 3], np.int32))
    fresh = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 4)
    copy = fresh.with_global_storage(buf.global_storage()).with_counters(buf.episode_counters())
    for a, b in zip(jax.tree_util.tree_leaves(copy), jax.tree_util.tree_leaves(buf), strict=True):
        np.testing.assert_array_equal(a, b)
    nxt = rows([7.0, 8.0], terminated=[True, False])
    ids = np.array([1, 3], np.int32)
    for a, b in zip(copy.add(nxt, ids), buf.add(nxt, ids), strict=True):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_with_global_storage_rejects_a_wrong_layout():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 4)
    good = buf.global_storage()
    with pytest.raises(ValueError, match=r"storage field 'obs' expected shape \(12,\) dtype "):
        buf.with_global_storage({**good, "obs": np.zeros(16, np.float32)})
    with pytest.raises(ValueError, match=r"storage field 'act' expected .* dtype int32, got .*"):
        buf.with_global_storage({**good, "act": np.zeros(12, np.float32)})
    with pytest.raises(ValueError, match=r"storage fields .* do not match"):
        buf.with_global_storage({k: v for k, v in good.items() if k != "rew"})


def test_write_drops_out_of_range_slots_and_leaves_counters():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 4)
    stored = {k: v for k, v in rows([5.0, 6.0, 7.0]).items()}
    new = buf.write(jnp.asarray([4, 12, 11]), stored)
    obs = np.asarray(new.global_storage()["obs"])
    np.testing.assert_array_equal(np.nonzero(obs)[0], [4, 11])
    np.testing.assert_array_equal(obs[[4, 11]], [5.0, 7.0])
    np.testing.assert_array_equal(new.counters, buf.counters)


def test_add_under_jit_writes_in_place_at_any_capacity():
    """No capacity-sized op in the compiled add: only the in-place scatters touch storage."""
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 1 << 14, 4)
    hlo = (
        jax.jit(lambda b, x: b.add(x)[0], donate_argnums=0)
        .lower(buf, rows(np.arange(4.0)))
        .compile()
        .as_text()
    )
    ops = re.findall(r"= \w+\[4096,4\]\{[^}]*\} ([\w-]+)\((.*)", hlo)
    assert ops, "storage-sized values not found in the HLO"
    assert {op for op, _ in ops} <= {"parameter", "scatter", "fusion"}, ops
    assert all("scatter" in rest for op, rest in ops if op == "fusion")
    assert "input_output_alias" in hlo
