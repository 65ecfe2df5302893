"""Trajectory file names, the checks on names read from a listing, and file checksums.

A trajectory file is named ``trajectory_{id}_{model_weights_id}{ext}``. Names and ids read
from a listing (``trajectory_index.json``) may come from an untrusted source, so every one is
checked before it becomes a path: ``model_weights_id`` must not contain a path separator, a
NUL or ``..``, and the full name must match ``trajectory_<int>_<id>.<pt|pkl|npz>``. Paths are
built by joining the checked name to the directory (never with ``os.path.abspath``, which
would collapse ``..`` before the kernel sees it), and a file that is a symlink must resolve to
a file inside its own directory.

Checksums: the listing records ``size`` and ``sha256`` of each file; :func:`verify_file`
compares them with the file on disk.
"""

from __future__ import annotations

import hashlib
import os
import re

from jaxbuf.errors import CheckpointError, InputError, TrajectoryFileError
from jaxbuf.trajectory.formats import file_extension

__all__ = [
    "check_listed_name",
    "check_model_weights_id",
    "file_info",
    "resolve_inside",
    "trajectory_file_name",
    "verify_file",
]

_NAME = re.compile(r"trajectory_(0|[1-9][0-9]*)_([^/\\\x00]*)\.(pt|pkl|npz)")
_CHUNK = 1 << 20


def model_weights_id_problem(mwid: str) -> str | None:
    """Why ``mwid`` cannot be part of a file name, or None when it can."""
    for bad in ("/", "\\", "\x00", os.sep):
        if bad in mwid:
            return f"contains {bad!r}"
    if os.altsep and os.altsep in mwid:
        return f"contains {os.altsep!r}"
    if ".." in mwid:
        return "contains '..'"
    return None


def check_model_weights_id(mwid: str, where: str) -> str:
    """Return ``mwid`` if it can be part of a file name; else raise CheckpointError."""
    problem = model_weights_id_problem(mwid)
    if problem is not None:
        raise CheckpointError(
            f"jaxbuf: {where}: model_weights_id {mwid!r} {problem}; "
            "refusing a name that could leave the buffer directory"
        )
    return mwid


def trajectory_file_name(trajectory_id: int, model_weights_id: str, fmt: str) -> str:
    """``trajectory_{id}_{model_weights_id}{ext}``; ``model_weights_id`` is opaque but must not
    contain a path separator, a NUL or ``..`` (``InputError``, a ``ValueError``).

    >>> from jaxbuf.trajectory import trajectory_file_name
    >>> trajectory_file_name(7, "policy_3", "pt")
    'trajectory_7_policy_3.pt'
    >>> trajectory_file_name(7, "../etc", "pt")
    Traceback (most recent call last):
    ...
    jaxbuf.errors.InputError: jaxbuf: model_weights_id '../etc' contains '/'
    """
    problem = model_weights_id_problem(model_weights_id)
    if problem is not None:
        raise InputError(f"jaxbuf: model_weights_id {model_weights_id!r} {problem}")
    return f"trajectory_{int(trajectory_id)}_{model_weights_id}{file_extension(fmt)}"


def check_listed_name(name: object, tid: int, ext: str, where: str) -> str:
    """Check a file name read from a listing (or a directory) for trajectory ``tid``."""
    if not isinstance(name, str):
        raise CheckpointError(f"jaxbuf: {where}: file name must be a str, got {name!r}")
    match = _NAME.fullmatch(name)
    if (
        match is None
        or int(match.group(1)) != tid
        or "." + match.group(3) != ext
        or model_weights_id_problem(match.group(2)) is not None
    ):
        raise CheckpointError(
            f"jaxbuf: {where}: file name {name!r} is not trajectory_{tid}_<id>{ext} "
            "(no path separators or '..' allowed)"
        )
    return name


def resolve_inside(directory: str, name: str) -> str | None:
    """The path of ``name`` in ``directory`` if it is a file there, else None.

    A symlink is followed only when its target is a regular file in the same directory, and
    then the target's path is returned (so callers never hard-link or open through the
    link); a symlink resolving anywhere else raises TrajectoryFileError naming it.
    """
    path = os.path.join(directory, name)
    if not os.path.islink(path):
        return path if os.path.isfile(path) else None
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(directory) or not os.path.isfile(real):
        raise TrajectoryFileError(
            path, f"is a symlink resolving to {real}, outside {directory}; refusing to read it"
        )
    return real


def file_info(path: str) -> dict:
    """``{"name", "size", "sha256"}`` of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return {"name": os.path.basename(path), "size": size, "sha256": digest.hexdigest()}


def verify_file(path: str, info: dict | None, *, content: bool = True) -> None:
    """Check the file at ``path`` against its listed ``info`` (no-op when ``info`` is None).

    The size is always compared; the sha256 too when ``content``. A mismatch raises
    TrajectoryFileError naming the file.
    """
    if info is None:
        return
    size = os.path.getsize(path)
    if size != info["size"]:
        raise TrajectoryFileError(
            path, f"size {size} bytes differs from the listed {info['size']} bytes"
        )
    if content:
        actual = file_info(path)["sha256"]
        if actual != info["sha256"]:
            raise TrajectoryFileError(
                path, f"sha256 {actual} differs from the listed {info['sha256']}"
            )
