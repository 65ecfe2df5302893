"""Import a replay buffer written by Tianshou's ``save_hdf5`` (Tianshou 2.x layout).

Tianshou's ``save_hdf5`` writes ``buffer.__dict__`` recursively: the
storage ``_meta`` as a group of datasets, scalar counters and options as attributes, arrays
(``last_index``, a manager's ``_offset``/``_lengths``) as datasets, and everything else
pickled into byte datasets. This module reads:

* ``ReplayBuffer``: storage, ``options``, ``_insertion_idx``, ``_size``, ``last_index``,
  ``_ep_return``, ``_ep_len``, ``_ep_start_idx``; nothing is unpickled.
* ``VectorReplayBuffer`` / ``ReplayBufferManager`` with equal sub-buffer sizes: storage,
  ``_offset``, ``_lengths``, ``last_index``, and the per-child counters, which Tianshou keeps
  only in the pickled ``buffers`` member.
* ``PrioritizedReplayBuffer`` / ``PrioritizedVectorReplayBuffer``: the above plus ``_alpha``,
  ``_beta``, ``_max_prio``, ``_weight_norm`` and the leaves ``p ** alpha`` of the pickled
  ``weight`` SegmentTree (Tianshou's raw ``_min_prio`` is not needed: jaxbuf keeps a min tree).

Pickled members are read with a restricted unpickler (:mod:`jaxbuf.checkpoint._safe_unpickle`)
that resolves NumPy arrays and inert stand-ins for the Tianshou classes only. The
``_random_state`` members are never read (jaxbuf uses keys).

Cached and HER buffers are detected and refused with ``NotImplementedError`` (cache children
have no jaxbuf counterpart here; HER pickles its reward function). Data columns that
Tianshou had to pickle (object dtype) are refused too.

Dtypes follow JAX: with ``jax_enable_x64`` off, Tianshou's int64/float64 columns become
int32/float32 (an integer out of int32 range, or a finite float that overflows float32,
raises instead of changing value); the stored ``done`` column is checked against
``terminated | truncated`` and dropped, as jaxbuf derives it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.episodes import Counters
from jaxbuf.buffers import ReplayBuffer
from jaxbuf.checkpoint import _safe_unpickle
from jaxbuf.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    MissingDependencyError,
)
from jaxbuf.prioritized import PrioritizedReplayBuffer

_UNSUPPORTED = (
    ("cached_buffer_num", "CachedReplayBuffer"),
    ("compute_reward_fn", "HERReplayBuffer / HERVectorReplayBuffer"),
)


@dataclasses.dataclass(frozen=True)
class TianshouBuffer:
    """The parts of a Tianshou HDF5 buffer that jaxbuf uses, as NumPy values.

    Attributes:
      kind: ``"ReplayBuffer"`` or ``"VectorReplayBuffer"`` (the core layout).
      storage: nested dict of arrays with leading axis ``maxsize`` (``done`` removed).
      options: ``stack_num``, ``ignore_obs_next``, ``save_only_last_obs``, ``sample_avail``.
      subbuffer_size, buffer_num: layout (``maxsize = subbuffer_size * buffer_num``).
      insertion_idx, lengths, ep_len, ep_start: int64[buffer_num] (local slots).
      last_index: int64[buffer_num] (global slots).
      ep_return: float64[buffer_num, *rew_shape].
      priority: for prioritized buffers ``{"leaves": float64[maxsize] (p ** alpha),
        "max_prio", "alpha", "beta": float, "weight_norm": bool}``, else None.
    """

    kind: str
    storage: dict
    options: dict
    subbuffer_size: int
    buffer_num: int
    insertion_idx: np.ndarray
    lengths: np.ndarray
    last_index: np.ndarray
    ep_return: np.ndarray
    ep_len: np.ndarray
    ep_start: np.ndarray
    priority: dict | None


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise MissingDependencyError(
            "jaxbuf: from_tianshou_hdf5 needs h5py; install the extra: pip install 'jaxbuf[hdf5]'"
        ) from err
    return h5py


def _read_group(group: Any, prefix: str, path: str) -> dict:
    """A ``_meta`` group as nested dicts of arrays; pickled columns are refused."""
    out = {}
    for key, item in group.items():
        name = f"{prefix}{key}"
        if hasattr(item, "keys"):
            out[key] = _read_group(item, name + ".", path)
            continue
        kind = item.attrs.get("__data_type__")
        if kind not in ("ndarray", "Tensor"):
            raise CheckpointError(
                f"jaxbuf: {path}: field '{name}' was pickled by Tianshou ({kind}, e.g. an "
                "object array with None entries); jaxbuf does not unpickle data columns"
            )
        out[key] = np.asarray(item[()])
    return out


def _scalar(f: Any, key: str, path: str) -> Any:
    """A counter Tianshou stored as an attribute (Python scalar) or as a dataset (array)."""
    if key in f.attrs:
        return np.asarray(f.attrs[key])
    if key in f:
        return np.asarray(f[key][()])
    raise CheckpointCorruptError(
        f"jaxbuf: {path} lacks Tianshou's '{key}'; not a save_hdf5 buffer file"
    )


def _array(f: Any, key: str, path: str) -> np.ndarray:
    if key not in f or hasattr(f[key], "keys"):
        raise CheckpointCorruptError(
            f"jaxbuf: {path} lacks Tianshou's '{key}' array; not a save_hdf5 file"
        )
    return np.asarray(f[key][()])


def _returns(values: list, storage: dict) -> np.ndarray:
    """float64[n, *rew_shape]; Tianshou resets a vector return to the scalar 0.0."""
    shape = np.shape(storage["rew"])[1:]
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), shape) for v in values])


def _priority(f: Any, path: str, maxsize: int) -> dict | None:
    """Leaves and scalars of a prioritized buffer's ``weight`` SegmentTree, or None."""
    if "weight" not in f:
        return None
    tree = _safe_unpickle.loads(
        np.asarray(f["weight"][()]).tobytes(), f"the pickled 'weight' member of {path}"
    ).__dict__
    bound, value = int(tree["_bound"]), np.asarray(tree["_value"], np.float64)
    if int(tree["_size"]) != maxsize or value.shape != (2 * bound,):
        raise CheckpointCorruptError(
            f"jaxbuf: {path}: the priority tree has {tree['_size']} leaves (array "
            f"{value.shape}), the buffer {maxsize} slots"
        )
    return {
        "leaves": value[bound : bound + maxsize],
        "max_prio": float(_scalar(f, "_max_prio", path)),
        "alpha": float(_scalar(f, "_alpha", path)),
        "beta": float(_scalar(f, "_beta", path)),
        "weight_norm": bool(_scalar(f, "_weight_norm", path)),
    }


