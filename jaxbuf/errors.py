"""Every exception jaxbuf raises, under one base class.

Each class also derives from the builtin exception that callers caught before it existed
(``ValueError``, ``TypeError``, ``KeyError``, ``IndexError``, ``OSError``,
``RuntimeError``, ``ImportError``), so ``except ValueError`` keeps working while ``except
jaxbuf.JaxbufError`` catches everything the library raises on purpose.

Messages follow one style: ``"jaxbuf: <where>: <what>"``, naming the field, option or
file, what was expected and what was given. Build them with :func:`message`.

Example:
    >>> import jaxbuf
    >>> try:
    ...     jaxbuf.ReplayBuffer.create({"obs": 0.0}, 8)
    ... except jaxbuf.JaxbufError as err:
    ...     print(type(err).__name__, isinstance(err, ValueError))
    ConfigError True
"""

from __future__ import annotations

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "BufferStateError",
    "ConfigError",
    "DestinationExistsError",
    "FieldAttributeError",
    "FieldError",
    "IndexRangeError",
    "InputError",
    "JaxbufError",
    "MissingDependencyError",
    "NotIterableError",
    "SchemaVersionError",
    "TrajectoryFileError",
    "TrajectoryNotFoundError",
    "TrajectoryWriteError",
    "message",
]


def message(where: str, what: str) -> str:
    """The house style of an error message: ``"jaxbuf: <where>: <what>"``.

    Example:
        >>> message("ReplayBuffer.create", "size must be > 0, got 0")
        'jaxbuf: ReplayBuffer.create: size must be > 0, got 0'
    """
    return f"jaxbuf: {where}: {what}" if where else f"jaxbuf: {what}"


class JaxbufError(Exception):
    """Base class of every exception jaxbuf raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ConfigError(JaxbufError, ValueError, TypeError):
    """An invalid constructor option (raised by ``create``, never later).

    A ``ValueError`` and a ``TypeError``: a wrong value and a wrong type are both caught by
    whichever of the two a caller already handles.
    """


class InputError(JaxbufError, ValueError, TypeError):
    """An argument that does not fit the buffer: a batch's shape, dtype or structure, an
    index dtype, a batch size, a value that a cast would change."""


class FieldError(InputError, KeyError):
    """A field name the buffer does not store (also a ``KeyError``)."""


class IndexRangeError(InputError, IndexError):
    """A concrete index outside the buffer's slots (also an ``IndexError``)."""


class FieldAttributeError(JaxbufError, AttributeError):
    """Attribute access (``batch.name``, ``buffer.name``) to a field that is not stored.

    An ``AttributeError``, so ``hasattr`` and ``getattr`` with a default behave as usual.
    """


class BufferStateError(JaxbufError, RuntimeError):
    """A call that the buffer's current state does not allow: sampling an empty buffer,
    checkpointing one that keeps trajectories only in memory (also a ``RuntimeError``)."""


class NotIterableError(JaxbufError, TypeError, KeyError):
    """``iter(buf)``: a buffer is not iterable (its indices wrap, so iteration would never end).

    A ``TypeError``, as for any object that is not iterable; also a ``KeyError``, which NumPy
    takes as "not a sequence", so ``np.array([buf], dtype=object)`` holds the buffer itself.
    """


class MissingDependencyError(JaxbufError, ImportError):
    """An optional dependency (``h5py``, ``torch``, ...) that the called function needs is not
    installed; the message names the package and the ``pip install`` line (also an
    ``ImportError``)."""


class CheckpointError(JaxbufError, ValueError):
    """A checkpoint (orbax or file mode) that cannot be used; the message names the path."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint (or no such step) at the given directory."""


class CheckpointCorruptError(CheckpointError):
    """A committed checkpoint whose files cannot be read back (truncated, edited, damaged)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint holds a buffer of another class, structure, shape, dtype or config."""


class SchemaVersionError(CheckpointMismatchError):
    """The checkpoint was written with a schema version this jaxbuf cannot read."""


class TrajectoryFileError(JaxbufError, ValueError):
    """A trajectory file that exists but cannot be decoded or does not match its listing.

    Attributes:
        path: the offending file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"jaxbuf: corrupt trajectory file {path}: {reason}")
        self.path = path
        self.reason = reason


class TrajectoryNotFoundError(JaxbufError, FileNotFoundError):
    """A trajectory file, a buffer listing (``metadata.json``, ``trajectory_index.json``) or a
    ``rank_*`` directory that does not exist; the message names the path (also a
    ``FileNotFoundError``)."""


class DestinationExistsError(JaxbufError, FileExistsError):
    """The target directory of a checkpoint, merge or split already holds something that the
    call would overwrite (also a ``FileExistsError``)."""


class TrajectoryWriteError(JaxbufError, RuntimeError):
    """A background write (trajectory file or listing) that failed.

    Raised by the next call that touches the buffer's files after the failure; the original
    exception is ``__cause__``.
    """
