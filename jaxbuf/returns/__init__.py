"""Returns and advantages.

Over rollout arrays (``[T, B]`` / ``[B, T]`` / ``[T]``, rlax conventions plus explicit
``terminated`` and ``truncated``): :func:`gae`, :func:`nstep`, :func:`lambda_returns`,
:func:`discounted_returns`; over sampled sequence windows (``[B, L]`` with a mask):
:func:`sequence_nstep`.

Over buffer indices (Tianshou's ``compute_episodic_return`` / ``compute_nstep_return``,
following the buffer's episode links): :func:`episodic_return`, :func:`nstep_targets`,
:func:`nstep_return`.
"""

from jaxbuf.returns.buffer import episodic_return, nstep_return, nstep_targets
from jaxbuf.returns.rollout import discounted_returns, gae, lambda_returns, nstep
from jaxbuf.returns.sequence import sequence_nstep

__all__ = [
    "discounted_returns",
    "episodic_return",
    "gae",
    "lambda_returns",
    "nstep",
    "nstep_return",
    "nstep_targets",
    "sequence_nstep",
]
