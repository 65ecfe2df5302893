"""Sharded prioritized-buffer cases that need 8 devices (run by tests/test_sharding.py in the
same 8-device subprocess as ``_sharding_cases.py``).

The reference is the unsharded ``PrioritizedVectorReplayBuffer`` fed the same rows and the
same priority updates; the global law is checked with chi-square tests over shards and over
blocks of slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sharding_data import EXAMPLE, N_ENV, SIZE, STEPS, assert_trees_equal, rows
from scipy import stats

import jaxbuf
from jaxbuf import sharding as shd

OPTS = {"alpha": 0.7, "beta": 0.5, "weight_norm": False, "stack_num": 2}
ref_add = jax.jit(lambda b, x: b.add(x))
ref_update = jax.jit(lambda b, i, w: b.update_weight(i, w))
read_core = jax.jit(lambda b, i: b.buffer[i])


def mesh8():
    return jax.make_mesh((8,), ("env",))


def filled(mesh, steps=STEPS):
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", **OPTS)
    ref = jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, **OPTS)
    for t in range(steps):
        sb, res = shd.shard_add(sb, rows(t, np.arange(N_ENV)), mesh, "env")
        ref, want = ref_add(ref, rows(t, np.arange(N_ENV)))
        assert_trees_equal(res, want)
    return sb, ref


def same_state(sb, ref):
    flat = shd.unshard(sb)
    assert flat.tree.leaves.shape == ref.tree.leaves.shape
    assert_trees_equal(flat, ref)


def test_layout_add_and_updates_match_unsharded():
    mesh = mesh8()
    sb, ref = filled(mesh)
    assert sb.tree.leaves.shape[0] == 8 and sb.tree.capacity == SIZE // 8
    assert sb.tree.leaves.sharding.spec[0] == "env"
    same_state(sb, ref)
    rng = np.random.default_rng(0)
    for mode in ("local", "global", "global"):
        _, idx = shd.shard_sample(sb, jax.random.key(len(mode)), 4, mesh, "env", mode=mode)
        w = rng.exponential(size=32).astype(np.float32) * 3
        sb = shd.shard_update_weight(sb, idx, w, mesh, "env", mode=mode)
        ref = ref_update(ref, np.asarray(idx), w)
        same_state(sb, ref)
    sb, _ = shd.shard_add(sb, rows(STEPS, np.arange(N_ENV)), mesh, "env")  # max_prio is global
    ref, _ = ref_add(ref, rows(STEPS, np.arange(N_ENV)))
    same_state(sb, ref)
    # shard_buffer of the unsharded buffer gives the same layout and values.
    assert_trees_equal(shd.shard_buffer(ref, mesh, "env"), sb)


def test_local_sample_draws_within_each_shard():
    mesh = mesh8()
    sb, ref = filled(mesh)
    w = np.linspace(0.1, 5, 32).astype(np.float32)
    _, idx = shd.shard_sample(sb, jax.random.key(0), 4, mesh, "env")
    sb = shd.shard_update_weight(sb, idx, w, mesh, "env", mode="local")
    ref = ref_update(ref, np.asarray(idx), w)
    batch, idx = shd.shard_sample(sb, jax.random.key(1), 16, mesh, "env")
    idx = np.asarray(idx)
    per_shard = SIZE // 8
    assert (idx // per_shard == np.repeat(np.arange(8), 16)).all()
    leaf = np.asarray(ref.priorities())[idx].reshape(8, 16)
    shard_min = np.asarray(ref.priorities()).reshape(8, per_shard)
    shard_min = np.where(shard_min > 0, shard_min, np.inf).min(axis=1, keepdims=True)
    np.testing.assert_allclose(
        np.asarray(batch["weight"]).reshape(8, 16), (leaf / shard_min) ** -0.5, rtol=1e-5
    )
    batch.pop("weight")
    assert_trees_equal(batch, read_core(ref, idx))


def _chi2_p(counts, probs):
    expected = probs * counts.sum()
    return stats.chisquare(counts, expected).pvalue


def _check_law(sb, ref, mesh, calls=12, b=64):
    p = np.asarray(ref.priorities(), np.float64)
    p = p / p.sum()
    counts = np.zeros(SIZE)
    sample = jax.jit(lambda buf, k: shd.shard_sample(buf, k, b, mesh, "env", mode="global"))
    for c in range(calls):
        batch, idx = sample(sb, jax.random.key(100 + c))
        idx = np.asarray(idx)
        np.add.at(counts, idx, 1)
        leaf = np.asarray(ref.priorities())[idx]
        gmin = np.asarray(ref.tree.min())
        np.testing.assert_allclose(np.asarray(batch["weight"]), (leaf / gmin) ** -0.5, rtol=1e-5)
    assert counts[p == 0].sum() == 0
    shard_p = _chi2_p(counts.reshape(8, -1).sum(1), p.reshape(8, -1).sum(1))
    block_p = _chi2_p(counts.reshape(32, -1).sum(1), p.reshape(32, -1).sum(1))
    assert shard_p > 1e-4 and block_p > 1e-4, (shard_p, block_p)
    return batch, idx


def test_global_sample_follows_the_unsharded_law_also_after_many_updates():
    mesh = mesh8()
    sb, ref = filled(mesh)
    # Skew the shards: shard s's slots get priorities growing with s.
    slots = np.arange(SIZE, dtype=np.int32)
    w = (1 + slots // 20).astype(np.float32) ** 2
    sb = shd.shard_update_weight(sb, slots, w, mesh, "env")
    ref = ref_update(ref, slots, w)
    batch, idx = _check_law(sb, ref, mesh)
    batch.pop("weight")
    assert_trees_equal(batch, read_core(ref, idx))
    rng = np.random.default_rng(1)
    step = jax.jit(
        lambda buf, k, w: shd.shard_update_weight(
            buf, shd.shard_sample(buf, k, 8, mesh, "env", mode="global")[1], w, mesh, "env"
        )
    )
    for t in range(30):
        key = jax.random.key(t)
        w = rng.exponential(size=64).astype(np.float32)
        ref = ref_update(
            ref, np.asarray(shd.shard_sample(sb, key, 8, mesh, "env", mode="global")[1]), w
        )
        sb = step(sb, key, w)
    same_state(sb, ref)
    _check_law(sb, ref, mesh)


def test_programs_move_no_storage():
    mesh = mesh8()
    sb, _ = filled(mesh, steps=3)
    key = jax.random.key(0)
    batch = shd.global_batch(rows(3, np.arange(N_ENV)), mesh, "env")
    assert shd.collectives(lambda b, x: shd.shard_add(b, x, mesh, "env"), sb, batch) == set()
    assert shd.collectives(lambda b, k: shd.shard_sample(b, k, 8, mesh, "env"), sb, key) == set()
    b = 8
    sizes = shd.collective_sizes(
        lambda buf, k: shd.shard_sample(buf, k, b, mesh, "env", mode="global"), sb, key
    )
    ops = {op for op, _ in sizes}
    assert "all-gather" in ops and "reduce-scatter" in ops
    row = 2 * 3  # the largest row: obs with stack_num=2 frames of 3
    assert max(n for _, n in sizes) <= 8 * b * row, sizes
    assert max(n for _, n in sizes) < SIZE * 3  # never the obs storage
    idx = shd.shard_sample(sb, key, b, mesh, "env")[1]
    local = shd.collective_sizes(
        lambda buf, i: shd.shard_update_weight(buf, i, jnp.ones(64), mesh, "env", mode="local"),
        sb,
        idx,
    )
    assert local == [("all-reduce", 1)]  # max_prio only


def test_checkpoint_restores_onto_other_device_counts(tmp_path):
    mesh = mesh8()
    sb, ref = filled(mesh)
    slots = np.arange(0, SIZE, 2, dtype=np.int32)
    sb = shd.shard_update_weight(sb, slots, np.sin(slots) + 2.0, mesh, "env")
    ref = ref_update(ref, slots, np.sin(slots) + 2.0)
    jaxbuf.save(tmp_path / "buf", sb)
    for n in (4, 2, 1):
        m = jax.make_mesh((n,), ("env",), devices=jax.devices()[:n])
        got = shd.restore_sharded(tmp_path / "buf", m, "env")
        assert got.tree.leaves.shape[0] == n
        same_state(got, ref)
        got, _ = shd.shard_add(got, rows(STEPS, np.arange(N_ENV)), m, "env")
        want, _ = ref_add(ref, rows(STEPS, np.arange(N_ENV)))
        same_state(got, want)
    # The unsharded buffer's checkpoint restores sharded too.
    jaxbuf.save(tmp_path / "flat", ref)
    same_state(shd.restore_sharded(tmp_path / "flat", mesh, "env"), ref)


def test_shard_local_nstep_and_gae_have_no_collectives():
    mesh = mesh8()
    sb, ref = filled(mesh)
    plain = ref.buffer
    _, idx = shd.shard_sample(sb, jax.random.key(3), 6, mesh, "env")
    got = shd.shard_nstep_targets(sb, idx, 0.9, 3, mesh, "env")
    want = jaxbuf.returns.nstep_targets(plain, np.asarray(idx), 0.9, 3)
    assert_trees_equal(got, want)
    fn = lambda b, i: shd.shard_nstep_targets(b, i, 0.9, 3, mesh, "env")  # noqa: E731
    assert shd.collectives(fn, sb, idx) == set()
    every = np.arange(SIZE, dtype=np.int32)
    v = np.cos(every).astype(np.float32)
    got = shd.shard_episodic_return(sb, every, v, v / 2, mesh, "env", 0.9, 0.8)
    want = jaxbuf.returns.episodic_return(plain, every, v, v / 2, 0.9, 0.8)
    for x, y in zip(got, want):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    gae = lambda b, i, a: shd.shard_episodic_return(b, i, a, a, mesh, "env")  # noqa: E731
    assert shd.collectives(gae, sb, every, v) == set()


def test_errors():
    mesh = mesh8()
    sb, _ = filled(mesh, steps=2)
    with pytest.raises(ValueError, match=r"indices\[0\]=150 is a slot of shard 7"):
        shd.shard_update_weight(sb, np.full(8, 150), np.ones(8), mesh, "env", mode="local")
    with pytest.raises(IndexError, match=r"\[0, 160\)"):
        shd.shard_update_weight(sb, np.full(8, 160), np.ones(8), mesh, "env")
    with pytest.raises(ValueError, match="multiple of the 8 shards"):
        shd.shard_update_weight(sb, np.arange(3), np.ones(3), mesh, "env")
    with pytest.raises(TypeError, match="prioritized buffer in the sharded layout"):
        shd.shard_update_weight(sb.buffer, np.arange(8), np.ones(8), mesh, "env")
    flat = jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, **OPTS)
    with pytest.raises(ValueError, match="one priority tree over all slots"):
        shd.partition_specs(flat, "env")
