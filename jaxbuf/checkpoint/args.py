"""A buffer as one orbax item: ``BufferSave`` / ``BufferRestore`` and their handler.

Save the buffer beside a flax ``TrainState`` in one step, the way orbax items are written::

    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(ts), buffer=jaxbuf.checkpoint.BufferSave(buf)))
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_ts),
        buffer=jaxbuf.checkpoint.BufferRestore(like=abstract_buf)))

The item directory holds the leaves as a ``StandardSave`` pytree (``leaf_0000``, ... in
``jax.tree_util`` flatten order, the same arrays :func:`jaxbuf.checkpoint.save_args` writes)
and the JSON description of :mod:`jaxbuf.checkpoint.schema` in ``jaxbuf_buffer.json``.
Restoring goes through the same checks as ``jaxbuf.restore``: the description against
``like`` field by field, then the restored configuration against its arrays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from jaxbuf.checkpoint import orbax_io, schema
from jaxbuf.errors import CheckpointCorruptError, CheckpointNotFoundError

__all__ = ["BufferCheckpointHandler", "BufferRestore", "BufferSave"]


class BufferCheckpointHandler(ocp.AsyncCheckpointHandler):
    """The orbax handler of :class:`BufferSave` / :class:`BufferRestore` items.

    orbax creates it for you whenever one of those arguments appears in an
    ``ocp.args.Composite``; construct it yourself only for a standalone
    ``ocp.Checkpointer(BufferCheckpointHandler())``.

    Args:
      multiprocessing_options: passed to the array and JSON writers (primary host, barriers);
        orbax's defaults when ``None``.

    >>> import jaxbuf, orbax.checkpoint as ocp
    >>> ocp.args.get_registered_handler_cls(jaxbuf.checkpoint.BufferSave).__name__
    'BufferCheckpointHandler'
    """

    def __init__(
        self,
        *,
        multiprocessing_options: ocp.options.MultiprocessingOptions | None = None,
    ) -> None:
        options = multiprocessing_options or ocp.options.MultiprocessingOptions()
        self._arrays = ocp.StandardCheckpointHandler(multiprocessing_options=options)
        self._json = ocp.JsonCheckpointHandler(orbax_io.META_FILE, multiprocessing_options=options)

    async def async_save(
        self, directory: epath.Path, args: BufferSave
    ) -> list[ocp.future.Future] | None:
        """Start writing ``args.buffer`` into ``directory``; orbax awaits the returned futures."""
        meta, leaves = schema.describe(args.buffer)
        arrays = ocp.args.StandardSave(orbax_io.leaf_items(leaves))
        futures = list(await self._arrays.async_save(directory, args=arrays) or [])
        futures += await self._json.async_save(directory, args=ocp.args.JsonSave(meta)) or []
        return futures

    def save(self, directory: epath.Path, args: BufferSave) -> None:
        """Write ``args.buffer`` into ``directory`` and wait until it is on disk."""

        async def run() -> None:
            for f in await self.async_save(directory, args) or []:
                f.result()

        asyncio.run(run())

    def metadata(self, directory: epath.Path) -> dict:
        """The checked JSON description of the buffer saved in ``directory``.

        Also reads the two-item layout of ``jaxbuf.save``: an item ``<name>`` of leaves and
        its sibling ``<name>_meta`` (a ``JsonSave`` of the same description).

        Raises:
          CheckpointNotFoundError: ``directory`` holds no buffer description.
          CheckpointCorruptError: the description cannot be read or is not jaxbuf's.
          SchemaVersionError: written with another checkpoint schema version.
        """
        directory = epath.Path(directory)
        path = directory / orbax_io.META_FILE
        if not path.exists():  # the layout of jaxbuf.save / save_args
            path = directory.parent / orbax_io.meta_item(directory.name) / "metadata"
        if not path.exists():
            raise CheckpointNotFoundError(
                f"jaxbuf: {directory} holds no buffer description (no {orbax_io.META_FILE}, "
                f"no sibling {orbax_io.meta_item(directory.name)}); was it saved with "
                "jaxbuf.checkpoint.BufferSave or jaxbuf.save?"
            )
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointCorruptError(
                f"jaxbuf: the buffer description {path} is corrupt or unreadable: {err}"
            ) from err
        return orbax_io.checked_meta(meta, path)

    def restore(self, directory: epath.Path, args: BufferRestore | None = None) -> Any:
        """The buffer saved in ``directory``, checked against ``args.like`` (see
        :class:`BufferRestore`)."""
        like = None if args is None else args.like
        meta = self.metadata(directory)

        def read_arrays(abstract: dict) -> dict:
            return self._arrays.restore(directory, args=ocp.args.StandardRestore(abstract))

        return orbax_io.restore_from(meta, like, directory, read_arrays, directory)

    def finalize(self, directory: epath.Path) -> None:
        """Finish the array store after every process has written (orbax calls this)."""
        self._arrays.finalize(directory)

    def close(self) -> None:
        """Release the writers' threads."""
        self._arrays.close()
        self._json.close()