def _children(f: Any, path: str) -> list:
    what = f"the pickled 'buffers' member of {path}"
    data = np.asarray(f["buffers"][()]).tobytes()
    kids = _safe_unpickle.loads(data, what)
    return list(np.asarray(kids, dtype=object).reshape(-1))


_DAMAGE = (
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    OSError,
    OverflowError,
    RecursionError,
    RuntimeError,
    TypeError,
)


def read_tianshou_hdf5(path: str | os.PathLike) -> TianshouBuffer:
    """Read a Tianshou ``save_hdf5`` file into a :class:`TianshouBuffer` (NumPy only).

    Raises:
      MissingDependencyError: h5py is not installed (an ``ImportError``).
      CheckpointNotFoundError: ``path`` does not exist (a ``FileNotFoundError``).
      NotImplementedError: a cached or HER buffer, or unequal sub-buffer sizes.
      CheckpointMismatchError: not a Tianshou buffer file.
      CheckpointError: an empty buffer (no storage yet) or pickled data columns.
      CheckpointCorruptError: the file's structure is damaged or its counters disagree.
      The checkpoint errors are ``ValueError`` subclasses and name the file.
    """
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"jaxbuf: no Tianshou HDF5 file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CheckpointCorruptError(f"jaxbuf: {path} is not a readable HDF5 file: {err}") from err
    try:
        with f:
            for key, name in _UNSUPPORTED:
                if key in f or key in f.attrs:
                    raise NotImplementedError(
                        f"jaxbuf: {path} holds a Tianshou {name}; from_tianshou_hdf5 imports "
                        "plain, vector and prioritized (vector) replay buffers only"
                    )
            if "_meta" not in f or "options" not in f:
                raise CheckpointMismatchError(
                    f"jaxbuf: {path} is not a Tianshou save_hdf5 buffer (no _meta)"
                )
            storage = _read_group(f["_meta"], "", path)
            if not storage:
                raise CheckpointError(
                    f"jaxbuf: {path} holds an empty Tianshou buffer (nothing added yet, so no "
                    "storage layout); create the jaxbuf buffer directly instead"
                )
            opts = f["options"].attrs
            options = {
                "stack_num": int(opts["stack_num"]),
                "ignore_obs_next": bool(opts["ignore_obs_next"]),
                "save_only_last_obs": bool(opts["save_only_last_obs"]),
                "sample_avail": bool(opts["sample_avail"]),
            }
            maxsize = int(_scalar(f, "maxsize", path))
            priority = _priority(f, path, maxsize)
            if "buffer_num" in f.attrs:
                kind = "VectorReplayBuffer"
                offset = _array(f, "_offset", path).astype(np.int64)
                n = int(f.attrs["buffer_num"])
                edges = np.append(offset, maxsize)
                sizes = np.diff(edges)
                if len(offset) != n or np.any(sizes != sizes[0]):
                    raise NotImplementedError(
                        f"jaxbuf: {path} is a Tianshou buffer manager with sub-buffer sizes "
                        f"{sizes.tolist()}; jaxbuf sub-buffers all have the same size"
                    )
                m = int(sizes[0])
                kids = [k.__dict__ for k in _children(f, path)]
                lengths = _array(f, "_lengths", path).astype(np.int64)
                last_index = _array(f, "last_index", path).astype(np.int64)
                counters = {
                    "insertion_idx": np.array([int(k["_insertion_idx"]) for k in kids]),
                    "ep_return": _returns([k["_ep_return"] for k in kids], storage),
                    "ep_len": np.array([int(k["_ep_len"]) for k in kids]),
                    "ep_start": np.array([int(k["_ep_start_idx"]) for k in kids]),
                }
                child_len = np.array([int(k["_size"]) for k in kids])
                child_last = np.array(
                    [int(np.asarray(k["last_index"]).reshape(-1)[0]) for k in kids]
                )
                if (
                    len(kids) != n
                    or np.any(child_len != lengths)
                    or np.any(child_last + offset != last_index)
                ):
                    raise CheckpointCorruptError(
                        f"jaxbuf: {path}: the pickled children disagree with the manager (lengths "
                        f"{child_len.tolist()} vs {lengths.tolist()}, last_index "
                        f"{(child_last + offset).tolist()} vs {last_index.tolist()})"
                    )
            else:
                kind, n, m = "ReplayBuffer", 1, maxsize
                lengths = np.array([int(_scalar(f, "_size", path))])
                last_index = _array(f, "last_index", path).astype(np.int64).reshape(1)
                counters = {
                    "insertion_idx": np.array([int(_scalar(f, "_insertion_idx", path))]),
                    "ep_return": _returns([_scalar(f, "_ep_return", path)], storage),
                    "ep_len": np.array([int(_scalar(f, "_ep_len", path))]),
                    "ep_start": np.array([int(_scalar(f, "_ep_start_idx", path))]),
                }
    except NotImplementedError:
        raise
    except _DAMAGE as err:  # h5py and a damaged file raise assorted types
        raise CheckpointCorruptError(
            f"jaxbuf: {path} is a damaged HDF5 file: {type(err).__name__}: {err}"
        ) from err
    done = storage.pop("done", None)
    if done is not None and not np.array_equal(
        np.asarray(done, bool),
        np.asarray(storage["terminated"], bool) | np.asarray(storage["truncated"], bool),
    ):
        raise CheckpointCorruptError(
            f"jaxbuf: {path}: the stored 'done' is not terminated | truncated"
        )
    layout = dict(subbuffer_size=m, buffer_num=n, lengths=lengths, last_index=last_index)
    return TianshouBuffer(kind, storage, options, priority=priority, **layout, **counters)


