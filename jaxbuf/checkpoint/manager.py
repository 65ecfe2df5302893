"""A thin ``orbax.checkpoint.CheckpointManager`` for a buffer beside model state, and the
one-call :func:`save` / :func:`restore` built on it.

Two lines in a training loop::

    ckpt = jaxbuf.checkpoint_manager("/ckpt", max_to_keep=3)      # async by default
    ckpt.save(step, buffer=buf, params=params, opt_state=opt_state)

Crash safety comes from orbax's atomic commit: each step is written under a temporary name
(``<step>.orbax-checkpoint-tmp-*``) and renamed to ``<step>`` only after every item and the
``commit_success.txt`` marker are on disk; step listing ignores temporary names, and old steps
are deleted only after the new one is committed. A save interrupted at any point therefore
leaves the previous step the latest restorable one and the partial one invisible.

Donation caveat: an async save keeps a reference to the arrays it is writing until it
finishes. While it is in flight, a jitted step with ``donate_argnums`` on that same state does
not donate: XLA silently copies the buffer (no warning), so memory peaks at twice the buffer.
Call :meth:`BufferCheckpointManager.wait` before the next donated step when that matters.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from jaxbuf.checkpoint import orbax_io
from jaxbuf.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    InputError,
    message,
)

_WHERE = "BufferCheckpointManager"
_RESERVED = (orbax_io.BUFFER_ITEM, orbax_io.meta_item(orbax_io.BUFFER_ITEM))


def _path(directory: str | os.PathLike) -> epath.Path:
    path = epath.Path(directory)
    return path if "://" in str(directory) else epath.Path(os.path.abspath(path))


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`BufferCheckpointManager.restore` returns.

    Attributes:
      step: the restored step.
      buffer: the buffer (``None`` if that step holds none).
      items: the other restored pytrees by name (``params``, ``opt_state``, ...).

    ``restored["buffer"]`` and ``restored["params"]`` read the same fields by name.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 8).add(ex)
    >>> with jaxbuf.checkpoint_manager(tempfile.mkdtemp(), async_save=False) as ckpt:
    ...     _ = ckpt.save(3, buffer=buf, params={"w": jnp.ones(2)})
    ...     restored = ckpt.restore(like=buf, params={"w": jnp.zeros(2)})
    >>> params = restored["params"]
    >>> restored.step, len(restored.buffer), params["w"].tolist()
    (3, 1, [1.0, 1.0])
    """

    step: int
    buffer: Any
    items: dict

    def __getitem__(self, name: str) -> Any:
        """``restored["buffer"]`` or ``restored["params"]``."""
        return self.buffer if name == orbax_io.BUFFER_ITEM else self.items[name]


