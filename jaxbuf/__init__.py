"""jaxbuf: replay buffers for reinforcement learning in JAX.

Pure pytree state with Tianshou's episode semantics; every operation runs under ``jit``,
``vmap`` and ``lax.scan``.
"""

from jaxbuf import checkpoint, concurrent, datasets, errors, returns, sharding
from jaxbuf._core.checks import checked
from jaxbuf._core.episodes import AddResult
from jaxbuf._core.sequences import Episodes, Sequences
from jaxbuf.buffers import ReplayBuffer, VectorReplayBuffer
from jaxbuf.cached import CachedAddResult, CachedReplayBuffer
from jaxbuf.checkpoint import (
    BufferCheckpointManager,
    checkpoint_manager,
    from_tianshou_hdf5,
    register_buffer,
    restore,
    save,
)
from jaxbuf.errors import (
    CheckpointError,
    ConfigError,
    FieldError,
    InputError,
    JaxbufError,
    TrajectoryFileError,
)
from jaxbuf.her import HERReplayBuffer, HERVectorReplayBuffer
from jaxbuf.mixing import mix, mix_counts
from jaxbuf.prefetch import Prefetcher, double_buffered
from jaxbuf.prioritized import (
    MinTree,
    PrioritizedReplayBuffer,
    PrioritizedVectorReplayBuffer,
    SumTree,
)
from jaxbuf.returns import episodic_return, nstep_return, nstep_targets
from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer

__version__ = "0.2.0"

__all__ = [
    "AddResult",
    "BufferCheckpointManager",
    "CachedAddResult",
    "CachedReplayBuffer",
    "CheckpointError",
    "ConfigError",
    "Episodes",
    "FieldError",
    "HERReplayBuffer",
    "HERVectorReplayBuffer",
    "InputError",
    "JaxbufError",
    "MinTree",
    "Prefetcher",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "ReplayBuffer",
    "Sequences",
    "SumTree",
    "Trajectory",
    "TrajectoryFileError",
    "TrajectoryReplayBuffer",
    "VectorReplayBuffer",
    "checked",
    "checkpoint",
    "checkpoint_manager",
    "concurrent",
    "datasets",
    "double_buffered",
    "errors",
    "episodic_return",
    "from_tianshou_hdf5",
    "mix",
    "mix_counts",
    "nstep_return",
    "nstep_targets",
    "register_buffer",
    "restore",
    "returns",
    "save",
    "sharding",
]
