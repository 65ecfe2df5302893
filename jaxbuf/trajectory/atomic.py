"""Crash-safe file writes: temporary name, flush + fsync, rename, fsync of the directory.

A reader that lists a directory never sees a partially written file under its final name:
data goes to a hidden temporary file in the same directory (so the rename stays on one
filesystem and is atomic under POSIX ``rename(2)``), the file is fsynced, renamed over the
final name with :func:`os.replace`, and finally the directory entry is fsynced so the rename
itself survives a power loss. Temporary names start with ``.`` and contain ``.tmp-<pid>-`` so
that no ``trajectory_*`` glob matches them and :func:`remove_stale_temps` can tell the leftovers
of a dead process from a live writer's files.

Paths are split and joined as given (no ``os.path.abspath``, which would collapse ``..`` before
the kernel resolves it). An ``OSError`` without a file name (a full disk, say) is re-raised
with the destination path, so the message always names the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, Any

from jaxbuf.errors import InputError

__all__ = [
    "atomic_copy",
    "atomic_link_or_copy",
    "atomic_move",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "is_temp_name",
    "remove_stale_temps",
    "temp_path_for",
]

_TMP_MARK = ".tmp-"
_TMP_PID = re.compile(r"\.tmp-(?:old-)?(\d+)-[0-9a-f]+\Z")


def _parent(path: str) -> str:
    return os.path.dirname(path) or os.curdir


def temp_path_for(path: str, kind: str = "") -> str:
    """Return a unique hidden temporary path next to ``path`` (same directory)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{_TMP_MARK}{kind}{os.getpid()}-{uuid.uuid4().hex[:12]}")


def is_temp_name(name: str) -> bool:
    """Whether a directory entry name is one of our temporary names."""
    return name.startswith(".") and _TMP_MARK in name


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str, prefix: str = ".") -> list[str]:
    """Remove temporary entries (files or directories) left in ``directory`` by processes
    that no longer run; only names starting with ``prefix``. Returns the removed names."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TMP_PID.search(name)
        if not (name.startswith(prefix) and is_temp_name(name) and match):
            continue
        if _pid_alive(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        removed.append(name)
    if removed:
        fsync_dir(directory)
    return removed


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` with ``path`` as its file name when it has none (ENOSPC, EIO, ...)."""
    if exc.filename is not None or not exc.errno:
        return exc
    return type(exc)(exc.errno, f"{exc.strerror or exc} (writing {path})", path)


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
        raise InputError(f"jaxbuf: atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    tmp = temp_path_for(path)
    kwargs = {"encoding": "utf-8"} if mode == "w" else {}
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(_parent(path))


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
    ``src`` must not be a symlink (ValueError): callers resolve and check links first, and a
    link is never made through one.
    """
    if os.path.islink(src):
        raise InputError(f"jaxbuf: refusing to hard-link through the symlink {src}")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return "link"
    tmp = temp_path_for(dst)
    try:
        os.link(src, tmp, follow_symlinks=False)
    except OSError:
        atomic_copy(src, dst)
        return "copy"
    try:
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(_parent(dst))
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
    fsync_dir(_parent(dst))