class BufferCheckpointManager:
    """Save and restore a buffer beside other pytrees at training steps (orbax underneath).

    Args:
      directory: root directory; step ``s`` lives in ``directory/s``.
      max_to_keep: keep the latest N committed steps (``None``: keep all).
      save_interval_steps: ``save`` only writes steps divisible by this (others return False).
      async_save: write in background threads; ``save`` returns once arrays are handed over.
      read_only: never write, create or clean up anything (used by :func:`restore`).
    The underlying manager is :attr:`orbax_manager` for anything not wrapped here.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 8).add(ex)
    >>> ckpt = jaxbuf.BufferCheckpointManager(tempfile.mkdtemp(), max_to_keep=2,
    ...                                       save_interval_steps=10)
    >>> tuple(ckpt.save(step, buffer=buf) for step in (10, 15, 20, 30))
    (True, False, True, True)
    >>> ckpt.wait()
    >>> ckpt.all_steps()
    [20, 30]
    >>> len(ckpt.restore(20, like=buf).buffer)
    1
    >>> ckpt.close()
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = None,
        save_interval_steps: int = 1,
        async_save: bool = True,
        read_only: bool = False,
    ) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ConfigError(
                message(_WHERE, f"max_to_keep must be None or >= 1, got {max_to_keep}")
            )
        if save_interval_steps < 1:
            raise ConfigError(
                message(_WHERE, f"save_interval_steps must be >= 1, got {save_interval_steps}")
            )
        self.directory = _path(directory)
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            preservation_policy=(
                checkpoint_managers.LatestN(max_to_keep) if max_to_keep is not None else None
            ),
            save_decision_policy=checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        # read_only is enforced here rather than with orbax's flag, which logs warnings on
        # every construction; with create and cleanup off, orbax writes nothing on restore.
        self.read_only = read_only
        self.orbax_manager = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------ saving
    def save(self, step: int, *, buffer: Any = None, wait: bool = False, **items: Any) -> bool:
        """Save ``buffer`` and the named pytrees ``items`` as ``step``.

        Async managers return as soon as the arrays are handed to the writer threads; see the
        module docstring for the donation caveat, and pass ``wait=True`` (or call
        :meth:`wait`) to block until the step is committed.

        Returns:
          Whether a save was started (False for steps skipped by ``save_interval_steps``).
        """
        if self.read_only:
            raise ConfigError(
                message(f"{_WHERE}.save", f"the manager of {self.directory} was opened read-only")
            )
        args = {}
        if buffer is not None:
            args.update(orbax_io.save_args(buffer))
        for name, tree in items.items():
            if name in _RESERVED:
                raise InputError(
                    message(f"{_WHERE}.save", f"item name '{name}' is reserved for the buffer")
                )
            args[name] = ocp.args.StandardSave(tree)
        if not args:
            raise InputError(
                message(f"{_WHERE}.save", "needs buffer= and/or named items to save")
            )
        started = self.orbax_manager.save(step, args=ocp.args.Composite(**args))
        if wait:
            self.wait()
        return started

    def wait(self) -> None:
        """Block until every async save has been committed (and old steps pruned)."""
        self.orbax_manager.wait_until_finished()

    # ------------------------------------------------------------------ reading
    def latest_step(self) -> int | None:
        """The newest committed step, or None."""
        return self.orbax_manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every committed step, ascending (unfinished saves are never listed)."""
        return sorted(self.orbax_manager.all_steps())

    def item_names(self, step: int) -> list[str]:
        """Names of the items saved at ``step`` (``buffer`` for the buffer)."""
        path = orbax_io.step_path(self.orbax_manager, step)
        names = {p.name for p in path.iterdir() if p.is_dir()}
        return sorted(n for n in names if n != orbax_io.meta_item(orbax_io.BUFFER_ITEM))

    def _check_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointNotFoundError(
                    f"jaxbuf: no committed checkpoint in {self.directory}{_unfinished(self)}"
                )
            return steps[-1]
        if step not in steps:
            raise CheckpointNotFoundError(
                f"jaxbuf: no committed step {step} in {self.directory}; committed steps: "
                f"{steps}{_unfinished(self)}"
            )
        return step

    def restore(self, step: int | None = None, *, like: Any = None, **items: Any) -> Restored:
        """Restore the buffer (and the named items) of ``step`` (default: the latest).

        Args:
          step: a committed step, or None for the latest.
          like: target layout of the buffer: ``None`` rebuilds the saved class on the default
            device; a buffer or ``jax.eval_shape`` of one (with shardings) restores onto its
            layout, any device count.
          **items: ``name=target`` for each other pytree to restore: a pytree of arrays or
            ``jax.ShapeDtypeStruct`` (shardings attached), or ``None`` to restore as saved.
        Raises:
          CheckpointNotFoundError: no such step (or none at all), or a requested item is
            missing from it.
          CheckpointMismatchError: ``like`` differs from the saved buffer (paths listed).
          CheckpointCorruptError: files of the step cannot be read.
        """
        step = self._check_step(step)
        names = self.item_names(step)
        buffer = None
        if orbax_io.BUFFER_ITEM in names:
            buffer = orbax_io.restore_buffer(self.orbax_manager, step, like)
        elif like is not None:
            raise CheckpointNotFoundError(
                f"jaxbuf: step {step} in {self.directory} holds no buffer (items: {names})"
            )
        restored = {}
        if items:
            missing = sorted(set(items) - set(names))
            if missing:
                raise CheckpointNotFoundError(
                    f"jaxbuf: step {step} in {self.directory} has no item(s) {missing}; it has "
                    f"{names}"
                )
            args = {n: ocp.args.StandardRestore(_abstract(t)) for n, t in items.items()}
            try:
                restored = dict(
                    self.orbax_manager.restore(step, args=ocp.args.Composite(**args)).items()
                )
            except Exception as err:  # orbax/tensorstore raise assorted types
                raise CheckpointCorruptError(
                    f"jaxbuf: cannot restore item(s) {sorted(items)} of step {step} in "
                    f"{self.directory}: {orbax_io.brief(err)}"
                ) from err
        return Restored(step=step, buffer=buffer, items=restored)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Wait for pending saves and release orbax's threads."""
        self.orbax_manager.close()

    def __enter__(self) -> BufferCheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abstract(target: Any) -> Any:
    if target is None:
        return None
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)


