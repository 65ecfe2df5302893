"""Workload 4: prioritized replay at capacity 2^20: sample 256, then update their priorities.

One operation = sample a batch of 256 proportionally to priority, then set new priorities
``|rew| + 1e-3`` (computed from the sampled batch, so the update depends on the sample) for
the sampled indices. jaxbuf ``PrioritizedVectorReplayBuffer(2^20, 64, alpha=0.6, beta=0.4)``
(issue 4; reported "not available" until merged), flashbax
``make_prioritised_flat_buffer(2^20, add_batch_size=64, priority_exponent=0.6, device="cpu")``
(its recommended setting on CPU) and Tianshou ``PrioritizedVectorReplayBuffer``. JAX libraries
run per jitted call (state donated) and in a scan (state carried); Tianshou per call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.common import Cell, loop_calls, scan_steps

UNIT = "us per sample 256 + update"
ALPHA, BETA = 0.6, 0.4


def _jax_cases(lib: str, op, state, cfg, params) -> list[Case]:
    keys = jax.random.split(jax.random.key(0), cfg.scan_steps)
    key = jax.random.key(1)
    cell = Cell(state)
    scan_c, scan_t = compile_jit(scan_steps(op, cfg.scan_steps), state, keys, donate_argnums=(0,))
    call_c, call_t = compile_jit(op, state, key, donate_argnums=(0,))

    def scan_chunk():
        cell.value = scan_c(cell.value, keys)
        return jax.block_until_ready(cell.value)

    def call():
        cell.value = call_c(cell.value, key)
        return cell.value

    return [
        Case("prioritized/scan", params, lib, scan_chunk, cfg.scan_steps, UNIT, scan_t),
        Case("prioritized/call", params, lib, loop_calls(call, cfg.calls), cfg.calls, UNIT, call_t),
    ]


def _jaxbuf(cfg, params) -> list:
    cls, why = peers.jaxbuf_attr(
        "PrioritizedVectorReplayBuffer", "prioritized.PrioritizedVectorReplayBuffer"
    )
    if cls is None:
        return [
            unavailable(w, params, "jaxbuf", UNIT, why)
            for w in ("prioritized/scan", "prioritized/call")
        ]
    cap, bs = params["capacity"], cfg.batch_size

    def op(buf, key):
        batch, idx = buf.sample(key, bs)
        return buf.update_weight(idx, jnp.abs(batch["rew"]) + 1e-3)

    try:
        buf = cls.create(
            data.example(), cap, data.N_ENV, alpha=ALPHA, beta=BETA, ignore_obs_next=True
        )
        buf = data.fill_by_scan(lambda b, x: b.add(x)[0], buf, data.step, cap // data.N_ENV)
        return _jax_cases("jaxbuf", op, buf, cfg, params)
    except (TypeError, AttributeError, ValueError) as err:
        reason = f"API differs from the assumed one: {type(err).__name__}: {err}"
        return [
            unavailable(w, params, "jaxbuf", UNIT, reason)
            for w in ("prioritized/scan", "prioritized/call")
        ]


def _flashbax(cfg, params) -> list:
    fbx, why = peers.module("flashbax")
    if fbx is None:
        return [
            unavailable(w, params, "flashbax", UNIT, why)
            for w in ("prioritized/scan", "prioritized/call")
        ]
    cap, bs = params["capacity"], cfg.batch_size
    fb = fbx.make_prioritised_flat_buffer(
        max_length=cap,
        min_length=bs,
        sample_batch_size=bs,
        add_batch_size=data.N_ENV,
        priority_exponent=ALPHA,
        device="cpu",
    )

    def op(state, key):
        sample = fb.sample(state, key)
        prio = jnp.abs(sample.experience.first["rew"]) + 1e-3
        return fb.set_priorities(state, sample.indices, prio)

    state = data.fill_by_scan(fb.add, fb.init(data.example()), data.step, cap // data.N_ENV)
    return _jax_cases("flashbax", op, state, cfg, params)


def _tianshou(cfg, params) -> list:
    ts, why = peers.module("tianshou.data")
    if ts is None:
        return [unavailable("prioritized/call", params, "tianshou", UNIT, why)]
    cap, bs = params["capacity"], cfg.batch_size
    buf = ts.PrioritizedVectorReplayBuffer(
        cap, data.N_ENV, alpha=ALPHA, beta=BETA, ignore_obs_next=True
    )
    data.fill_tianshou(buf, data.numpy_layout(cap), data.first(data.step), weight=1.0)

    def op():
        batch, idx = buf.sample(bs)
        buf.update_weight(idx, np.abs(batch.rew) + 1e-3)

    calls = max(1, cfg.calls // 4)
    return [Case("prioritized/call", params, "tianshou", loop_calls(op, calls), calls, UNIT)]


def groups(cfg):
    """One group at ``cfg.prio_capacity``."""
    params = {"capacity": cfg.prio_capacity}
    yield _jaxbuf(cfg, params) + _flashbax(cfg, params) + _tianshou(cfg, params)
