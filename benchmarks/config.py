"""Run configuration: full (issue 7's sizes) or ``--quick`` (a smoke run of a minute or two)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Sizes and repetition counts shared by the workloads.

    Attributes:
      quick: smoke mode (small capacities, few repetitions).
      capacities: capacities of the add/sample workloads (issue 7: 2^16, 2^20, 2^22).
      reps: rounds of alternation per group; the table shows the median.
      target_s: seconds one repetition of one case should take (calibrated per case).
      scan_steps: steps per jitted ``lax.scan`` call.
      calls: jitted calls from Python per chunk of the per-call workloads.
      batch_size: sample batch size (issue 7: 256).
      prio_capacity: capacity of the prioritized workload (issue 7: 2^20).
      episode_capacity: capacity of the prev/next workload.
      stack_capacity: capacity of the frame-stacking and memory workloads.
      gae_shapes: ``[T, B]`` rollouts for GAE (issue 7: [128, 64] and [2048, 8]).
    """

    quick: bool
    capacities: tuple[int, ...]
    reps: int
    target_s: float
    scan_steps: int
    calls: int
    batch_size: int
    prio_capacity: int
    episode_capacity: int
    stack_capacity: int
    gae_shapes: tuple[tuple[int, int], ...]


FULL = Config(
    quick=False,
    capacities=(2**16, 2**20, 2**22),
    reps=13,
    target_s=0.1,
    scan_steps=1000,
    calls=200,
    batch_size=256,
    prio_capacity=2**20,
    episode_capacity=2**20,
    stack_capacity=2**16,
    gae_shapes=((128, 64), (2048, 8)),
)

QUICK = Config(
    quick=True,
    capacities=(2**12, 2**16),
    reps=3,
    target_s=0.02,
    scan_steps=200,
    calls=50,
    batch_size=256,
    prio_capacity=2**14,
    episode_capacity=2**14,
    stack_capacity=2**12,
    gae_shapes=((128, 64), (2048, 8)),
)
