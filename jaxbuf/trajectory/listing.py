"""The listing of an RLinf buffer directory: ``metadata.json`` + ``trajectory_index.json``.

A *buffer directory* holds ``metadata.json``, ``trajectory_index.json`` and one
``trajectory_{id}_{model_weights_id}.{pt|pkl|npz}`` file per listed trajectory. jaxbuf writes
the metadata superset that both RLinf generations load::

    {"storage_dir": <abs path of this dir>, "storage_format": f, "trajectory_format": f,
     "size": n, "total_samples": sum, "trajectory_counter": next_id, "seed": s,
     "jaxbuf": {"version": 1, "rng_state": <numpy PCG64 state>, "buffer_id": <uuid>}}

and an index with one key RLinf ignores::

    {"trajectory_index": {"<id>": entry, ...}, "trajectory_id_list": [ids...],
     "jaxbuf_files": {"<id>": {"name": file name, "size": bytes, "sha256": hex}, ...}}

The index is written before the metadata, each atomically.

Readers accept both RLinf generations: the format comes from ``trajectory_format`` (gen B) or
``storage_format`` (gen A, default ``pt``); files are looked up in the directory itself, then
in ``metadata["storage_dir"]`` (gen A pointer checkpoints keep their files there); the legacy
``trajector_index.json`` is read when ``trajectory_index.json`` is absent. A file is found
under the name its entry gives; only entries without a ``model_weights_id`` (which do not name
their file) fall back to any ``trajectory_{id}_*`` file. Every name is checked
(:mod:`jaxbuf.trajectory.names`) before it becomes a path. A directory holding
:data:`INCOMPLETE_FILE` is the destination (or a source) of an interrupted merge or split and
is refused with the command that completes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from jaxbuf.errors import CheckpointError, InputError, TrajectoryFileError, TrajectoryNotFoundError
from jaxbuf.trajectory.atomic import atomic_write_json
from jaxbuf.trajectory.formats import file_extension, format_from_metadata
from jaxbuf.trajectory.names import (
    check_listed_name,
    check_model_weights_id,
    resolve_inside,
    trajectory_file_name,
)

__all__ = [
    "FILES_KEY",
    "INCOMPLETE_FILE",
    "INDEX_FILE",
    "LEGACY_INDEX_FILE",
    "METADATA_FILE",
    "BufferListing",
    "partition_ids",
    "read_json",
    "read_listing",
    "write_listing",
]

METADATA_FILE = "metadata.json"
INDEX_FILE = "trajectory_index.json"
LEGACY_INDEX_FILE = "trajector_index.json"
INCOMPLETE_FILE = ".jaxbuf-incomplete.json"
FILES_KEY = "jaxbuf_files"
METADATA_VERSION = 1


def partition_ids(ids: Sequence[int], world_size: int, local_rank: int) -> list[int]:
    """Contiguous block of ``ids`` for one rank: the first ``L % W`` ranks get one extra.

    ``start = r*(L//W) + min(r, L%W)``, ``length = L//W + (r < L%W)``; for example 3 ids over
    2 ranks give ``[0, 1]`` and ``[2]``.

    >>> from jaxbuf.trajectory import partition_ids
    >>> ids = [10, 11, 12, 13, 14]
    >>> partition_ids(ids, 2, 0), partition_ids(ids, 2, 1)
    ([10, 11, 12], [13, 14])
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size <= 0:
        raise InputError(f"jaxbuf: world_size must be a positive int, got {world_size!r}")
    if (
        isinstance(local_rank, bool)
        or not isinstance(local_rank, int)
        or not 0 <= local_rank < world_size
    ):
        raise InputError(
            f"jaxbuf: local_rank must be an int in [0, {world_size}), got {local_rank!r}"
        )
    per, rem = divmod(len(ids), world_size)
    start = local_rank * per + min(local_rank, rem)
    return list(ids[start : start + per + (1 if local_rank < rem else 0)])


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
        files: the listed ``{"name", "size", "sha256"}`` per id, None where the listing has
            no checksum (RLinf writes none).
        buffer_id: the id of the jaxbuf buffer that wrote the listing, or None.
        refused: per id, the error of a file that may not be read (a symlink leaving its
            directory); its ``paths`` entry is None.
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
    files: dict[int, dict | None] = dataclasses.field(default_factory=dict)
    buffer_id: str | None = None
    refused: dict[int, Exception] = dataclasses.field(default_factory=dict)


def read_json(path: str, what: str) -> Any:
    """Parse a JSON file; a missing one raises FileNotFoundError, a damaged one (bad syntax,
    bad encoding, nesting too deep) CheckpointError, both naming ``path``."""
    if not os.path.isfile(path):
        raise TrajectoryNotFoundError(f"jaxbuf: {what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"jaxbuf: {path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CheckpointError(f"jaxbuf: {path} is not valid JSON: nested too deeply") from exc


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"jaxbuf: {where}: expected an int, got {value!r}")
    return value


def _normalise_entry(raw: Any, tid: int, path: str) -> tuple[dict, bool]:
    """The checked entry, and whether it names its file (has a ``model_weights_id``)."""
    where = f"{path}: trajectory {tid}"
    if not isinstance(raw, dict):
        raise CheckpointError(f"jaxbuf: {where}: index entry must be an object, got {raw!r}")
    for key in ("num_samples", "shape"):
        if key not in raw:
            raise CheckpointError(f"jaxbuf: {where}: index entry lacks {key!r}")
    num_samples = _as_int(raw["num_samples"], f"{where}: num_samples")
    shape = raw["shape"]
    if not isinstance(shape, list) or len(shape) < 2:
        raise CheckpointError(f"jaxbuf: {where}: shape must be a list [T, B, ...], got {shape!r}")
    shape = [_as_int(s, f"{where}: shape") for s in shape]
    if num_samples != shape[0] * shape[1] or num_samples < 0:
        raise CheckpointError(
            f"jaxbuf: {where}: num_samples={num_samples} but shape {shape} gives "
            f"T*B={shape[0] * shape[1]}"
        )
    entry_id = _as_int(raw.get("trajectory_id", tid), f"{where}: trajectory_id")
    if entry_id != tid:
        raise CheckpointError(f"jaxbuf: {where}: index entry says trajectory_id={entry_id}")
    named = "model_weights_id" in raw
    mwid = raw.get("model_weights_id", "")
    if not isinstance(mwid, str):
        raise CheckpointError(f"jaxbuf: {where}: model_weights_id must be a str, got {mwid!r}")
    check_model_weights_id(mwid, where)
    entry = {
        "num_samples": num_samples,
        "trajectory_id": tid,
        "max_episode_length": _as_int(
            raw.get("max_episode_length", 0), f"{where}: max_episode_length"
        ),
        "shape": shape,
        "model_weights_id": mwid,
    }
    return entry, named


def _read_index(directory: str) -> tuple[str, dict[int, Any], list[int], dict]:
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(directory, LEGACY_INDEX_FILE)):
        path = os.path.join(directory, LEGACY_INDEX_FILE)
    data = read_json(path, "trajectory index")
    if not isinstance(data, dict):
        raise CheckpointError(f"jaxbuf: {path}: expected a JSON object")
    raw_index = data.get("trajectory_index", {})
    raw_list = data.get("trajectory_id_list", [])
    raw_files = data.get(FILES_KEY, {})
    if not isinstance(raw_index, dict) or not isinstance(raw_list, list):
        raise CheckpointError(
            f"jaxbuf: {path}: trajectory_index must be an object and trajectory_id_list a list"
        )
    if not isinstance(raw_files, dict):
        raise CheckpointError(f"jaxbuf: {path}: {FILES_KEY} must be an object")
    index: dict[int, Any] = {}
    for key, value in raw_index.items():
        if not re.fullmatch(r"-?[0-9]+", key):
            raise CheckpointError(f"jaxbuf: {path}: index key {key!r} is not an integer id")
        index[int(key)] = value
    ids = [_as_int(i, f"{path}: trajectory_id_list") for i in raw_list]
    if len(set(ids)) != len(ids):
        raise CheckpointError(f"jaxbuf: {path}: trajectory_id_list holds duplicate ids")
    missing = [i for i in ids if i not in index]
    if missing:
        raise CheckpointError(
            f"jaxbuf: {path}: trajectory_id_list names ids without index entries: {missing[:10]}"
        )
    return path, index, ids, raw_files


def _file_entry(raw: Any, tid: int, name: str, where: str) -> dict:
    """A checked ``{"name", "size", "sha256"}`` record of the listing."""
    where = f"{where}: {FILES_KEY}[{tid}]"
    if not isinstance(raw, dict):
        raise CheckpointError(f"jaxbuf: {where}: must be an object, got {raw!r}")
    if raw.get("name") != name:
        raise CheckpointError(
            f"jaxbuf: {where}: names {raw.get('name')!r} but the index entry gives {name!r}"
        )
    size = _as_int(raw.get("size"), f"{where}: size")
    digest = raw.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CheckpointError(f"jaxbuf: {where}: sha256 must be 64 hex digits, got {digest!r}")
    return {"name": name, "size": size, "sha256": digest}


def _fallback(search: list[str], tid: int, ext: str, where: str) -> str | None:
    """First ``trajectory_{tid}_*{ext}`` file (sorted) in the search directories."""
    prefix = f"trajectory_{tid}_"
    for d in search:
        try:
            names = sorted(n for n in os.listdir(d) if n.startswith(prefix) and n.endswith(ext))
        except OSError:
            continue
        for name in names:
            try:
                check_listed_name(name, tid, ext, where)
            except CheckpointError:
                continue
            path = resolve_inside(d, name)
            if path is not None:
                return path
    return None


def check_complete(directory: str) -> None:
    """Raise CheckpointError if ``directory`` is part of an interrupted merge or split."""
    marker = os.path.join(directory, INCOMPLETE_FILE)
    if not os.path.lexists(marker):
        return
    try:
        info = read_json(marker, "transfer marker")
    except (CheckpointError, OSError):
        info = None
    info = info if isinstance(info, dict) else {}
    command, operation = info.get("command"), info.get("operation")
    operation = operation if operation in ("merge", "split") else "merge or split"
    raise CheckpointError(
        f"jaxbuf: {directory} is part of an interrupted {operation} ({INCOMPLETE_FILE}); "
        f"rerun {command if isinstance(command, str) else 'the same merge/split command'} "
        "to finish it"
    )


def read_listing(
    directory: str, *, is_distributed: bool = False, local_rank: int = 0, world_size: int = 1
) -> BufferListing:
    """Parse a buffer directory of either RLinf generation (see the module docstring).

    Raises FileNotFoundError naming a missing ``metadata.json``/``trajectory_index.json``,
    :class:`CheckpointError` naming a corrupt, inconsistent or unsafe one (or an interrupted
    merge/split), :class:`~jaxbuf.errors.TrajectoryFileError` naming a symlink that leaves its
    directory, ValueError for a bad rank. Missing trajectory files are reported as
    ``paths[id] is None``, not raised.

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory, TrajectoryReplayBuffer
    >>> from jaxbuf.trajectory import read_listing
    >>> path = os.path.join(tempfile.mkdtemp(), "run")
    >>> with TrajectoryReplayBuffer(seed=7, storage_dir=path) as buffer:
    ...     _ = buffer.add_trajectories([Trajectory(model_weights_id="w_1",
    ...                                             rewards=np.ones((2, 2)))] * 3)
    >>> listing = read_listing(path)
    >>> listing.fmt, listing.seed, listing.ids, listing.counter
    ('pt', 7, [0, 1, 2], 3)
    >>> os.path.basename(listing.paths[2])
    'trajectory_2_w_1.pt'
    >>> read_listing(path, is_distributed=True, local_rank=1, world_size=2).ids  # a rank's share
    [2]
    """
    directory = os.path.abspath(os.fspath(directory))
    check_complete(directory)
    meta_path = os.path.join(directory, METADATA_FILE)
    metadata = read_json(meta_path, "buffer metadata")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"jaxbuf: {meta_path}: expected a JSON object")
    fmt = format_from_metadata(
        metadata.get("trajectory_format", metadata.get("storage_format", "pt"))
    )
    seed = metadata.get("seed")
    if seed is not None:
        seed = _as_int(seed, f"{meta_path}: seed")
    index_path, raw_index, all_ids, raw_files = _read_index(directory)
    ids = partition_ids(all_ids, world_size, local_rank) if is_distributed else all_ids
    index: dict[int, dict] = {}
    named: dict[int, bool] = {}
    for tid in ids:
        index[tid], named[tid] = _normalise_entry(raw_index[tid], tid, index_path)
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
        search.append(pointer)
    ext = file_extension(fmt)
    paths: dict[int, str | None] = {}
    expected: dict[int, str] = {}
    files: dict[int, dict | None] = {}
    refused: dict[int, Exception] = {}
    for tid in ids:
        name = trajectory_file_name(tid, index[tid]["model_weights_id"], fmt)
        check_listed_name(name, tid, ext, f"{index_path}: trajectory {tid}")
        raw = raw_files.get(str(tid))
        files[tid] = None if raw is None else _file_entry(raw, tid, name, index_path)
        expected[tid] = os.path.join(directory, name)
        paths[tid] = None
        try:
            for d in search:
                paths[tid] = resolve_inside(d, name)
                if paths[tid] is not None:
                    break
            if paths[tid] is None and not named[tid] and files[tid] is None:
                paths[tid] = _fallback(search, tid, ext, f"{directory}: trajectory {tid}")
        except TrajectoryFileError as exc:
            paths[tid], refused[tid] = None, exc
    jaxbuf_meta = metadata.get("jaxbuf") if isinstance(metadata.get("jaxbuf"), dict) else {}
    buffer_id = jaxbuf_meta.get("buffer_id")
    return BufferListing(
        directory=directory,
        fmt=fmt,
        seed=seed,
        ids=list(ids),
        index=index,
        paths=paths,
        expected=expected,
        counter=counter,
        rng_state=jaxbuf_meta.get("rng_state"),
        metadata=metadata,
        files=files,
        buffer_id=buffer_id if isinstance(buffer_id, str) else None,
        refused=refused,
    )


