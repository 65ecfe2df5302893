"""D4RL-style dicts of flat arrays into a buffer.

A D4RL dataset is one stream of N steps: ``observations[N, ...]``, ``actions[N, ...]``,
``rewards[N]``, ``terminals[N]`` (the episode ended in a terminal state) and ``timeouts[N]``
(it was cut by a time limit), optionally ``next_observations[N, ...]``. Episodes are
consecutive runs of rows; row ``i`` ends its episode when

* ``terminals[i]`` (stored as ``terminated``), or
* ``timeouts[i]`` (stored as ``truncated``), or
* with ``next_observations``: ``next_observations[i]`` differs from ``observations[i + 1]``,
  i.e. the next row does not continue from where this one left off (stored as
  ``truncated``; D4RL datasets contain such silent resets).

Without ``next_observations`` the next observation of row ``i`` is ``observations[i + 1]``
within an episode. At an episode end it is not in the data: a terminal row gets its own
observation as ``obs_next`` (a terminated target never reads it), while a row cut by a
timeout, and a final row that is not terminal, have no known next observation and are
dropped; the row before it then ends the episode as truncated. Other keys of the dict
(``infos/...``, ``metadata/...``) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxbuf.errors import InputError, message

REQUIRED = ("observations", "actions", "rewards", "terminals")
WHERE = "from_d4rl"


def _array(data: Mapping, name: str) -> np.ndarray:
    value = np.asarray(data[name])
    if value.dtype.kind not in "biuf":
        raise InputError(
            message(WHERE, f"field '{name}' has dtype {value.dtype}; expected numbers or bools")
        )
    if value.ndim == 0:
        raise InputError(message(WHERE, f"field '{name}' needs a leading axis of N steps"))
    return value


def _episode_of(ends: np.ndarray, row: int) -> str:
    episode = int(np.sum(ends[:row]))
    start = int(np.flatnonzero(ends[:row])[-1]) + 1 if episode else 0
    return f"episode {episode} (rows {start}.., step {row - start})"


def _flags(data: Mapping, name: str, n: int, ends_so_far: np.ndarray) -> np.ndarray:
    if name not in data:
        return np.zeros(n, bool)
    value = _array(data, name)
    if value.shape != (n,):
        raise InputError(message(WHERE, f"field '{name}' expected shape ({n},), got {value.shape}"))
    bad = np.flatnonzero((value != 0) & (value != 1))
    if bad.size:
        raise InputError(
            message(
                WHERE,
                f"field '{name}' must hold 0/1 flags, got {value[bad[0]]!r} at row {bad[0]} in "
                f"{_episode_of(ends_so_far, int(bad[0]))}",
            )
        )
    return value.astype(bool)


def d4rl_transitions(data: Mapping[str, Any]) -> dict:
    """The D4RL dict as jaxbuf rows (``obs, act, rew, terminated, truncated, obs_next``).

    Applies the episode rules of the module docstring. Returns NumPy arrays with a leading
    axis of the kept rows, in order.

    Raises:
      InputError: naming the field, for a missing field, a non-numeric dtype, lengths that
        differ, a flag that is not 0/1, or a non-finite reward (naming the episode too).

    Example:
      Rows 3 (timed out) and 4 (last, not terminal) have no known next observation and are
      dropped; row 2 then ends its episode as truncated.

      >>> import numpy as np
      >>> data = dict(observations=np.arange(5.0, dtype=np.float32),
      ...             actions=np.zeros(5, np.int32), rewards=np.ones(5, np.float32),
      ...             terminals=np.array([0, 1, 0, 0, 0], bool),  # episode 1 ends at row 1
      ...             timeouts=np.array([0, 0, 0, 1, 0], bool))   # episode 2 cut at row 3
      >>> from jaxbuf.datasets import d4rl_transitions
      >>> rows = d4rl_transitions(data)
      >>> rows["obs_next"].tolist(), rows["terminated"].tolist(), rows["truncated"].tolist()
      ([1.0, 1.0, 3.0], [False, True, False], [False, False, True])
    """
    if not isinstance(data, Mapping):
        raise InputError(message(WHERE, f"data must be a dict, got {type(data).__name__}"))
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(
            message(WHERE, f"missing field(s) {missing}; a D4RL dict has {list(REQUIRED)}")
        )
    obs = _array(data, "observations")
    n = obs.shape[0]
    arrays = {"observations": obs}
    for name in ("actions", "rewards", "next_observations"):
        if name in data:
            arrays[name] = _array(data, name)
            if arrays[name].shape[0] != n:
                raise InputError(
                    message(
                        WHERE,
                        f"field '{name}' has {arrays[name].shape[0]} rows, 'observations' has {n}",
                    )
                )
    rew = arrays["rewards"]
    if rew.ndim != 1:
        raise InputError(message(WHERE, f"field 'rewards' expected shape ({n},), got {rew.shape}"))
    terminals = _flags(data, "terminals", n, np.zeros(n, bool))
    timeouts = _flags(data, "timeouts", n, terminals)
    next_obs = arrays.get("next_observations")
    if next_obs is not None:
        if next_obs.shape != obs.shape:
            raise InputError(
                message(
                    WHERE,
                    f"field 'next_observations' has shape {next_obs.shape}, 'observations' "
                    f"has {obs.shape}",
                )
            )
        follows = np.ones(n, bool)
        flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
        follows[:-1] = np.all(flat(next_obs[:-1]) == flat(obs[1:]), axis=1)
        truncated = (timeouts | ~follows) & ~terminals
        truncated[-1] = timeouts[-1] & ~terminals[-1]  # the last row: as the flags say
        keep = np.ones(n, bool)
        obs_next = next_obs
    else:
        successor = np.concatenate([obs[1:], obs[-1:]])
        keep = terminals | ~timeouts
        keep[-1] = bool(terminals[-1])
        # A dropped row's predecessor in the same episode ends it as truncated.
        truncated = np.zeros(n, bool)
        before = np.flatnonzero(~keep[1:] & ~(terminals | timeouts)[:-1])
        truncated[before] = True
        obs_next = np.where(terminals.reshape((n,) + (1,) * (obs.ndim - 1)), obs, successor)
    ends = terminals | truncated
    bad = np.flatnonzero(~np.isfinite(rew.astype(np.float64)))
    if bad.size:
        raise InputError(
            message(
                WHERE,
                f"field 'rewards' is not finite ({rew[bad[0]]}) at row {bad[0]} in "
                f"{_episode_of(ends, int(bad[0]))}",
            )
        )
    return {
        "obs": obs[keep],
        "act": arrays["actions"][keep],
        "rew": rew[keep].astype(np.float32),
        "terminated": terminals[keep],
        "truncated": truncated[keep],
        "obs_next": obs_next[keep],
    }


def from_d4rl(
    data: Mapping[str, Any],
    *,
    buffer_cls: Any = None,
    size: int | None = None,
    **create_options: Any,
) -> Any:
    """A buffer holding a D4RL-style dataset (rules in the module docstring).

    Args:
      data: dict of arrays (``observations, actions, rewards, terminals``, optional
        ``timeouts`` and ``next_observations``), e.g. ``env.get_dataset()`` of D4RL.
      buffer_cls: the buffer class (default :class:`jaxbuf.ReplayBuffer`); created as
        ``buffer_cls.create(example, size, **create_options)``, e.g. ``alpha``/``beta`` for
        :class:`jaxbuf.PrioritizedReplayBuffer` or ``buffer_num`` (episodes then go
        round-robin over the sub-buffers, see ``Buffer.extend``).
      size: slots of the buffer; default the number of transitions.
    Returns:
      The filled buffer (one ``extend``).

    Example:
      >>> import numpy as np
      >>> data = dict(observations=np.arange(5.0, dtype=np.float32),
      ...             actions=np.zeros(5, np.int32), rewards=np.ones(5, np.float32),
      ...             terminals=np.array([0, 1, 0, 0, 0], bool),  # episode 1 ends at row 1
      ...             timeouts=np.array([0, 0, 0, 1, 0], bool))   # episode 2 cut at row 3
      >>> from jaxbuf.datasets import from_d4rl
      >>> buf = from_d4rl(data)
      >>> len(buf), buf.maxsize
      (3, 3)
      >>> buf = from_d4rl(data, size=8, buffer_num=2)  # options go to ``create``
      >>> len(buf), buf.maxsize, buf.buffer_num
      (3, 8, 2)
    """
    from jaxbuf.buffers import ReplayBuffer

    rows = d4rl_transitions(data)
    n = rows["act"].shape[0]
    if n == 0:
        raise InputError(
            message(WHERE, "the dataset holds no transition with a known next observation")
        )
    example = {k: v[0] for k, v in rows.items()}
    cls = ReplayBuffer if buffer_cls is None else buffer_cls
    buf = cls.create(example, n if size is None else size, **create_options)
    return buf.extend(rows)[0]