def _narrow(name: str, value: np.ndarray, dtype: np.dtype, path: str) -> jax.Array:
    """``value`` as ``dtype``; raise if the conversion would change a value's magnitude."""
    out = np.asarray(value).astype(dtype)
    if np.issubdtype(dtype, np.integer) and not np.array_equal(out, value):
        raise CheckpointMismatchError(
            f"jaxbuf: {path}: field '{name}' has values outside {np.dtype(dtype)}; enable "
            "jax_enable_x64 to import it as int64"
        )
    if np.issubdtype(dtype, np.floating) and not np.array_equal(
        np.isfinite(out), np.isfinite(value)
    ):
        raise CheckpointMismatchError(
            f"jaxbuf: {path}: field '{name}' overflows {np.dtype(dtype)}; enable "
            "jax_enable_x64 to import it as float64"
        )
    return jnp.asarray(out)


def _example(storage: dict, frames: int | None) -> dict:
    example = jax.tree_util.tree_map(lambda a: np.zeros(a.shape[1:], a.dtype), storage)
    if frames is not None:
        for key in ("obs", "obs_next"):
            if key in example:
                example[key] = jax.tree_util.tree_map(
                    lambda a: np.zeros((frames, *a.shape), a.dtype), example[key]
                )
    return example


def from_tianshou_hdf5(
    path: str | os.PathLike, *, obs_stack_len: int | None = None
) -> ReplayBuffer | PrioritizedReplayBuffer:
    """The jaxbuf buffer holding the data and state of a Tianshou ``save_hdf5`` file.

    A Tianshou ``ReplayBuffer`` becomes a :class:`jaxbuf.ReplayBuffer`, a
    ``VectorReplayBuffer`` (any ``ReplayBufferManager`` of equal-size children) a
    :class:`jaxbuf.VectorReplayBuffer`, with the same options, storage, insertion indices,
    lengths, ``last_index`` and unfinished-episode counters, hence the same ``prev``/``next``
    links, chronological order and continuation of ``add``. ``PrioritizedReplayBuffer`` /
    ``PrioritizedVectorReplayBuffer`` become their jaxbuf counterparts with the same
    ``alpha``, ``beta``, ``weight_norm``, ``max_prio`` and leaves ``p ** alpha`` (so the same
    sampling distribution). Tianshou itself is not needed.

    Args:
      path: the ``.h5`` file.
      obs_stack_len: with ``save_only_last_obs``, the number of frames in the ``obs`` stacks
        that ``add`` will receive (Tianshou does not record it); default ``stack_num``.
    Raises:
      See :func:`read_tianshou_hdf5`; also ``CheckpointMismatchError`` for values a JAX dtype
      cannot hold (without ``jax_enable_x64``).

    The file below is written by hand with h5py in the layout ``save_hdf5`` gives a Tianshou
    ``ReplayBuffer(4)`` after three steps: an episode of two steps, then one step of the next.

    >>> import os, tempfile, h5py, numpy as np, jaxbuf
    >>> path = os.path.join(tempfile.mkdtemp(), "replay.h5")
    >>> with h5py.File(path, "w") as f:
    ...     columns = dict(obs=np.arange(4.0), act=np.array([0, 1, 1, 0]),
    ...                    rew=np.array([1.0, 1.0, 0.5, 0.0]),
    ...                    terminated=np.array([False, True, False, False]),
    ...                    truncated=np.zeros(4, bool))
    ...     for name, column in columns.items():
    ...         f.create_dataset(f"_meta/{name}", data=column).attrs["__data_type__"] = "ndarray"
    ...     f.create_group("options").attrs.update(
    ...         stack_num=1, ignore_obs_next=True, save_only_last_obs=False, sample_avail=False)
    ...     f.attrs.update(maxsize=4, _size=3, _insertion_idx=3, _ep_return=0.5, _ep_len=1,
    ...                    _ep_start_idx=2)
    ...     _ = f.create_dataset("last_index", data=np.array([2]))
    >>> buf = jaxbuf.from_tianshou_hdf5(path)
    >>> type(buf).__name__, len(buf), buf.ignore_obs_next
    ('ReplayBuffer', 3, True)
    >>> buf.next(np.arange(3)).tolist(), buf.prev(np.arange(3)).tolist()
    ([1, 1, 2], [0, 0, 2])
    >>> _, res = buf.add(dict(obs=3.0, act=0, rew=0.5, terminated=True, truncated=False))
    >>> res.episode_return.tolist(), res.episode_length.tolist()  # the imported episode ends
    ([1.0], [2])
    """
    src = read_tianshou_hdf5(path)
    path = os.fspath(path)
    opts = src.options
    frames = None
    if opts["save_only_last_obs"]:
        frames = opts["stack_num"] if obs_stack_len is None else obs_stack_len
    example = _example(src.storage, frames)
    kwargs = {
        k: opts[k] for k in ("stack_num", "ignore_obs_next", "save_only_last_obs", "sample_avail")
    }
    maxsize = src.subbuffer_size * src.buffer_num
    empty = ReplayBuffer.create(example, maxsize, buffer_num=src.buffer_num, **kwargs)
    flat, tree = jax.tree_util.tree_flatten_with_path(src.storage)
    targets = jax.tree_util.tree_leaves(empty.storage)
    storage = jax.tree_util.tree_unflatten(
        tree,
        [
            _narrow(jax.tree_util.keystr(p, simple=True, separator="."), v, t.dtype, path)
            for (p, v), t in zip(flat, targets)
        ],
    )
    counters = {
        name: _narrow(name, getattr(src, name), np.int32, path)
        for name in ("insertion_idx", "lengths", "last_index", "ep_len", "ep_start")
    }
    first_slot = np.arange(src.buffer_num, dtype=np.int32) * src.subbuffer_size
    counters["last_slot"] = counters.pop("last_index") - first_slot
    ep_return = _narrow("ep_return", src.ep_return, empty.ep_return.dtype, path)
    core = empty.with_global_storage(storage).with_counters(
        Counters(ep_return=ep_return, **counters)
    )
    if src.priority is None:
        return core
    return _prioritized(core, src.priority, example, kwargs, path)


def _prioritized(
    core: ReplayBuffer, prio: dict, example: dict, options: dict, path: str
) -> PrioritizedReplayBuffer:
    """``core`` wrapped in the prioritized buffer holding Tianshou's priorities."""
    common = dict(
        alpha=prio["alpha"], beta=prio["beta"], weight_norm=prio["weight_norm"], **options
    )
    fresh = PrioritizedReplayBuffer.create(
        example, core.maxsize, buffer_num=core.buffer_num, **common
    )
    stored = np.flatnonzero(np.asarray(core.valid_mask()))
    leaves = _narrow("priority", prio["leaves"][stored], fresh.tree.dtype, path)
    return fresh.replace(
        buffer=core,
        tree=fresh.tree.set(stored, leaves),
        max_prio=_narrow("max_prio", np.asarray(prio["max_prio"]), fresh.max_prio.dtype, path),
    )