@ocp.args.register_with_handler(BufferCheckpointHandler, for_save=True)
@dataclasses.dataclass
class BufferSave(ocp.args.CheckpointArgs):
    """Orbax save argument of a jaxbuf buffer: ``ocp.args.Composite(buffer=BufferSave(buf))``.

    Writes every leaf of ``buffer`` (sharded arrays shard by shard, async with an async
    manager) and the JSON description (classes, static configuration, paths, shapes,
    dtypes) that :class:`BufferRestore` checks on the way back.

    Attributes:
      buffer: any checkpointable jaxbuf buffer pytree (``ReplayBuffer`` with any
        ``buffer_num``, prioritized, HER, cached, a ``vmap``-ed stack, a registered node).

    >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf = jaxbuf.ReplayBuffer.create(ex, 4)
    >>> mngr = ocp.CheckpointManager(tempfile.mkdtemp())
    >>> mngr.save(0, args=ocp.args.Composite(buffer=jaxbuf.checkpoint.BufferSave(buf)))
    True
    >>> mngr.wait_until_finished()
    >>> out = mngr.restore(0, args=ocp.args.Composite(
    ...     buffer=jaxbuf.checkpoint.BufferRestore(like=buf)))
    >>> out["buffer"].maxsize
    4
    >>> mngr.close()
    """

    buffer: Any


@ocp.args.register_with_handler(BufferCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class BufferRestore(ocp.args.CheckpointArgs):
    """Orbax restore argument of a jaxbuf buffer saved with :class:`BufferSave` (or
    ``jaxbuf.save``).

    Attributes:
      like: ``None`` rebuilds the saved classes, with every static field from the stored
        description, on the default device. A buffer (concrete or ``jax.eval_shape`` of one)
        is first compared with the checkpoint field by field (class, static configuration
        such as ``stack_num`` and ``buffer_num``, dict keys, shapes, dtypes); then each array
        is restored onto the sharding of the matching leaf of ``like``.

    Raises (from ``manager.restore``):
      CheckpointMismatchError: ``like`` differs (every difference listed with its field
        path, what ``like`` expects and what the checkpoint holds).
      CheckpointCorruptError: unreadable files, or a configuration that does not fit the
        arrays.

    >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf = jaxbuf.ReplayBuffer.create(ex, 4)
    >>> mngr = ocp.CheckpointManager(tempfile.mkdtemp(),
    ...     options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    >>> _ = mngr.save(0, args=ocp.args.Composite(buffer=jaxbuf.checkpoint.BufferSave(buf)))
    >>> stacked = jaxbuf.ReplayBuffer.create(ex, 4, stack_num=2)
    >>> try:
    ...     mngr.restore(0, args=ocp.args.Composite(
    ...         buffer=jaxbuf.checkpoint.BufferRestore(like=stacked)))
    ... except jaxbuf.CheckpointError as err:
    ...     print(str(err).splitlines()[-1].strip())
    stack_num (static): like expects 2, checkpoint has 1
    >>> mngr.close()
    """

    like: Any = None
