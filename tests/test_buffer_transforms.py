"""The same operations eagerly, under jit, inside lax.scan and under vmap give equal results."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import EXAMPLE

import jaxbuf

N_ENV, T = 3, 11


def _stream(seed):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(T, N_ENV)).astype(np.float32),
        "act": rng.integers(0, 4, size=(T, N_ENV)).astype(np.int32),
        "rew": rng.normal(size=(T, N_ENV)).astype(np.float32),
        "terminated": rng.random((T, N_ENV)) < 0.2,
        "truncated": rng.random((T, N_ENV)) < 0.1,
    }


def _tree_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _eager(buf, stream):
    results = []
    for t in range(T):
        buf, res = buf.add({k: v[t] for k, v in stream.items()})
        results.append(res)
    return buf, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *results)


def _scan(buf, stream):
    return jax.lax.scan(lambda b, x: b.add(x), buf, stream)


def test_scan_and_jit_equal_eager():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, N_ENV, stack_num=2)
    stream = _stream(0)
    b1, r1 = _eager(buf, stream)
    b2, r2 = jax.jit(_scan)(buf, stream)
    _tree_equal((b1, r1), (b2, r2))
    idx = jnp.arange(12)
    key = jax.random.key(5)

    def reads(b):
        return (
            b.prev(idx),
            b.next(idx),
            b.unfinished_index(),
            b.all_indices(),
            b[idx],
            b.sample(key, 7),
            b.sample_sequences(key, 4, 3),
            b.epoch_indices(key, 5),
        )

    _tree_equal(reads(b1), jax.jit(reads)(b1))


def test_vmap_over_stack_of_buffers_equals_one_by_one():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, N_ENV)
    streams = [_stream(s) for s in range(4)]
    stacked_stream = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *streams)
    bufs = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 4), buf)
    keys = jax.random.split(jax.random.key(0), 4)

    def run(b, s, k):
        b, res = _scan(b, s)
        return b, res, b.sample(k, 5), b.prev(jnp.arange(12)), b.unfinished_index()

    out_v = jax.jit(jax.vmap(run))(bufs, stacked_stream, keys)
    for i in range(4):
        out_i = run(buf, streams[i], keys[i])
        _tree_equal(jax.tree_util.tree_map(lambda x, i=i: x[i], out_v), out_i)


def test_buffer_created_inside_jit_and_vmap():
    def init_and_fill(seed):
        buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, N_ENV)
        stream = jax.tree_util.tree_map(lambda x: x, _stream(0))
        stream["obs"] = stream["obs"] + seed
        return _scan(buf, stream)[0].size

    sizes = jax.jit(jax.vmap(init_and_fill))(jnp.arange(3.0))
    np.testing.assert_array_equal(sizes, [12, 12, 12])


def test_donated_add_updates_in_place():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 1 << 12, N_ENV)
    add = jax.jit(lambda b, x: b.add(x), donate_argnums=0)
    row = {k: v[0] for k, v in _stream(1).items()}
    new, _ = add(buf, row)
    assert buf.storage["obs"].is_deleted()
    assert int(new.size) == N_ENV
