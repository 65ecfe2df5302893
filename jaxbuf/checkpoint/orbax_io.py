"""A buffer as two orbax items, and back: the piece to drop into any ``CheckpointManager``;
and :func:`restore_from`, the one restore path that every checkpoint route shares.

A buffer is saved as

* ``<name>``: a ``StandardSave`` item holding every leaf, keyed ``leaf_0000``, ``leaf_0001``, ...
  in ``jax.tree_util`` flatten order (sharded arrays are written shard by shard);
* ``<name>_meta``: a ``JsonSave`` item holding :mod:`jaxbuf.checkpoint.schema`'s description
  (library and schema version, classes, static configuration, paths, shapes, dtypes).

Restoring reads the JSON first, checks it against ``like`` (or rebuilds the classes from the
registry without ``like``), then restores the leaves onto the target shardings, so a buffer
saved on one device layout restores onto another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxbuf._core.memory import place_storage
from jaxbuf.checkpoint import migrate, schema
from jaxbuf.checkpoint.consistency import check_restored
from jaxbuf.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)

BUFFER_ITEM = "buffer"
"""Default orbax item name of a buffer's leaves."""

META_FILE = "jaxbuf_buffer.json"
"""File of the JSON description inside an item saved with :class:`jaxbuf.checkpoint.BufferSave`."""


def meta_item(name: str) -> str:
    """Orbax item name of the JSON description of the buffer saved as item ``name``."""
    return f"{name}_meta"


def _leaf_key(i: int) -> str:
    return f"leaf_{i:04d}"


def leaf_items(leaves: list) -> dict[str, Any]:
    """The leaves of :func:`jaxbuf.checkpoint.schema.describe` keyed as saved: ``leaf_0000``,
    ``leaf_0001``, ... in ``jax.tree_util`` flatten order."""
    return {_leaf_key(i): leaf for i, leaf in enumerate(leaves)}


def save_args(buf: Any, name: str = BUFFER_ITEM) -> dict[str, ocp.args.CheckpointArgs]:
    """Orbax save arguments for ``buf``: ``{name: StandardSave, name + "_meta": JsonSave}``.

    Merge them into your own ``ocp.args.Composite`` to save the buffer beside other items::

        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                **jaxbuf.checkpoint.save_args(buf)))

    :class:`jaxbuf.checkpoint.BufferSave` is the same as one orbax item.

    >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf = jaxbuf.ReplayBuffer.create(ex, 4)
    >>> sorted(jaxbuf.checkpoint.save_args(buf))
    ['buffer', 'buffer_meta']
    >>> mngr = ocp.CheckpointManager(tempfile.mkdtemp(),
    ...     options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    >>> _ = mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave({"w": jnp.ones(3)}),
    ...                                          **jaxbuf.checkpoint.save_args(buf)))
    >>> jaxbuf.checkpoint.restore_buffer(mngr, 0).maxsize
    4
    >>> mngr.close()
    """
    meta, leaves = schema.describe(buf)
    return {
        name: ocp.args.StandardSave(leaf_items(leaves)),
        meta_item(name): ocp.args.JsonSave(meta),
    }


def step_path(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    """Directory of ``step`` under ``manager`` (orbax's default step naming), for messages."""
    return epath.Path(manager.directory) / str(step)


def read_meta(manager: ocp.CheckpointManager, step: int, name: str = BUFFER_ITEM) -> dict:
    """The checked JSON description of the buffer item ``name`` at ``step``.

    Raises:
      CheckpointNotFoundError: the step holds no buffer item ``name``.
      CheckpointCorruptError: the JSON cannot be read or is not jaxbuf's.
      SchemaVersionError: written with another checkpoint schema version.
    """
    where = step_path(manager, step) / meta_item(name)
    if not where.exists():
        raise CheckpointNotFoundError(
            f"jaxbuf: step {step} at {step_path(manager, step)} holds no buffer item '{name}' "
            f"(no {meta_item(name)} directory)"
        )
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(**{meta_item(name): ocp.args.JsonRestore()})
        )
        meta = restored[meta_item(name)]
    except Exception as err:  # orbax raises assorted types for unreadable files
        raise CheckpointCorruptError(
            f"jaxbuf: the buffer description at {where} is corrupt or unreadable: {brief(err)}"
        ) from err
    return checked_meta(meta, where)


def checked_meta(meta: Any, where: Any) -> dict:
    """``meta`` if it is a jaxbuf buffer description of this schema version.

    Raises:
      CheckpointCorruptError: not jaxbuf's JSON (``where`` names the file).
      SchemaVersionError: written with another checkpoint schema version.
    """
    try:
        schema.check_header(meta, str(where))
    except CheckpointError:
        raise
    except (ValueError, TypeError, AttributeError) as err:
        raise CheckpointCorruptError(f"jaxbuf: corrupt checkpoint: {err}") from err
    return meta


