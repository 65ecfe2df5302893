"""``TrajectoryReplayBuffer``: RLinf's host-side, file-backed trajectory replay buffer.

Behaviour follows RLinf's replay-buffer tutorial, with the deliberate differences listed in
``docs/differences-from-rlinf.md``:

* ``add_trajectories`` checks each trajectory's field layout against the stored ones, assigns
  ids ``0, 1, 2, ...`` from a counter, records the index entry
  ``{num_samples, trajectory_id, max_episode_length, shape, model_weights_id}`` and, when
  persisting, queues the file ``trajectory_{id}_{model_weights_id}.{ext}`` and then the
  listing (``trajectory_index.json`` + ``metadata.json``) on one FIFO background writer. Every
  file is written to a temporary name, fsynced and renamed; the listing written to disk names
  only files whose write has completed (with their size and sha256), so after a crash it
  never points at a partial file. A failed write stays pending (see
  :mod:`jaxbuf.trajectory.persistence`).
* ``sample(n)`` draws ``n`` flat indices i.i.d. uniformly (with replacement) from the
  ``N = sum(T_k * B_k)`` transitions of the window (the last ``sample_window_size``
  trajectories; 0 means all), maps index ``g`` to trajectory ``k`` with
  ``ends[k-1] <= g < ends[k]`` (``ends`` = cumulative ``num_samples``) and row ``g - ends[k-1]``
  of its flattened form, and returns the rows in draw order. The draws come from a numpy
  ``PCG64`` generator whose state is checkpointed.
* Reads come from memory when possible (trajectories whose write is pending, the FIFO cache of
  flattened trajectories), else from disk (then cached). One lock guards all index/cache
  state; cached arrays are never mutated in place, so concurrent ``sample`` and
  ``add_trajectories`` calls cannot produce torn rows.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.errors import (
    BufferStateError,
    ConfigError,
    InputError,
    TrajectoryFileError,
    TrajectoryNotFoundError,
)
from jaxbuf.trajectory.atomic import remove_stale_temps
from jaxbuf.trajectory.formats import (
    DEFAULT_FORMAT,
    check_format,
    read_trajectory_file,
    write_trajectory_file,
)
from jaxbuf.trajectory.listing import METADATA_FILE, write_listing
from jaxbuf.trajectory.names import trajectory_file_name, verify_file
from jaxbuf.trajectory.persistence import PersistenceMixin
from jaxbuf.trajectory.sampling import FifoCache, gather, layout_difference, signature
from jaxbuf.trajectory.trajectory import Trajectory
from jaxbuf.trajectory.writer import BackgroundWriter

__all__ = ["TrajectoryReplayBuffer", "default_storage_dir"]

_dir_counter = itertools.count()
_UNSET: Any = object()


def default_storage_dir() -> str:
    """A fresh log directory: ``$JAXBUF_LOG_DIR`` (default ``./logs``) +
    ``/replay_buffer/<YYYYmmdd-HHMMSS>-<pid>-<n>`` (absolute; not created here).

    >>> from jaxbuf.trajectory import default_storage_dir
    >>> default_storage_dir()
    '/.../logs/replay_buffer/...-...-...'
    """
    root = os.environ.get("JAXBUF_LOG_DIR") or os.path.join(os.getcwd(), "logs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.abspath(
        os.path.join(root, "replay_buffer", f"{stamp}-{os.getpid()}-{next(_dir_counter)}")
    )


def _pick(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    """Resolve a tutorial-era argument and its later RLinf alias (both given must agree)."""
    if value is _UNSET and alias_value is _UNSET:
        return default
    if value is _UNSET:
        return alias_value
    if alias_value is not _UNSET and alias_value != value:
        raise InputError(
            f"jaxbuf: {name}={value!r} conflicts with its alias {alias}={alias_value!r}"
        )
    return value


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"jaxbuf: {name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"jaxbuf: {name} must be >= {minimum}, got {value}")
    return int(value)


class TrajectoryReplayBuffer(PersistenceMixin):
    """RLinf-compatible trajectory replay buffer (see the module docstring).

    Args:
        seed: seeds the sampler (numpy PCG64). ``None`` draws a seed from OS entropy; the seed
            actually used is ``self.seed`` and is written to metadata.
        storage_dir: directory for trajectory files when persisting; default
            :func:`default_storage_dir`. If it already holds ``metadata.json`` the buffer
            resumes from it (as RLinf's first generation does). Alias: ``auto_save_path``.
        enable_cache: keep recently used flattened trajectories in memory.
        cache_size: number of cached trajectories (>= 1 when the cache is enabled).
        storage_format: ``"pt"`` (default; torch-free, RLinf-readable), ``"pkl"`` (needs
            torch) or ``"npz"`` (jaxbuf only). Alias: ``trajectory_format``.
        sample_window_size: sample from the most recent N trajectories; ``<= 0`` means all.
        save_trajectories: persist trajectories (default True). ``False`` requires the cache,
            keeps trajectories in memory only and disables checkpoints. Alias: ``auto_save``.

    All arguments after ``seed`` are keyword-only: the two RLinf generations order them
    differently, so positional use would be ambiguous.

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> root = tempfile.mkdtemp()
    >>> buffer = TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "buffer"))
    >>> traj = Trajectory(model_weights_id="w_0", rewards=np.ones((4, 2, 1), np.float32),
    ...                   actions=np.zeros((4, 2, 3), np.float32))
    >>> buffer.add_trajectories([traj, traj])
    [0, 1]
    >>> buffer.flush()  # both files are durable on disk
    >>> sorted(os.listdir(os.path.join(root, "buffer")))  # doctest: +NORMALIZE_WHITESPACE
    ['metadata.json', 'trajectory_0_w_0.pt', 'trajectory_1_w_0.pt',
     'trajectory_index.json']
    >>> buffer.total_samples, buffer.is_ready(2)  # steps (T * B each), trajectories
    (16, True)
    >>> batch = buffer.sample(num_chunks=5)  # 5 rows drawn from the flattened [T*B] steps
    >>> batch["rewards"].shape, batch["actions"].shape
    ((5, 1), (5, 3))
    >>> buffer.save_checkpoint(os.path.join(root, "ckpt"))
    >>> resumed = TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "resumed"))
    >>> resumed.load_checkpoint(os.path.join(root, "ckpt")).loaded
    [0, 1]
    >>> buffer.close(); resumed.close()
    """

    def __init__(
        self,
        seed: int | None = 1234,
        *,
        storage_dir: str | os.PathLike | None = None,
        enable_cache: bool = True,
        cache_size: int = 5,
        storage_format: str | None = None,
        sample_window_size: int = 100,
        save_trajectories: bool | None = None,
        auto_save: bool | None = None,
        auto_save_path: str | os.PathLike | None = None,
        trajectory_format: str | None = None,
    ) -> None:
        def unset_if_empty(value: Any) -> Any:  # None and "" mean "not given"
            return _UNSET if value is None or (isinstance(value, str) and not value) else value

        persist = _pick(
            "save_trajectories",
            unset_if_empty(save_trajectories),
            "auto_save",
            unset_if_empty(auto_save),
            True,
        )
        if not isinstance(persist, bool):
            raise ConfigError(f"jaxbuf: save_trajectories must be a bool, got {persist!r}")
        directory = _pick(
            "storage_dir",
            unset_if_empty(storage_dir),
            "auto_save_path",
            unset_if_empty(auto_save_path),
            None,
        )
        fmt = _pick(
            "storage_format",
            unset_if_empty(storage_format),
            "trajectory_format",
            unset_if_empty(trajectory_format),
            DEFAULT_FORMAT,
        )
        self._fmt = check_format(fmt, "storage_format")
        if not isinstance(enable_cache, bool):
            raise ConfigError(f"jaxbuf: enable_cache must be a bool, got {enable_cache!r}")
        if enable_cache:
            _check_int(cache_size, "cache_size", minimum=1)
        if not persist and not enable_cache:
            raise ConfigError(
                "jaxbuf: save_trajectories=False (auto_save=False) keeps trajectories only "
                "in memory and requires enable_cache=True"
            )
        self._window = _check_int(sample_window_size, "sample_window_size")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        self._seed = _check_int(seed, "seed", minimum=0)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        self._rng_lock = threading.Lock()

        self._persist = persist
        self._enable_cache = enable_cache
        self._cache = FifoCache(int(cache_size)) if enable_cache else None
        if not persist:
            self._storage_dir = None  # as RLinf: the path is ignored without persistence
        elif directory is None:
            self._storage_dir = default_storage_dir()
        else:
            self._storage_dir = os.path.abspath(os.fspath(directory))
        self._lock = threading.RLock()
        self._index: dict[int, dict] = {}
        self._ids: list[int] = []
        self._counter = 0
        self._total = 0
        self._paths: dict[int, str] = {}  # id -> file holding it
        self._files: dict[int, dict | None] = {}  # id -> its file's size + sha256 record
        self._layout: tuple | None = None  # field layout every trajectory must share
        self._uid = uuid.uuid4().hex  # names this buffer in the listings it writes
        # id -> (position in _ids, flat): trajectories not (yet) readable from a file.
        self._resident: OrderedDict[int, tuple[int, dict]] = OrderedDict()
        self._version = 0
        self._window_memo: tuple | None = None
        self._writer = BackgroundWriter() if persist else None
        # owned by the writer thread: what the on-disk listing names, id -> (entry, file record)
        self._durable: dict[int, tuple[dict, dict]] = {}
        if persist:
            os.makedirs(self._storage_dir, exist_ok=True)
            remove_stale_temps(self._storage_dir)
            if os.path.isfile(os.path.join(self._storage_dir, METADATA_FILE)):
                self.load_checkpoint(self._storage_dir, verify=False)

    # ------------------------------------------------------------------------ properties

    @property
    def seed(self) -> int:
        """The sampler's seed: the one given, or the one drawn from OS entropy for ``seed=None``."""
        return self._seed

    @property
    def storage_dir(self) -> str | None:
        """Directory new trajectory files go to (None when not persisting)."""
        return self._storage_dir

    auto_save_path = storage_dir

    @property
    def storage_format(self) -> str:
        """File format of new trajectory files: ``"pt"``, ``"pkl"`` or ``"npz"``."""
        return self._fmt

    trajectory_format = storage_format

    @property
    def save_trajectories(self) -> bool:
        """Whether trajectories are written to ``storage_dir`` (False: memory only)."""
        return self._persist

    auto_save = save_trajectories

    @property
    def sample_window_size(self) -> int:
        """Sample from the most recent N trajectories; ``<= 0`` means all of them."""
        return self._window

    @property
    def enable_cache(self) -> bool:
        """Whether trajectories read from disk are kept in the read cache."""
        return self._enable_cache

    @property
    def total_samples(self) -> int:
        """Transitions (chunks) over all trajectories in the index."""
        return self._total

    def __len__(self) -> int:
        """Number of trajectories in the index (RLinf's ``size``)."""
        return len(self._ids)

    def is_ready(self, min_size: int) -> bool:
        """Whether at least ``min_size`` **trajectories** were added or loaded."""
        return len(self._ids) >= min_size

    async def is_ready_async(self, min_size: int) -> bool:
        """:meth:`is_ready` for asyncio callers (RLinf's SAC workers await it)."""
        return self.is_ready(min_size)

    def get_stats(self) -> dict[str, int]:
        """``num_trajectories``, ``total_samples``, ``cache_size`` (cached trajectories) and
        ``pending_writes`` (queued background writes)."""
        with self._lock:
            return {
                "num_trajectories": len(self._ids),
                "total_samples": self._total,
                "cache_size": len(self._cache) if self._cache is not None else 0,
                "pending_writes": self._writer.pending if self._writer is not None else 0,
            }

    def __repr__(self) -> str:
        return (
            f"TrajectoryReplayBuffer(trajectories={len(self)}, samples={self._total}, "
            f"storage_dir={self._storage_dir!r}, format={self._fmt!r}, "
            f"window={self._window}, persist={self._persist})"
        )

    # ----------------------------------------------------------------------------- adding

    def add_trajectories(self, trajectories: Sequence[Trajectory]) -> list[int]:
        """Add trajectories and return their new ids.

        Every trajectory is validated before any is added (ValueError/TypeError naming
        ``trajectories[i]`` and the field), including its field layout (names, per-row shapes
        and dtypes), which must match the trajectories already stored
        (:class:`~jaxbuf.errors.InputError`). Arrays are copied, so the caller may reuse them.
        With persistence on, the files and then the listing are written in the background;
        call :meth:`flush` to wait until they are durable.
        """
        self._check_writer()
        if not isinstance(trajectories, (list, tuple)):
            raise InputError(
                f"jaxbuf: trajectories must be a list of Trajectory, got "
                f"{type(trajectories).__name__}"
            )
        prepared = []
        for i, traj in enumerate(trajectories):
            if not isinstance(traj, Trajectory):
                raise InputError(
                    f"jaxbuf: trajectories[{i}] must be a Trajectory, got {type(traj).__name__}"
                )
            snap = traj.copy()
            try:
                shape = snap.validate()
            except ValueError as exc:
                reason = str(exc).removeprefix("jaxbuf: ")
                raise InputError(f"jaxbuf: trajectories[{i}]: {reason}") from exc
            prepared.append((snap, shape, snap.flatten()))
        layout = self._layout
        for i, (_, _, flat) in enumerate(prepared):
            sig = signature(flat)
            problem = layout_difference(layout, sig) if layout is not None else None
            if problem is not None:
                raise InputError(f"jaxbuf: add_trajectories: trajectories[{i}]: {problem}")
            layout = sig if layout is None else layout
        ids = []
        with self._lock:
            if self._layout is None and prepared:
                self._layout = layout
            for snap, shape, flat in prepared:
                tid = self._counter
                self._counter += 1
                entry = {
                    "num_samples": shape.num_samples,
                    "trajectory_id": tid,
                    "max_episode_length": snap.max_episode_length,
                    "shape": list(shape.shape),
                    "model_weights_id": snap.model_weights_id,
                }
                self._index[tid] = entry
                self._resident[tid] = (len(self._ids), flat)
                self._ids.append(tid)
                self._total += shape.num_samples
                if self._cache is not None:
                    self._cache.put(tid, flat)
                if self._persist:
                    self._submit_save(tid, entry, snap.to_payload(), flat)
                ids.append(tid)
            self._version += 1
            if self._persist:
                self._submit_listing()
            elif self._window > 0:
                # memory-only trajectories that left the window can never be sampled again
                first_kept = len(self._ids) - self._window
                while self._resident and next(iter(self._resident.values()))[0] < first_kept:
                    self._resident.popitem(last=False)
        return ids

    def _submit_save(self, tid: int, entry: dict, payload: dict, flat: dict) -> None:
        fmt = self._fmt
        path = os.path.join(
            self._storage_dir, trajectory_file_name(tid, entry["model_weights_id"], fmt)
        )

        def save() -> None:
            info = write_trajectory_file(path, payload, fmt)
            with self._lock:
                held = self._resident.get(tid)
                if held is not None and held[1] is flat:
                    del self._resident[tid]
                    self._paths[tid] = path
                    self._files[tid] = info
            self._durable[tid] = (entry, info)

        self._writer.submit(save, f"trajectory {tid}: writing {path}", ("trajectory", tid))

    def _submit_listing(self) -> None:
        """Queue a listing write (call under the lock)."""
        counter, seed, fmt, directory = self._counter, self._seed, self._fmt, self._storage_dir
        state, uid = self._rng_state(), self._uid

        def write() -> None:
            ids = list(self._durable)
            write_listing(
                directory,
                fmt,
                ids,
                {tid: self._durable[tid][0] for tid in ids},
                counter,
                seed,
                state,
                files={tid: self._durable[tid][1] for tid in ids},
                buffer_id=uid,
            )

        self._writer.submit(write, f"writing the listing of {directory}", ("listing",))

    def _rng_state(self) -> dict:
        with self._rng_lock:
            return self._rng.bit_generator.state

    # --------------------------------------------------------------------------- sampling

    def _window_arrays(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(window ids, num_samples per id, cumulative ends); memoised per index version."""
        key = (self._version, self._window)
        if self._window_memo is None or self._window_memo[0] != key:
            ids = self._ids[-self._window :] if self._window > 0 else list(self._ids)
            counts = np.fromiter(
                (self._index[t]["num_samples"] for t in ids), np.int64, count=len(ids)
            )
            self._window_memo = (key, ids, counts, np.cumsum(counts))
        return self._window_memo[1:]

    def sample(self, num_chunks: int, *, as_jax: bool = False) -> dict[str, Any]:
        """Draw exactly ``num_chunks`` transitions (see the module docstring for the law).

        Returns the rollout-aligned batch dict (see :class:`Trajectory`): top-level arrays such as
        ``rewards [n, C]``, ``actions [n, C*A]``, ``dones [n, C]`` and nested dicts
        ``curr_obs``/``next_obs``/``forward_inputs`` of ``[n, ...]`` arrays, in stored dtypes;
        numpy arrays, or jax arrays with ``as_jax=True``. Raises RuntimeError on an empty
        buffer or a window holding no transitions.
        """
        n = _check_int(num_chunks, "num_chunks", minimum=1)
        self._check_writer()
        with self._lock:
            if self._total == 0:
                raise BufferStateError("jaxbuf: Cannot sample from an empty buffer.")
            window, counts, ends = self._window_arrays()
            if len(window) == 0 or ends[-1] == 0:
                raise BufferStateError("jaxbuf: the sampling window holds no transitions")
            with self._rng_lock:
                draws = self._rng.integers(0, int(ends[-1]), size=n, dtype=np.int64)
            which = np.searchsorted(ends, draws, side="right")
            local = draws - (ends[which] - counts[which])
            order = np.argsort(which, kind="stable")
            needed, starts = np.unique(which[order], return_index=True)
            sources = []
            for k in needed:
                tid = window[k]
                flat = self._memory_flat(tid)
                sources.append(
                    (
                        tid,
                        flat,
                        None
                        if flat is not None
                        else (
                            self._paths.get(tid),
                            self._index[tid],
                            self._fmt,
                            self._files.get(tid),
                        ),
                    )
                )
        groups = np.split(order, starts[1:])
        flats = []
        for tid, flat, where in sources:
            if flat is None:
                flat = self._read_missing(tid, *where)
            flats.append((tid, flat))
        batch = gather(flats, groups, local, n)
        return jax.tree_util.tree_map(jnp.asarray, batch) if as_jax else batch

    def sample_jax(self, num_chunks: int) -> dict[str, Any]:
        """:meth:`sample` returning jax arrays (``jnp.asarray`` of each field)."""
        return self.sample(num_chunks, as_jax=True)

    def _memory_flat(self, tid: int) -> dict | None:
        held = self._resident.get(tid)
        if held is not None:
            return held[1]
        return self._cache.get(tid) if self._cache is not None else None

    def _read_missing(
        self, tid: int, path: str | None, entry: dict, fmt: str, info: dict | None
    ) -> dict:
        if path is None:
            raise TrajectoryNotFoundError(
                f"jaxbuf: trajectory {tid} has no file and is not in memory"
            )
        flat = self._read_flat(tid, path, entry, fmt, info)
        with self._lock:
            if self._cache is not None and self._index.get(tid) is entry:
                self._cache.put(tid, flat)
        return flat

    @staticmethod
    def _read_flat(tid: int, path: str, entry: dict, fmt: str, info: dict | None = None) -> dict:
        """Read, verify (size + sha256 when listed) and flatten one trajectory file."""
        verify_file(path, info)
        payload = read_trajectory_file(path, fmt)
        try:
            traj = Trajectory.from_payload(payload, where=path)
            shape = traj.validate()
            flat = traj.flatten()
        except (TypeError, ValueError) as exc:
            raise TrajectoryFileError(path, str(exc)) from exc
        if shape.num_samples != entry["num_samples"] or list(shape.shape[:2]) != entry["shape"][:2]:
            raise TrajectoryFileError(
                path,
                f"index entry of trajectory {tid} says shape {entry['shape']} "
                f"({entry['num_samples']} samples) but the file holds {list(shape.shape)}",
            )
        return flat
