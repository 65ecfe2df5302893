"""Small helpers shared by the workload modules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class Cell:
    """A mutable slot for a buffer state that donated calls replace."""

    def __init__(self, value: Any):
        self.value = value


def scan_steps(fn_step, steps: int):
    """``run(state, xs)``: ``state = fn_step(state, x)`` for each row of ``xs`` in a scan."""

    def run(state, xs):
        return jax.lax.scan(lambda s, x: (fn_step(s, x), None), state, xs)[0]

    return run


def read_scan(read_fn):
    """``run(state, xs)``: ``read_fn(state, x)`` for each row of ``xs``, in one scan.

    Each step's output becomes the carry, so XLA must materialise every read in full (a
    reduction would add its own cost, and an unused output would be dead code); the last
    output is returned.
    """

    def run(state, xs):
        first = jax.tree_util.tree_map(lambda x: x[0], xs)
        shape = jax.eval_shape(read_fn, state, first)
        init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        return jax.lax.scan(lambda _, x: (read_fn(state, x), None), init, xs)[0]

    return run


def loop_calls(fn, calls: int):
    """A chunk: ``calls`` calls of ``fn()`` from Python, then block on the last result."""

    def chunk():
        out = None
        for _ in range(calls):
            out = fn()
        return jax.block_until_ready(out)

    return chunk
