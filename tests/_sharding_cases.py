"""Sharded-buffer cases that need 8 devices; run by tests/test_sharding.py in a subprocess.

That process starts with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag
must be set before jax starts), so every mesh below is built from 8 virtual CPU devices.
The reference for every sharded result is the unsharded buffer fed the same rows: the whole
``VectorReplayBuffer`` for ``add`` and global sampling, and, for shard-local sampling, an
independent buffer per shard holding that shard's sub-buffers, sampled with the key folded
by the shard index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sharding_data import (
    CONFIGS,
    EXAMPLE,
    N_ENV,
    SIZE,
    STEPS,
    assert_trees_equal,
    builder,
    rows,
    stacked_rows,
)
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxbuf
from jaxbuf import sharding as shd


def on_env(x, mesh) -> bool:
    """Whether ``x`` is laid out as ``P('env')`` on its leading axis."""
    return x.sharding.is_equivalent_to(NamedSharding(mesh, P("env")), x.ndim)


def buffer_on_env(buf, mesh) -> bool:
    """Whether every leaf of ``buf`` has the layout of ``shd.buffer_sharding``: storage
    ``[m, n, ...]`` split on axis 1, counters ``[n, ...]`` on axis 0."""
    want = jax.tree_util.tree_leaves(shd.buffer_sharding(buf, mesh, "env"))
    have = jax.tree_util.tree_leaves(buf)
    return all(x.sharding.is_equivalent_to(w, x.ndim) for x, w in zip(have, want, strict=True))


def make_mesh(kind: str):
    if kind == "explicit":
        return jax.make_mesh((8,), ("env",), axis_types=(AxisType.Explicit,))
    if kind == "auto":
        return jax.make_mesh((8,), ("env",), axis_types=(AxisType.Auto,))
    # 2-D mesh: the buffer is sharded over 'env' (4 shards), replicated over 'model'.
    return jax.make_mesh((4, 2), ("env", "model"), axis_types=(AxisType.Explicit,) * 2)


ref_add = jax.jit(lambda b, x: b.add(x))
ref_add_ids = jax.jit(lambda b, x, i: b.add(x, i))
ref_sample = jax.jit(lambda b, k, n: b.sample(k, n), static_argnums=2)
ref_read = jax.jit(lambda b, i: b[i])


def filled(mesh, config: str, steps: int = STEPS):
    """The sharded buffer (eager ``shard_add`` per step) and the unsharded reference."""
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", **CONFIGS[config])
    for t in range(steps):
        sb, _ = shd.shard_add(sb, rows(t, np.arange(N_ENV)), mesh, "env")
    return sb, builder(config, SIZE, N_ENV)(stacked_rows(np.arange(N_ENV), steps))


def test_device_count():
    assert jax.device_count() == 8


@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_layout_whole_subbuffers_per_device(kind):
    mesh = make_mesh(kind)
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", stack_num=2)
    m, n_local = sb.subbuffer_size, N_ENV // 8
    assert buffer_on_env(sb, mesh)
    storage = jax.tree_util.tree_leaves(sb.storage)
    for leaf in jax.tree_util.tree_leaves(sb):
        axis = 1 if any(leaf is x for x in storage) else 0  # storage is [m, n, ...]
        assert leaf.shape[axis] == N_ENV and (axis == 0 or leaf.shape[0] == m)
        starts = sorted(s.index[axis].start or 0 for s in leaf.addressable_shards)
        assert starts == [d * n_local for d in range(8)]
        assert {s.data.shape[axis] for s in leaf.addressable_shards} == {n_local}
    # Placing an existing buffer gives the same layout and values.
    ref = jaxbuf.VectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, stack_num=2)
    placed = shd.shard_buffer(ref, mesh, "env")
    assert_trees_equal(placed, ref)
    assert buffer_on_env(placed, mesh)


@pytest.mark.parametrize("kind", ["explicit", "auto", "2d"])
@pytest.mark.parametrize("lockstep", [False, True])
def test_add_matches_unsharded(kind, lockstep):
    """Every AddResult and, at the end, every leaf equal the unsharded (routed) buffer's, also
    for a lock-step buffer, whose shards each write one block."""
    mesh = make_mesh(kind)
    opts = {"stack_num": 2, "lockstep": lockstep}
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", **opts)
    assert sb.lockstep is lockstep
    ref = jaxbuf.VectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, stack_num=2)
    envs = np.arange(N_ENV)
    for t in range(STEPS):
        ref, ref_res = ref_add(ref, rows(t, envs))
        sb, res = shd.shard_add(sb, rows(t, envs), mesh, "env")
        assert_trees_equal(res, ref_res)
        assert on_env(res.index, mesh)
    assert_trees_equal(sb.replace(lockstep=False), ref)
    assert buffer_on_env(sb, mesh)


def test_add_with_buffer_ids_matches_unsharded():
    """Three rows per shard, ids inside the shard (with duplicates), some ids dropped."""
    mesh = make_mesh("explicit")
    sb, ref = filled(mesh, "stack2", steps=4)
    rng = np.random.default_rng(0)
    for t in range(4, 12):
        ids = (np.repeat(np.arange(8) * 2, 3) + rng.integers(0, 2, 24)).astype(np.int32)
        if t == 7:
            ids[5] = -1  # an invalid id is dropped, as in the core
        batch = rows(t, ids % N_ENV)
        ref, ref_res = ref_add_ids(ref, batch, ids)
        sb, res = shd.shard_add(sb, batch, mesh, "env", buffer_ids=ids)
        assert_trees_equal(res, ref_res)
    assert_trees_equal(sb, ref)


def test_add_with_misrouted_ids_under_jit_drops_the_row():
    mesh = make_mesh("explicit")
    sb, ref = filled(mesh, "stack2", steps=2)
    ids = np.repeat(np.arange(8) * 2, 3).astype(np.int32)
    ids[0] = 15  # row 0 is on shard 0; sub-buffer 15 lives on shard 7
    batch = rows(2, np.arange(24) % N_ENV)
    add = jax.jit(lambda b, x, i: shd.shard_add(b, x, mesh, "env", buffer_ids=i))
    sb, res = add(sb, batch, jnp.asarray(ids))
    expect_ids = ids.copy()
    expect_ids[0] = -1
    ref, ref_res = ref_add_ids(ref, batch, expect_ids)
    assert np.asarray(res.index)[0] == -1
    assert_trees_equal(res, ref_res)
    assert_trees_equal(sb, ref)


@pytest.mark.parametrize(("kind", "config"), [("explicit", "stack2"), ("2d", "avail_no_next")])
def test_local_sample_matches_per_shard_buffers(kind, config):
    """Shard s's draws equal an independent buffer of its sub-buffers sampled with
    fold_in(key, s); the rows equal the unsharded buffer read at the global indices."""
    mesh = make_mesh(kind)
    shards = mesh.shape["env"]
    n_local = N_ENV // shards
    sb, ref = filled(mesh, config)
    # One independent buffer per shard, built from that shard's envs (vmapped over shards).
    per_shard_rows = jax.tree_util.tree_map(
        lambda x: np.moveaxis(x.reshape(STEPS, shards, n_local, *x.shape[2:]), 1, 0),
        stacked_rows(np.arange(N_ENV)),
    )
    per_shard = jax.jit(jax.vmap(builder(config, SIZE // shards, n_local)))(per_shard_rows)
    key = jax.random.key(3)
    b = 6
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(shards))
    want_rows, want_idx = jax.jit(jax.vmap(lambda buf, k: buf.sample(k, b)))(per_shard, keys)
    batch, idx = shd.shard_sample(sb, key, b, mesh, "env")
    assert idx.shape == (shards * b,) and on_env(idx, mesh)
    assert all(on_env(x, mesh) for x in jax.tree_util.tree_leaves(batch))
    offsets = np.arange(shards)[:, None] * n_local * sb.subbuffer_size
    np.testing.assert_array_equal(np.asarray(idx), (np.asarray(want_idx) + offsets).reshape(-1))
    assert_trees_equal(
        batch,
        jax.tree_util.tree_map(
            lambda x: np.asarray(x).reshape(shards * b, *x.shape[2:]), want_rows
        ),
    )
    assert_trees_equal(batch, ref_read(ref, np.asarray(idx)))


def test_local_sample_typed_and_raw_keys_and_empty_shard():
    mesh = make_mesh("auto")
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env")
    ids = np.repeat(np.arange(8) * 2, 2).astype(np.int32)
    ids[2:4] = -1  # shard 1 stays empty
    sb, _ = shd.shard_add(sb, rows(0, np.arange(16)), mesh, "env", buffer_ids=ids)
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):
        _, idx = shd.shard_sample(sb, key, 4, mesh, "env")
        idx = np.asarray(idx).reshape(8, 4)
        m2 = 2 * sb.subbuffer_size
        assert (idx[1] == m2).all()  # the empty shard returns its first slot
        filled_shards = [s for s in range(8) if s != 1]
        for s in filled_shards:  # two rows, both in sub-buffer 2s
            assert set(idx[s]) <= {s * m2, s * m2 + 1}


@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_global_sample_reads_the_unsharded_buffer(kind):
    mesh = make_mesh(kind)
    sb, ref = filled(mesh, "stack2")
    batch, idx = shd.shard_sample(sb, jax.random.key(9), 5, mesh, "env", mode="global")
    assert idx.shape == (40,) and on_env(idx, mesh)
    assert_trees_equal(batch, ref_read(ref, np.asarray(idx)))


@pytest.mark.parametrize("config", ["stack2", "avail_no_next"])
def test_global_sample_is_uniform_over_all_stored_transitions(config):
    """Shards filled unevenly (ids routed to a few envs): chi-square over shards and slots."""
    from scipy import stats

    mesh = make_mesh("explicit")
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", **CONFIGS[config])
    ref = jaxbuf.VectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, **CONFIGS[config])
    for t in range(14):  # shard s gets rows only on steps t >= s: unequal sizes
        ids = np.repeat(np.arange(8) * 2, 2).astype(np.int32) + np.tile([0, 1], 8)
        ids = np.where(np.repeat(np.arange(8), 2) <= t, ids, -1).astype(np.int32)
        batch = rows(t, np.arange(N_ENV))
        sb, _ = shd.shard_add(sb, batch, mesh, "env", buffer_ids=ids)
        ref, _ = ref_add_ids(ref, batch, ids)
    want = np.asarray(jax.jit(lambda b: b.sample_indices(jax.random.key(0), 20000))(ref))
    allowed = np.bincount(want, minlength=SIZE) > 0  # the slots the core draws from
    sample = jax.jit(lambda b, k: shd.shard_sample(b, k, 250, mesh, "env", mode="global")[1])
    counts = sum(
        np.bincount(np.asarray(sample(sb, jax.random.key(c))), minlength=SIZE) for c in range(5)
    )
    assert (counts[~allowed] == 0).all()
    p = allowed / allowed.sum()
    for bins in (8, 16):
        got, exp = counts.reshape(bins, -1).sum(1), p.reshape(bins, -1).sum(1) * counts.sum()
        keep = exp > 0
        assert stats.chisquare(got[keep], exp[keep]).pvalue > 1e-4


def test_global_apply_equals_unsharded():
    """Reads with global slots (links, stacking, sequences) match the unsharded buffer."""
    mesh = make_mesh("explicit")
    sb, ref = filled(mesh, "stack2")

    def reads(b, i):
        seq = b.sample_sequences(jax.random.key(2), 4, 3)
        return b[i], b.prev(i), b.next(i), b.unfinished_index(), seq

    idx = np.array([0, 9, 11, 25, 70, 159], np.int32)
    got = shd.global_apply(reads, sb, idx, mesh=mesh, axis="env")
    assert_trees_equal(got, jax.jit(reads)(ref, idx))
    replicated = NamedSharding(mesh, P())
    assert all(
        x.sharding.is_equivalent_to(replicated, x.ndim) for x in jax.tree_util.tree_leaves(got)
    )


@pytest.mark.parametrize("kind", ["explicit", "auto", "2d"])
def test_shard_local_programs_have_no_collectives(kind):
    mesh = make_mesh(kind)
    sb, _ = filled(mesh, "stack2", steps=3)
    batch = shd.global_batch(rows(3, np.arange(N_ENV)), mesh, "env")
    ids = shd.global_batch(np.arange(N_ENV, dtype=np.int32), mesh, "env")
    key = jax.random.key(0)
    assert shd.collectives(lambda b, x: shd.shard_add(b, x, mesh, "env"), sb, batch) == set()
    assert (
        shd.collectives(
            lambda b, x, i: shd.shard_add(b, x, mesh, "env", buffer_ids=i), sb, batch, ids
        )
        == set()
    )
    assert shd.collectives(lambda b, k: shd.shard_sample(b, k, 8, mesh, "env"), sb, key) == set()


def test_global_sample_program_moves_only_scalars_and_sampled_rows():
    mesh = make_mesh("explicit")
    sb, _ = filled(mesh, "stack2", steps=3)
    sizes = shd.collective_sizes(
        lambda b, k: shd.shard_sample(b, k, 8, mesh, "env", mode="global"), sb, jax.random.key(0)
    )
    assert sizes and {op for op, _ in sizes} <= set(shd.COLLECTIVE_OPS)
    # at most the batch (64 rows, obs of 2 frames x 3); the obs storage holds 160 x 3.
    assert max(n for _, n in sizes) <= 64 * 6, sizes
    assert ("all-gather", 8) in sizes  # one count per shard
    # The unsharded program on one device has none: the detector is not trivially positive.
    one = jaxbuf.VectorReplayBuffer.create(EXAMPLE, SIZE, N_ENV, stack_num=2)
    assert shd.collectives(lambda b, k: b.sample(k, 64), one, jax.random.key(0)) == set()


def test_inside_jit_and_scan_with_donation():
    """A jitted, donated training-style loop gives the same state as eager calls."""
    mesh = make_mesh("explicit")
    sb_eager, ref = filled(mesh, "stack2", steps=6)
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env", stack_num=2)
    stacked = jax.device_put(stacked_rows(np.arange(N_ENV), 6), NamedSharding(mesh, P(None, "env")))

    @jax.jit
    def run(buf, xs, key):
        buf, res = jax.lax.scan(lambda b, x: shd.shard_add(b, x, mesh, "env"), buf, xs)
        return buf, res.index, shd.shard_sample(buf, key, 4, mesh, "env")[1]

    run_donated = jax.jit(run, donate_argnums=0)
    buf, index, idx = run_donated(sb, stacked, jax.random.key(1))
    assert_trees_equal(buf, sb_eager)
    assert_trees_equal(buf, ref)
    assert index.shape == (6, N_ENV)
    np.testing.assert_array_equal(
        np.asarray(idx),
        np.asarray(shd.shard_sample(sb_eager, jax.random.key(1), 4, mesh, "env")[1]),
    )


def test_checkpoint_saved_on_8_devices_restores_on_4_and_1(tmp_path):
    mesh8 = make_mesh("explicit")
    sb, ref = filled(mesh8, "stack2")
    jaxbuf.save(tmp_path / "buf", sb)
    envs = np.arange(N_ENV)
    for n in (4, 1):
        mesh = jax.make_mesh((n,), ("env",), devices=jax.devices()[:n])
        got = jaxbuf.restore(tmp_path / "buf", like=shd.sharded_like(sb, mesh, "env"))
        assert isinstance(got, jaxbuf.VectorReplayBuffer) and got.stack_num == 2
        assert_trees_equal(got, ref)
        assert buffer_on_env(got, mesh)
        assert all(len(x.addressable_shards) == n for x in jax.tree_util.tree_leaves(got))
        # The restored buffer carries on: shard-local add on the new mesh matches the core.
        got, res = shd.shard_add(got, rows(STEPS, envs), mesh, "env")
        want, want_res = ref_add(ref, rows(STEPS, envs))
        assert_trees_equal((got, res), (want, want_res))
    # Without like: the saved class on the default device.
    plain = jaxbuf.restore(tmp_path / "buf")
    assert isinstance(plain, jaxbuf.VectorReplayBuffer)
    assert_trees_equal(plain, ref)
    with pytest.raises(ValueError, match="buffer_num=16 must be divisible by the size 3"):
        mesh3 = jax.make_mesh((3,), ("env",), devices=jax.devices()[:3])
        shd.sharded_like(sb, mesh3, "env")


def test_bad_configuration_errors():
    mesh = make_mesh("explicit")
    with pytest.raises(ValueError, match=r"buffer_num=12 .* divisible by the size 8 .* 'env'"):
        shd.create_sharded(EXAMPLE, 120, 12, mesh, "env")
    with pytest.raises(ValueError, match=r"axis 'data' not found.*\('env',\)"):
        shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "data")
    with pytest.raises(ValueError, match="buffer_num=12"):
        shd.shard_buffer(jaxbuf.VectorReplayBuffer.create(EXAMPLE, 120, 12), mesh, "env")
    with pytest.raises(TypeError, match="Mesh"):
        shd.shard_count("env", "env")
    sb = shd.create_sharded(EXAMPLE, SIZE, N_ENV, mesh, "env")
    with pytest.raises(ValueError, match="buffer_num=16 rows, got 8"):
        shd.shard_add(sb, rows(0, np.arange(8)), mesh, "env")
    with pytest.raises(ValueError, match="12 rows, which must be a multiple of the 8 shards"):
        shd.shard_add(sb, rows(0, np.arange(12)), mesh, "env", buffer_ids=np.arange(12))
    with pytest.raises(ValueError, match=r"buffer_ids\[1\]=15 belongs to shard 7.*row 1"):
        shd.shard_add(
            sb,
            rows(0, np.arange(16)),
            mesh,
            "env",
            buffer_ids=np.array([0, 15] + list(range(2, 16))),
        )
    with pytest.raises(ValueError, match="same leading row axis"):
        bad = rows(0, np.arange(16))
        bad["act"] = bad["act"][:3]
        shd.shard_add(sb, bad, mesh, "env")
    with pytest.raises(ValueError, match="batch_size_per_shard must be an int >= 1, got 0"):
        shd.shard_sample(sb, jax.random.key(0), 0, mesh, "env")
    with pytest.raises(ValueError, match=r"mode must be one of \('local', 'global'\)"):
        shd.shard_sample(sb, jax.random.key(0), 2, mesh, "env", mode="uniform")
    with pytest.raises(TypeError, match="expected a ReplayBuffer"):
        shd.shard_sample({"a": 1}, jax.random.key(0), 2, mesh, "env")
