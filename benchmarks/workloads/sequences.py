"""Recurrent-agent sequence sampling at two capacities: 64 windows of 80 steps.

* jaxbuf ``VectorReplayBuffer.sample_sequences(key, 64, 80)`` (starts uniform over the
  stored steps, windows cut at episode ends) and, as the variant ``jaxbuf[full_only]``,
  ``sample_sequences(key, 64, 80, full_only=True)`` (only windows that lie inside one
  episode), on a full buffer of the MuJoCo-like transition from 64 envs;
* flashbax ``make_trajectory_buffer(add_batch_size=64, sample_batch_size=64,
  sample_sequence_length=80, period=1)`` on the same data (its windows may cross episode
  ends: flashbax has no episode boundaries).

Every capacity of ``cfg.seq_capacities`` (full profile: 2^20 and 2^22) is filled and all
cases are timed in one group, in alternation, so the cost ratio between the largest and the
smallest capacity (printed among the targets, for every library) compares numbers taken
under the same load. Rows: per jitted call from Python, and per step of a jitted scan whose
carry is the sample (every returned leaf is materialised).
"""

from __future__ import annotations

from benchmarks import data, peers
from benchmarks.harness import Case, unavailable
from benchmarks.workloads.add import jaxbuf_add, jaxbuf_buffer
from benchmarks.workloads.sequence import flashbax_filled, flashbax_windows, window_cases

UNIT = "us per sequence batch"
BATCH, LENGTH = 64, 80
SCAN_STEPS = 100
"""Samples per scan row (fewer than other workloads: one sample moves 5,120 steps)."""


def _cases(lib: str, fn, state, cfg, params) -> list[Case]:
    steps = min(cfg.scan_steps, SCAN_STEPS)
    return window_cases("sequences", lib, fn, state, cfg, params, UNIT, steps)


def groups(cfg):
    """One group: every capacity, jaxbuf (both modes) and flashbax, timed in alternation."""
    fbx, why = peers.module("flashbax")
    out: list = []
    for cap in cfg.seq_capacities:
        params = {"capacity": cap, "batch": BATCH, "length": LENGTH}
        buf = data.fill_by_scan(jaxbuf_add, jaxbuf_buffer(cap), data.step, cap // data.N_ENV)
        out += _cases("jaxbuf", lambda b, k: b.sample_sequences(k, BATCH, LENGTH), buf, cfg, params)
        out += _cases(
            "jaxbuf[full_only]",
            lambda b, k: b.sample_sequences(k, BATCH, LENGTH, full_only=True),
            buf,
            cfg,
            params,
        )
        if fbx is None:
            out += [
                unavailable(w, params, "flashbax", UNIT, why)
                for w in ("sequences/call", "sequences/scan")
            ]
        else:
            fb = flashbax_windows(fbx, cap, BATCH, LENGTH)
            out += _cases("flashbax", fb.sample, flashbax_filled(fb, cap), cfg, params)
    yield out
