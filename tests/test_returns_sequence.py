"""jaxbuf.returns.sequence_nstep: n-step targets inside sampled windows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxbuf
from jaxbuf.returns import sequence_nstep


def reference(rew, nv, term, trunc, mask, gamma, n):
    """The definition, one step at a time."""
    b_, l_ = rew.shape
    g, ok = np.zeros((b_, l_)), np.zeros((b_, l_), bool)
    for b in range(b_):
        for t in range(l_):
            if not mask[b, t]:
                continue
            total, scale, s = 0.0, 1.0, t
            while True:
                total += scale * rew[b, s]
                scale *= gamma
                done = term[b, s] or trunc[b, s]
                last = s == l_ - 1 or not mask[b, s + 1]
                if done or last or s - t + 1 == n:
                    break
                s += 1
            g[b, t] = total + (0.0 if term[b, s] else scale * nv[b, s])
            ok[b, t] = s - t + 1 == n or bool(term[b, s] or trunc[b, s])
    return g, ok


def test_hand_worked_window():
    # a window of 6 steps, gamma 0.5, n 3: the episode is truncated at step 3 and the
    # window is cut after it (mask false on steps 4, 5, which repeat step 3's flags)
    rew = np.array([[1.0, 2.0, 4.0, 8.0, 0.0, 0.0]])
    nv = np.array([[10.0, 20.0, 30.0, 40.0, 0.0, 0.0]])
    term = np.zeros((1, 6), bool)
    trunc = np.array([[False, False, False, True, True, True]])
    mask = np.array([[True, True, True, True, False, False]])
    g, ok = sequence_nstep(rew, nv, term, trunc, mask, 0.5, 3)
    want = [
        1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 30,  # 3 rewards, bootstrap V'_2
        2 + 0.5 * 4 + 0.25 * 8 + 0.125 * 40,  # 3 rewards, bootstrap V'_3
        4 + 0.5 * 8 + 0.25 * 40,  # stops at the truncation, bootstraps V'_3
        8 + 0.5 * 40,
        0.0,
        0.0,
    ]
    np.testing.assert_allclose(np.asarray(g)[0], want)
    assert np.asarray(ok)[0].tolist() == [True, True, True, True, False, False]
    # the same episode terminated instead: no bootstrap at the end
    g, ok = sequence_nstep(rew, nv, trunc, np.zeros_like(trunc), mask, 0.5, 3)
    np.testing.assert_allclose(np.asarray(g)[0, 2:4], [4 + 0.5 * 8, 8])
    # a full window (no episode end): the last steps bootstrap early and are not complete
    rew = np.array([[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]])
    nv = np.array([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])
    full = np.ones((1, 6), bool)
    g, ok = sequence_nstep(rew, nv, term, term, full, 0.5, 3)
    np.testing.assert_allclose(
        np.asarray(g)[0, 3:], [8 + 8 + 8 + 0.125 * 60, 16 + 16 + 0.25 * 60, 32 + 0.5 * 60]
    )
    assert np.asarray(ok)[0].tolist() == [True, True, True, True, False, False]
    # one row as [L]
    g1, ok1 = sequence_nstep(rew[0], nv[0], term[0], term[0], full[0], 0.5, 3)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g)[0])


@given(
    data=st.data(),
    batch=st.integers(1, 3),
    length=st.integers(1, 9),
    n=st.integers(1, 5),
    gamma=st.sampled_from([0.0, 0.5, 0.99, 1.0]),
)
@settings(max_examples=60, deadline=None)
def test_matches_reference_loop(data, batch, length, n, gamma):
    floats = st.floats(-5, 5, width=32)
    arr = lambda elems: np.array(  # noqa: E731
        data.draw(st.lists(elems, min_size=batch * length, max_size=batch * length))
    ).reshape(batch, length)
    rew, nv = arr(floats).astype(np.float32), arr(floats).astype(np.float32)
    term, trunc = arr(st.booleans()), arr(st.booleans())
    valid = data.draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch))
    mask = np.arange(length)[None, :] < np.array(valid)[:, None]
    g, ok = sequence_nstep(rew, nv, term, trunc, mask, gamma, n)
    want_g, want_ok = reference(rew, nv, term, trunc, mask, gamma, n)
    np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ok), want_ok)


def test_on_sampled_windows_and_bad_mask():
    """Windows from a buffer: episodes of 3 steps, the last one unfinished at the head."""
    ex = dict(
        obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0), terminated=False, truncated=False
    )
    buf = jaxbuf.ReplayBuffer.create(ex, 16)
    t = np.arange(8)
    rows = dict(
        obs=t.astype(np.float32),
        act=t.astype(np.int32),
        rew=np.ones(8, np.float32),
        terminated=(t % 3 == 2),
        truncated=np.zeros(8, bool),
    )
    buf, _ = buf.extend(rows)
    seq = buf.sample_sequences(jax.random.key(0), 32, 3)
    b = seq.batch
    g, ok = sequence_nstep(
        b["rew"], jnp.full(b["rew"].shape, 10.0), b["terminated"], b["truncated"], seq.mask, 1.0, 2
    )
    obs, mask = np.asarray(b["obs"]), np.asarray(seq.mask)
    g, ok = np.asarray(g), np.asarray(ok)
    for row in range(32):
        s = int(obs[row, 0])
        pos = s % 3
        if s < 6:  # finished episodes: 2 steps + bootstrap, or the reward(s) to the end
            assert g[row, 0] == {0: 12.0, 1: 2.0, 2: 1.0}[pos] and ok[row, 0]
        elif s == 6:  # unfinished: 2 steps, bootstrap from the head
            assert g[row, 0] == 12.0 and ok[row, 0]
        else:  # the head itself: cut by the window end, not a real end
            assert g[row, 0] == 11.0 and not ok[row, 0]
        assert (g[row][~mask[row]] == 0).all()
    with pytest.raises(ValueError, match="mask must have the shape"):
        sequence_nstep(b["rew"], b["rew"], b["terminated"], b["truncated"], seq.mask[:, :2], 1.0, 2)
