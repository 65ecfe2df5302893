"""RLinf buffer directories on disk: read/write listings, checkpoints, merge and split.

A *buffer directory* (format card, rlinf-semantics.md §16) holds ``metadata.json``,
``trajectory_index.json`` and one ``trajectory_{id}_{model_weights_id}.{pt|pkl|npz}`` file per
listed trajectory. jaxbuf writes the metadata superset that both RLinf generations load::

    {"storage_dir": <abs path of this dir>, "storage_format": f, "trajectory_format": f,
     "size": n, "total_samples": sum, "trajectory_counter": next_id, "seed": s,
     "jaxbuf": {"version": 1, "rng_state": <numpy PCG64 state>}}

and keeps the files in that same directory, so gen A follows ``storage_dir`` and gen B reads
``load_path``; both find the files. The index is written before the metadata, each atomically.

Readers accept both generations: the format comes from ``trajectory_format`` (gen B) or
``storage_format`` (gen A, default ``pt``); files are looked up in the directory itself, then
in ``metadata["storage_dir"]`` (gen A pointer checkpoints keep their files there); names come
from the index with the ``trajectory_{id}_*`` fallback of RLinf's merge tool; the legacy
``trajector_index.json`` is read when ``trajectory_index.json`` is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from jaxbuf.errors import CheckpointError
from jaxbuf.trajectory.atomic import (
    atomic_copy,
    atomic_link_or_copy,
    atomic_move,
    atomic_write_json,
    fsync_dir,
)
from jaxbuf.trajectory.formats import file_extension, format_from_metadata
from jaxbuf.trajectory.progress import progress as progress_iter

__all__ = [
    "INDEX_FILE",
    "LEGACY_INDEX_FILE",
    "METADATA_FILE",
    "BufferListing",
    "LoadReport",
    "SkippedTrajectory",
    "TransferReport",
    "build_metadata",
    "merge_buffers",
    "partition_ids",
    "read_listing",
    "split_buffer",
    "trajectory_file_name",
    "write_checkpoint",
    "write_listing",
]

METADATA_FILE = "metadata.json"
INDEX_FILE = "trajectory_index.json"
LEGACY_INDEX_FILE = "trajector_index.json"
METADATA_VERSION = 1
_MODES = ("copy", "move", "link")


def trajectory_file_name(trajectory_id: int, model_weights_id: str, fmt: str) -> str:
    """``trajectory_{id}_{model_weights_id}{ext}``; ``model_weights_id`` is opaque."""
    return f"trajectory_{int(trajectory_id)}_{model_weights_id}{file_extension(fmt)}"


def partition_ids(ids: Sequence[int], world_size: int, local_rank: int) -> list[int]:
    """Contiguous block of ``ids`` for one rank (§7): the first ``L % W`` ranks get one extra.

    ``start = r*(L//W) + min(r, L%W)``, ``length = L//W + (r < L%W)``; for example 3 ids over
    2 ranks give ``[0, 1]`` and ``[2]``.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size <= 0:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if (
        isinstance(local_rank, bool)
        or not isinstance(local_rank, int)
        or not 0 <= local_rank < world_size
    ):
        raise ValueError(f"local_rank must be an int in [0, {world_size}), got {local_rank!r}")
    per, rem = divmod(len(ids), world_size)
    start = local_rank * per + min(local_rank, rem)
    return list(ids[start : start + per + (1 if local_rank < rem else 0)])


@dataclasses.dataclass
class SkippedTrajectory:
    """A trajectory left out by ``load_checkpoint(skip_corrupt=True)``."""

    trajectory_id: int
    path: str
    reason: str


@dataclasses.dataclass
class LoadReport:
    """What ``load_checkpoint`` loaded: ids in list order, and what it skipped."""

    path: str
    fmt: str
    loaded: list[int]
    skipped: list[SkippedTrajectory]


@dataclasses.dataclass
class BufferListing:
    """The parsed listing of a buffer directory (or one rank's share of it).

    Attributes:
        directory: the directory read.
        fmt: trajectory format (``pt``/``pkl``/``npz``).
        seed: ``metadata["seed"]`` or None.
        ids: listed ids (the share when distributed), in list order.
        index: normalised index entries of ``ids``.
        paths: resolved file per id, None when no file was found.
        expected: the canonical file path per id (for messages).
        counter: next trajectory id.
        rng_state: jaxbuf's saved sampler state, or None.
        metadata: the raw metadata dict.
    """

    directory: str
    fmt: str
    seed: int | None
    ids: list[int]
    index: dict[int, dict]
    paths: dict[int, str | None]
    expected: dict[int, str]
    counter: int
    rng_state: dict | None
    metadata: dict


@dataclasses.dataclass
class TransferReport:
    """Result of :func:`merge_buffers` / :func:`split_buffer`.

    ``mapping`` lists ``(source buffer dir, old id, new id)`` in new-id order.
    """

    save_path: str
    count: int
    total_samples: int
    mapping: list[tuple[str, int, int]]


# ------------------------------------------------------------------------------- reading


def _read_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{where}: expected an int, got {value!r}")
    return value


def _normalise_entry(raw: Any, tid: int, path: str) -> dict:
    where = f"{path}: trajectory {tid}"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: index entry must be an object, got {raw!r}")
    for key in ("num_samples", "shape"):
        if key not in raw:
            raise CheckpointError(f"{where}: index entry lacks {key!r}")
    num_samples = _as_int(raw["num_samples"], f"{where}: num_samples")
    shape = raw["shape"]
    if not isinstance(shape, list) or len(shape) < 2:
        raise CheckpointError(f"{where}: shape must be a list [T, B, ...], got {shape!r}")
    shape = [_as_int(s, f"{where}: shape") for s in shape]
    if num_samples != shape[0] * shape[1] or num_samples < 0:
        raise CheckpointError(
            f"{where}: num_samples={num_samples} but shape {shape} gives T*B={shape[0] * shape[1]}"
        )
    entry_id = _as_int(raw.get("trajectory_id", tid), f"{where}: trajectory_id")
    if entry_id != tid:
        raise CheckpointError(f"{where}: index entry says trajectory_id={entry_id}")
    mwid = raw.get("model_weights_id", "")
    if not isinstance(mwid, str):
        raise CheckpointError(f"{where}: model_weights_id must be a str, got {mwid!r}")
    return {
        "num_samples": num_samples,
        "trajectory_id": tid,
        "max_episode_length": _as_int(
            raw.get("max_episode_length", 0), f"{where}: max_episode_length"
        ),
        "shape": shape,
        "model_weights_id": mwid,
    }


def _read_index(directory: str) -> tuple[str, dict[int, Any], list[int]]:
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(directory, LEGACY_INDEX_FILE)):
        path = os.path.join(directory, LEGACY_INDEX_FILE)
    data = _read_json(path, "trajectory index")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    raw_index = data.get("trajectory_index", {})
    raw_list = data.get("trajectory_id_list", [])
    if not isinstance(raw_index, dict) or not isinstance(raw_list, list):
        raise CheckpointError(
            f"{path}: trajectory_index must be an object and trajectory_id_list a list"
        )
    index: dict[int, Any] = {}
    for key, value in raw_index.items():
        try:
            index[int(key)] = value
        except ValueError as exc:
            raise CheckpointError(f"{path}: index key {key!r} is not an integer id") from exc
    ids = [_as_int(i, f"{path}: trajectory_id_list") for i in raw_list]
    if len(set(ids)) != len(ids):
        raise CheckpointError(f"{path}: trajectory_id_list holds duplicate ids")
    missing = [i for i in ids if i not in index]
    if missing:
        raise CheckpointError(
            f"{path}: trajectory_id_list names ids without index entries: {missing[:10]}"
        )
    return path, index, ids