def _unfinished(mngr: BufferCheckpointManager) -> str:
    if not mngr.directory.exists():
        return " (the directory does not exist)"
    tmp = sorted(p.name for p in mngr.directory.iterdir() if ".orbax-checkpoint-tmp" in p.name)
    if tmp:
        return f" (unfinished, never committed save(s) ignored: {tmp})"
    return ""


def checkpoint_manager(
    directory: str | os.PathLike,
    *,
    max_to_keep: int | None = None,
    save_interval_steps: int = 1,
    async_save: bool = True,
) -> BufferCheckpointManager:
    """A :class:`BufferCheckpointManager` for ``directory`` (created if absent); async by default.

    ``ckpt.save(step, buffer=buf, params=params)`` then ``ckpt.restore(like=buf, params=p)``.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 8).add(ex)
    >>> ckpt = jaxbuf.checkpoint_manager(tempfile.mkdtemp())
    >>> ckpt.save(100, buffer=buf, params={"w": jnp.ones(3)})
    True
    >>> ckpt.wait()  # an async save: block until step 100 is committed
    >>> ckpt.latest_step(), ckpt.item_names(100)
    (100, ['buffer', 'params'])
    >>> ckpt.close()
    """
    return BufferCheckpointManager(
        directory,
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        async_save=async_save,
    )


def save(directory: str | os.PathLike, buf: Any) -> int:
    """Write ``buf`` to ``directory`` synchronously and atomically; return its generation.

    ``directory`` holds one buffer checkpoint. Each call commits a new generation
    (``directory/<n>``, orbax's atomic rename) and then deletes the older one, so an
    interrupted call leaves the previous generation restorable. A directory that also holds
    other items (a training run's ``params``, say) is refused, so it is never pruned.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 8).add(ex)
    >>> path = tempfile.mkdtemp()
    >>> jaxbuf.save(path, buf), jaxbuf.save(path, buf.add(ex)[0])
    (1, 2)
    >>> len(jaxbuf.restore(path))  # generation 2; generation 1 is gone
    2
    """
    path = _path(directory)
    with BufferCheckpointManager(path, max_to_keep=1, async_save=False) as mngr:
        latest = mngr.latest_step()
        if latest is not None:
            others = sorted(set(mngr.item_names(latest)) - {orbax_io.BUFFER_ITEM})
            if others:
                raise CheckpointError(
                    f"jaxbuf: save: {path} holds a training checkpoint (items {others} at step "
                    f"{latest}); jaxbuf.save would prune it. Use a separate directory or "
                    "jaxbuf.checkpoint_manager"
                )
        step = (latest or 0) + 1
        mngr.save(step, buffer=buf, wait=True)
    return step


def restore(directory: str | os.PathLike, like: Any = None, *, step: int | None = None) -> Any:
    """The buffer saved in ``directory`` (by :func:`save` or a manager), latest step by default.

    Args:
      directory: a :func:`save` directory or a :func:`checkpoint_manager` root.
      like: ``None`` to rebuild the saved buffer class on the default device, or a buffer /
        ``jax.eval_shape`` of one whose shardings place the restored arrays.
      step: a specific step (generation) instead of the latest.
    Raises:
      CheckpointNotFoundError, CheckpointMismatchError, SchemaVersionError,
      CheckpointCorruptError: see :mod:`jaxbuf.checkpoint.errors`.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 8).add(ex)
    >>> path = tempfile.mkdtemp()
    >>> _ = jaxbuf.save(path, buf)
    >>> back = jaxbuf.restore(path)  # the saved class, on the default device
    >>> type(back).__name__, len(back), back.maxsize
    ('ReplayBuffer', 1, 8)
    >>> import jax
    >>> like = jax.eval_shape(lambda: buf)  # the layout (and shardings) to restore into
    >>> len(jaxbuf.restore(path, like))
    1
    >>> try:
    ...     jaxbuf.restore(path, jaxbuf.ReplayBuffer.create(ex, 16))
    ... except jaxbuf.errors.CheckpointMismatchError:
    ...     print("refused: the checkpoint holds 8 slots")
    refused: the checkpoint holds 8 slots
    """
    path = _path(directory)
    if not path.exists():
        raise CheckpointNotFoundError(f"jaxbuf: no checkpoint at {path}: it does not exist")
    with BufferCheckpointManager(path, read_only=True) as mngr:
        restored = mngr.restore(step, like=like)
        if restored.buffer is None:
            raise CheckpointNotFoundError(
                f"jaxbuf: step {restored.step} in {path} holds no buffer "
                f"(items {mngr.item_names(restored.step)})"
            )
    return restored.buffer
