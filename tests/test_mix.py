"""``jaxbuf.mix``: exact counts per source, each source's own sampling law, traced fractions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows
from scipy import stats

import jaxbuf
from jaxbuf import mix, mix_counts
from jaxbuf.errors import InputError


def uniform_source():
    """8 transitions with obs 0..7 in a plain buffer."""
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 8)
    return buf.extend(rows(np.arange(8), terminated=[0, 0, 1, 0, 0, 0, 1, 0]))[0]


PRIORITIES = np.asarray([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def prioritized_source():
    """6 transitions with obs 100..105 and priorities 1..6 (alpha 1)."""
    buf = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 6, alpha=1.0, beta=0.5)
    buf, _ = buf.extend(rows(100 + np.arange(6)))
    return buf.update_weight(jnp.arange(6), jnp.asarray(PRIORITIES))


@pytest.mark.parametrize(
    ("fractions", "batch_size", "expected"),
    [
        ((0.5, 0.5), 256, [128, 128]),
        ((0.5, 0.5), 5, [3, 2]),  # tie on the remainder: the first source gets the row
        ((1, 1, 1), 256, [86, 85, 85]),
        ((0.25, 0.25, 0.5), 3, [1, 1, 1]),
        ((0.1, 0.0, 0.9), 7, [1, 0, 6]),
        ((2.0, 6.0), 10, [3, 7]),  # normalised: 0.25 and 0.75 of 10 = 2.5 and 7.5
        ((1.0, 0.0), 4, [4, 0]),
    ],
)
def test_counts_follow_largest_remainder(fractions, batch_size, expected):
    counts = mix_counts(fractions, batch_size)
    np.testing.assert_array_equal(counts, expected)
    assert int(counts.sum()) == batch_size


def test_mixed_batch_has_exact_counts_sources_and_weights():
    sources = [uniform_source(), prioritized_source()]
    batch, source_id, index = mix(jax.random.key(0), sources, (0.75, 0.25), 32)
    np.testing.assert_array_equal(source_id, [0] * 24 + [1] * 8)
    obs = np.asarray(batch["obs"])
    assert np.all(obs[:24] < 8) and np.all(obs[24:] >= 100)
    # index is the slot in the row's own source: reading it back gives the same obs.
    np.testing.assert_array_equal(sources[0][index[:24]]["obs"], obs[:24])
    np.testing.assert_array_equal(sources[1][index[24:]]["obs"], obs[24:])
    weight = np.asarray(batch["weight"])
    np.testing.assert_array_equal(weight[:24], 1.0)
    np.testing.assert_allclose(weight[24:], sources[1][index[24:]]["weight"], rtol=1e-6)
    assert set(batch) == set(sources[0][0]) | {"weight"}


def test_each_source_keeps_its_sampling_law():
    sources = [uniform_source(), prioritized_source()]
    draw = jax.jit(jax.vmap(lambda k: mix(k, sources, (0.5, 0.5), 64)[1:]))
    source_id, index = map(np.asarray, draw(jax.random.split(jax.random.key(1), 500)))
    assert np.all((source_id == 0).sum(axis=1) == 32)
    uniform = np.bincount(index[source_id == 0], minlength=8)
    prio = np.bincount(index[source_id == 1], minlength=6)
    p_uniform = stats.chisquare(uniform, np.full(8, uniform.sum() / 8)).pvalue
    p_prio = stats.chisquare(prio, PRIORITIES / PRIORITIES.sum() * prio.sum()).pvalue
    assert p_uniform > 1e-3 and p_prio > 1e-3, (uniform, prio)
    # The test can fail: the prioritized counts are far from uniform.
    assert stats.chisquare(prio, np.full(6, prio.sum() / 6)).pvalue < 1e-6


def test_fractions_can_be_annealed_under_jit():
    sources = [uniform_source(), prioritized_source()]

    @jax.jit
    def anneal(key):
        def step(_, t):
            frac = jnp.stack([1.0 - t, t])
            _, source_id, _ = mix(
                jax.random.fold_in(key, (t * 100).astype(jnp.int32)), sources, frac, 20
            )
            return None, jnp.sum(source_id == 1)

        return jax.lax.scan(step, None, jnp.linspace(0.0, 1.0, 11))[1]

    np.testing.assert_array_equal(anneal(jax.random.key(2)), np.arange(0, 21, 2))


def test_mismatched_fields_are_named():
    other = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, cost=np.float32(0)), 4)
    other, _ = other.extend(dict(rows([1, 2]), cost=np.zeros(2, np.float32)))
    with pytest.raises(InputError, match=r"source 1 \(ReplayBuffer\).*extra \['cost'\]"):
        mix(jax.random.key(0), [uniform_source(), other], (0.5, 0.5), 8)
    wide = jaxbuf.ReplayBuffer.create(dict(EXAMPLE, obs=np.zeros(3, np.float32)), 4)
    wide, _ = wide.extend(dict(rows([1, 2]), obs=np.zeros((2, 3), np.float32)))
    with pytest.raises(InputError, match=r"field 'obs' of source 1 .*shape \(3,\)"):
        jax.jit(lambda k: mix(k, [uniform_source(), wide], (0.5, 0.5), 8))(jax.random.key(0))


def test_bad_fractions_and_sizes():
    src = [uniform_source()] * 2
    with pytest.raises(InputError, match="got 3 fractions for 2 sources"):
        mix(jax.random.key(0), src, (0.2, 0.3, 0.5), 8)
    with pytest.raises(InputError, match="fractions must be finite, >= 0"):
        mix_counts((-0.5, 1.5), 8)
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        mix_counts((1.0,), 0)