def _file_candidates(directory: str, ext: str) -> dict[int, list[str]]:
    """Map id -> sorted file names ``trajectory_{id}_*{ext}`` present in ``directory``."""
    pattern = re.compile(r"trajectory_(\d+)_.*" + re.escape(ext) + r"\Z", re.DOTALL)
    found: dict[int, list[str]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        match = pattern.match(name)
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def read_listing(
    directory: str, *, is_distributed: bool = False, local_rank: int = 0, world_size: int = 1
) -> BufferListing:
    """Parse a buffer directory of either RLinf generation (see the module docstring).

    Raises FileNotFoundError naming a missing ``metadata.json``/``trajectory_index.json``,
    :class:`CheckpointError` naming a corrupt or inconsistent one, ValueError for a bad rank.
    Missing trajectory files are reported as ``paths[id] is None``, not raised.
    """
    directory = os.path.abspath(os.fspath(directory))
    meta_path = os.path.join(directory, METADATA_FILE)
    metadata = _read_json(meta_path, "buffer metadata")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object")
    fmt = format_from_metadata(
        metadata.get("trajectory_format", metadata.get("storage_format", "pt"))
    )
    seed = metadata.get("seed")
    if seed is not None:
        seed = _as_int(seed, f"{meta_path}: seed")
    index_path, raw_index, all_ids = _read_index(directory)
    ids = partition_ids(all_ids, world_size, local_rank) if is_distributed else all_ids
    index = {tid: _normalise_entry(raw_index[tid], tid, index_path) for tid in ids}
    if is_distributed:
        counter = max(ids) + 1 if ids else 0
    else:
        stored = _as_int(metadata.get("trajectory_counter", 0), f"{meta_path}: trajectory_counter")
        counter = max([stored] + [tid + 1 for tid in ids])

    search = [directory]
    pointer = metadata.get("storage_dir")
    if (
        isinstance(pointer, str)
        and pointer
        and os.path.isdir(pointer)
        and not os.path.samefile(pointer, directory)
    ):
        search.append(os.path.abspath(pointer))
    ext = file_extension(fmt)
    candidates = [_file_candidates(d, ext) for d in search]
    paths: dict[int, str | None] = {}
    expected: dict[int, str] = {}
    for tid in ids:
        name = trajectory_file_name(tid, index[tid]["model_weights_id"], fmt)
        expected[tid] = os.path.join(directory, name)
        paths[tid] = None
        for d in search:
            if os.path.isfile(os.path.join(d, name)):
                paths[tid] = os.path.join(d, name)
                break
        else:
            for d, found in zip(search, candidates, strict=True):
                if found.get(tid):
                    paths[tid] = os.path.join(d, found[tid][0])
                    break
    rng_state = (
        metadata.get("jaxbuf", {}).get("rng_state")
        if isinstance(metadata.get("jaxbuf"), dict)
        else None
    )
    return BufferListing(
        directory=directory,
        fmt=fmt,
        seed=seed,
        ids=list(ids),
        index=index,
        paths=paths,
        expected=expected,
        counter=counter,
        rng_state=rng_state,
        metadata=metadata,
    )


# ------------------------------------------------------------------------------- writing


def build_metadata(
    directory: str,
    fmt: str,
    ids: Sequence[int],
    index: dict[int, dict],
    counter: int,
    seed: int | None,
    rng_state: dict | None = None,
) -> dict:
    """The metadata superset of both RLinf generations (module docstring)."""
    meta: dict[str, Any] = {
        "storage_dir": os.path.abspath(directory),
        "storage_format": fmt,
        "trajectory_format": fmt,
        "size": len(ids),
        "total_samples": int(sum(index[tid]["num_samples"] for tid in ids)),
        "trajectory_counter": int(counter),
    }
    if seed is not None:
        meta["seed"] = int(seed)
    jaxbuf_meta: dict[str, Any] = {"version": METADATA_VERSION}
    if rng_state is not None:
        jaxbuf_meta["rng_state"] = rng_state
    meta["jaxbuf"] = jaxbuf_meta
    return meta


def write_listing(
    directory: str,
    fmt: str,
    ids: Sequence[int],
    index: dict[int, dict],
    counter: int,
    seed: int | None,
    rng_state: dict | None = None,
) -> None:
    """Write ``trajectory_index.json`` then ``metadata.json``, each atomically."""
    os.makedirs(directory, exist_ok=True)
    atomic_write_json(
        os.path.join(directory, INDEX_FILE),
        {
            "trajectory_index": {str(tid): index[tid] for tid in ids},
            "trajectory_id_list": [int(tid) for tid in ids],
        },
    )
    atomic_write_json(
        os.path.join(directory, METADATA_FILE),
        build_metadata(directory, fmt, ids, index, counter, seed, rng_state),
    )


def write_checkpoint(
    directory: str,
    fmt: str,
    ids: Sequence[int],
    index: dict[int, dict],
    sources: dict[int, str],
    counter: int,
    seed: int | None,
    rng_state: dict | None,
    show_progress: bool = False,
) -> None:
    """Make ``directory`` a self-contained buffer: hard-link (or copy) each trajectory file
    from ``sources[id]`` under its canonical name, then write the listing."""
    os.makedirs(directory, exist_ok=True)
    for tid in progress_iter(ids, len(ids), "checkpoint", enabled=show_progress):
        dst = os.path.join(
            directory, trajectory_file_name(tid, index[tid]["model_weights_id"], fmt)
        )
        atomic_link_or_copy(sources[tid], dst)
    write_listing(directory, fmt, ids, index, counter, seed, rng_state)


# ------------------------------------------------------------------------ merge and split


def _transfer(src: str, dst: str, mode: str) -> None:
    if mode == "copy":
        atomic_copy(src, dst)
    elif mode == "move":
        atomic_move(src, dst)
    else:
        atomic_link_or_copy(src, dst)


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _prepare_destination(save_path: str, sources: Sequence[str]) -> str:
    save_path = os.path.abspath(os.fspath(save_path))
    for src in sources:
        if os.path.commonpath([save_path, src]) in (save_path, src):
            raise ValueError(
                f"save path {save_path} must not contain or lie inside the source buffer {src}"
            )
    if os.path.exists(os.path.join(save_path, METADATA_FILE)):
        raise FileExistsError(
            f"save path {save_path} already holds a buffer "
            f"({METADATA_FILE}); choose an empty directory"
        )
    os.makedirs(save_path, exist_ok=True)
    return save_path


def _require_files(listing: BufferListing, ids: Sequence[int]) -> None:
    missing = [listing.expected[tid] for tid in ids if listing.paths[tid] is None]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} trajectory file(s) listed in "
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
            raise ValueError(f"{full}: rank directories must be named rank_<integer>")
        ranks.append((int(match.group(1)), full))
    if not ranks:
        raise FileNotFoundError(f"no rank_* buffer directories in {source_path}")
    return sorted(ranks)


