"""Returns and advantages: over rollout arrays (``gae``, ``nstep``, ``lambda_returns``,
``discounted_returns``)."""

from jaxbuf.returns.rollout import discounted_returns, gae, lambda_returns, nstep

__all__ = ["discounted_returns", "gae", "lambda_returns", "nstep"]
