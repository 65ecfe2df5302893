"""Lock-step adds: one contiguous block per add, the same buffer as the general scatter path."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxbuf


def _steps(flags: np.ndarray, n: int) -> list[dict]:
    """One batch of n rows per entry of ``flags`` (0 running, 1 terminated, 2 truncated)."""
    out = []
    for t, f in enumerate(flags):
        obs = 100.0 * t + np.arange(n)
        out.append(rows(obs, rew=obs / 7, terminated=f == 1, truncated=f == 2))
    return out


def _assert_same(a, b) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 5),
    n=st.integers(1, 4),
    flags=st.lists(st.lists(st.integers(0, 2), min_size=4, max_size=4), min_size=1, max_size=14),
)
def test_lockstep_add_equals_the_general_add(m, n, flags):
    """Same storage, counters and AddResult as the scatter path, with wrap-around and
    episodes ending at different steps in different sub-buffers."""
    batches = _steps(np.asarray(flags)[:, :n], n)
    general = jaxbuf.VectorReplayBuffer.create(EXAMPLE, m * n, n)
    lock = jaxbuf.VectorReplayBuffer.create(EXAMPLE, m * n, n, lockstep=True)
    for batch in batches:
        general, r_general = general.add(batch)
        lock, r_lock = lock.add(batch)
        _assert_same(r_lock, r_general)
    _assert_same(lock.storage, general.storage)
    _assert_same((lock.counters, lock.ep_return), (general.counters, general.ep_return))


def test_lockstep_add_in_a_jitted_scan_equals_eager():
    n, batches = 3, _steps(np.array([[0, 0, 1], [2, 0, 0], [0, 1, 0]] * 3), 3)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batches)
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 4 * n, n, lockstep=True)
    eager, results = buf, []
    for batch in batches:
        eager, r = eager.add(batch)
        results.append(r)

    @jax.jit
    def run(b, xs):
        return jax.lax.scan(lambda c, x: c.add(x), b, xs)

    scanned, scanned_results = run(buf, stacked)
    _assert_same(scanned, eager)
    _assert_same(scanned_results, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *results))


def _storage_ops(hlo: str, shape: str) -> list[tuple[str, str]]:
    """(value name, op) of every storage-sized value of the entry computation."""
    entry = hlo[hlo.index("ENTRY") :]
    ops = re.findall(rf"%([\w.-]+) = \w+\[{shape}\]\{{[^}}]*\}} ([\w-]+)\(", entry)
    assert ops, "storage-sized values not found in the HLO"
    return ops


@pytest.mark.parametrize("vector", [True, False])
def test_block_add_compiles_to_an_in_place_dynamic_update_slice(vector):
    """A lock-step vector buffer, and a plain ReplayBuffer without buffer_ids, write their
    rows with dynamic-update-slice in place: no scatter, no capacity-sized copy."""
    if vector:
        buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 1 << 14, 4, lockstep=True)
        batch, shape = rows(np.arange(4.0)), "4096,4"
    else:
        buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 1 << 12)
        batch, shape = rows(np.arange(1.0)), "4096,1"
    hlo = jax.jit(lambda b, x: b.add(x)[0], donate_argnums=0).lower(buf, batch).compile()
    hlo = hlo.as_text()
    assert "scatter" not in hlo
    assert "dynamic-update-slice" in hlo
    for name, op in _storage_ops(hlo, shape):
        assert op == "parameter" or "dynamic-update-slice" in f"{op} {name}", (name, op)
    assert "input_output_alias" in hlo


def test_replay_buffer_block_add_equals_the_routed_add():
    """A plain ReplayBuffer writes the same with and without ``buffer_ids=[0]``."""
    plain = routed = jaxbuf.ReplayBuffer.create(EXAMPLE, 3)
    for t, f in enumerate([0, 1, 0, 2, 0, 0, 1]):
        batch = rows([float(t)], rew=[t / 2], terminated=[f == 1], truncated=[f == 2])
        plain, r_plain = plain.add(batch)
        routed, r_routed = routed.add(batch, np.array([0], np.int32))
        _assert_same(r_plain, r_routed)
    _assert_same(plain, routed)


def test_lockstep_rejects_buffer_ids_and_a_non_bool():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2, lockstep=True)
    with pytest.raises(ValueError, match=r"lockstep buffer .*buffer_ids=None"):
        buf.add(rows([1.0, 2.0]), np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match=r"lockstep buffer .*buffer_ids=None"):
        jax.jit(lambda b, x, i: b.add(x, i))(buf, rows([1.0, 2.0]), np.array([1, 0], np.int32))
    with pytest.raises(TypeError, match="lockstep must be a bool, got int"):
        jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2, lockstep=1)


def test_checked_reports_sub_buffers_out_of_lock_step():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2, lockstep=True)
    buf, _ = buf.add(rows([1.0, 2.0]))
    add = jaxbuf.checked(lambda b, x: b.add(x)[0])
    add(buf, rows([3.0, 4.0]))  # in lock step: no error
    c = buf.episode_counters()
    skewed = buf.with_counters(c._replace(insertion_idx=c.insertion_idx.at[1].set(3)))
    with pytest.raises(Exception, match="different insertion slots"):
        add(skewed, rows([3.0, 4.0]))


def test_prioritized_vector_takes_lockstep():
    buf = jaxbuf.PrioritizedVectorReplayBuffer.create(
        EXAMPLE, 8, 2, alpha=0.6, beta=0.4, lockstep=True
    )
    assert buf.buffer.lockstep
    buf, res = buf.add(rows([1.0, 2.0]))
    np.testing.assert_array_equal(res.index, [0, 4])
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['lockstp'\]"):
        jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 8, alpha=0.6, beta=0.4, lockstp=True)


def test_vmapped_lockstep_buffers_equal_one_by_one():
    """A stack of lock-step buffers under ``vmap`` (the block write becomes a batched
    update) equals adding to each buffer separately."""
    n, steps = 2, 5
    flags = [np.array([[(s + t) % 3, (s * t) % 3] for t in range(steps)]) for s in range(3)]
    per_buffer = [_steps(f, n) for f in flags]
    for b, batches in enumerate(per_buffer):
        for t, batch in enumerate(batches):
            batch["obs"] = batch["obs"] + 1000 * b + t  # distinct rows per buffer
    one = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 3 * n, n, lockstep=True)
    stack = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), one)
    vadd = jax.jit(jax.vmap(lambda b, x: b.add(x)))
    for t in range(steps):
        xs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[p[t] for p in per_buffer])
        stack, results = vadd(stack, xs)
    for b, batches in enumerate(per_buffer):
        ref = one
        for batch in batches:
            ref, r = ref.add(batch)
        _assert_same(jax.tree_util.tree_map(lambda x, b=b: x[b], stack), ref)
        _assert_same(jax.tree_util.tree_map(lambda x, b=b: x[b], results), r)
