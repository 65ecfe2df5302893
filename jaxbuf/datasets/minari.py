"""Minari datasets into jaxbuf buffers, and buffers out as Minari datasets.

A Minari episode of ``T`` steps holds ``observations`` with ``T + 1`` entries (the reset
observation, then one per step) and ``actions``, ``rewards``, ``terminations``,
``truncations`` with ``T`` entries. As jaxbuf rows (one per step ``t``):

=====================  =========================================
jaxbuf field            Minari episode
=====================  =========================================
``obs``                 ``observations[t]`` (the first ``T``)
``obs_next``            ``observations[t + 1]`` (the last ``T``)
``act``                 ``actions[t]``
``rew``                 ``rewards[t]`` (float32)
``terminated``          ``terminations[t]``
``truncated``           ``truncations[t]``
=====================  =========================================

Dict observation or action spaces become nested fields (a dict of arrays in
``obs``/``obs_next``/``act``, nested as the space is); Tuple spaces are refused with an
error (convert them to dicts first). 64-bit values are stored as 32-bit unless JAX runs
with ``jax_enable_x64``. An episode whose last step is neither
terminated nor truncated (a recording stopped mid-episode) ends truncated, so that the next
episode does not continue it in the buffer; its last ``obs_next`` is known, so bootstrapping
from it is correct.

The reverse is :func:`jaxbuf.datasets.to_minari` (:mod:`jaxbuf.datasets.minari_export`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxbuf.errors import InputError, MissingDependencyError, message

WHERE_IN = "from_minari"
WHERE_OUT = "to_minari"
STEP_FIELDS = ("actions", "rewards", "terminations", "truncations")
ROW_FIELDS = ("obs", "act", "rew", "terminated", "truncated", "obs_next")
INSTALL = "pip install 'jaxbuf[minari]'"
_MISSING = object()


def require_minari(where: str = WHERE_IN) -> Any:
    """The ``minari`` module, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        import minari
    except ImportError as err:
        raise MissingDependencyError(
            message(where, f"needs the optional dependency 'minari' (with gymnasium): {INSTALL}")
        ) from err
    return minari


def _episodes(dataset: Any) -> Iterable:
    """The episodes of a MinariDataset, a local dataset id, a dataset folder or an iterable."""
    if isinstance(dataset, str | os.PathLike):
        minari = require_minari(WHERE_IN)
        path = Path(dataset)
        if path.is_dir():
            data = path / "data" if (path / "data").is_dir() else path
            return minari.MinariDataset(str(data)).iterate_episodes()
        try:
            return minari.load_dataset(str(dataset)).iterate_episodes()
        except FileNotFoundError as err:
            raise InputError(
                message(
                    WHERE_IN,
                    f"no local Minari dataset {str(dataset)!r}: neither a dataset folder nor an "
                    "id under MINARI_DATASETS_PATH (download remote ones with minari first)",
                )
            ) from err
    if hasattr(dataset, "iterate_episodes"):
        return dataset.iterate_episodes()
    if isinstance(dataset, Iterable) and not isinstance(dataset, Mapping):
        return dataset
    raise InputError(
        message(
            WHERE_IN,
            "dataset must be a MinariDataset, a local dataset id, a dataset folder or an "
            f"iterable of episodes, got {type(dataset).__name__}",
        )
    )


def _get(episode: Any, name: str, default: Any = _MISSING) -> Any:
    if isinstance(episode, Mapping):
        return episode.get(name, default)
    return getattr(episode, name, default)


def _nodes(value: Any, field: str, where: str) -> Any:
    """Dicts stay nodes (Dict spaces); lists and scalars become arrays; tuples are refused."""
    if isinstance(value, Mapping):
        return {k: _nodes(v, f"{field}['{k}']", where) for k, v in value.items()}
    if isinstance(value, tuple):
        raise InputError(
            message(
                WHERE_IN,
                f"{where}: field '{field}' is a tuple (a Tuple space); only Box-like and Dict "
                "spaces are supported (a batch would read a tuple of equal-shape arrays as "
                "one array): convert it to a dict first",
            )
        )
    return np.asarray(value)