def _write_transfer(
    save_path: str,
    fmt: str,
    plan: list[tuple[BufferListing, int, int]],
    seed: int | None,
    mode: str,
    show_progress: bool,
    desc: str,
) -> TransferReport:
    new_index: dict[int, dict] = {}
    for listing, old, new in progress_iter(plan, len(plan), desc, enabled=show_progress):
        entry = dict(listing.index[old], trajectory_id=new)
        dst = os.path.join(save_path, trajectory_file_name(new, entry["model_weights_id"], fmt))
        _transfer(listing.paths[old], dst, mode)
        new_index[new] = entry
    new_ids = [new for _, _, new in plan]
    write_listing(save_path, fmt, new_ids, new_index, len(new_ids), seed)
    return TransferReport(
        save_path=save_path,
        count=len(new_ids),
        total_samples=int(sum(e["num_samples"] for e in new_index.values())),
        mapping=[(listing.directory, old, new) for listing, old, new in plan],
    )


def merge_buffers(
    source_path: str, save_path: str, *, mode: str = "copy", show_progress: bool = False
) -> TransferReport:
    """Merge ``source_path/rank_*`` buffers into one buffer at ``save_path`` (§9).

    Rank directories are visited in **numeric** order (rank_2 before rank_10). New ids
    interleave by original id: for each original id in ascending order, each rank holding it
    (in rank order) gets the next new id, giving (id0, rank_0), (id0, rank_1), ..., (id1,
    rank_0), ... All ranks must share one format. The seed is the first rank's seed.
    ``mode``: ``"copy"`` (default), ``"link"`` (hard links, copy across filesystems) or
    ``"move"`` (the rank directories lose their files, and their metadata/index are removed
    so they no longer pose as buffers).
    """
    _check_mode(mode)
    source_path = os.path.abspath(os.fspath(source_path))
    ranks = _rank_dirs(source_path)
    listings = [read_listing(path) for _, path in ranks]
    fmt = listings[0].fmt
    for listing in listings[1:]:
        if listing.fmt != fmt:
            raise ValueError(
                f"cannot merge formats {fmt!r} ({listings[0].directory}) and "
                f"{listing.fmt!r} ({listing.directory})"
            )
    for listing in listings:
        _require_files(listing, listing.ids)
    save_path = _prepare_destination(save_path, [path for _, path in ranks])
    all_ids = sorted({tid for listing in listings for tid in listing.ids})
    members = [set(listing.ids) for listing in listings]
    plan: list[tuple[BufferListing, int, int]] = []
    for tid in all_ids:
        for listing, ids in zip(listings, members, strict=True):
            if tid in ids:
                plan.append((listing, tid, len(plan)))
    seed = next((listing.seed for listing in listings if listing.seed is not None), None)
    report = _write_transfer(save_path, fmt, plan, seed, mode, show_progress, "merge")
    if mode == "move":
        for listing in listings:
            for name in (METADATA_FILE, INDEX_FILE, LEGACY_INDEX_FILE):
                path = os.path.join(listing.directory, name)
                if os.path.exists(path):
                    os.unlink(path)
            fsync_dir(listing.directory)
    return report


