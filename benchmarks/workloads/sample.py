"""Uniform sample of a batch (256 by default) from a full buffer, in a scan and per call.

Buffers as in the add workload, filled to capacity through their own add. jaxbuf returns
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

UNIT = "us per sample"
WORKLOADS = ("sample/scan", "sample/call")


def _jax_cases(lib: str, sample_fn, state, cfg, params: dict) -> list[Case]:
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
    out: list = []
    jb = data.fill_by_scan(jaxbuf_add, jaxbuf_buffer(capacity), data.step, steps)
    assert int(jb.size) == capacity
    fbx, why = peers.module("flashbax")
    ts, why_ts = peers.module("tianshou.data")
    fb_state = tbuf = None
    if fbx is not None:
        fb0, fb_state = flashbax_buffer(fbx, capacity, cfg.batch_size)
        fb_state = data.fill_by_scan(fb0.add, fb_state, data.step, steps)
        assert bool(fb_state.is_full)
    if ts is not None:
        tbuf = data.fill_tianshou(
            tianshou_buffer(capacity), data.numpy_layout(capacity), data.first(data.step)
        )
    for bs in cfg.batch_sizes:
        params = {"capacity": capacity, "batch": bs}
        out += _jax_cases("jaxbuf", lambda b, k, bs=bs: b.sample(k, bs), jb, cfg, params)
        if fbx is None:
            out += [unavailable(w, params, "flashbax", UNIT, why) for w in WORKLOADS]
        else:
            fb, _ = flashbax_buffer(fbx, capacity, bs)
            out += _jax_cases("flashbax", fb.sample, fb_state, cfg, params)
        if tbuf is None:
            out.append(unavailable("sample/call", params, "tianshou", UNIT, why_ts))
        else:
            calls = max(1, cfg.calls // 4)
            out.append(
                Case(
                    "sample/call",
                    params,
                    "tianshou",
                    loop_calls(lambda bs=bs: tbuf.sample(bs), calls),
                    calls,
                    UNIT,
                )
            )
    return out


def groups(cfg):
    """One group per capacity (every batch size of the profile)."""
    for capacity in cfg.capacities:
        yield _group(cfg, capacity)
