"""``TrajectoryReplayBuffer``: RLinf's host-side, file-backed trajectory replay buffer.

Behaviour (rlinf-semantics.md §3-§11, tutorial ``rlinf-replay-buffer-tutorial.rst``), with the
deliberate differences listed in ``docs/differences-from-rlinf.md``:

* ``add_trajectories`` assigns ids ``0, 1, 2, ...`` from a counter, records the index entry
  ``{num_samples, trajectory_id, max_episode_length, shape, model_weights_id}`` and, when
  persisting, queues the file ``trajectory_{id}_{model_weights_id}.{ext}`` and then the
  listing (``trajectory_index.json`` + ``metadata.json``) on one FIFO background writer. Every
  file is written to a temporary name, fsynced and renamed; the listing written to disk names
  only files whose write has completed, so after a crash it never points at a partial file.
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
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.errors import CheckpointError, TrajectoryFileError
from jaxbuf.trajectory.atomic import atomic_link_or_copy
from jaxbuf.trajectory.checkpoint import (
    METADATA_FILE,
    BufferListing,
    LoadReport,
    SkippedTrajectory,
    read_listing,
    trajectory_file_name,
    write_checkpoint,
    write_listing,
)
from jaxbuf.trajectory.formats import (
    DEFAULT_FORMAT,
    check_format,
    read_trajectory_file,
    write_trajectory_file,
)
from jaxbuf.trajectory.progress import progress as progress_iter
from jaxbuf.trajectory.trajectory import Trajectory
from jaxbuf.trajectory.writer import BackgroundWriter

__all__ = ["TrajectoryReplayBuffer", "default_storage_dir"]

_dir_counter = itertools.count()
_UNSET: Any = object()


def default_storage_dir() -> str:
    """A fresh log directory: ``$JAXBUF_LOG_DIR`` (default ``./logs``) +
    ``/replay_buffer/<YYYYmmdd-HHMMSS>-<pid>-<n>`` (absolute; not created here)."""
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
        raise ValueError(f"{name}={value!r} conflicts with its alias {alias}={alias_value!r}")
    return value


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class _FifoCache:
    """Flattened trajectories by id; evicts the oldest *inserted* id beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, dict] = OrderedDict()

    def get(self, tid: int) -> dict | None:
        return self._items.get(tid)

    def put(self, tid: int, flat: dict) -> None:
        self._items[tid] = flat  # an existing id keeps its place (RLinf overwrites its slot)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def ids(self) -> list[int]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _signature(flat: dict) -> tuple:
    """Field names, per-row shapes and dtypes of a flattened trajectory (batch layout)."""
    sig = []
    for key, value in flat.items():
        if isinstance(value, dict):
            sig.append((key, tuple((k, v.shape[1:], v.dtype) for k, v in value.items())))
        else:
            sig.append((key, value.shape[1:], value.dtype))
    return tuple(sig)


