"""Durability of ``TrajectoryReplayBuffer``: flush, checkpoints, loading, clearing.

A mixin of :class:`~jaxbuf.trajectory.buffer.TrajectoryReplayBuffer`; it uses the buffer's
state (``_index``, ``_ids``, ``_paths``, ``_files``, ``_writer``, ...) under its lock. The
contract (also in ``docs/rlinf-mode.md``):

* after :meth:`flush` returns, every trajectory added before it is in ``storage_dir`` under its
  final name, fsynced, and named (with size and sha256) by the fsynced listing;
* a write that fails stays pending; ``flush`` retries it and raises
  :class:`~jaxbuf.errors.TrajectoryWriteError` naming the trajectories until it succeeds or
  :meth:`drop_failed_writes` gives them up;
* after :meth:`save_checkpoint` returns, the checkpoint is complete and durable; a crash
  during it leaves the previous checkpoint at that path (or the new one), never a mix.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import numpy as np

from jaxbuf.errors import (
    BufferStateError,
    CheckpointError,
    InputError,
    TrajectoryFileError,
    TrajectoryNotFoundError,
    TrajectoryWriteError,
)
from jaxbuf.trajectory.atomic import atomic_link_or_copy
from jaxbuf.trajectory.checkpoint import (
    LoadReport,
    SkippedTrajectory,
    recover_checkpoint,
    write_checkpoint,
)
from jaxbuf.trajectory.formats import check_format
from jaxbuf.trajectory.listing import METADATA_FILE, BufferListing, read_listing
from jaxbuf.trajectory.names import file_info, trajectory_file_name, verify_file
from jaxbuf.trajectory.progress import progress as progress_iter
from jaxbuf.trajectory.sampling import layout_difference, signature

__all__ = ["PersistenceMixin"]

_RETRY_HINT = "; flush() retries them, drop_failed_writes() gives them up"


class PersistenceMixin:
    """flush/close/save_checkpoint/load_checkpoint/clear of the trajectory buffer."""

    _writer: Any
    _lock: Any

    def _check_writer(self) -> None:
        if self._writer is not None:
            self._writer.check()

    def flush(self) -> None:
        """Block until everything added so far is durable on disk (files + listing).

        A write that failed earlier is retried first. Raises
        :class:`~jaxbuf.errors.TrajectoryWriteError` naming the trajectories (also in its
        ``trajectory_ids`` attribute) as long as any is not durable: every call raises
        until a retry succeeds or :meth:`drop_failed_writes` gives them up. A no-op when not
        persisting.
        """
        if self._writer is None:
            return
        if self._writer.failed():
            self._writer.retry()
            with self._lock:
                self._submit_listing()
        try:
            self._writer.flush(_RETRY_HINT)
        except TrajectoryWriteError as err:
            keys = getattr(err, "keys", [])
            err.trajectory_ids = sorted(k[1] for k in keys if k[0] == "trajectory")
            raise

    def drop_failed_writes(self) -> list[int]:
        """Give up the trajectories whose write failed: they leave the buffer (index, memory
        and cache) and the listing is rewritten without them. Returns their ids.

        After this, :meth:`flush` no longer raises for them. A no-op when nothing failed.
        """
        if self._writer is None:
            return []
        self._writer.wait()
        failed = list(self._writer.failed())
        tids = sorted(k[1] for k in failed if k[0] == "trajectory")
        self._writer.discard(failed)
        with self._lock:
            for tid in tids:
                entry = self._index.pop(tid, None)
                if entry is None:
                    continue
                self._ids.remove(tid)
                self._total -= entry["num_samples"]
                self._resident.pop(tid, None)
                self._paths.pop(tid, None)
                self._files.pop(tid, None)
                if self._cache is not None:
                    self._cache.discard(tid)
            self._version += 1
            self._submit_listing()
        self.flush()
        return tids

    def close(self) -> None:
        """Drain the background writer and stop its thread (idempotent). Raises like
        :meth:`flush` while a failed write is pending. A later add with persistence starts
        a new writer."""
        if self._writer is not None:
            self._writer.close(_RETRY_HINT)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save_checkpoint(
        self,
        save_path: str | os.PathLike,
        *,
        overwrite: bool = False,
        show_progress: bool = False,
    ) -> None:
        """Write a self-contained checkpoint directory at ``save_path``.

        Flushes first (raising if a write is not durable), then builds the checkpoint beside
        ``save_path`` (hard links, or copies across filesystems, of every trajectory file,
        the index with each file's size and sha256, and the metadata superset both RLinf
        generations load) and switches it into place atomically: when this returns the
        checkpoint is durable, and a crash before leaves the previous checkpoint at
        ``save_path`` intact. The directory is replaced as a whole. A non-empty
        ``save_path`` that is not a checkpoint of this buffer (or of the checkpoint it was
        loaded from) is refused with CheckpointError unless ``overwrite=True``.
        ``save_path == storage_dir`` only rewrites the listing. Needs
        ``save_trajectories=True``.
        """
        if not self._persist:
            raise BufferStateError(
                "jaxbuf: save_checkpoint needs save_trajectories=True (auto_save=True); "
                "this buffer keeps trajectories only in memory"
            )
        self._check_writer()
        self.flush()
        save_path = os.path.abspath(os.fspath(save_path))
        if os.path.isdir(save_path) and os.path.samefile(save_path, self._storage_dir):
            with self._lock:
                self._submit_listing()
            self.flush()
            return
        real = os.path.realpath(save_path)
        storage = os.path.realpath(self._storage_dir)
        if os.path.commonpath([real, storage]) == real:
            raise InputError(
                f"jaxbuf: save path {save_path} contains this buffer's storage_dir "
                f"{self._storage_dir}; "
                "a checkpoint replaces its directory as a whole"
            )
        with self._lock:
            ids = list(self._ids)
            index = {tid: self._index[tid] for tid in ids}
            sources = {tid: self._paths.get(tid) for tid in ids}
            files = {tid: self._files.get(tid) for tid in ids}
            counter, seed, fmt, uid = self._counter, self._seed, self._fmt, self._uid
            state = self._rng_state()
        lost = [tid for tid, path in sources.items() if path is None]
        if lost:
            raise BufferStateError(f"jaxbuf: trajectories {lost[:10]} have no file to checkpoint")
        write_checkpoint(
            save_path,
            fmt,
            ids,
            index,
            sources,
            counter,
            seed,
            state,
            files=files,
            buffer_id=uid,
            overwrite=overwrite,
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
        ``trajectory_id_list`` is loaded (:func:`~jaxbuf.trajectory.partition_ids`).
        Files are found in ``load_path`` or, for RLinf's pointer checkpoints, in the
        ``storage_dir`` the metadata names. The format and seed are restored from metadata, and
        the sampler state too when jaxbuf wrote it (non-distributed loads; a distributed load
        seeds from ``(seed, local_rank)``). The cache is refilled with the last ``cache_size``
        trajectories. When persisting, the loaded files are hard-linked (or copied) into
        ``storage_dir`` in the background so it stays a complete buffer; ``load_path`` is never
        written to (except to finish a ``save_checkpoint`` that a crash interrupted).

        Each file's size is checked against the listing, and when ``verify`` (default) every
        file is read, its sha256 compared with the listing's (listings written by RLinf have
        none) and its contents checked against its index entry; otherwise only existence and
        size are checked now and a corrupt file surfaces at ``sample``. A missing file raises
        FileNotFoundError naming it, a corrupt one (or a symlink leaving its directory)
        :class:`~jaxbuf.errors.TrajectoryFileError`; with ``skip_corrupt`` those
        trajectories are left out instead and listed in the returned report.
        """
        self.flush()
        if not os.path.lexists(os.fspath(load_path)):
            recover_checkpoint(os.fspath(load_path))
        listing = read_listing(
            load_path, is_distributed=is_distributed, local_rank=local_rank, world_size=world_size
        )
        fmt = check_format(listing.fmt, f"the format of {listing.directory}")
        same_dir = self._persist and os.path.samefile(listing.directory, self._storage_dir)
        if same_dir and is_distributed:
            raise InputError(
                f"jaxbuf: cannot load a rank's share of {listing.directory} into a buffer "
                "that persists to that same directory (it would rewrite its "
                "listing); use another storage_dir"
            )
        cache_ids = set(listing.ids[-self._cache.capacity :]) if self._cache is not None else set()
        kept: list[int] = []
        skipped: list[SkippedTrajectory] = []
        flats: dict[int, dict] = {}
        layout = None
        for tid in progress_iter(listing.ids, len(listing.ids), "load", enabled=show_progress):
            path = listing.paths[tid]
            try:
                if tid in listing.refused:
                    raise listing.refused[tid]
                if path is None:
                    raise TrajectoryNotFoundError(
                        f"jaxbuf: trajectory {tid}: file {listing.expected[tid]} not found "
                        f"(listed in "
                        f"{listing.directory})"
                    )
                info = listing.files.get(tid)
                verify_file(path, info, content=False)
                if verify or tid in cache_ids or layout is None:
                    flat = self._read_flat(tid, path, listing.index[tid], fmt, info)
                    sig = signature(flat)
                    problem = layout_difference(layout, sig) if layout is not None else None
                    if problem is not None:
                        raise TrajectoryFileError(
                            path, f"layout differs from trajectory {kept[0]}'s: {problem}"
                        )
                    layout = sig if layout is None else layout
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
            self._files = {tid: listing.files.get(tid) for tid in kept}
            self._resident = OrderedDict()
            self._fmt = fmt
            self._seed = seed
            self._layout = layout if kept else None
            if listing.buffer_id is not None and (same_dir or not is_distributed):
                self._uid = listing.buffer_id
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
                    f"jaxbuf: {os.path.join(listing.directory, METADATA_FILE)}: invalid "
                    f"jaxbuf.rng_state: {exc}"
                ) from exc
        return rng

    def _submit_adoption(self, ids: list[int]) -> None:
        """Queue: forget the on-disk listing, link each loaded file into storage_dir, relist."""

        def reset() -> None:
            self._durable = {}

        self._writer.submit(reset, "resetting the listing")
        for tid in ids:
            entry, src, info = self._index[tid], self._paths[tid], self._files.get(tid)
            dst = os.path.join(
                self._storage_dir, trajectory_file_name(tid, entry["model_weights_id"], self._fmt)
            )

            def adopt(tid=tid, entry=entry, src=src, dst=dst, info=info) -> None:
                if not (os.path.exists(dst) and os.path.samefile(src, dst)):
                    atomic_link_or_copy(src, dst)
                if info is None:
                    info = file_info(dst)
                else:
                    info = dict(info, name=os.path.basename(dst))
                with self._lock:
                    if self._paths.get(tid) == src:
                        self._paths[tid] = dst
                        self._files[tid] = info
                self._durable[tid] = (entry, info)

            self._writer.submit(
                adopt,
                f"trajectory {tid}: linking {src} into {self._storage_dir}",
                ("trajectory", tid),
            )
        self._submit_listing()

    def clear(self) -> None:
        """Forget every trajectory and reset the counters (ids restart at 0).

        Removes from the buffer: every index entry, the in-memory and cached trajectories,
        the learnt field layout, and any failed write still pending (those trajectories are
        given up). When persisting, pending writes are completed first and the listing of
        ``storage_dir`` is rewritten as empty. Trajectory files are **not** deleted: later
        ids reuse their names (replacing them atomically), and a file that no listing names
        is never loaded. Checkpoints saved earlier are not touched.
        """
        if self._writer is not None:
            self._writer.wait()
            self._writer.discard(list(self._writer.failed()))
        self.flush()
        with self._lock:
            self._index, self._ids, self._paths, self._files = {}, [], {}, {}
            self._resident = OrderedDict()
            self._counter = self._total = 0
            self._layout = None
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
