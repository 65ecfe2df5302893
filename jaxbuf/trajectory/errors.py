"""Exceptions raised by RLinf file mode."""

from __future__ import annotations

__all__ = ["CheckpointError", "TrajectoryFileError", "TrajectoryWriteError"]


class TrajectoryFileError(ValueError):
    """A trajectory file exists but cannot be decoded or does not match its index entry.

    Attributes:
        path: the offending file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt trajectory file {path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(ValueError):
    """``metadata.json`` / ``trajectory_index.json`` is unreadable or inconsistent.

    The message names the file and, where relevant, the trajectory id and field.
    """


class TrajectoryWriteError(RuntimeError):
    """A background write (trajectory file or metadata) failed.

    Raised at the next ``add_trajectories``, ``sample``, ``flush``, ``save_checkpoint``,
    ``clear`` or ``close`` call after the failure; the original exception is ``__cause__``.
    """
