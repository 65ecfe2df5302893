"""Crash-safe file writes: temporary name, flush + fsync, rename, fsync of the directory.

A reader that lists a directory never sees a partially written file under its final name:
data goes to a hidden temporary file in the same directory (so the rename stays on one
filesystem and is atomic under POSIX ``rename(2)``), the file is fsynced, renamed over the
final name with :func:`os.replace`, and finally the directory entry is fsynced so the rename
itself survives a power loss. Temporary names start with ``.`` and contain ``.tmp-`` so that
no ``trajectory_*`` glob matches them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, Any

__all__ = [
    "atomic_copy",
    "atomic_link_or_copy",
    "atomic_move",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "is_temp_name",
    "temp_path_for",
]

_TMP_MARK = ".tmp-"


def temp_path_for(path: str) -> str:
    """Return a unique hidden temporary path next to ``path`` (same directory)."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:12]}")


def is_temp_name(name: str) -> bool:
    """Whether a directory entry name is one of our temporary names."""
    return name.startswith(".") and _TMP_MARK in name


def fsync_dir(directory: str) -> None:
    """fsync a directory so that renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit publish it atomically at ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    tmp = temp_path_for(path)
    kwargs = {"encoding": "utf-8"} if mode == "w" else {}
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON (``json.dump`` defaults: one line, no trailing newline) atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh)


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (contents and permission bits)."""
    with atomic_write(dst, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, length=1 << 20)
    with contextlib.suppress(OSError):
        shutil.copymode(src, dst)


def atomic_link_or_copy(src: str, dst: str) -> str:
    """Hard-link ``src`` at ``dst`` (replacing it atomically), falling back to a copy.

    Returns ``"link"`` or ``"copy"``. A hard link shares the inode; this is safe because jaxbuf
    never rewrites a file in place (every write is a new inode renamed over the old name).
    """
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return "link"
    tmp = temp_path_for(dst)
    try:
        os.link(src, tmp)
    except OSError:
        atomic_copy(src, dst)
        return "copy"
    try:
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
    return "link"


def atomic_move(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``: a rename on one filesystem, else an atomic copy then unlink."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_copy(src, dst)
        os.unlink(src)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
