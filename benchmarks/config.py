"""Run configurations: a profile (``cpu`` or ``gpu``) at full size or ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    """Sizes and repetition counts shared by the workloads.

    Attributes:
      profile: ``"cpu"`` or ``"gpu"`` (which workloads run by default, and their sizes).
      quick: smoke mode (small capacities, few repetitions).
      capacities: capacities of the add and sample workloads.
      batch_sizes: sample batch sizes (the first one is used where a workload takes one).
      reps: rounds of alternation per group; the tables show the median.
      target_s: seconds one repetition of one case should take (calibrated per case).
      scan_steps: steps per jitted ``lax.scan`` call.
      calls: jitted calls from Python per chunk of the per-call workloads.
      prio_capacities: capacities of the prioritized workload.
      episode_capacity: capacity of the prev/next and sequence workloads.
      stack_capacity: capacity of the frame-stacking and memory workloads.
      sequence_length: steps per window of the sequence workload.
      seq_capacities: capacities of the sequences workload (64 windows of 80 steps).
      gae_shapes: ``[T, B]`` rollouts for GAE.
      sum_tree_capacities: capacities of the bare sum-tree workload.
      example_iterations: training iterations timed per repetition of the examples workload.
    """

    profile: str
    quick: bool
    capacities: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    reps: int
    target_s: float
    scan_steps: int
    calls: int
    prio_capacities: tuple[int, ...]
    episode_capacity: int
    stack_capacity: int
    sequence_length: int
    seq_capacities: tuple[int, ...]
    gae_shapes: tuple[tuple[int, int], ...]
    sum_tree_capacities: tuple[int, ...]
    example_iterations: int

    @property
    def batch_size(self) -> int:
        """The first sample batch size."""
        return self.batch_sizes[0]


CPU = Config(
    profile="cpu",
    quick=False,
    capacities=(2**16, 2**20, 2**22),
    batch_sizes=(256,),
    reps=13,
    target_s=0.1,
    scan_steps=1000,
    calls=200,
    prio_capacities=(2**20,),
    episode_capacity=2**20,
    stack_capacity=2**16,
    sequence_length=8,
    seq_capacities=(2**20, 2**22),
    gae_shapes=((128, 64), (2048, 8)),
    sum_tree_capacities=(2**16, 2**20, 2**22),
    example_iterations=20,
)

CPU_QUICK = replace(
    CPU,
    quick=True,
    capacities=(2**12, 2**16),
    reps=3,
    target_s=0.02,
    scan_steps=200,
    calls=50,
    prio_capacities=(2**14,),
    episode_capacity=2**14,
    stack_capacity=2**12,
    seq_capacities=(2**14, 2**16),
    sum_tree_capacities=(2**12, 2**16),
    example_iterations=4,
)

# The GPU profile must finish in about 4 minutes on one accelerator, compile times included.
GPU = replace(
    CPU,
    profile="gpu",
    capacities=(2**20, 2**24),
    batch_sizes=(256, 4096),
    reps=7,
    target_s=0.05,
    scan_steps=500,
    calls=100,
    prio_capacities=(2**20, 2**24),
    episode_capacity=2**20,
    stack_capacity=2**16,
    sum_tree_capacities=(2**20, 2**24),
    example_iterations=20,
)

# The GPU profile's workloads at CPU-friendly sizes: how the GPU script is tested.
GPU_QUICK = replace(
    GPU,
    quick=True,
    capacities=(2**12, 2**14),
    reps=3,
    target_s=0.01,
    scan_steps=50,
    calls=20,
    prio_capacities=(2**12, 2**14),
    episode_capacity=2**14,
    stack_capacity=2**12,  # flashbax needs capacity >= batch (4096)
    seq_capacities=(2**14, 2**16),
    gae_shapes=((128, 64),),
    sum_tree_capacities=(2**12,),
    example_iterations=2,
)


def smallest(cfg: Config) -> Config:
    """``cfg`` with only the smallest size of each list and one repetition: a smoke test of a
    profile's workloads (every batch size is kept)."""
    return replace(
        cfg,
        capacities=cfg.capacities[:1],
        prio_capacities=cfg.prio_capacities[:1],
        seq_capacities=cfg.seq_capacities[:1],
        gae_shapes=cfg.gae_shapes[:1],
        sum_tree_capacities=cfg.sum_tree_capacities[:1],
        reps=1,
        target_s=0.001,
        scan_steps=10,
        calls=5,
        example_iterations=1,
    )


PROFILES = {
    ("cpu", False): CPU,
    ("cpu", True): CPU_QUICK,
    ("gpu", False): GPU,
    ("gpu", True): GPU_QUICK,
}
