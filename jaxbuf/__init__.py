"""jaxbuf: replay buffers for reinforcement learning in JAX.

Pure pytree state with Tianshou's episode semantics; every operation runs under ``jit``,
``vmap`` and ``lax.scan``.
"""

from jaxbuf._core.checks import checked
from jaxbuf._core.episodes import AddResult
from jaxbuf.buffers import ReplayBuffer, VectorReplayBuffer

__version__ = "0.1.0"

__all__ = [
    "AddResult",
    "ReplayBuffer",
    "VectorReplayBuffer",
    "checked",
]