def _leaves(value: Any, field: str, where: str, steps: int) -> Any:
    """``value`` (a pytree) as NumPy leaves of canonical dtype with ``steps`` entries."""

    def leaf(path, x):
        name = field + jax.tree_util.keystr(path)
        if x.dtype.kind not in "biuf":
            raise InputError(
                message(
                    WHERE_IN,
                    f"{where}: field '{name}' has dtype {x.dtype}; expected numbers or bools",
                )
            )
        if x.ndim == 0 or x.shape[0] != steps:
            got = "no leading axis" if x.ndim == 0 else f"{x.shape[0]} entries"
            raise InputError(
                message(
                    WHERE_IN,
                    f"{where}: field '{name}' has {got}, expected {steps} "
                    f"(rewards has {steps - (field == 'observations')} steps)",
                )
            )
        return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)

    return jax.tree_util.tree_map_with_path(leaf, _nodes(value, field, where))


def _flags(value: Any, field: str, where: str, steps: int) -> np.ndarray:
    x = _leaves(value, field, where, steps)
    if not isinstance(x, np.ndarray) or x.shape != (steps,):
        shape = getattr(x, "shape", type(x).__name__)
        raise InputError(
            message(WHERE_IN, f"{where}: field '{field}' expected shape ({steps},), got {shape}")
        )
    bad = np.flatnonzero((x != 0) & (x != 1))
    if bad.size:
        raise InputError(
            message(
                WHERE_IN,
                f"{where}: field '{field}' must hold 0/1 flags, got {x[bad[0]]!r} at step {bad[0]}",
            )
        )
    return x.astype(bool)


def _episode_rows(episode: Any, position: int, infos: tuple) -> tuple[Any, dict]:
    """``(episode id, rows)`` of one Minari episode (rules in the module docstring)."""
    eid = _get(episode, "id", None)
    eid = position if eid is None else int(eid)
    where = f"episode {eid}"
    missing = [k for k in ("observations",) + STEP_FIELDS if _get(episode, k) is _MISSING]
    if missing:
        raise InputError(message(WHERE_IN, f"{where}: missing field(s) {missing}"))
    rew = np.asarray(_get(episode, "rewards"))
    if rew.ndim != 1 or rew.shape[0] == 0:
        raise InputError(
            message(
                WHERE_IN,
                f"{where}: field 'rewards' expected shape (T,) with T >= 1 steps, got {rew.shape}",
            )
        )
    steps = rew.shape[0]
    rew = _leaves(rew, "rewards", where, steps)
    if not np.all(np.isfinite(rew)):
        bad = int(np.flatnonzero(~np.isfinite(rew))[0])
        raise InputError(
            message(WHERE_IN, f"{where}: field 'rewards' is not finite ({rew[bad]}) at step {bad}")
        )
    obs = _leaves(_get(episode, "observations"), "observations", where, steps + 1)
    terminated = _flags(_get(episode, "terminations"), "terminations", where, steps)
    truncated = _flags(_get(episode, "truncations"), "truncations", where, steps)
    truncated[-1] |= ~terminated[-1]  # a recording stopped mid-episode ends truncated
    rows = {
        "obs": jax.tree.map(lambda x: x[:-1], obs),
        "act": _leaves(_get(episode, "actions"), "actions", where, steps),
        "rew": rew.astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
        "obs_next": jax.tree.map(lambda x: x[1:], obs),
    }
    recorded = _get(episode, "infos", None) or {}
    for name in infos:
        if name not in recorded:
            raise InputError(
                message(
                    WHERE_IN,
                    f"{where}: no info '{name}'; the episode's infos are {sorted(recorded)}",
                )
            )
        value = jax.tree.map(np.asarray, recorded[name])
        first = jax.tree.leaves(value)[0]
        # Minari's collector records the reset info first (T + 1 entries): keep the steps'.
        if first.ndim and first.shape[0] == steps + 1:
            value = jax.tree.map(lambda x: x[1:], value)
        rows[name] = _leaves(value, f"infos/{name}", where, steps)
    return eid, rows


def _spec(rows: dict) -> dict:
    return jax.tree.map(lambda x: (x.shape[1:], x.dtype), rows)


