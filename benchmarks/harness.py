"""Timing: cases measured in alternation, repeated, summarised by their median.

A :class:`Case` is one library running one workload: ``chunk()`` performs ``ops`` operations
and blocks until they are done (``jax.block_until_ready`` for JAX, plain return for NumPy).
:func:`measure` warms every case up, calibrates how many chunks make one repetition of about
``target_s`` seconds, then runs ``reps`` rounds; each round runs every case of the group once,
in an order rotated by one per round, so slow drifts of the (noisy, shared) machine hit all
libraries alike. Each repetition records wall time and the process's CPU time
(``time.process_time``, all threads): on a machine shared with other jobs the wall time also
counts time spent waiting for a core, the CPU time does not, so the two medians bracket the
true cost. Compile time is measured separately when the case is built (see
:func:`compile_jit`) and never enters the run times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax


@dataclass
class Case:
    """One library on one workload.

    Attributes:
      workload: workload id, e.g. ``"add/scan"``.
      params: what distinguishes the variant, e.g. ``{"capacity": 65536}``.
      lib: ``"jaxbuf"``, ``"flashbax"``, ``"tianshou"``, ``"rlax"`` (a suffix such as
        ``"jaxbuf[assoc]"`` marks a variant of the same library).
      chunk: runs ``ops`` operations and returns once they are finished.
      ops: operations per chunk (steps of a scan, calls of a loop).
      unit: what one operation is, for the table.
      compile_s: seconds spent lowering and compiling (None when nothing is compiled).
      note: free text shown in the JSON.
    """

    workload: str
    params: dict
    lib: str
    chunk: Callable[[], Any]
    ops: int
    unit: str
    compile_s: float | None = None
    note: str = ""


@dataclass
class Result:
    """The summary of one case (or a value that is not a time, such as bytes)."""

    workload: str
    params: dict
    lib: str
    unit: str
    value: float | None  # median wall seconds per op, or the measured quantity
    samples: list[float] = field(default_factory=list)
    cpu: float | None = None  # median CPU seconds per op
    cpu_samples: list[float] = field(default_factory=list)
    compile_s: float | None = None
    status: str = "ok"
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def unavailable(workload: str, params: dict, lib: str, unit: str, reason: str) -> Result:
    """A result row saying why ``lib`` did not run ``workload`` (``skipped: <reason>``)."""
    return Result(workload, params, lib, unit, None, status=f"skipped: {reason}")


def compile_jit(fn: Callable, *args: Any, donate_argnums: Sequence[int] = ()) -> tuple:
    """``(compiled, seconds)``: ``jax.jit(fn)`` lowered and compiled for ``args``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=tuple(donate_argnums)).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call of ``fn``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def measure(cases: Sequence[Case], reps: int, target_s: float) -> list[Result]:
    """Run ``cases`` in alternation ``reps`` times; median seconds per op for each."""
    chunks = []
    for case in cases:
        _timed(case.chunk)  # warm-up: first-call costs (allocation, caches) stay out
        t = max(_timed(case.chunk)[0], 1e-6)
        chunks.append(max(1, round(target_s / t)))
    samples: list[list[float]] = [[] for _ in cases]
    cpu: list[list[float]] = [[] for _ in cases]
    for r in range(reps):
        order = [(i + r) % len(cases) for i in range(len(cases))]
        for i in order:
            case, n = cases[i], chunks[i]

            def rep(case=case, n=n):
                for _ in range(n):
                    case.chunk()

            wall, cpu_s = _timed(rep)
            samples[i].append(wall / (n * case.ops))
            cpu[i].append(cpu_s / (n * case.ops))
    return [
        Result(
            c.workload,
            c.params,
            c.lib,
            c.unit,
            statistics.median(s),
            s,
            statistics.median(u),
            u,
            c.compile_s,
            note=c.note,
        )
        for c, s, u in zip(cases, samples, cpu)
    ]
