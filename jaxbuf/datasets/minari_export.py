"""Buffers out as Minari datasets: :func:`to_minari` (the reverse of ``from_minari``).

The buffer's episodes are written in the order of ``buf.chronological_indices()`` (each
sub-buffer oldest to newest, sub-buffers in order), with the field mapping of
:mod:`jaxbuf.datasets.minari`: an episode's ``observations`` are its ``obs`` followed by the
``obs_next`` of its last step, so within an episode ``obs_next[t]`` must equal
``obs[t + 1]``. Fields other than ``obs, act, rew, terminated, truncated, obs_next`` are
written as ``infos[name]``, one entry per step.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.datasets.minari import ROW_FIELDS, WHERE_OUT, require_minari
from jaxbuf.errors import InputError, message


def _infer_space(value: np.ndarray, field: str) -> Any:
    """An unbounded ``Box`` of ``value``'s per-step shape and dtype (nested as ``value``)."""
    import gymnasium as gym

    if isinstance(value, Mapping):
        return gym.spaces.Dict({k: _infer_space(v, f"{field}.{k}") for k, v in value.items()})
    if isinstance(value, tuple | list):
        return gym.spaces.Tuple([_infer_space(v, f"{field}[{i}]") for i, v in enumerate(value)])
    shape, dtype = value.shape[1:], value.dtype
    if dtype.kind == "f":
        return gym.spaces.Box(-np.inf, np.inf, shape, dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return gym.spaces.Box(info.min, info.max, shape, dtype)
    if dtype.kind == "b":
        return gym.spaces.Box(False, True, shape, dtype)
    raise InputError(message(WHERE_OUT, f"field '{field}' has dtype {dtype}; pass its space"))


def _as_space(value: Any, space: Any, field: str) -> Any:
    """``value`` nested and typed as ``space`` (dtype casts only; bounds are not checked)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, Mapping) or set(value) != set(space.spaces):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise InputError(
                message(
                    WHERE_OUT,
                    f"field '{field}' has keys {got}, its space has {sorted(space.spaces)}",
                )
            )
        return {k: _as_space(value[k], s, f"{field}.{k}") for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(value, tuple | list) or len(value) != len(space.spaces):
            raise InputError(
                message(
                    WHERE_OUT,
                    f"field '{field}' does not match its space's {len(space.spaces)} entries",
                )
            )
        return tuple(
            _as_space(v, s, f"{field}[{i}]") for i, (v, s) in enumerate(zip(value, space.spaces))
        )
    if isinstance(value, Mapping | tuple | list):
        raise InputError(message(WHERE_OUT, f"field '{field}' is nested, its space {space} is not"))
    shape = getattr(space, "shape", None)
    if shape is not None and tuple(value.shape[1:]) != tuple(shape):
        raise InputError(
            message(
                WHERE_OUT,
                f"field '{field}' has per-step shape "
                f"{value.shape[1:]}, its space {space} has {tuple(shape)}",
            )
        )
    return value if space.dtype is None else value.astype(space.dtype, copy=False)


def _chain_break(obs: Any, obs_next: Any) -> int | None:
    """The first step ``t`` with ``obs_next[t] != obs[t + 1]``, or None."""
    steps = jax.tree.leaves(obs)[0].shape[0]
    ok = np.ones(max(steps - 1, 0), bool)
    for a, b in zip(jax.tree.leaves(obs), jax.tree.leaves(obs_next)):
        a, b = a[1:].reshape(steps - 1, -1), b[:-1].reshape(steps - 1, -1)
        same = (a == b) | ((a != a) & (b != b))  # NaN equals NaN
        ok &= same.all(axis=1)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else None


def buffer_episodes(buf: Any, unfinished: str = "drop") -> list[dict]:
    """The buffer's episodes as dicts of NumPy arrays (leading axis: the episode's steps).

    Episodes come in the order of ``buf.chronological_indices()``; an episode ends at a
    ``terminated`` or ``truncated`` row or at the end of its sub-buffer. The oldest episode
    of a sub-buffer that has wrapped starts at its oldest stored step. The last episode of a
    sub-buffer that is not done (the unfinished tail) is dropped (``unfinished="drop"``) or
    kept with its last step marked truncated (``"truncate"``).

    Example:
        >>> import numpy as np, jaxbuf
        >>> from jaxbuf.datasets import buffer_episodes
        >>> buf = jaxbuf.ReplayBuffer.create({"obs": 0.0, "act": 0, "rew": 0.0,
        ...     "terminated": False, "truncated": False, "obs_next": 0.0}, 8)
        >>> rows = {"obs": np.arange(5.0), "act": np.zeros(5, np.int32), "rew": np.ones(5),
        ...         "terminated": np.array([0, 0, 1, 0, 0], bool),
        ...         "truncated": np.zeros(5, bool), "obs_next": np.arange(1.0, 6.0)}
        >>> buf = buf.extend(rows)[0]
        >>> (only,) = buffer_episodes(buf)  # the tail (obs 3, 4) is unfinished
        >>> only["obs"].tolist()
        [0.0, 1.0, 2.0]
        >>> first, tail = buffer_episodes(buf, "truncate")
        >>> tail["obs"].tolist(), tail["truncated"].tolist()
        ([3.0, 4.0], [False, True])
    """
    if unfinished not in ("drop", "truncate"):
        raise InputError(
            message(WHERE_OUT, f"unfinished must be 'drop' or 'truncate', got {unfinished!r}")
        )
    idx = np.asarray(buf.chronological_indices())
    if idx.size == 0:
        return []
    index = jnp.asarray(idx, jnp.int32)
    data = jax.device_get(buf.read(index))
    if "obs_next" not in data:
        data["obs_next"] = jax.device_get(buf.get(index, "obs_next", stack_num=1))
    part = np.searchsorted(np.asarray(buf.subbuffer_edges), idx, side="right") - 1
    done = np.asarray(data["terminated"]) | np.asarray(data["truncated"])
    last_of_part = np.append(part[1:] != part[:-1], True)
    ends = np.flatnonzero(done | last_of_part)
    episodes, start = [], 0
    for end in ends:
        rows = jax.tree.map(lambda x, s=start, e=end: np.asarray(x[s : e + 1]), data)
        start = end + 1
        if not done[end]:
            if unfinished == "drop":
                continue
            rows["truncated"] = rows["truncated"].copy()
            rows["truncated"][-1] = True
        episodes.append(rows)
    return episodes


def to_minari(
    buf: Any,
    dataset_id: str,
    *,
    env: Any = None,
    observation_space: Any = None,
    action_space: Any = None,
    unfinished: str = "drop",
    **metadata: Any,
) -> Any:
    """Write the buffer's episodes as a new local Minari dataset (``minari``'s own writer).

    Args:
      buf: any jaxbuf buffer with fields ``obs, act, rew, terminated, truncated`` (and
        ``obs_next``, stored or rebuilt with ``ignore_obs_next``); other fields are written
        as ``infos[name]``, one entry per step.
      dataset_id: Minari id, ``(namespace/)(env_name/)name-v<version>``; the dataset is
        created under ``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``).
      env: the Gymnasium environment (id, ``EnvSpec`` or ``gym.Env``) the data came from;
        it supplies the spaces and lets users recover the environment from the dataset.
      observation_space: Gymnasium space of ``obs``; default the env's, else an unbounded
        ``Box`` of the field's shape and dtype (``Dict``/``Tuple`` when nested). Values are
        cast to the space's dtype.
      action_space: the same for ``act`` (e.g. int32 actions become ``Discrete``'s int64).
      unfinished: what happens to each sub-buffer's unfinished tail: ``"drop"`` (default)
        leaves it out, ``"truncate"`` writes it with its last step truncated.
      metadata: passed to ``minari.create_dataset_from_buffers`` (``algorithm_name``,
        ``author``, ``description``, ``data_format``...). Unless given, ``jpeg_encoding``
        is False, so image observations round-trip exactly.
    Returns:
      The ``minari.MinariDataset``; ``from_minari(dataset)`` gives the buffer's episodes back.
    Raises:
      InputError: naming the episode (its position in the export) and the step where
        ``obs_next`` does not equal the next ``obs``, a field that does not fit its space, or
        a buffer with no episode to write.

    Example (``MINARI_DATASETS_PATH`` chooses where datasets go; here a temporary folder):
        >>> import os, tempfile, warnings
        >>> import numpy as np, jaxbuf
        >>> from jaxbuf.datasets import from_minari, to_minari
        >>> os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp()
        >>> episode = {"observations": np.arange(4.0)[:, None], "actions": np.array([0, 1, 0]),
        ...            "rewards": np.ones(3), "terminations": np.array([False, False, True]),
        ...            "truncations": np.zeros(3, bool)}
        >>> buf = from_minari([episode])
        >>> with warnings.catch_warnings():  # Minari asks for an author, a description...
        ...     warnings.simplefilter("ignore")
        ...     dataset = to_minari(buf, "demo/line-v0", algorithm_name="scripted")
        >>> dataset.total_episodes, dataset.total_steps
        (1, 3)
        >>> int(from_minari("demo/line-v0").size)
        3
    """
    minari = require_minari(WHERE_OUT)
    from minari.data_collector import EpisodeBuffer

    episodes = buffer_episodes(buf, unfinished)
    if not episodes:
        raise InputError(
            message(
                WHERE_OUT,
                f"the buffer holds no finished episode to write (unfinished={unfinished!r})",
            )
        )
    if env is not None and (observation_space is None or action_space is None):
        import gymnasium as gym

        made = gym.make(env) if isinstance(env, str | gym.envs.registration.EnvSpec) else env
        observation_space = observation_space or made.observation_space
        action_space = action_space or made.action_space
    observation_space = observation_space or _infer_space(episodes[0]["obs"], "obs")
    action_space = action_space or _infer_space(episodes[0]["act"], "act")
    extra = [k for k in episodes[0] if k not in ROW_FIELDS]
    buffers = []
    for eid, rows in enumerate(episodes):
        step = _chain_break(rows["obs"], rows["obs_next"])
        if step is not None:
            raise InputError(
                message(
                    WHERE_OUT,
                    f"episode {eid}: field 'obs_next' at step {step} differs from 'obs' at step "
                    f"{step + 1}; a Minari episode holds one observation sequence",
                )
            )
        obs = jax.tree.map(lambda o, n: np.concatenate([o, n[-1:]]), rows["obs"], rows["obs_next"])
        buffers.append(
            EpisodeBuffer(
                id=eid,
                observations=_as_space(obs, observation_space, "obs"),
                actions=_as_space(rows["act"], action_space, "act"),
                rewards=np.asarray(rows["rew"], np.float64),
                terminations=np.asarray(rows["terminated"], bool),
                truncations=np.asarray(rows["truncated"], bool),
                infos={k: rows[k] for k in extra},
            )
        )
    options = dict(metadata)
    if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters:
        options.setdefault("jpeg_encoding", False)
    return minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env=env,
        observation_space=observation_space,
        action_space=action_space,
        **options,
    )
