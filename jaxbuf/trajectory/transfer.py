"""Merge rank buffers into one, or split the head off a buffer: resumable in every mode.

A transfer first writes its whole plan to the destination's :data:`INCOMPLETE_FILE` marker
(and, with ``mode="move"``, a marker in every source directory), then transfers the files,
writes the destination listing, updates the sources (move only) and removes the markers last.
While a marker exists ``load_checkpoint`` refuses the directory and names the command that
finishes the job; rerunning that same command resumes from the plan: files already moved are
found at their destination, copies are redone, and the listings are rewritten. Every file's
size and sha256 is recorded in the destination listing (and checked against the source
listing's record when it has one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Sequence

from jaxbuf.errors import (
    CheckpointError,
    DestinationExistsError,
    InputError,
    TrajectoryFileError,
    TrajectoryNotFoundError,
)
from jaxbuf.trajectory.atomic import (
    atomic_copy,
    atomic_link_or_copy,
    atomic_move,
    atomic_write_json,
    fsync_dir,
)
from jaxbuf.trajectory.listing import (
    INCOMPLETE_FILE,
    INDEX_FILE,
    LEGACY_INDEX_FILE,
    METADATA_FILE,
    BufferListing,
    read_json,
    read_listing,
    write_listing,
)
from jaxbuf.trajectory.names import check_listed_name, file_info, trajectory_file_name
from jaxbuf.trajectory.progress import progress as progress_iter

__all__ = ["TransferReport", "merge_buffers", "split_buffer"]

_MODES = ("copy", "move", "link")


@dataclasses.dataclass
class TransferReport:
    """Result of :func:`merge_buffers` / :func:`split_buffer`.

    ``mapping`` lists ``(source buffer dir, old id, new id)`` in new-id order.

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> from jaxbuf.trajectory import split_buffer
    >>> root = tempfile.mkdtemp()
    >>> with TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "run")) as buffer:
    ...     _ = buffer.add_trajectories([Trajectory(rewards=np.ones((2, 3))) for _ in range(4)])
    >>> report = split_buffer(os.path.join(root, "run"), os.path.join(root, "head"), 2)
    >>> report.count, report.total_samples
    (2, 12)
    >>> for source, old, new in report.mapping:
    ...     print(os.path.basename(source), old, "->", new)
    run 0 -> 0
    run 1 -> 1
    """

    save_path: str
    count: int
    total_samples: int
    mapping: list[tuple[str, int, int]]


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise InputError(f"jaxbuf: mode must be one of {_MODES}, got {mode!r}")


def _command(op: str, source: str, save: str, mode: str, split_count: int | None) -> str:
    count = f" --split-count {split_count}" if split_count is not None else ""
    return f"`jaxbuf {op} --source-path {source} --save-path {save}{count} --{mode}`"


def _check_destination(save_path: str, sources: Sequence[str]) -> None:
    for src in sources:
        if os.path.commonpath([save_path, src]) in (save_path, src):
            raise InputError(
                f"jaxbuf: save path {save_path} must not contain or lie inside the source buffer "
                f"{src}"
            )
    if os.path.exists(os.path.join(save_path, METADATA_FILE)):
        raise DestinationExistsError(
            f"jaxbuf: save path {save_path} already holds a buffer "
            f"({METADATA_FILE}); choose an empty directory"
        )


def _require_files(listing: BufferListing, ids: Sequence[int]) -> None:
    for tid in ids:
        if tid in listing.refused:
            raise listing.refused[tid]
    missing = [listing.expected[tid] for tid in ids if listing.paths[tid] is None]
    if missing:
        raise TrajectoryNotFoundError(
            f"jaxbuf: {len(missing)} trajectory file(s) listed in "
            f"{listing.directory} are missing, first: {missing[0]}"
        )


def _rank_dirs(source_path: str) -> list[tuple[int, str]]:
    ranks = []
    for name in os.listdir(source_path):
        full = os.path.join(source_path, name)
        if not name.startswith("rank_") or not os.path.isdir(full):
            continue
        match = re.fullmatch(r"rank_(\d+)", name)
        if match is None:
            raise InputError(f"jaxbuf: {full}: rank directories must be named rank_<integer>")
        ranks.append((int(match.group(1)), full))
    if not ranks:
        raise TrajectoryNotFoundError(f"jaxbuf: no rank_* buffer directories in {source_path}")
    return sorted(ranks)


def _plan_item(listing: BufferListing, old: int, new: int, fmt: str) -> dict:
    entry = dict(listing.index[old], trajectory_id=new)
    src = listing.paths[old]
    return {
        "from": listing.directory,
        "dir": os.path.dirname(src),
        "name": os.path.basename(src),
        "old": old,
        "new": new,
        "entry": entry,
        "dst": trajectory_file_name(new, entry["model_weights_id"], fmt),
        "file": listing.files.get(old),
    }


def _resume_marker(save_path: str, job: dict) -> dict | None:
    """The plan of an interrupted run of the same job at ``save_path``, or None."""
    path = os.path.join(save_path, INCOMPLETE_FILE)
    if not os.path.lexists(path):
        return None
    marker = read_json(path, "transfer marker")
    keys = ("operation", "source", "split_count")
    if not isinstance(marker, dict) or marker.get("role") != "destination":
        raise CheckpointError(f"jaxbuf: {path}: not a transfer marker jaxbuf wrote")
    if any(marker.get(k) != job[k] for k in keys) or marker.get("mode") != job["mode"]:
        raise CheckpointError(
            f"jaxbuf: {save_path} holds an interrupted {marker.get('operation')} "
            f"({marker.get('mode')}) from {marker.get('source')}; rerun "
            f"{marker.get('command')} to finish it"
        )
    for item in marker.get("plan", []):
        check_listed_name(item["name"], item["old"], os.path.splitext(item["name"])[1], path)
        check_listed_name(item["dst"], item["new"], os.path.splitext(item["dst"])[1], path)
    return marker


def _transfer_one(item: dict, save_path: str, mode: str) -> dict:
    src = os.path.join(item["dir"], item["name"])
    dst = os.path.join(save_path, item["dst"])
    if mode == "move":
        if os.path.lexists(src):
            atomic_move(src, dst)
        elif not os.path.isfile(dst):
            raise TrajectoryNotFoundError(
                f"jaxbuf: trajectory file {src} is gone and {dst} was not written"
            )
    elif mode == "copy":
        atomic_copy(src, dst)
    else:
        atomic_link_or_copy(src, dst)
    info = file_info(dst)
    listed = item.get("file")
    if listed is not None and (listed["size"], listed["sha256"]) != (info["size"], info["sha256"]):
        raise TrajectoryFileError(
            src, f"content (sha256 {info['sha256']}) differs from its listing's {listed['sha256']}"
        )
    return info


def _finish_sources(marker: dict) -> None:
    """Move mode: rewrite (split) or remove (merge) the source listings, then their markers."""
    for source in marker["sources"]:
        if marker["operation"] == "split":
            rest = marker["rest"]
            write_listing(
                source,
                marker["fmt"],
                rest["ids"],
                {int(k): v for k, v in rest["index"].items()},
                rest["counter"],
                marker["seed"],
                rest["rng_state"],
                files={int(k): v for k, v in rest["files"].items()},
                buffer_id=rest.get("buffer_id"),
            )
        else:
            for name in (METADATA_FILE, INDEX_FILE, LEGACY_INDEX_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(source, name))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(source, INCOMPLETE_FILE))
        fsync_dir(source)


def _run(marker: dict, save_path: str, show_progress: bool) -> TransferReport:
    plan, mode = marker["plan"], marker["mode"]
    index: dict[int, dict] = {}
    files: dict[int, dict] = {}
    for item in progress_iter(plan, len(plan), marker["operation"], enabled=show_progress):
        files[item["new"]] = _transfer_one(item, save_path, mode)
        index[item["new"]] = item["entry"]
    ids = [item["new"] for item in plan]
    write_listing(save_path, marker["fmt"], ids, index, len(ids), marker["seed"], files=files)
    if mode == "move":
        _finish_sources(marker)
    os.unlink(os.path.join(save_path, INCOMPLETE_FILE))
    fsync_dir(save_path)
    return TransferReport(
        save_path=save_path,
        count=len(ids),
        total_samples=int(sum(e["num_samples"] for e in index.values())),
        mapping=[(item["from"], item["old"], item["new"]) for item in plan],
    )


def _start(job: dict, listings: list[BufferListing], plan: list[dict], seed, extra: dict):
    save_path = job["save_path"]
    _check_destination(save_path, [listing.directory for listing in listings])
    os.makedirs(save_path, exist_ok=True)
    marker = dict(
        job,
        role="destination",
        fmt=listings[0].fmt,
        seed=seed,
        plan=plan,
        sources=[listing.directory for listing in listings],
        **extra,
    )
    atomic_write_json(os.path.join(save_path, INCOMPLETE_FILE), marker)
    if job["mode"] == "move":
        for listing in listings:
            atomic_write_json(
                os.path.join(listing.directory, INCOMPLETE_FILE),
                {k: marker[k] for k in ("operation", "mode", "source", "save_path", "command")}
                | {"role": "source"},
            )
    return marker


def _job(op: str, source: str, save: str, mode: str, split_count: int | None) -> dict:
    return {
        "operation": op,
        "mode": mode,
        "source": source,
        "save_path": save,
        "split_count": split_count,
        "command": _command(op, source, save, mode, split_count),
    }


def _begin(op: str, source_path, save_path, mode: str, split_count: int | None):
    """``(source_path, save_path, job, marker)`` of a transfer: absolute paths, the job
    description, and the marker of an interrupted run of the same job (or None)."""
    _check_mode(mode)
    source_path = os.path.abspath(os.fspath(source_path))
    save_path = os.path.abspath(os.fspath(save_path))
    job = _job(op, source_path, save_path, mode, split_count)
    return source_path, save_path, job, _resume_marker(save_path, job)


def merge_buffers(
    source_path: str, save_path: str, *, mode: str = "copy", show_progress: bool = False
) -> TransferReport:
    """Merge ``source_path/rank_*`` buffers into one buffer at ``save_path``.

    Rank directories are visited in **numeric** order (rank_2 before rank_10). New ids
    interleave by original id: for each original id in ascending order, each rank holding it
    (in rank order) gets the next new id, giving (id0, rank_0), (id0, rank_1), ..., (id1,
    rank_0), ... All ranks must share one format. The seed is the first rank's seed.
    ``mode``: ``"copy"`` (default), ``"link"`` (hard links, copy across filesystems) or
    ``"move"`` (the rank directories lose their files, and their metadata/index are removed
    so they no longer pose as buffers). An interrupted merge is finished by calling again
    with the same arguments (module docstring).

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> from jaxbuf.trajectory import merge_buffers
    >>> root = tempfile.mkdtemp()
    >>> for rank in range(2):  # what two ranks of a distributed run leave behind
    ...     path = os.path.join(root, "shares", f"rank_{rank}")
    ...     with TrajectoryReplayBuffer(seed=rank, storage_dir=path) as buffer:
    ...         _ = buffer.add_trajectories([Trajectory(rewards=np.full((2, 2), rank))] * 2)
    >>> report = merge_buffers(os.path.join(root, "shares"), os.path.join(root, "merged"))
    >>> for source, old, new in report.mapping:
    ...     print(os.path.basename(source), old, "->", new)
    rank_0 0 -> 0
    rank_1 0 -> 1
    rank_0 1 -> 2
    rank_1 1 -> 3
    >>> with TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "merged")) as merged:
    ...     merged.get_stats()["num_trajectories"]
    4
    """
    source_path, save_path, job, marker = _begin("merge", source_path, save_path, mode, None)
    if marker is None:
        _check_destination(save_path, [])
        ranks = _rank_dirs(source_path)
        listings = [read_listing(path) for _, path in ranks]
        fmt = listings[0].fmt
        for listing in listings[1:]:
            if listing.fmt != fmt:
                raise InputError(
                    f"jaxbuf: cannot merge formats {fmt!r} ({listings[0].directory}) and "
                    f"{listing.fmt!r} ({listing.directory})"
                )
        for listing in listings:
            _require_files(listing, listing.ids)
        members = [set(listing.ids) for listing in listings]
        plan: list[dict] = []
        for tid in sorted({tid for listing in listings for tid in listing.ids}):
            for listing, ids in zip(listings, members, strict=True):
                if tid in ids:
                    plan.append(_plan_item(listing, tid, len(plan), fmt))
        seed = next((listing.seed for listing in listings if listing.seed is not None), None)
        marker = _start(job, listings, plan, seed, {})
    return _run(marker, save_path, show_progress)


def split_buffer(
    source_path: str,
    save_path: str,
    split_count: int,
    *,
    mode: str = "copy",
    show_progress: bool = False,
) -> TransferReport:
    """Write the first ``split_count`` trajectories of ``trajectory_id_list`` as ids
    ``0..split_count-1`` of a new buffer at ``save_path``.

    ``mode="move"`` moves those files and rewrites the source listing to the remaining
    trajectories (RLinf's tool leaves it naming moved files). An interrupted split is
    finished by calling again with the same arguments (module docstring).

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> from jaxbuf.trajectory import read_listing, split_buffer
    >>> root = tempfile.mkdtemp()
    >>> with TrajectoryReplayBuffer(seed=0, storage_dir=os.path.join(root, "run")) as buffer:
    ...     _ = buffer.add_trajectories([Trajectory(rewards=np.ones((2, 2))) for _ in range(5)])
    >>> _ = split_buffer(os.path.join(root, "run"), os.path.join(root, "head"), 2, mode="move")
    >>> read_listing(os.path.join(root, "head")).ids, read_listing(os.path.join(root, "run")).ids
    ([0, 1], [2, 3, 4])
    """
    if isinstance(split_count, bool) or not isinstance(split_count, int) or split_count < 1:
        raise InputError(f"jaxbuf: split_count must be a positive int, got {split_count!r}")
    source_path, save_path, job, marker = _begin("split", source_path, save_path, mode, split_count)
    if marker is None:
        _check_destination(save_path, [])
        listing = read_listing(source_path)
        if len(listing.ids) < split_count:
            raise InputError(
                f"jaxbuf: split_count={split_count} but {listing.directory} lists only "
                f"{len(listing.ids)} trajectories"
            )
        head, rest = listing.ids[:split_count], listing.ids[split_count:]
        _require_files(listing, head)
        plan = [_plan_item(listing, old, new, listing.fmt) for new, old in enumerate(head)]
        remainder = {
            "ids": rest,
            "index": {str(t): listing.index[t] for t in rest},
            "counter": listing.counter,
            "rng_state": listing.rng_state,
            "files": {str(t): listing.files[t] for t in rest if listing.files.get(t)},
            "buffer_id": listing.buffer_id,
        }
        marker = _start(job, [listing], plan, listing.seed, {"rest": remainder})
    return _run(marker, save_path, show_progress)
