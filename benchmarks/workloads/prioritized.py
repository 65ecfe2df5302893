"""Prioritized replay: sample a batch (256 by default) proportionally to priority, then update
the priorities of the sampled indices.

One operation = sample, then set new priorities ``|rew| + 1e-3`` (computed from the sampled
batch, so the update depends on the sample). jaxbuf
``PrioritizedVectorReplayBuffer.create(example, capacity, 64, alpha=0.6, beta=0.4)``, flashbax
``make_prioritised_flat_buffer(capacity, add_batch_size=64, priority_exponent=0.6)`` (with
``device`` set to the backend in use, which selects its tuned priority update) and Tianshou
``PrioritizedVectorReplayBuffer``. JAX libraries run per jitted call (state donated) and in a
scan (state carried); Tianshou per call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.common import Cell, loop_calls, scan_steps

UNIT = "us per sample + update"
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


def prioritized_step(batch_size: int):
    """``op(buf, key)``: jaxbuf's sample of ``batch_size``, then ``update_weight``."""

    def op(buf, key):
        batch, idx = buf.sample(key, batch_size)
        return buf.update_weight(idx, jnp.abs(batch["rew"]) + 1e-3)

    return op


def jaxbuf_filled(capacity: int):
    """A full ``PrioritizedVectorReplayBuffer`` of the MuJoCo-like transition."""
    import jaxbuf

    buf = jaxbuf.PrioritizedVectorReplayBuffer.create(
        data.example(), capacity, data.N_ENV, alpha=ALPHA, beta=BETA, ignore_obs_next=True
    )
    return data.fill_by_scan(lambda b, x: b.add(x)[0], buf, data.step, capacity // data.N_ENV)


def _jaxbuf(cfg, params) -> list:
    buf = jaxbuf_filled(params["capacity"])
    return _jax_cases("jaxbuf", prioritized_step(params["batch"]), buf, cfg, params)


def flashbax_device() -> str:
    """The ``device`` argument of flashbax's prioritised buffers for the backend in use (it
    selects flashbax's tuned priority update)."""
    return {"cpu": "cpu", "tpu": "tpu"}.get(jax.default_backend(), "gpu")


def _flashbax(cfg, params) -> list:
    fbx, why = peers.module("flashbax")
    if fbx is None:
        return [
            unavailable(w, params, "flashbax", UNIT, why)
            for w in ("prioritized/scan", "prioritized/call")
        ]
    cap, bs = params["capacity"], params["batch"]
    fb = fbx.make_prioritised_flat_buffer(
        max_length=cap,
        min_length=data.N_ENV,
        sample_batch_size=bs,
        add_batch_size=data.N_ENV,
        priority_exponent=ALPHA,
        device=flashbax_device(),
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
    cap, bs = params["capacity"], params["batch"]
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
    """One group per capacity and batch size."""
    for cap in cfg.prio_capacities:
        for bs in cfg.batch_sizes:
            params = {"capacity": cap, "batch": bs}
            yield _jaxbuf(cfg, params) + _flashbax(cfg, params) + _tianshou(cfg, params)
