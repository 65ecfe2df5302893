"""Every exception jaxbuf raises on purpose is a ``jaxbuf.JaxbufError``.

The errors module promises it (``except jaxbuf.JaxbufError`` catches everything the library
raises on purpose, while each class still derives from the builtin it replaces). This scans
the source for ``raise <builtin>(...)`` so a new site cannot slip back to a bare builtin. The
one exception is an ``OSError(errno, strerror, path)`` that reports a failed system call as
the operating system would.
"""

from __future__ import annotations

import ast
import builtins
import pathlib

import jaxbuf
from jaxbuf import errors

ROOT = pathlib.Path(jaxbuf.__file__).parent
BUILTIN_ERRORS = {
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
} - {"NotImplementedError", "StopIteration", "KeyboardInterrupt", "SystemExit"}


def bare_builtin_raises(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                syscall = isinstance(node.exc, ast.Call) and len(node.exc.args) > 1
                if exc.id == "OSError" and syscall:
                    continue  # OSError(errno, strerror, path): a system call's own failure
                found.append((node.lineno, exc.id))
    return found


def test_scanner_catches_a_bare_builtin():
    src = "def f(x):\n    if x:\n        raise ValueError('no')\n    raise errors.InputError()\n"
    assert bare_builtin_raises(src) == [(3, "ValueError")]
    syscall = "raise OSError(err, os.strerror(err), path)\nraise OSError('jaxbuf: mine')\n"
    assert bare_builtin_raises(syscall) == [(2, "OSError")]


def test_library_raises_only_jaxbuf_errors():
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line}: raise {name}"
        for path in sorted(ROOT.rglob("*.py"))
        for line, name in bare_builtin_raises(path.read_text())
    ]
    assert offenders == []


def test_each_error_class_keeps_its_builtin():
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.ConfigError, TypeError)
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.InputError, TypeError)
    assert issubclass(errors.FieldError, KeyError)
    assert issubclass(errors.IndexRangeError, IndexError)
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.JaxbufError), name
    assert issubclass(errors.FieldAttributeError, AttributeError)
    assert issubclass(errors.BufferStateError, RuntimeError)
    assert issubclass(errors.TrajectoryNotFoundError, FileNotFoundError)
    assert issubclass(errors.DestinationExistsError, FileExistsError)


def test_file_mode_errors_are_jaxbuf_errors_and_builtins(tmp_path):
    import numpy as np
    import pytest

    from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer, merge_buffers

    with TrajectoryReplayBuffer(seed=0, storage_dir=tmp_path / "run") as buf:
        with pytest.raises(errors.BufferStateError, match="empty buffer") as info:
            buf.sample(2)
        assert isinstance(info.value, RuntimeError)
        with pytest.raises(errors.TrajectoryNotFoundError, match="not found") as info:
            buf.load_checkpoint(tmp_path / "nowhere")
        assert isinstance(info.value, FileNotFoundError)
        buf.add_trajectories([Trajectory(rewards=np.ones((2, 2)))])
    (tmp_path / "ranks" / "rank_0").mkdir(parents=True)
    with pytest.raises(errors.JaxbufError):  # rank_0 holds no buffer
        merge_buffers(str(tmp_path / "ranks"), str(tmp_path / "run"))
    with pytest.raises(errors.DestinationExistsError, match="already holds a buffer") as info:
        merge_buffers(str(tmp_path / "ranks"), str(tmp_path / "run"))
    assert isinstance(info.value, FileExistsError)


def test_facade_attribute_errors_keep_hasattr_working():
    import numpy as np
    import pytest

    from jaxbuf.compat.tianshou import BatchDict

    batch = BatchDict(obs=np.zeros(2))
    assert not hasattr(batch, "act") and getattr(batch, "act", 7) == 7
    with pytest.raises(errors.FieldAttributeError, match="no field 'act'"):
        _ = batch.act
