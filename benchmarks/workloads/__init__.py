"""Workloads of issue 7. Each module has ``groups(cfg)``: an iterator over groups, each a list of
:class:`benchmarks.harness.Case` to time in alternation, or of finished
:class:`benchmarks.harness.Result` rows (memory, or a library that is not available)."""

from benchmarks.workloads import add, episode, gae, memory, prioritized, sample

WORKLOADS = {
    "add": add,
    "sample": sample,
    "episode": episode,
    "prioritized": prioritized,
    "gae": gae,
    "memory": memory,
}
