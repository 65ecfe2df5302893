"""Sequence sampling: a batch of windows of ``L`` consecutive steps (``L = 8`` by default).

* jaxbuf ``VectorReplayBuffer.sample_sequences(key, B, L)`` on a full buffer of the
  MuJoCo-like transition: windows follow each env's episode links and never cross an episode
  end (a mask marks the steps after it);
* flashbax ``make_trajectory_buffer(add_batch_size=64, sample_sequence_length=L, period=1)``
  on the same data: windows of ``L`` consecutive time steps of one env, which may cross
  episode ends (flashbax has no episode boundaries).

Per jitted call and per step of a jitted scan; each sample becomes the scan's carry, so every
returned leaf is materialised.
"""

from __future__ import annotations

import jax

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.add import jaxbuf_add, jaxbuf_buffer
from benchmarks.workloads.common import loop_calls, read_scan

UNIT = "us per sequence sample"


def window_cases(
    workload: str, lib: str, fn, state, cfg, params, unit: str, steps: int
) -> list[Case]:
    """``workload/scan`` (``steps`` samples in one jitted scan) and ``workload/call`` rows
    of ``fn(state, key)``; shared with the ``sequences`` workload."""
    keys = jax.random.split(jax.random.key(0), steps)
    key = jax.random.key(1)
    scan_c, scan_t = compile_jit(read_scan(fn), state, keys)
    call_c, call_t = compile_jit(fn, state, key)
    return [
        Case(
            f"{workload}/scan",
            params,
            lib,
            lambda: jax.block_until_ready(scan_c(state, keys)),
            steps,
            unit,
            scan_t,
        ),
        Case(
            f"{workload}/call",
            params,
            lib,
            loop_calls(lambda: call_c(state, key), cfg.calls),
            cfg.calls,
            unit,
            call_t,
        ),
    ]


def flashbax_windows(fbx, cap: int, bs: int, length: int):
    """flashbax's trajectory buffer sampling ``bs`` windows of ``length`` steps."""
    return fbx.make_trajectory_buffer(
        add_batch_size=data.N_ENV,
        sample_batch_size=bs,
        sample_sequence_length=length,
        period=1,
        min_length_time_axis=length,
        max_size=cap,
    )


def flashbax_filled(fb, cap: int):
    """``fb``'s state filled with ``cap // 64`` time steps of the 64 envs."""

    def add(state, step):  # one time step of every env: [64, 1, ...]
        return fb.add(state, jax.tree_util.tree_map(lambda x: x[:, None], step))

    return data.fill_by_scan(add, fb.init(data.example()), data.step, cap // data.N_ENV)


def _cases(lib: str, fn, state, cfg, params) -> list[Case]:
    return window_cases("sequence", lib, fn, state, cfg, params, UNIT, cfg.scan_steps)


def groups(cfg):
    """One group per batch size at ``cfg.episode_capacity``."""
    cap, length = cfg.episode_capacity, cfg.sequence_length
    buf = data.fill_by_scan(jaxbuf_add, jaxbuf_buffer(cap), data.step, cap // data.N_ENV)
    fbx, why = peers.module("flashbax")
    fb_state = None
    if fbx is not None:
        fb_state = flashbax_filled(flashbax_windows(fbx, cap, cfg.batch_size, length), cap)
    for bs in cfg.batch_sizes:
        params = {"capacity": cap, "batch": bs, "length": length}
        out: list = _cases(
            "jaxbuf", lambda b, k, bs=bs: b.sample_sequences(k, bs, length), buf, cfg, params
        )
        if fbx is None:
            out += [
                unavailable(w, params, "flashbax", UNIT, why)
                for w in ("sequence/scan", "sequence/call")
            ]
        else:
            fb = flashbax_windows(fbx, cap, bs, length)
            out += _cases("flashbax", fb.sample, fb_state, cfg, params)
        yield out