def brief(err: Exception) -> str:
    """The first part of an orbax/tensorstore message (they append long JSON specs)."""
    text = str(err).split(" [tensorstore_spec")[0]
    return text if len(text) <= 400 else text[:400] + " ..."


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _target(like_leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(like_leaf, "sharding", None)
    if sharding is None:
        sharding = _default_sharding()
    if isinstance(like_leaf, (bool, int, float)):
        like_leaf = jax.numpy.asarray(like_leaf)
    return jax.ShapeDtypeStruct(like_leaf.shape, like_leaf.dtype, sharding=sharding)


def _check_like(meta: dict, like_meta: dict, where: Any) -> None:
    diffs = schema.differences(meta, like_meta)
    if diffs:
        raise CheckpointMismatchError(
            f"jaxbuf: the checkpoint at {where} does not match like "
            f"({len(diffs)} difference(s)):\n  " + "\n  ".join(diffs)
        )


def _upgrade_onto(built: Any, like: Any, where: Any) -> Any:
    """A buffer rebuilt (and upgraded) from an older layout, checked against ``like`` and
    placed on its shardings."""
    built_meta, built_leaves = schema.describe(built)
    like_meta, like_leaves = schema.describe(like)
    _check_like(built_meta, like_meta, where)
    leaves = [jax.device_put(x, _target(t).sharding) for x, t in zip(built_leaves, like_leaves)]
    return place_storage(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves))


def restore_from(
    meta: dict, like: Any, where: Any, read_arrays: Callable[[dict], dict], arrays_at: Any
) -> Any:
    """The buffer described by the checked ``meta``, its arrays read by ``read_arrays``.

    The one restore path of every route (:func:`restore_buffer`, ``jaxbuf.restore`` and
    :class:`jaxbuf.checkpoint.BufferRestore`): compare with ``like`` field by field, restore
    the leaves onto ``like``'s shardings (or rebuild the saved classes on the default device),
    then run :func:`jaxbuf.checkpoint.consistency.check_restored`.

    Args:
      meta: the description, already through :func:`checked_meta`.
      like: ``None`` or the target buffer (concrete or ``jax.eval_shape`` of one).
      where: the checkpoint, for messages.
      read_arrays: maps ``{"leaf_0000": jax.ShapeDtypeStruct, ...}`` to the restored arrays
        under the same keys.
      arrays_at: where the arrays are, for the message of an unreadable file.
    """
    if like is not None and migrate.needs_upgrade(meta):
        built = restore_from(meta, None, where, read_arrays, arrays_at)
        return _upgrade_onto(built, like, where)
    entries = meta["leaves"]
    if like is None:
        targets = [schema.leaf_abstract(e, _default_sharding()) for e in entries]
    else:
        like_meta, like_leaves = schema.describe(like)
        _check_like(meta, like_meta, where)
        targets = [_target(leaf) for leaf in like_leaves]
    try:
        restored = read_arrays(leaf_items(targets))
    except Exception as err:  # tensorstore/orbax raise assorted types for damaged files
        raise CheckpointCorruptError(
            f"jaxbuf: the buffer arrays at {arrays_at} are corrupt or unreadable: {brief(err)}"
        ) from err
    leaves = [schema.from_saved_leaf(e, restored[_leaf_key(i)]) for i, e in enumerate(entries)]
    if like is None:
        buf = schema.build(meta, leaves, where)
    else:
        buf = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)
    check_restored(buf, where)
    return place_storage(buf)


def restore_buffer(
    manager: ocp.CheckpointManager, step: int, like: Any = None, name: str = BUFFER_ITEM
) -> Any:
    """Restore the buffer saved as item ``name`` at ``step`` of an orbax ``manager``.

    Reads both layouts: the two items of :func:`save_args` (what ``jaxbuf.save`` and
    ``jaxbuf.checkpoint_manager`` write) and the single item of
    :class:`jaxbuf.checkpoint.BufferSave`.

    Args:
      manager: any ``ocp.CheckpointManager`` whose step was saved with :func:`save_args`
        or :class:`jaxbuf.checkpoint.BufferSave`.
      step: the step to read.
      like: ``None`` to rebuild the saved class on the default device, or a buffer (concrete,
        or abstract from ``jax.eval_shape``) whose leaves' shardings say where each restored
        array goes; leaves without a sharding go to the default device.
      name: the buffer's item name.

    A buffer with ``storage_memory_kind`` gets its storage back in that (host) memory, with
    or without ``like``; the memory kind is placement, like a sharding, so restoring onto a
    ``like`` of another memory kind is allowed and follows ``like``.

    Raises:
      CheckpointMismatchError: ``like`` differs from the checkpoint (every difference is
        listed with its field path, what ``like`` expects and what the checkpoint has).
      CheckpointCorruptError: the array files cannot be read, or the restored static
        configuration disagrees with the arrays (storage shapes, counter ranges; see
        :mod:`jaxbuf.checkpoint.consistency`).

    >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 4).add(ex)
    >>> mngr = ocp.CheckpointManager(tempfile.mkdtemp(),
    ...     options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    >>> _ = mngr.save(5, args=ocp.args.Composite(
    ...     replay=jaxbuf.checkpoint.BufferSave(buf), step=ocp.args.JsonSave({"step": 5})))
    >>> back = jaxbuf.checkpoint.restore_buffer(mngr, 5, like=buf, name="replay")
    >>> len(back), back.storage["obs"].shape
    (1, (4, 1, 2))
    >>> mngr.close()
    """
    where = step_path(manager, step)
    if (where / name / META_FILE).exists():  # saved with BufferSave
        from jaxbuf.checkpoint.args import BufferRestore

        args = ocp.args.Composite(**{name: BufferRestore(like)})
        return manager.restore(step, args=args)[name]
    meta = read_meta(manager, step, name)

    def read_arrays(abstract: dict) -> dict:
        args = ocp.args.Composite(**{name: ocp.args.StandardRestore(abstract)})
        return manager.restore(step, args=args)[name]

    return restore_from(meta, like, where, read_arrays, where / name)