def split_buffer(
    source_path: str,
    save_path: str,
    split_count: int,
    *,
    mode: str = "copy",
    show_progress: bool = False,
) -> TransferReport:
    """Write the first ``split_count`` trajectories of ``trajectory_id_list`` as ids
    ``0..split_count-1`` of a new buffer at ``save_path`` (§9).

    ``mode="move"`` moves those files and rewrites the source listing to the remaining
    trajectories (RLinf's tool leaves it naming moved files).
    """
    _check_mode(mode)
    if isinstance(split_count, bool) or not isinstance(split_count, int) or split_count < 1:
        raise ValueError(f"split_count must be a positive int, got {split_count!r}")
    listing = read_listing(source_path)
    if len(listing.ids) < split_count:
        raise ValueError(
            f"split_count={split_count} but {listing.directory} lists only "
            f"{len(listing.ids)} trajectories"
        )
    head = listing.ids[:split_count]
    _require_files(listing, head)
    save_path = _prepare_destination(save_path, [listing.directory])
    plan = [(listing, old, new) for new, old in enumerate(head)]
    report = _write_transfer(
        save_path, listing.fmt, plan, listing.seed, mode, show_progress, "split"
    )
    if mode == "move":
        rest = listing.ids[split_count:]
        write_listing(
            listing.directory,
            listing.fmt,
            rest,
            listing.index,
            listing.counter,
            listing.seed,
            listing.rng_state,
        )
    return report
