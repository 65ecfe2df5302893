"""Checkpoint directories written by ``save_checkpoint``: built aside, then switched in.

A checkpoint is a self-contained buffer directory (see :mod:`jaxbuf.trajectory.listing`).
:func:`write_checkpoint` never edits one in place: it builds the new checkpoint in a hidden
sibling ``.<name>.tmp-<pid>-<hex>`` (hard links, or copies across filesystems, plus the
listing), fsyncs it and then switches it into place:

* when nothing (or an empty directory) is at the path, with one ``rename``;
* otherwise with Linux's ``renameat2(RENAME_EXCHANGE)``, which swaps the two directories
  atomically; the old one, now under the hidden name, is then deleted;
* where that call does not exist, by renaming the old directory to
  ``.<name>.tmp-old-<pid>-<hex>`` and the new one into place. A crash between the two renames
  leaves no directory at the path; :func:`recover_checkpoint` (run by the next
  ``save_checkpoint`` or ``load_checkpoint`` of that path) puts the complete new one there.

So a crash at any point leaves either the old checkpoint or the new one, bit for bit, plus
hidden leftovers that the next save removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import shutil
from collections.abc import Sequence

from jaxbuf.errors import CheckpointError, DestinationExistsError
from jaxbuf.trajectory.atomic import (
    atomic_link_or_copy,
    fsync_dir,
    remove_stale_temps,
    temp_path_for,
)
from jaxbuf.trajectory.listing import (
    METADATA_FILE,
    BufferListing,
    partition_ids,
    read_json,
    read_listing,
    write_listing,
)
from jaxbuf.trajectory.names import trajectory_file_name
from jaxbuf.trajectory.progress import progress as progress_iter

__all__ = [
    "BufferListing",
    "LoadReport",
    "SkippedTrajectory",
    "partition_ids",
    "read_listing",
    "recover_checkpoint",
    "trajectory_file_name",
    "write_checkpoint",
    "write_listing",
]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclasses.dataclass
class SkippedTrajectory:
    """A trajectory left out by ``load_checkpoint(skip_corrupt=True)``.

    Found in :attr:`LoadReport.skipped` (see its example for a damaged file):

    >>> from jaxbuf.trajectory import SkippedTrajectory
    >>> skipped = SkippedTrajectory(1, "/data/ckpt/trajectory_1_.pt", "jaxbuf: corrupt ...")
    >>> skipped.trajectory_id, skipped.path
    (1, '/data/ckpt/trajectory_1_.pt')
    """

    trajectory_id: int
    path: str
    reason: str


@dataclasses.dataclass
class LoadReport:
    """What ``load_checkpoint`` loaded: ids in list order, and what it skipped.

    ``load_checkpoint(..., skip_corrupt=True)`` leaves a damaged file out instead of raising:

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> root = tempfile.mkdtemp()
    >>> with TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "run")) as buffer:
    ...     _ = buffer.add_trajectories([Trajectory(rewards=np.ones((2, 2))) for _ in range(3)])
    ...     buffer.save_checkpoint(os.path.join(root, "ckpt"))
    >>> with open(os.path.join(root, "ckpt", "trajectory_1_.pt"), "r+b") as f:
    ...     _ = f.write(b"damaged")
    >>> with TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "new")) as buffer:
    ...     report = buffer.load_checkpoint(os.path.join(root, "ckpt"), skip_corrupt=True)
    >>> report.fmt, report.loaded, [s.trajectory_id for s in report.skipped]
    ('pt', [0, 2], [1])
    >>> print(report.skipped[0].reason)
    jaxbuf: corrupt trajectory file .../trajectory_1_.pt: sha256 ... differs from the listed ...
    """

    path: str
    fmt: str
    loaded: list[int]
    skipped: list[SkippedTrajectory]


def _load_renameat2():
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None


_renameat2 = _load_renameat2()


def exchange(a: str, b: str) -> bool:
    """Swap the directory entries ``a`` and ``b`` atomically; False where unsupported."""
    if _renameat2 is None:
        return False
    res = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _asides(target: str) -> tuple[list[str], list[str]]:
    """(complete new, old) hidden siblings of ``target``."""
    parent, name = os.path.split(target)
    new, old = [], []
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(parent)):
            if not entry.startswith(f".{name}.tmp-"):
                continue
            path = os.path.join(parent, entry)
            if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, METADATA_FILE)):
                continue
            (old if entry.startswith(f".{name}.tmp-old-") else new).append(path)
    return new, old


def recover_checkpoint(target: str) -> str | None:
    """Finish a switch that a crash interrupted: when nothing is at ``target`` but a complete
    new checkpoint (or, failing that, the old one) waits beside it, rename it into place.

    Returns the directory put in place, or None when there was nothing to do.
    """
    target = os.path.realpath(os.fspath(target))
    if os.path.lexists(target):
        return None
    new, old = _asides(target)
    chosen = (new or old or [None])[0]
    if chosen is not None:
        os.rename(chosen, target)
        fsync_dir(os.path.dirname(target))
    return chosen


def _owner(target: str) -> str | None:
    try:
        meta = read_json(os.path.join(target, METADATA_FILE), "buffer metadata")
    except (OSError, CheckpointError):
        return None
    jaxbuf_meta = meta.get("jaxbuf") if isinstance(meta, dict) else None
    return jaxbuf_meta.get("buffer_id") if isinstance(jaxbuf_meta, dict) else None


def _check_overwrite(target: str, buffer_id: str | None, overwrite: bool) -> None:
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise DestinationExistsError(
            f"jaxbuf: checkpoint path {target} exists and is not a directory"
        )
    if overwrite or not os.listdir(target):
        return
    owner = _owner(target)
    if owner is not None and owner == buffer_id:
        return
    what = (
        "a checkpoint of another buffer"
        if os.path.isfile(os.path.join(target, METADATA_FILE))
        else "files that are not a checkpoint of this buffer"
    )
    raise CheckpointError(
        f"jaxbuf: save_checkpoint: {target} already holds {what}; pass overwrite=True to "
        "replace the whole directory"
    )


def _switch(aside: str, target: str) -> None:
    parent = os.path.dirname(target)
    if not os.path.lexists(target) or (os.path.isdir(target) and not os.listdir(target)):
        os.replace(aside, target)
        fsync_dir(parent)
        return
    if exchange(aside, target):
        fsync_dir(parent)
        shutil.rmtree(aside, ignore_errors=True)
        return
    old = temp_path_for(target, kind="old-")
    os.rename(target, old)
    os.rename(aside, target)
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(
    directory: str,
    fmt: str,
    ids: Sequence[int],
    index: dict[int, dict],
    sources: dict[int, str],
    counter: int,
    seed: int | None,
    rng_state: dict | None,
    *,
    files: dict[int, dict | None] | None = None,
    buffer_id: str | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> str:
    """Make ``directory`` a self-contained buffer holding ``ids`` (module docstring).

    Each file comes from ``sources[id]`` (hard-linked, or copied across filesystems) under
    its canonical name; ``files[id]`` is its checksum record. A directory that is not empty
    and not a checkpoint written by ``buffer_id`` is refused (CheckpointError) unless
    ``overwrite``. Returns the real path written.
    """
    target = os.path.realpath(os.fspath(directory))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    recover_checkpoint(target)
    remove_stale_temps(parent, prefix=f".{os.path.basename(target)}.tmp-")
    _check_overwrite(target, buffer_id, overwrite)
    aside = temp_path_for(target)
    os.mkdir(aside)
    try:
        for tid in progress_iter(ids, len(ids), "checkpoint", enabled=show_progress):
            name = trajectory_file_name(tid, index[tid]["model_weights_id"], fmt)
            atomic_link_or_copy(sources[tid], os.path.join(aside, name))
        write_listing(
            aside,
            fmt,
            ids,
            index,
            counter,
            seed,
            rng_state,
            files=files,
            buffer_id=buffer_id,
            storage_dir=target,
        )
        fsync_dir(aside)
        _switch(aside, target)
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)
        raise
    return target
