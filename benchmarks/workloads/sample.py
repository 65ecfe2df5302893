"""Workload 2: uniform sample of 256 transitions from a full buffer, in a scan and per call.

Buffers as in workload 1, filled to capacity through their own add. jaxbuf returns
``obs, act, rew, terminated, truncated, done`` and ``obs_next = obs[next(i)]`` (episode-aware)
plus the indices; flashbax returns both steps of each pair (``first``, ``second``); Tianshou
returns the same fields as jaxbuf. In the scan each sample becomes the carry, so every returned
leaf is materialised (see ``common.read_scan``); per call, the jitted sample is called from
Python with a fixed key.
"""

from __future__ import annotations

import jax

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.add import (
    flashbax_buffer,
    jaxbuf_add,
    jaxbuf_buffer,
    tianshou_buffer,
)
from benchmarks.workloads.common import loop_calls, read_scan

UNIT = "us per sample of 256"


def _jax_cases(lib: str, sample_fn, state, cfg, capacity: int) -> list[Case]:
    params = {"capacity": capacity}
    keys = jax.random.split(jax.random.key(0), cfg.scan_steps)
    key = jax.random.key(1)
    scan_c, scan_t = compile_jit(read_scan(sample_fn), state, keys)
    call_c, call_t = compile_jit(sample_fn, state, key)
    return [
        Case(
            "sample/scan",
            params,
            lib,
            lambda: jax.block_until_ready(scan_c(state, keys)),
            cfg.scan_steps,
            UNIT,
            scan_t,
        ),
        Case(
            "sample/call",
            params,
            lib,
            loop_calls(lambda: call_c(state, key), cfg.calls),
            cfg.calls,
            UNIT,
            call_t,
        ),
    ]


def _group(cfg, capacity: int) -> list:
    steps = capacity // data.N_ENV
    bs = cfg.batch_size
    out: list = []
    jb = data.fill_by_scan(jaxbuf_add, jaxbuf_buffer(capacity), data.step, steps)
    assert int(jb.size) == capacity
    out += _jax_cases("jaxbuf", lambda b, k: b.sample(k, bs), jb, cfg, capacity)
    fbx, why = peers.module("flashbax")
    if fbx is None:
        out += [
            unavailable(w, {"capacity": capacity}, "flashbax", UNIT, why)
            for w in ("sample/scan", "sample/call")
        ]
    else:
        fb, state = flashbax_buffer(fbx, capacity, bs)
        state = data.fill_by_scan(fb.add, state, data.step, steps)
        assert bool(state.is_full)
        out += _jax_cases("flashbax", fb.sample, state, cfg, capacity)
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("sample/call", {"capacity": capacity}, "tianshou", UNIT, why))
    else:
        buf = data.fill_tianshou(
            tianshou_buffer(capacity), data.numpy_layout(capacity), data.first(data.step)
        )
        calls = max(1, cfg.calls // 4)
        out.append(
            Case(
                "sample/call",
                {"capacity": capacity},
                "tianshou",
                loop_calls(lambda: buf.sample(bs), calls),
                calls,
                UNIT,
            )
        )
    return out


def groups(cfg):
    """One group per capacity."""
    for capacity in cfg.capacities:
        yield _group(cfg, capacity)