def write_listing(
    directory: str,
    fmt: str,
    ids: Sequence[int],
    index: dict[int, dict],
    counter: int,
    seed: int | None,
    rng_state: dict | None = None,
    *,
    files: dict[int, dict | None] | None = None,
    buffer_id: str | None = None,
    storage_dir: str | None = None,
) -> None:
    """Write ``trajectory_index.json`` then ``metadata.json``, each atomically.

    ``files`` gives the ``{"name", "size", "sha256"}`` record of each id (ids without one are
    listed without a checksum); ``storage_dir`` is the directory the metadata names (default
    ``directory``; a checkpoint built aside names its final path).
    """
    os.makedirs(directory, exist_ok=True)
    files = files or {}
    atomic_write_json(
        os.path.join(directory, INDEX_FILE),
        {
            "trajectory_index": {str(tid): index[tid] for tid in ids},
            "trajectory_id_list": [int(tid) for tid in ids],
            FILES_KEY: {str(tid): files[tid] for tid in ids if files.get(tid) is not None},
        },
    )
    # The metadata: the superset of both RLinf generations (module docstring).
    meta: dict[str, Any] = {
        "storage_dir": os.path.abspath(storage_dir or directory),
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
    if buffer_id is not None:
        jaxbuf_meta["buffer_id"] = buffer_id
    meta["jaxbuf"] = jaxbuf_meta
    atomic_write_json(os.path.join(directory, METADATA_FILE), meta)
