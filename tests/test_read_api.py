"""The read API that every buffer class shares, checked on each class (``filled`` fixture).

Each class is filled with the same stream of steps (conftest.STREAM), so the episodes it
must report are known; a method missing or wrong on one class fails here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbuf
from conftest import BUILDERS, EPISODES, observation

READ_API = (
    "prev",
    "next",
    "get",
    "__getitem__",
    "is_episode_end",
    "is_unfinished",
    "unfinished_index",
    "unfinished_index_compact",
    "all_indices",
    "chronological_indices",
    "valid_mask",
    "sample_indices",
    "sample",
    "sample_sequences",
    "epoch_indices",
    "split",
    "global_storage",
    "input_spec",
    "add",
    "check_batch",
    "add_rows",
)


def _obs_at(buf, idx) -> np.ndarray:
    return np.asarray(observation(buf.get(jnp.asarray(idx, jnp.int32), "obs")))


def _episodes(buf) -> set:
    """Every stored episode as a tuple of observations, found through ``prev``/``next``."""
    stored = buf.chronological_indices()
    nxt = np.asarray(buf.next(jnp.asarray(stored, jnp.int32)))
    prv = np.asarray(buf.prev(jnp.asarray(stored, jnp.int32)))
    ends = np.asarray(buf.is_episode_end(jnp.asarray(stored, jnp.int32)))
    found = set()
    for i, start in enumerate(stored):
        if prv[i] != start:
            continue  # not an episode start
        episode, cur = [], int(start)
        while True:
            episode.append(float(_obs_at(buf, cur)))
            pos = int(np.flatnonzero(stored == cur)[0])
            if ends[pos]:
                assert nxt[pos] == cur, "next moves past an episode end"
                break
            assert int(buf.prev(jnp.int32(nxt[pos]))) == cur, "prev(next(i)) != i"
            cur = int(nxt[pos])
        found.add(tuple(episode))
    return found


def test_every_class_has_the_read_api(filled):
    name, buf = filled
    missing = [m for m in READ_API if not callable(getattr(buf, m, None))]
    assert not missing, f"{name} lacks {missing}"
    for attr in ("maxsize", "size", "subbuffer_edges"):
        assert hasattr(buf, attr), f"{name} lacks {attr}"


def test_episodes_sizes_and_index_sets(filled):
    name, buf = filled
    assert _episodes(buf) == EPISODES, name
    stored = buf.chronological_indices()
    assert len(buf) == int(buf.size) == len(stored) == int(np.sum(buf.valid_mask())) == 12
    idx, mask = buf.all_indices()
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(mask)], stored)
    assert buf.subbuffer_edges[-1] == buf.maxsize
    assert all(x.shape[0] == buf.maxsize for x in jax.tree.leaves(buf.global_storage()))


def test_unfinished_heads(filled):
    name, buf = filled
    heads = buf.unfinished_index_compact()
    assert sorted(_obs_at(buf, heads).tolist()) == [6.0, 106.0], name
    stored = jnp.asarray(buf.chronological_indices(), jnp.int32)
    unfinished = np.asarray(buf.is_unfinished(stored))
    np.testing.assert_array_equal(np.sort(np.asarray(stored)[unfinished]), np.sort(heads))


def test_get_matches_getitem_and_stacks(filled):
    name, buf = filled
    stored = jnp.asarray(buf.chronological_indices(), jnp.int32)
    batch = buf[stored]
    np.testing.assert_array_equal(_obs_at(buf, stored), np.asarray(observation(batch["obs"])))
    np.testing.assert_array_equal(batch["done"], batch["terminated"] | batch["truncated"])
    frames = np.asarray(observation(buf.get(stored, "obs", stack_num=2)))
    prev_obs = _obs_at(buf, buf.prev(stored))
    np.testing.assert_array_equal(frames[:, 0], prev_obs)
    with pytest.raises(jaxbuf.FieldError, match="no field 'nope'"):
        buf.get(stored, "nope")


def test_sampling_reads_stored_rows(filled):
    name, buf = filled
    key = jax.random.key(3)
    batch, idx = buf.sample(key, 64)
    assert np.all(np.asarray(buf.valid_mask())[np.asarray(idx)]), name
    np.testing.assert_array_equal(batch["act"], buf[idx]["act"])
    np.testing.assert_array_equal(np.asarray(buf.sample_indices(key, 64)).shape, (64,))
    seq, seq_idx, seq_mask = buf.sample_sequences(key, 8, 3)
    assert seq_idx.shape == seq_mask.shape == (8, 3)
    follow = np.asarray(buf.next(seq_idx[:, :-1]))
    alive = np.asarray(seq_mask[:, 1:])
    np.testing.assert_array_equal(np.asarray(seq_idx[:, 1:])[alive], follow[alive])


def test_epoch_and_split_cover_every_row_once(filled):
    name, buf = filled
    idx, mask = buf.epoch_indices(jax.random.key(0), 5)
    covered = np.sort(np.asarray(idx)[np.asarray(mask)])
    np.testing.assert_array_equal(covered, np.sort(buf.chronological_indices()))
    chunks = [chunk for _, chunk in buf.split(None, 5, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(chunks), buf.chronological_indices())


def test_read_api_under_jit_and_vmap(filled):
    name, buf = filled
    stored = jnp.asarray(buf.chronological_indices(), jnp.int32)
    eager = np.asarray(buf.prev(stored))
    np.testing.assert_array_equal(jax.jit(lambda b, i: b.prev(i))(buf, stored), eager)
    stack = jax.tree.map(lambda x: jnp.stack([x, x]), buf)
    both = jax.vmap(lambda b: b.is_episode_end(stored))(stack)
    np.testing.assert_array_equal(both[1], buf.is_episode_end(stored))


@pytest.mark.parametrize(
    "plain, vector",
    [
        (jaxbuf.ReplayBuffer, jaxbuf.VectorReplayBuffer),
        (jaxbuf.PrioritizedReplayBuffer, jaxbuf.PrioritizedVectorReplayBuffer),
        (jaxbuf.HERReplayBuffer, jaxbuf.HERVectorReplayBuffer),
    ],
)
def test_one_class_per_kind_under_jit(plain, vector):
    """A jitted function returns the class it was given; the Vector name is the same class."""
    name = {
        jaxbuf.ReplayBuffer: "VectorReplayBuffer",
        jaxbuf.PrioritizedReplayBuffer: "PrioritizedReplayBuffer",
        jaxbuf.HERReplayBuffer: "HERReplayBuffer",
    }[plain]
    vec = BUILDERS[name]()
    assert type(vec) is plain and isinstance(vec, vector) and isinstance(vec, plain)
    identity = jax.jit(lambda b: b)
    assert type(identity(vec)) is plain and isinstance(identity(vec), vector)
    one = _one_subbuffer(vec)
    assert type(one) is plain and not isinstance(one, vector)


def _one_subbuffer(buf):
    core = jaxbuf.ReplayBuffer.create(buf.input_spec(), 8)
    return core if isinstance(buf, jaxbuf.ReplayBuffer) else buf.replace(buffer=core)
