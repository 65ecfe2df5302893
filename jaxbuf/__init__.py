"""jaxbuf: replay buffers for reinforcement learning in JAX.

Pure pytree state with Tianshou's episode semantics; every operation runs under ``jit``,
``vmap`` and ``lax.scan``.
"""

from jaxbuf import returns
from jaxbuf._core.checks import checked
from jaxbuf._core.episodes import AddResult
from jaxbuf.buffers import ReplayBuffer, VectorReplayBuffer
from jaxbuf.cached import CachedAddResult, CachedReplayBuffer
from jaxbuf.her import HERReplayBuffer, HERVectorReplayBuffer
from jaxbuf.prioritized import (
    MinTree,
    PrioritizedReplayBuffer,
    PrioritizedVectorReplayBuffer,
    SumTree,
)
from jaxbuf.returns import episodic_return, nstep_return, nstep_targets
from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer

__version__ = "0.1.0"

__all__ = [
    "AddResult",
    "CachedAddResult",
    "CachedReplayBuffer",
    "HERReplayBuffer",
    "HERVectorReplayBuffer",
    "MinTree",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "ReplayBuffer",
    "SumTree",
    "Trajectory",
    "TrajectoryReplayBuffer",
    "VectorReplayBuffer",
    "checked",
    "episodic_return",
    "nstep_return",
    "nstep_targets",
    "returns",
]