def minari_transitions(dataset: Any, *, infos: Iterable[str] = ()) -> dict:
    """A Minari dataset's episodes as jaxbuf rows, concatenated in episode order.

    Args:
      dataset: a ``minari.MinariDataset``, a local dataset id (under
        ``MINARI_DATASETS_PATH``), the path of a dataset folder, or an iterable of episodes
        (``minari.EpisodeData`` or dicts with the same keys and an optional ``id``).
      infos: names of per-step ``infos`` entries to load as extra fields (``T + 1`` entries,
        as Minari's collector records them with the reset info first, or ``T``).
    Returns:
      ``{obs, act, rew, terminated, truncated, obs_next, *infos}``: NumPy arrays (nested as
      the spaces are) with a leading axis of all steps, mapped as in the module docstring.
    Raises:
      InputError: naming the field and the episode id, for a missing field, a non-numeric
        dtype, a field whose length does not fit the episode's ``rewards`` (ragged
        episodes), flags that are not 0/1, a non-finite reward, or shapes, dtypes or
        nesting that differ from the first episode's.
      ImportError: for an id or path without ``minari`` installed.

    Example:
        >>> import numpy as np
        >>> from jaxbuf.datasets import minari_transitions
        >>> episode = {"observations": np.zeros((3, 2)), "actions": np.array([1, 0]),
        ...            "rewards": np.ones(2), "terminations": np.zeros(2, bool),
        ...            "truncations": np.array([False, True])}
        >>> rows = minari_transitions([episode, episode])
        >>> rows["obs"].shape, rows["obs"].dtype, rows["truncated"].tolist()
        ((4, 2), dtype('float32'), [False, True, False, True])
    """
    infos = tuple(infos)
    clash = sorted(set(infos) & set(ROW_FIELDS))
    if clash:
        raise InputError(message(WHERE_IN, f"infos {clash} would replace standard fields"))
    parts, first = [], None
    for position, episode in enumerate(_episodes(dataset)):
        eid, rows = _episode_rows(episode, position, infos)
        spec = _spec(rows)
        if first is None:
            first = (eid, spec)
        elif spec != first[1]:
            field = next((k for k in rows if k in first[1] and spec[k] != first[1][k]), "structure")
            raise InputError(
                message(
                    WHERE_IN,
                    f"episode {eid}: field '{field}' has (shape, dtype) {spec.get(field)}, "
                    f"episode {first[0]} has {first[1].get(field)}",
                )
            )
        parts.append(rows)
    if not parts:
        raise InputError(message(WHERE_IN, "the dataset holds no episode"))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def from_minari(
    dataset: Any,
    *,
    buffer_cls: Any = None,
    size: int | None = None,
    infos: Iterable[str] = (),
    **create_options: Any,
) -> Any:
    """A buffer holding a Minari dataset (field mapping in the module docstring).

    Args:
      dataset: a ``minari.MinariDataset``, a local dataset id, a dataset folder, or an
        iterable of episodes (see :func:`minari_transitions`).
      buffer_cls: the buffer class (default :class:`jaxbuf.ReplayBuffer`), created as
        ``buffer_cls.create(example, size, **create_options)``: e.g. ``alpha``/``beta`` for
        :class:`jaxbuf.PrioritizedReplayBuffer`, or ``buffer_num`` (episodes then go
        round-robin over the sub-buffers, see ``Buffer.extend``).
      size: slots of the buffer; default the dataset's total number of steps.
      infos: per-step ``infos`` entries to load as extra fields.
    Returns:
      The filled buffer (one ``extend``, a single compiled call).

    Example:
        >>> import numpy as np
        >>> from jaxbuf.datasets import from_minari
        >>> episode = {"observations": np.arange(4, dtype=np.float32)[:, None],
        ...            "actions": np.array([0, 1, 0]), "rewards": np.ones(3),
        ...            "terminations": np.array([False, False, True]),
        ...            "truncations": np.zeros(3, bool)}
        >>> buf = from_minari([episode])
        >>> last = buf[2]
        >>> int(buf.size), last["obs_next"].tolist(), bool(last["terminated"])
        (3, [3.0], True)
    """
    from jaxbuf.buffers import ReplayBuffer

    rows = minari_transitions(dataset, infos=infos)
    n = rows["rew"].shape[0]
    example = jax.tree.map(lambda x: x[0], rows)
    cls = ReplayBuffer if buffer_cls is None else buffer_cls
    buf = cls.create(example, n if size is None else size, **create_options)
    return buf.extend(rows)[0]
