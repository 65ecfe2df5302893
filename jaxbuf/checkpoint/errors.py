"""Exceptions raised by jaxbuf checkpoints; every message names the path it concerns."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every checkpoint error raised by jaxbuf."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint (or no such step) at the given directory."""


class CheckpointCorruptError(CheckpointError):
    """A committed checkpoint whose files cannot be read back (truncated, edited, damaged)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint holds a buffer of another class, structure, shape, dtype or config."""


class SchemaVersionError(CheckpointMismatchError):
    """The checkpoint was written with a schema version this jaxbuf cannot read."""
