"""Importers of offline RL datasets into jaxbuf buffers, and an exporter.

* :func:`from_d4rl`: the D4RL dict convention (``observations, actions, rewards, terminals,
  timeouts`` and optional ``next_observations``).
* :func:`from_minari` / :func:`to_minari`: Minari datasets in and out (needs the optional
  ``minari`` extra: ``pip install 'jaxbuf[minari]'``).
"""

from jaxbuf.datasets.d4rl import d4rl_transitions, from_d4rl
from jaxbuf.datasets.minari import from_minari, minari_transitions
from jaxbuf.datasets.minari_export import buffer_episodes, to_minari

__all__ = [
    "buffer_episodes",
    "d4rl_transitions",
    "from_d4rl",
    "from_minari",
    "minari_transitions",
    "to_minari",
]
