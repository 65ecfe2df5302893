"""Sequence windows (burn-in, full windows, start grid), whole episodes, prioritized windows."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import jaxbuf
from conftest import BUILDERS, EPISODES, observation
from jaxbuf.errors import InputError

SETTINGS = settings(max_examples=25, deadline=None)


@functools.cache
def built(name):
    return BUILDERS[name]()


def episode_table(buf):
    """Oracle per global slot: (episode start slot, position in episode, episode length),
    by following ``prev``/``next`` to a fixed point; -1 for slots holding nothing."""
    n = buf.maxsize
    slots = np.arange(n)
    prev, nxt = np.asarray(buf.prev(slots)), np.asarray(buf.next(slots))
    valid = np.asarray(buf.valid_mask())
    start, pos = slots.copy(), np.zeros(n, int)
    for _ in range(n):
        step = prev[start] != start
        pos += step
        start = np.where(step, prev[start], start)
    end, ahead = slots.copy(), np.zeros(n, int)
    for _ in range(n):
        step = nxt[end] != end
        ahead += step
        end = np.where(step, nxt[end], end)
    length = pos + ahead + 1
    return np.where(valid, start, -1), np.where(valid, pos, -1), np.where(valid, length, -1)


def check_windows(buf, seq, length, full_only, period, burn_in=0):
    start, pos, ep_len = episode_table(buf)
    idx, mask, found = np.asarray(seq.indices), np.asarray(seq.mask), np.asarray(seq.found)
    assert idx.shape == mask.shape == (found.shape[0], length)
    for row, m, ok in zip(idx, mask, found):
        if not ok:
            assert not m.any()
            continue
        s = row[0]
        assert m[0] and pos[s] >= 0
        valid = row[m]
        assert (start[valid] == start[s]).all()  # one episode
        np.testing.assert_array_equal(pos[valid], pos[s] + np.arange(len(valid)))
        # cut only at the episode's end
        assert len(valid) == min(length, ep_len[s] - pos[s])
        if full_only:
            assert m.all()
        assert pos[s] % period == 0
        assert (row[~m] == valid[-1]).all()
    burn = np.asarray(seq.burn_in)
    np.testing.assert_array_equal(burn, mask & (np.arange(length) < burn_in))
    np.testing.assert_array_equal(np.asarray(seq.weight) > 0, found)


# ---------------------------------------------------------------- every class


@pytest.mark.parametrize("name", sorted(BUILDERS))
@given(
    seed=st.integers(0, 2**31 - 1),
    length=st.integers(1, 3),
    full_only=st.booleans(),
    period=st.integers(1, 2),
)
@SETTINGS
def test_windows_stay_in_one_episode_every_class(name, seed, length, full_only, period):
    buf = built(name)
    burn_in = length - 1
    seq = buf.sample_sequences(
        jax.random.key(seed), 16, length, burn_in=burn_in, full_only=full_only, period=period
    )
    check_windows(buf, seq, length, full_only, period, burn_in)
    if full_only and length <= 3:  # every class stores episodes of 3 steps
        assert np.asarray(seq.found).any(), name
    batch = seq.batch
    got = np.asarray(observation(batch["obs"]))
    want = np.asarray(observation(buf[seq.indices]["obs"]))
    np.testing.assert_array_equal(got, want)


def random_buffer(kind, dones, buffer_num):
    size = 6 * buffer_num
    if kind == "prioritized":
        buf = jaxbuf.PrioritizedReplayBuffer.create(
            EXAMPLE, size, alpha=0.6, beta=0.4, buffer_num=buffer_num
        )
    else:
        buf = jaxbuf.ReplayBuffer.create(EXAMPLE, size, buffer_num=buffer_num)
    for t in range(0, len(dones), buffer_num):
        chunk = dones[t : t + buffer_num]
        if len(chunk) < buffer_num:
            break
        batch = rows(np.arange(t, t + buffer_num), terminated=chunk)
        buf, _ = buf.add(batch)
    return buf


@given(
    kind=st.sampled_from(["plain", "prioritized"]),
    dones=st.lists(st.booleans(), min_size=2, max_size=30),
    buffer_num=st.integers(1, 2),
    seed=st.integers(0, 2**31 - 1),
    full_only=st.booleans(),
    period=st.integers(1, 3),
)
@SETTINGS
def test_windows_never_cross_episodes_or_head(kind, dones, buffer_num, seed, full_only, period):
    buf = random_buffer(kind, dones, buffer_num)
    if buf.size == 0:
        return
    seq = buf.sample_sequences(jax.random.key(seed), 16, 4, full_only=full_only, period=period)
    check_windows(buf, seq, 4, full_only, period)


# ---------------------------------------------------------------- laws


def law_buffer(kind="plain"):
    """One sub-buffer of 24 slots: episodes of 7, 2, 5 and 8 steps, then 2 steps unfinished."""
    lengths = [7, 2, 5, 8, 2]
    dones = np.concatenate([np.eye(n, dtype=bool)[-1] for n in lengths])
    dones[-1] = False
    if kind == "prioritized":
        buf = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 24, alpha=1.0, beta=0.5)
    else:
        buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 24)
    buf, _ = buf.add(rows(np.arange(24), terminated=dones), jnp.zeros(24, jnp.int32))
    return buf, lengths


def counts(buf, draws, **kw):
    length = kw.pop("length")
    seq = jax.jit(lambda b, k: b.sample_sequences(k, draws, length, **kw))(buf, jax.random.key(11))
    found = np.asarray(seq.found)
    assert found.mean() > 0.9
    return np.bincount(np.asarray(seq.indices)[found, 0], minlength=buf.maxsize), seq


@pytest.mark.parametrize("period", [1, 2])
def test_full_window_starts_are_uniform_over_valid_starts(period):
    buf, lengths = law_buffer()
    length = 4
    valid = []
    first = 0
    for n in lengths:
        valid += [first + p for p in range(0, n - length + 1, period)]
        first += n
    got, _ = counts(buf, 20000, length=length, full_only=True, period=period, tries=32)
    assert set(np.flatnonzero(got)) == set(valid)
    chi = stats.chisquare(got[valid])
    assert chi.pvalue > 1e-3, (got[valid], chi)


def test_period_without_full_only_cuts_at_episode_end():
    buf, _ = law_buffer()
    got, seq = counts(buf, 4000, length=4, period=3, tries=32)
    start, pos, _ = episode_table(buf)
    assert (pos[np.flatnonzero(got)] % 3 == 0).all()
    assert not np.asarray(seq.mask).all()  # e.g. the episode of 2 steps is cut


def test_prioritized_windows_follow_summed_priority():
    buf, lengths = law_buffer("prioritized")
    rng = np.random.default_rng(0)
    buf = buf.update_weight(jnp.arange(24), rng.uniform(0.1, 3.0, 24).astype(np.float32))
    leaf = np.asarray(buf.priorities())
    length = 3
    _, pos, ep_len = episode_table(buf)
    valid = np.flatnonzero(ep_len - pos >= length)
    mass = np.array([leaf[s : s + length].sum() for s in valid])
    got, seq = counts(buf, 20000, length=length, full_only=True, tries=32)
    assert set(np.flatnonzero(got)) <= set(valid)
    chi = stats.chisquare(got[valid], mass / mass.sum() * got.sum())
    assert chi.pvalue > 1e-3, chi
    # importance weights: (mean / p_min) ** -beta, divided by the batch maximum
    idx = np.asarray(seq.indices)
    w = (leaf[idx].mean(1) / leaf.min()) ** -0.5
    found = np.asarray(seq.found)
    np.testing.assert_allclose(np.asarray(seq.weight)[found], (w / w[found].max())[found], 1e-5)


def test_prioritized_cut_windows_hold_the_drawn_step():
    buf, _ = law_buffer("prioritized")
    seq = buf.sample_sequences(jax.random.key(0), 256, 6)
    check_windows(buf, seq, 6, False, 1)
    assert np.asarray(seq.found).all()


def test_update_sequence_weight_sets_window_priority():
    buf, _ = law_buffer("prioritized")
    idx = np.array([[0, 1, 2, 3], [14, 15, 16, 17]], np.int32)  # two disjoint full windows
    mask = np.array([[True] * 4, [True, True, True, False]])
    td = np.array([[1.0, -4.0, 2.0, 1.0], [0.5, 0.5, 2.0, 9.0]], np.float32)
    new = buf.update_sequence_weight(idx, mask, td, eta=0.5)
    want = np.array([0.5 * 4.0 + 0.5 * 2.0, 0.5 * 2.0 + 0.5 * 1.0])
    leaf = np.asarray(new.priorities())
    np.testing.assert_allclose(leaf[idx[0]], want[0] + 2**-23, rtol=1e-5)
    np.testing.assert_allclose(leaf[idx[1, :3]], want[1] + 2**-23, rtol=1e-5)
    np.testing.assert_allclose(leaf[17], np.asarray(buf.priorities())[17])  # masked: untouched
    with pytest.raises(ValueError, match="eta"):
        buf.update_sequence_weight(idx, mask, td, eta=2.0)


# ---------------------------------------------------------------- bad input and edge results


def test_no_full_window_stored_gives_empty_rows_and_checked_raises():
    buf, _ = law_buffer()  # longest episode: 8 steps
    seq = buf.sample_sequences(jax.random.key(0), 8, 9, full_only=True)
    assert not np.asarray(seq.found).any()
    assert not np.asarray(seq.mask).any()
    assert (np.asarray(seq.weight) == 0).all()
    run = jaxbuf.checked(lambda b, k: b.sample_sequences(k, 8, 9, full_only=True))
    with pytest.raises(Exception, match="no window of length 9"):
        run(buf, jax.random.key(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(length=25), "length 25 does not fit a sub-buffer of 24"),
        (dict(length=4, burn_in=4), "burn_in must be < length"),
        (dict(length=0), "length must be >= 1"),
        (dict(length=3, period=0), "period must be"),
        (dict(length=3, tries=0), "tries must be"),
    ],
)
def test_bad_arguments_raise_at_trace_time(kwargs, match):
    buf, _ = law_buffer()
    with pytest.raises(InputError, match=match):
        jax.jit(lambda b, k: b.sample_sequences(k, 4, **kwargs))(buf, jax.random.key(0))
    with pytest.raises(InputError, match="max_length 30 does not fit"):
        buf.sample_episodes(jax.random.key(0), 4, 30)


def test_today_call_unchanged():
    buf, _ = law_buffer()
    batch, idx, mask = buf.sample_sequences(jax.random.key(0), 5, 3)
    assert batch["obs"].shape == idx.shape == mask.shape == (5, 3)


# ---------------------------------------------------------------- episodes


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sample_episodes_returns_whole_stored_episodes(name):
    buf = built(name)
    ep = buf.sample_episodes(jax.random.key(1), 64, 4)
    obs = np.asarray(observation(ep.batch["obs"]))
    mask = np.asarray(ep.mask)
    assert obs.shape == mask.shape == (64, 4)
    assert np.asarray(ep.whole).all()
    got = {tuple(o[m].tolist()) for o, m in zip(obs, mask)}
    assert got <= EPISODES and len(got) >= 3
    assert all(m[: m.sum()].all() for m in mask)  # left-aligned


def test_episode_law_is_proportional_to_length_and_long_rule():
    buf, lengths = law_buffer()
    ep = jax.jit(lambda b, k: b.sample_episodes(k, 20000, 5))(buf, jax.random.key(3))
    idx, mask, whole = (np.asarray(x) for x in (ep.indices, ep.mask, ep.whole))
    firsts = np.cumsum([0] + lengths[:-1])
    which = np.searchsorted(firsts, idx[:, 0], side="right") - 1
    chi = stats.chisquare(np.bincount(which, minlength=5), np.array(lengths) / 24 * len(idx))
    assert chi.pvalue > 1e-3, chi
    # the 7- and 8-step episodes are longer than 5: windows of 5, start 0 w.p. 5/n
    for e, n in ((0, 7), (3, 8)):
        rows_ = which == e
        assert not whole[rows_].any() and mask[rows_].all()
        offsets = idx[rows_, 0] - firsts[e]
        freq = np.bincount(offsets, minlength=n - 4) / rows_.sum()
        np.testing.assert_allclose(freq, [5 / n] + [1 / n] * (n - 5), atol=0.03)
    short = np.isin(which, [1, 2, 4])
    assert whole[short].all()


# ---------------------------------------------------------------- transformations and cost


def test_vmap_over_keys_equals_one_by_one():
    buf, _ = law_buffer()
    keys = jax.random.split(jax.random.key(0), 3)

    def draw(k):
        return buf.sample_sequences(k, 4, 3, full_only=True, period=2, burn_in=1)

    many = jax.vmap(draw)(keys)
    for i, k in enumerate(keys):
        one = draw(k)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
    eps = jax.vmap(lambda k: buf.sample_episodes(k, 4, 3))(keys)
    assert eps.indices.shape == (3, 4, 3)


def capacity_sized_ops(hlo: str, size: int) -> list[str]:
    """Opcodes in a compiled HLO that produce an array with a dimension of ``size``, less
    the plumbing that only passes the stored arrays along (into a ``while`` loop)."""
    found = re.findall(rf"=\s*\(?[a-z0-9]+\[(?:\d+,)*{size}(?:,\d+)*\]\S*\s+([a-z\-]+)\(", hlo)
    plumbing = {"parameter", "bitcast", "tuple", "get-tuple-element", "while"}
    return [op for op in found if op not in plumbing]


@pytest.mark.parametrize("kind", ["plain", "prioritized"])
def test_compiled_sampling_has_no_capacity_sized_step(kind):
    size = 3001
    if kind == "prioritized":
        buf = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, size, alpha=0.6, beta=0.4)
    else:
        buf = jaxbuf.ReplayBuffer.create(EXAMPLE, size)
    key = jax.random.key(0)

    def hlo(fn):
        return jax.jit(fn).lower(buf, key).compile().as_text()

    full = hlo(lambda b, k: b.sample_sequences(k, 8, 5, burn_in=2, full_only=True, period=2))
    assert capacity_sized_ops(full, size) == []
    assert capacity_sized_ops(hlo(lambda b, k: b.sample_episodes(k, 8, 5)), size) == []
    # the check can fail: a read over every slot has capacity-sized steps
    assert capacity_sized_ops(hlo(lambda b, k: b.all_indices()), size) != []
