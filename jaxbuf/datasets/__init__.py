"""Importers of offline RL datasets into jaxbuf buffers.

* :func:`from_d4rl`: the D4RL dict convention (``observations, actions, rewards, terminals,
  timeouts`` and optional ``next_observations``).
"""

from jaxbuf.datasets.d4rl import d4rl_transitions, from_d4rl

__all__ = ["d4rl_transitions", "from_d4rl"]
