"""What jaxbuf's hand-unrolled Threefry (``jaxbuf._core.random``) buys over ``jax.random``.

The priority trees draw their uniforms with ``jaxbuf._core.random.uniform``, a Threefry-2x32
written with elementwise ops (bit for bit ``jax.random.uniform``); the uniform sampler keeps
``jax.random.bits``. Rows (``jaxbuf`` is the code as shipped, the peer column the
alternative, so ``peer/jaxbuf > 1`` means the shipped choice is faster):

* ``threefry/uniform``: 256 float32 draws alone, unrolled (``jaxbuf``) against
  ``jax.random.uniform`` (``jax.random``);
* ``threefry/bits``: 512 uint32 words alone (what a uniform sample of 256 draws),
  ``jax.random.bits`` (``jaxbuf``, shipped) against the unrolled hash (``unrolled``);
* ``threefry/prioritized``: the prioritized sample 256 + update of the ``prioritized``
  workload, shipped (``jaxbuf``) against the same program traced with ``jax.random.uniform``
  in place of the unrolled draws (``jax.random``);
* ``threefry/sample``: the uniform sample of 256, shipped (``jaxbuf``) against the same
  program traced with the unrolled hash in place of ``jax.random.bits`` (``unrolled``).

The swaps happen only while the variant is traced (caches cleared around it), so the library
itself is unchanged. Each row is per jitted call and per step of a jitted scan.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from benchmarks import data
from benchmarks.harness import Case, compile_jit
from benchmarks.workloads.common import Cell, loop_calls, read_scan, scan_steps
from benchmarks.workloads.prioritized import ALPHA, BETA, prioritized_step

UNIT = "us per op"


@contextlib.contextmanager
def _swapped(obj, name: str, value):
    """``obj.name = value`` while tracing, with JAX's caches cleared before and after."""
    old = getattr(obj, name)
    jax.clear_caches()
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)
        jax.clear_caches()


def _jax_uniform(key, n, dtype):
    return jax.random.uniform(key, (n,), dtype)


def _unrolled_bits(key, shape, dtype=jnp.uint32):
    from jaxbuf._core import random as fast_random

    n = 1
    for s in shape:
        n *= s
    return fast_random._bits(key, n).reshape(shape).astype(dtype)


def _pair(workload, params, lib, fn, state, cfg, *, donate: bool, unit=UNIT) -> list[Case]:
    """Per-call and in-scan cases of ``fn(state, key)`` (state carried if ``donate``)."""
    keys = jax.random.split(jax.random.key(0), cfg.scan_steps)
    key = jax.random.key(1)
    if donate:
        cell = Cell(jax.tree_util.tree_map(jnp.copy, state))
        scan_c, scan_t = compile_jit(scan_steps(fn, 0), cell.value, keys, donate_argnums=(0,))
        call_c, call_t = compile_jit(fn, cell.value, key, donate_argnums=(0,))

        def scan_chunk():
            cell.value = scan_c(cell.value, keys)
            return jax.block_until_ready(cell.value)

        def call():
            cell.value = call_c(cell.value, key)
            return cell.value
    else:
        scan_c, scan_t = compile_jit(read_scan(fn), state, keys)
        call_c, call_t = compile_jit(fn, state, key)

        def scan_chunk():
            return jax.block_until_ready(scan_c(state, keys))

        def call():
            return call_c(state, key)

    return [
        Case(f"{workload}/call", params, lib, loop_calls(call, cfg.calls), cfg.calls, unit, call_t),
        Case(f"{workload}/scan", params, lib, scan_chunk, cfg.scan_steps, unit, scan_t),
    ]


def _draws(cfg) -> list:
    from jaxbuf._core import random as fast_random

    n = 256
    dummy = jnp.zeros(())
    out: list = []
    out += _pair(
        "threefry/uniform",
        {"n": n},
        "jaxbuf",
        lambda s, k: fast_random.uniform(k, n, jnp.float32),
        dummy,
        cfg,
        donate=False,
    )
    out += _pair(
        "threefry/uniform",
        {"n": n},
        "jax.random",
        lambda s, k: jax.random.uniform(k, (n,), jnp.float32),
        dummy,
        cfg,
        donate=False,
    )
    out += _pair(
        "threefry/bits",
        {"n": 2 * n},
        "jaxbuf",
        lambda s, k: jax.random.bits(k, (2, n), jnp.uint32),
        dummy,
        cfg,
        donate=False,
    )
    out += _pair(
        "threefry/bits",
        {"n": 2 * n},
        "unrolled",
        lambda s, k: _unrolled_bits(k, (2, n)),
        dummy,
        cfg,
        donate=False,
    )
    return out


def _paths(cfg) -> list:
    import jaxbuf
    from jaxbuf._core import random as fast_random

    bs = cfg.batch_sizes[0]
    cap = cfg.prio_capacities[0]
    params = {"capacity": cap, "batch": bs}
    prio = jaxbuf.PrioritizedVectorReplayBuffer.create(
        data.example(), cap, data.N_ENV, alpha=ALPHA, beta=BETA, ignore_obs_next=True
    )
    prio = data.fill_by_scan(lambda b, x: b.add(x)[0], prio, data.step, cap // data.N_ENV)
    step = prioritized_step(bs)
    out: list = _pair("threefry/prioritized", params, "jaxbuf", step, prio, cfg, donate=True)
    with _swapped(fast_random, "uniform", _jax_uniform):
        out += _pair("threefry/prioritized", params, "jax.random", step, prio, cfg, donate=True)

    cap = cfg.capacities[0]
    params = {"capacity": cap, "batch": bs}
    uni = jaxbuf.VectorReplayBuffer.create(
        data.example(), cap, data.N_ENV, ignore_obs_next=True, lockstep=True
    )
    uni = data.fill_by_scan(lambda b, x: b.add(x)[0], uni, data.step, cap // data.N_ENV)

    def sample(b, k):
        return b.sample(k, bs)

    out += _pair("threefry/sample", params, "jaxbuf", sample, uni, cfg, donate=False)
    with _swapped(jax.random, "bits", _unrolled_bits):
        out += _pair("threefry/sample", params, "unrolled", sample, uni, cfg, donate=False)
    return out


def groups(cfg):
    """The draws alone, then the two sampling paths."""
    yield _draws(cfg)
    yield _paths(cfg)
