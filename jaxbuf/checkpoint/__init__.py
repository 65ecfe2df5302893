"""Checkpoints of any jaxbuf buffer through orbax, and import of Tianshou HDF5 buffers.

* :func:`save` / :func:`restore`: one buffer in one directory, atomic, self-describing.
* :func:`checkpoint_manager`: the buffer beside model state at training steps, async.
* :class:`BufferSave` / :class:`BufferRestore`: the buffer as one orbax item, beside a
  ``TrainState`` in your own ``ocp.args.Composite``, with the same checks on restore.
* :func:`save_args` / :func:`restore_buffer`: the two-item format of :func:`save` inside your
  own orbax manager.
* :func:`register_buffer`: allow a new buffer class (see :mod:`jaxbuf.checkpoint.registry`).
* :func:`from_tianshou_hdf5`: a buffer written by Tianshou's ``save_hdf5`` (needs h5py).

See docs/checkpoints.md.
"""

from jaxbuf.checkpoint.args import BufferCheckpointHandler, BufferRestore, BufferSave
from jaxbuf.checkpoint.manager import (
    BufferCheckpointManager,
    Restored,
    checkpoint_manager,
    restore,
    save,
)
from jaxbuf.checkpoint.orbax_io import restore_buffer, save_args
from jaxbuf.checkpoint.registry import register_buffer
from jaxbuf.checkpoint.schema import SCHEMA_VERSION
from jaxbuf.checkpoint.tianshou_hdf5 import from_tianshou_hdf5
from jaxbuf.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    SchemaVersionError,
)

__all__ = [
    "SCHEMA_VERSION",
    "BufferCheckpointHandler",
    "BufferCheckpointManager",
    "BufferRestore",
    "BufferSave",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "Restored",
    "SchemaVersionError",
    "checkpoint_manager",
    "from_tianshou_hdf5",
    "register_buffer",
    "restore",
    "restore_buffer",
    "save",
    "save_args",
]
