"""Eager calls reuse their compiled code: repeating a read or an add with the same shapes
compiles nothing new (an eager ``lax.scan`` / ``lax.cond`` over a bound method would be traced
and compiled again on every call, ~0.1-0.2 s each on CPU)."""

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
