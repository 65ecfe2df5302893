"""Prioritized experience replay: segment trees and the prioritized buffers."""

from jaxbuf.prioritized.buffer import PrioritizedReplayBuffer, PrioritizedVectorReplayBuffer
from jaxbuf.prioritized.priority_tree import PriorityTree
from jaxbuf.prioritized.sum_tree import MinTree, SumTree

__all__ = [
    "MinTree",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "PriorityTree",
    "SumTree",
]
