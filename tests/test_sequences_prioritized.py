"""Prioritized sequences: the "start" law (R2D2's window priority), both update modes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows
from scipy import stats
from test_sequences import capacity_sized_ops, episode_table

import jaxbuf
from jaxbuf.errors import InputError

ALPHA, BETA, ETA, EPS = 0.7, 0.5, 0.9, 2.0**-23


def buffer(weight_norm=True):
    """One sub-buffer of 24 slots: episodes of 7, 2, 5 and 8 steps, then 2 unfinished."""
    dones = np.concatenate([np.eye(n, dtype=bool)[-1] for n in (7, 2, 5, 8, 2)])
    dones[-1] = False
    buf = jaxbuf.PrioritizedReplayBuffer.create(
        EXAMPLE, 24, alpha=ALPHA, beta=BETA, weight_norm=weight_norm
    )
    buf, _ = buf.add(rows(np.arange(24), terminated=dones), jnp.zeros(24, jnp.int32))
    return buf


def full_starts(buf, length):
    _, pos, ep_len = episode_table(buf)
    return np.flatnonzero((pos >= 0) & (ep_len - pos >= length))


def r2d2(td, mask):
    err = np.abs(td) * mask
    return ETA * err.max(1) + (1 - ETA) * err.sum(1) / mask.sum(1)


def draw(buf, n, length, seed, **kw):
    fn = jax.jit(lambda b, k: b.sample_sequences(k, n, length, priority="start", **kw))
    return fn(buf, jax.random.key(seed))


def updated(buf, length):
    """The buffer after one R2D2 update of the starts of a first draw, and the leaves an
    independent computation expects (last row wins for a repeated start)."""
    seq = draw(buf, 12, length, 0, full_only=True, burn_in=1)
    td = np.random.default_rng(1).uniform(-3, 3, seq.mask.shape).astype(np.float32)
    train = np.asarray(seq.mask & ~seq.burn_in)
    new = buf.update_sequence_weight(seq.indices, train, td, eta=ETA, on="start")
    want = np.asarray(buf.priorities()).astype(np.float64)
    for s, p in zip(np.asarray(seq.indices)[:, 0], r2d2(td, train)):
        want[s] = (p + EPS) ** ALPHA
    return new, want, np.unique(np.asarray(seq.indices)[:, 0])


def test_start_update_writes_only_the_start():
    buf = buffer()
    new, want, starts = updated(buf, 3)
    leaf = np.asarray(new.priorities())
    np.testing.assert_allclose(leaf, want, rtol=1e-5)
    assert len(starts) >= 4  # several distinct windows got a learned priority
    others = np.setdiff1d(np.arange(24), starts)
    np.testing.assert_array_equal(leaf[others], np.asarray(buf.priorities())[others])


@pytest.mark.parametrize("full_only", [True, False])
def test_starts_follow_stored_window_priority(full_only):
    length = 3
    buf, want, _ = updated(buffer(), length)
    support = full_starts(buf, length) if full_only else np.arange(24)
    seq = draw(buf, 20000, length, 7, full_only=full_only)
    found = np.asarray(seq.found)
    assert found.all()
    got = np.bincount(np.asarray(seq.indices)[:, 0], minlength=24)
    assert set(np.flatnonzero(got)) <= set(support)
    expected = want[support] / want[support].sum() * got.sum()
    chi = stats.chisquare(got[support], expected)
    assert chi.pvalue > 1e-3, (got[support], expected, chi)
    # importance weights: (leaf_s / p_min) ** -beta, divided by the batch maximum
    w = (want[np.asarray(seq.indices)[:, 0]] / want.min()) ** -BETA
    np.testing.assert_allclose(np.asarray(seq.weight), w / w.max(), rtol=1e-4)


def test_start_weights_without_normalisation_and_period():
    length = 3
    buf, want, _ = updated(buffer(weight_norm=False), length)
    seq = draw(buf, 4000, length, 3, full_only=True, period=2)
    _, pos, _ = episode_table(buf)
    starts = np.asarray(seq.indices)[:, 0]
    found = np.asarray(seq.found)
    assert found.mean() > 0.9 and (pos[starts[found]] % 2 == 0).all()
    w = np.where(found, (want[starts] / want.min()) ** -BETA, 0.0)
    np.testing.assert_allclose(np.asarray(seq.weight), w, rtol=1e-4)
    support = np.intersect1d(full_starts(buf, length), np.flatnonzero(pos % 2 == 0))
    got = np.bincount(starts[found], minlength=24)
    chi = stats.chisquare(got[support], want[support] / want[support].sum() * got.sum())
    assert chi.pvalue > 1e-3, chi


def test_steps_update_gives_every_masked_step_the_priority():
    buf = buffer()
    seq = draw(buf, 6, 4, 2, full_only=True)
    td = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    mask = np.asarray(seq.mask).copy()
    mask[:, -1] = False  # a step left out of the priority keeps its leaf
    new = buf.update_sequence_weight(seq.indices, mask, td, eta=ETA, on="steps")
    default = buf.update_sequence_weight(seq.indices, mask, td, eta=ETA)
    np.testing.assert_array_equal(np.asarray(new.priorities()), np.asarray(default.priorities()))
    want = np.asarray(buf.priorities()).copy()
    for row, m, p in zip(np.asarray(seq.indices), mask, r2d2(td, mask)):
        want[row[m]] = (p + EPS) ** ALPHA
    np.testing.assert_allclose(np.asarray(new.priorities()), want, rtol=1e-5)


def test_start_mode_under_jit_vmap_and_bad_options():
    buf, _, _ = updated(buffer(), 3)
    keys = jax.random.split(jax.random.key(5), 3)

    def one(k):
        return buf.sample_sequences(k, 8, 3, full_only=True, priority="start")

    many = jax.vmap(one)(keys)
    for i, k in enumerate(keys):
        for a, b in zip(jax.tree.leaves(one(k)), jax.tree.leaves(many)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
    seq = one(keys[0])
    td = jnp.ones((8, 3))
    upd = jax.jit(lambda b, s, t: b.update_sequence_weight(s.indices, s.mask, t, on="start"))
    jitted = upd(buf, seq, td)
    eager = buf.update_sequence_weight(seq.indices, seq.mask, td, on="start")
    np.testing.assert_array_equal(np.asarray(jitted.priorities()), np.asarray(eager.priorities()))
    with pytest.raises(InputError, match="priority must be one of"):
        buf.sample_sequences(keys[0], 4, 3, priority="max")
    with pytest.raises(ValueError, match="on must be 'steps' or 'start'"):
        buf.update_sequence_weight(seq.indices, seq.mask, td, on="window")
    with pytest.raises(ValueError, match="hold no transition"):
        empty = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 24, alpha=ALPHA, beta=BETA)
        empty.update_sequence_weight(seq.indices, seq.mask, td, on="start")


def test_start_mode_has_no_capacity_sized_step():
    size = 3001
    buf = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, size, alpha=0.6, beta=0.4)
    key = jax.random.key(0)

    def sample(b, k):
        return b.sample_sequences(k, 8, 5, full_only=True, period=2, priority="start")

    hlo = jax.jit(sample).lower(buf, key).compile().as_text()
    assert capacity_sized_ops(hlo, size) == []
    seq = sample(buf, key)

    def update(b, s):  # the buffer donated, as in a training step: updated in place
        return b.update_sequence_weight(s.indices, s.mask, s.weight[:, None] * s.mask, on="start")

    hlo = jax.jit(update, donate_argnums=0).lower(buf, seq).compile().as_text()
    assert capacity_sized_ops(hlo, size) == []


@pytest.mark.parametrize("priority", ["sum", "start"])
def test_no_full_window_stored_gives_empty_rows_and_checked_raises(priority):
    buf = buffer()  # longest episode: 8 steps

    def fn(b, k):
        return b.sample_sequences(k, 8, 9, full_only=True, priority=priority)

    seq = jax.jit(fn)(buf, jax.random.key(0))
    assert not np.asarray(seq.found).any() and not np.asarray(seq.mask).any()
    assert (np.asarray(seq.weight) == 0).all()
    with pytest.raises(Exception, match="no window of length 9"):
        jaxbuf.checked(fn)(buf, jax.random.key(0))


def test_length_must_fit_one_sub_buffer():
    """Two sub-buffers of 12 slots: 13 steps do not fit one, whatever the total size."""
    buf = jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, 24, 2, alpha=ALPHA, beta=BETA)
    plain = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 24, 2)
    for b in (buf, plain):
        with pytest.raises(InputError, match="length 13 does not fit a sub-buffer of 12"):
            jax.jit(lambda b, k: b.sample_sequences(k, 4, 13))(b, jax.random.key(0))
        with pytest.raises(InputError, match="burn_in must be < length"):
            jax.jit(lambda b, k: b.sample_sequences(k, 4, 12, burn_in=12))(b, jax.random.key(0))
        assert b.sample_sequences(jax.random.key(0), 2, 12, burn_in=11).mask.shape == (2, 12)
