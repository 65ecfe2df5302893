"""Eager calls run as one compiled computation and reuse it: repeating a read or an add with
the same shapes compiles nothing new, a first call compiles one program instead of one per
primitive, and under a transformation the methods add no nested ``jit`` of their own
(``jaxbuf._core.dispatch``)."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from helpers import EXAMPLE, rows, step
from jax import monitoring

import jaxbuf
from jaxbuf.cached import CachedReplayBuffer

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations started inside the block."""
    seen = []

    def listener(event, _duration, **_):
        if event == COMPILE_EVENT:
            seen.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(listener)


def _filled(**options) -> jaxbuf.ReplayBuffer:
    buf = jaxbuf.ReplayBuffer.create(EXAMPLE, 12, **options)
    for i in range(9):
        buf, _ = buf.add(step(i, terminated=i % 4 == 3))
    return buf


def _assert_no_new_compiles(fn, repeats: int = 3):
    jax.block_until_ready(fn())  # warm-up: compiles once
    with count_compiles() as seen:
        for _ in range(repeats):
            jax.block_until_ready(fn())
    assert seen == [], f"{len(seen)} compilations in {repeats} repeated eager calls"


def test_frame_stacked_reads_compile_once():
    buf = _filled(stack_num=4, ignore_obs_next=True)
    idx = np.arange(6)
    _assert_no_new_compiles(lambda: buf.get(idx, "obs"))
    _assert_no_new_compiles(lambda: buf[idx])


def test_sample_avail_reads_compile_once():
    buf = _filled(stack_num=3, sample_avail=True)
    _assert_no_new_compiles(lambda: buf.all_indices())
    _assert_no_new_compiles(lambda: buf.sample_indices(jax.random.key(0), 8))


def test_cached_add_compiles_once():
    buf = CachedReplayBuffer.create(EXAMPLE, 10, 2, 4)
    batch = rows([1.0, 2.0], terminated=[False, True])
    _assert_no_new_compiles(lambda: buf.add(batch, np.array([0, 1])))


def _compiles(fn) -> int:
    with count_compiles() as seen:
        jax.block_until_ready(fn())
    return len(seen)


def test_eager_methods_run_as_one_compiled_call():
    # Run primitive by primitive, each of these compiled dozens of small programs on its
    # first call (e.g. sample 1.7 s, prev 0.7 s on CPU); through jax.jit it is one.
    buf = _filled()
    idx = np.arange(5)
    assert _compiles(lambda: buf.sample(jax.random.key(0), 7)) == 1
    assert _compiles(lambda: buf.prev(idx)) == 1
    assert _compiles(lambda: buf.next(idx)) == 1
    assert _compiles(lambda: buf[idx]) == 1
    assert _compiles(lambda: buf.all_indices()) == 1
    prio = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 8, 0.6, 0.4).add(step(1.0))[0]
    assert _compiles(lambda: prio.sample(jax.random.key(0), 7)) == 1
    assert _compiles(lambda: prio.get_weight(np.arange(3))) == 1


def test_eager_adds_and_updates_compile_once():
    buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 3)
    batch = rows([1.0, 2.0], terminated=[False, True])
    _assert_no_new_compiles(lambda: buf.add(batch, np.array([0, 2])))
    prio = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 8, 0.6, 0.4)
    prio = prio.add(step(1.0))[0].add(step(2.0))[0]
    _assert_no_new_compiles(lambda: prio.add(step(3.0)))
    _assert_no_new_compiles(lambda: prio.update_weight(np.array([0, 1]), np.array([0.5, 2.0])))
    _assert_no_new_compiles(lambda: prio.sample(jax.random.key(0), 4))


def test_traced_calls_run_the_body_directly():
    # Under a transformation the methods add no nested jit of their own: the outer jaxpr
    # holds the method's operations (jnp's own small jitted helpers aside).
    buf = _filled()
    jaxprs = [
        jax.make_jaxpr(lambda b, x: b.add(x))(buf, step(5.0)),
        jax.make_jaxpr(lambda b, k: b.sample(k, 4))(buf, jax.random.key(0)),
        jax.make_jaxpr(lambda b, i: b.prev(i))(buf, np.arange(3)),
        jax.make_jaxpr(lambda b, i: b[i])(buf, np.arange(3)),
    ]
    ours = {"add", "add_rows", "sample", "sample_indices", "prev", "next", "_read"}
    for jaxpr in jaxprs:
        nested = {e.params.get("name") for e in jaxpr.jaxpr.eqns if e.primitive.name == "jit"}
        assert not nested & ours, nested