class TrajectoryReplayBuffer:
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
            raise TypeError(f"save_trajectories must be a bool, got {persist!r}")
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
            raise TypeError(f"enable_cache must be a bool, got {enable_cache!r}")
        if enable_cache:
            _check_int(cache_size, "cache_size", minimum=1)
        if not persist and not enable_cache:
            raise ValueError(
                "save_trajectories=False (auto_save=False) keeps trajectories only "
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
        self._cache = _FifoCache(int(cache_size)) if enable_cache else None
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
        # id -> (position in _ids, flat): trajectories not (yet) readable from a file.
        self._resident: OrderedDict[int, tuple[int, dict]] = OrderedDict()
        self._version = 0
        self._window_memo: tuple | None = None
        self._writer = BackgroundWriter() if persist else None
        self._durable: dict[int, dict] = {}  # owned by the writer thread: listed on disk
        if persist:
            os.makedirs(self._storage_dir, exist_ok=True)
            if os.path.isfile(os.path.join(self._storage_dir, METADATA_FILE)):
                self.load_checkpoint(self._storage_dir, verify=False)

    # ------------------------------------------------------------------------ properties

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def storage_dir(self) -> str | None:
        """Directory new trajectory files go to (None when not persisting)."""
        return self._storage_dir

    auto_save_path = storage_dir

    @property
    def storage_format(self) -> str:
        return self._fmt

    trajectory_format = storage_format

    @property
    def save_trajectories(self) -> bool:
        return self._persist

    auto_save = save_trajectories

    @property
    def sample_window_size(self) -> int:
        return self._window

    @property
    def enable_cache(self) -> bool:
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
        ``trajectories[i]`` and the field). Arrays are copied, so the caller may reuse them.
        With persistence on, the files and then the listing are written in the background;
        call :meth:`flush` to wait until they are durable.
        """
        self._check_writer()
        if not isinstance(trajectories, (list, tuple)):
            raise TypeError(
                f"trajectories must be a list of Trajectory, got {type(trajectories).__name__}"
            )
        prepared = []
        for i, traj in enumerate(trajectories):
            if not isinstance(traj, Trajectory):
                raise TypeError(
                    f"trajectories[{i}] must be a Trajectory, got {type(traj).__name__}"
                )
            snap = traj.copy()
            try:
                shape = snap.validate()
            except ValueError as exc:
                raise ValueError(f"trajectories[{i}]: {exc}") from exc
            prepared.append((snap, shape, snap.flatten()))
        ids = []
        with self._lock:
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
            write_trajectory_file(path, payload, fmt)
            with self._lock:
                held = self._resident.get(tid)
                if held is not None and held[1] is flat:
                    del self._resident[tid]
                    self._paths[tid] = path
            self._durable[tid] = entry

        self._writer.submit(save, f"writing {path}")

    def _submit_listing(self) -> None:
        counter, seed, fmt, directory = self._counter, self._seed, self._fmt, self._storage_dir
        state = self._rng_state()

        def write() -> None:
            write_listing(directory, fmt, list(self._durable), self._durable, counter, seed, state)

        self._writer.submit(write, f"writing the listing of {directory}")

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

        Returns the rollout-aligned batch dict (§2): top-level arrays such as
        ``rewards [n, C]``, ``actions [n, C*A]``, ``dones [n, C]`` and nested dicts
        ``curr_obs``/``next_obs``/``forward_inputs`` of ``[n, ...]`` arrays, in stored dtypes;
        numpy arrays, or jax arrays with ``as_jax=True``. Raises RuntimeError on an empty
        buffer or a window holding no transitions.
        """
        n = _check_int(num_chunks, "num_chunks", minimum=1)
        self._check_writer()
        with self._lock:
            if self._total == 0:
                raise RuntimeError("Cannot sample from an empty buffer.")
            window, counts, ends = self._window_arrays()
            if len(window) == 0 or ends[-1] == 0:
                raise RuntimeError("the sampling window holds no transitions")
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
                        else (self._paths.get(tid), self._index[tid], self._fmt),
                    )
                )
        groups = np.split(order, starts[1:])
        flats = []
        for tid, flat, where in sources:
            if flat is None:
                flat = self._read_missing(tid, *where)
            flats.append((tid, flat))
        batch = _gather(flats, groups, local, n)
        return jax.tree_util.tree_map(jnp.asarray, batch) if as_jax else batch

    def sample_jax(self, num_chunks: int) -> dict[str, Any]:
        """:meth:`sample` returning jax arrays (``jnp.asarray`` of each field)."""
        return self.sample(num_chunks, as_jax=True)

    def _memory_flat(self, tid: int) -> dict | None:
        held = self._resident.get(tid)
        if held is not None:
            return held[1]
        return self._cache.get(tid) if self._cache is not None else None

    def _read_missing(self, tid: int, path: str | None, entry: dict, fmt: str) -> dict:
        if path is None:
            raise FileNotFoundError(f"trajectory {tid} has no file and is not in memory")
        flat = self._read_flat(tid, path, entry, fmt)
        with self._lock:
            if self._cache is not None and self._index.get(tid) is entry:
                self._cache.put(tid, flat)
        return flat

    @staticmethod
    def _read_flat(tid: int, path: str, entry: dict, fmt: str) -> dict:
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

    # ----------------------------------------------------------------------- persistence

    def _check_writer(self) -> None:
        if self._writer is not None:
            self._writer.check()

    def _rng_state(self) -> dict:
        with self._rng_lock:
            return self._rng.bit_generator.state

    def flush(self) -> None:
        """Block until everything added so far is durable on disk (files + listing).

        Raises :class:`~jaxbuf.errors.TrajectoryWriteError` if a write failed.
        A no-op when not persisting.
        """
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Drain the background writer and stop its thread (idempotent). A later add with
        persistence starts a new writer."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> TrajectoryReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save_checkpoint(self, save_path: str | os.PathLike, *, show_progress: bool = False) -> None:
        """Write a self-contained checkpoint directory at ``save_path``.

        Waits for pending writes, then hard-links (or copies, across filesystems) every
        trajectory file into ``save_path`` and writes the index and the metadata superset
        (``storage_dir`` = ``save_path``, both format keys, sampler RNG state), so jaxbuf and
        both RLinf generations load it. Needs ``save_trajectories=True``.
        """
        if not self._persist:
            raise RuntimeError(
                "save_checkpoint needs save_trajectories=True (auto_save=True); "
                "this buffer keeps trajectories only in memory"
            )
        self._check_writer()
        with self._lock:
            ids = list(self._ids)
            index = {tid: self._index[tid] for tid in ids}
            counter, seed, fmt = self._counter, self._seed, self._fmt
            state = self._rng_state()
        self._writer.flush()
        with self._lock:
            sources = {tid: self._paths.get(tid) for tid in ids}
        lost = [tid for tid, path in sources.items() if path is None]
        if lost:
            raise RuntimeError(f"trajectories {lost[:10]} have no file to checkpoint")
        save_path = os.path.abspath(os.fspath(save_path))
        if os.path.isdir(save_path) and os.path.samefile(save_path, self._storage_dir):
            write_listing(save_path, fmt, ids, index, counter, seed, state)
        else:
            write_checkpoint(
                save_path,
                fmt,
                ids,
                index,
                sources,
                counter,
                seed,
                state,
                show_progress=show_progress,
            )

    def load_checkpoint(
        self,
        load_path: str | os.PathLike,
        is_distributed: bool = False,
        local_rank: int = 0,
        world_size: int = 1,
        *,
        skip_corrupt: bool = False,
        verify: bool = True,
        show_progress: bool = False,
    ) -> LoadReport:
        """Replace the buffer's contents with a buffer directory (jaxbuf's or RLinf's).

        With ``is_distributed`` only rank ``local_rank``'s contiguous block of
        ``trajectory_id_list`` is loaded (:func:`~jaxbuf.trajectory.checkpoint.partition_ids`).
        Files are found in ``load_path`` or, for RLinf's pointer checkpoints, in the
        ``storage_dir`` the metadata names. The format and seed are restored from metadata, and
        the sampler state too when jaxbuf wrote it (non-distributed loads; a distributed load
        seeds from ``(seed, local_rank)``). The cache is refilled with the last ``cache_size``
        trajectories. When persisting, the loaded files are hard-linked (or copied) into
        ``storage_dir`` in the background so it stays a complete buffer; ``load_path`` is never
        written to.

        Every file is read and checked when ``verify`` (default); otherwise only existence is
        checked now and a corrupt file surfaces at ``sample``. A missing file raises
        FileNotFoundError naming it, a corrupt one
        :class:`~jaxbuf.errors.TrajectoryFileError`; with ``skip_corrupt`` those
        trajectories are left out instead and listed in the returned report.
        """
        self._check_writer()
        if self._writer is not None:
            self._writer.flush()
        listing = read_listing(
            load_path, is_distributed=is_distributed, local_rank=local_rank, world_size=world_size
        )
        fmt = check_format(listing.fmt, f"the format of {listing.directory}")
        same_dir = self._persist and os.path.samefile(listing.directory, self._storage_dir)
        if same_dir and is_distributed:
            raise ValueError(
                f"cannot load a rank's share of {listing.directory} into a buffer "
                "that persists to that same directory (it would rewrite its "
                "listing); use another storage_dir"
            )
        cache_ids = set(listing.ids[-self._cache.capacity :]) if self._cache is not None else set()
        kept: list[int] = []
        skipped: list[SkippedTrajectory] = []
        flats: dict[int, dict] = {}
        for tid in progress_iter(listing.ids, len(listing.ids), "load", enabled=show_progress):
            path = listing.paths[tid]
            try:
                if path is None:
                    raise FileNotFoundError(
                        f"trajectory {tid}: file {listing.expected[tid]} not found (listed in "
                        f"{listing.directory})"
                    )
                if verify or tid in cache_ids:
                    flat = self._read_flat(tid, path, listing.index[tid], fmt)
                    if tid in cache_ids:
                        flats[tid] = flat
            except (FileNotFoundError, TrajectoryFileError) as exc:
                if not skip_corrupt:
                    raise
                skipped.append(SkippedTrajectory(tid, path or listing.expected[tid], str(exc)))
                continue
            kept.append(tid)

        seed = listing.seed if listing.seed is not None else self._seed
        rng = self._restored_rng(seed, listing, is_distributed, local_rank)
        with self._lock:
            self._index = {tid: listing.index[tid] for tid in kept}
            self._ids = kept
            self._total = int(sum(self._index[tid]["num_samples"] for tid in kept))
            self._counter = listing.counter
            self._paths = {tid: listing.paths[tid] for tid in kept}
            self._resident = OrderedDict()
            self._fmt = fmt
            self._seed = seed
            with self._rng_lock:
                self._rng = rng
            if self._cache is not None:
                self._cache.clear()
                for tid in kept[-self._cache.capacity :]:
                    if tid in flats:  # with skips, ids before the refill range may now fall in
                        self._cache.put(tid, flats[tid])
            self._version += 1
            if self._persist:
                self._submit_adoption(kept)
        return LoadReport(path=listing.directory, fmt=fmt, loaded=list(kept), skipped=skipped)

    @staticmethod
    def _restored_rng(
        seed: int, listing: BufferListing, is_distributed: bool, local_rank: int
    ) -> np.random.Generator:
        """The sampler after a load: per-rank seed when distributed, else the saved state."""
        if is_distributed:
            return np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(local_rank,)))
            )
        rng = np.random.Generator(np.random.PCG64(seed))
        if listing.rng_state is not None:
            try:
                rng.bit_generator.state = listing.rng_state
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"{os.path.join(listing.directory, METADATA_FILE)}: invalid "
                    f"jaxbuf.rng_state: {exc}"
                ) from exc
        return rng

    def _submit_adoption(self, ids: list[int]) -> None:
        """Queue: forget the on-disk listing, link each loaded file into storage_dir, relist."""

        def reset() -> None:
            self._durable = {}

        self._writer.submit(reset, "resetting the listing")
        for tid in ids:
            entry, src = self._index[tid], self._paths[tid]
            dst = os.path.join(
                self._storage_dir, trajectory_file_name(tid, entry["model_weights_id"], self._fmt)
            )

            def adopt(tid=tid, entry=entry, src=src, dst=dst) -> None:
                if not (os.path.exists(dst) and os.path.samefile(src, dst)):
                    atomic_link_or_copy(src, dst)
                with self._lock:
                    if self._paths.get(tid) == src:
                        self._paths[tid] = dst
                self._durable[tid] = entry

            self._writer.submit(adopt, f"linking {src} into {self._storage_dir}")
        self._submit_listing()

    # ------------------------------------------------------------------------- clearing

    def clear(self) -> None:
        """Forget every trajectory and reset the counters (ids restart at 0).

        Pending writes are completed first. Files on disk are not deleted (later ids reuse
        their names, replacing them atomically); when persisting, the on-disk listing is
        rewritten as empty.
        """
        self.flush()
        with self._lock:
            self._index, self._ids, self._paths = {}, [], {}
            self._resident = OrderedDict()
            self._counter = self._total = 0
            if self._cache is not None:
                self._cache.clear()
            self._version += 1
            if self._persist:
                self._submit_adoption([])

    def clear_cache(self) -> None:
        """Empty the read cache. The background writer keeps running (unlike RLinf), and
        trajectories that exist only in memory are kept."""
        with self._lock:
            if self._cache is not None:
                self._cache.clear()


def _gather(
    flats: list[tuple[int, dict]], groups: list[np.ndarray], local: np.ndarray, n: int
) -> dict[str, Any]:
    """Assemble the batch: rows ``groups[j]`` come from ``flats[j]`` at rows ``local[...]``."""
    tid0, template = flats[0]
    sig0 = _signature(template)
    batch: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, dict):
            batch[key] = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in value.items()}
        else:
            batch[key] = np.empty((n, *value.shape[1:]), value.dtype)
    for (tid, flat), rows in zip(flats, groups, strict=True):
        if flat is not template and _signature(flat) != sig0:
            raise ValueError(
                f"trajectories {tid0} and {tid} in the sampling window have different fields, "
                f"shapes or dtypes: {sig0} vs {_signature(flat)}"
            )
        src = local[rows]
        for key, value in flat.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    batch[key][k][rows] = v[src]
            else:
                batch[key][rows] = value[src]
    return batch
