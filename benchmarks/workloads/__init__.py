"""The workloads. Each has ``groups(cfg)``: an iterator over groups, each a list of
:class:`benchmarks.harness.Case` to time in alternation or of finished
:class:`benchmarks.harness.Result` rows (byte counts, or a peer that is skipped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from benchmarks.workloads import (
    add,
    checkpoint,
    compat,
    concurrent,
    episode,
    examples,
    extend,
    gae,
    host_tier,
    memory,
    prioritized,
    sample,
    sequence,
    sequences,
    sharded_prioritized,
    sharding,
    sum_tree,
    threefry,
    trajectory_io,
)


@dataclass(frozen=True)
class Workload:
    """A named workload: what it measures and in which profiles it runs by default."""

    groups: Callable[..., Iterator[list]]
    summary: str
    profiles: tuple[str, ...] = ()


WORKLOADS: dict[str, Workload] = {
    "add": Workload(add.groups, "add one step of 64 envs, scan and per call", ("cpu", "gpu")),
    "sample": Workload(sample.groups, "uniform sample from a full buffer", ("cpu", "gpu")),
    "prev_next": Workload(episode.prev_next_groups, "episode links of 256 indices", ("cpu",)),
    "stacked": Workload(
        episode.stacked_groups, "frame-stacked sample, uint8[84, 84] x 4", ("cpu", "gpu")
    ),
    "sequence": Workload(sequence.groups, "windows of 8 steps within episodes", ("gpu",)),
    "sequences": Workload(
        sequences.groups, "64 windows of 80 steps at 2^20 and 2^22 slots, with flashbax"
    ),
    "prioritized": Workload(
        prioritized.groups, "prioritized sample + priority update", ("cpu", "gpu")
    ),
    "gae": Workload(gae.groups, "GAE over [T, B] rollouts (against rlax)", ("cpu", "gpu")),
    "host_tier": Workload(
        host_tier.groups, "storage in pinned host memory against device memory", ("gpu",)
    ),
    "memory": Workload(memory.groups, "bytes per stored Atari transition", ("cpu",)),
    "examples": Workload(examples.groups, "PPO and DQN examples, env steps per second", ("gpu",)),
    "sum_tree": Workload(sum_tree.groups, "bare sum tree: sample + set"),
    "threefry": Workload(threefry.groups, "unrolled Threefry against jax.random"),
    "sharding": Workload(sharding.groups, "sharded add and sample over the process's devices"),
    "sharded_prioritized": Workload(
        sharded_prioritized.groups, "sharded prioritized sample + update, local and global"
    ),
    "trajectory_io": Workload(trajectory_io.groups, "RLinf trajectory files: codecs, add, sample"),
    "checkpoint": Workload(checkpoint.groups, "save and restore of a full buffer"),
    "extend": Workload(
        extend.groups, "bulk load of 1M transitions: extend, scan of adds, flashbax", ("cpu",)
    ),
    "concurrent": Workload(concurrent.groups, "rate-limited inserts and samples by threads"),
    "compat": Workload(compat.groups, "eager add through jaxbuf.compat.tianshou (Atari buffer)"),
}


def default(profile: str) -> list[str]:
    """The workloads a profile runs when none are named."""
    return [name for name, w in WORKLOADS.items() if profile in w.profiles]
