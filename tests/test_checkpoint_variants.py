"""Checkpoint round trips of the composed buffers: HER (vector) and cached."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from checkpoint_roundtrip import abstract_of, assert_bit_identical, assert_roundtrip
from test_cached import _batch
from test_cached import _example as cached_example
from test_her import _episodes, _example, reward

import jaxbuf.checkpoint as ckpt
from jaxbuf.cached import CachedReplayBuffer
from jaxbuf.her import HERVectorReplayBuffer


def _her_filled():
    buf = HERVectorReplayBuffer.create(_example(), 32, 2, reward, 3, 4.0)
    rows, *_ = _episodes([3, 5, 2])
    for env in (0, 1):
        buf, _ = buf.add(rows, np.full(len(rows["act"]), env, np.int32))
    return buf


def _her_continue(buf):
    rows, *_ = _episodes([2, 3])
    buf, res = buf.add(rows, np.zeros(len(rows["act"]), np.int32))
    return buf, res, buf.sample(jax.random.key(7), 16)


def test_her_roundtrip_restores_onto_like(tmp_path):
    buf = _her_filled()
    ckpt.save(tmp_path / "her", buf)
    # compute_reward_fn is a function: it is not written to disk and comes from `like`.
    onto = ckpt.restore(tmp_path / "her", like=abstract_of(buf))
    assert_bit_identical(onto, buf, "HER restore with like: ")
    assert_bit_identical(_her_continue(onto), _her_continue(buf), "HER continued: ")
    with pytest.raises(Exception, match="like"):
        ckpt.restore(tmp_path / "her")


def test_cached_roundtrip(tmp_path):
    buf = CachedReplayBuffer.create(cached_example(), 10, 3, 4)
    add = jax.jit(lambda b, x, i: b.add(x, i))
    buf, _ = add(buf, _batch([1, 2, 3], [1, 1, 1], [0, 1, 0]), np.array([0, 1, 2]))
    buf, _ = add(buf, _batch([4, 5, 6], [1, 1, 1], [1, 0, 0]), np.array([0, 1, 1]))

    def more(b):
        b, res = add(b, _batch([7, 8, 9], [2, 2, 2], [0, 0, 1]), np.array([2, 2, 2]))
        return b, res, b.sample(jax.random.key(3), 8)

    assert_roundtrip(buf, more, tmp_path)
