"""Which pytree node classes a checkpoint may name, so ``restore`` never imports arbitrary code.

A checkpoint records the class of every dataclass node in the buffer pytree as
``"module:qualname"``. ``restore`` without ``like`` turns those names back into classes only
through this registry:

* jaxbuf's own classes are listed by name in :data:`BUILTIN_CLASSES`; a new jaxbuf buffer
  module adds one line per class there (the nested state nodes too, e.g. a sum tree). The
  module is imported lazily, on first use, and only because it is listed.
* Any other class (a user's subclass or wrapper) opts in with the :func:`register_buffer`
  decorator, which must have run (its module imported) before ``restore``.
"""

from __future__ import annotations

import dataclasses
import importlib

from jaxbuf.errors import CheckpointMismatchError, InputError

BUILTIN_CLASSES: tuple[str, ...] = (
    "jaxbuf.buffers:ReplayBuffer",
    "jaxbuf.prioritized.buffer:PrioritizedReplayBuffer",
    "jaxbuf.prioritized.sum_tree:SumTree",
    "jaxbuf.prioritized.sum_tree:MinTree",
    "jaxbuf.prioritized.priority_tree:PriorityTree",
    "jaxbuf.prioritized.tree:Tree",
    "jaxbuf.her:HERReplayBuffer",
    "jaxbuf.cached:CachedReplayBuffer",
)
"""jaxbuf's own checkpointable node classes, as ``"module:qualname"``. Add new ones here."""

ALIASES: dict[str, str] = {
    "jaxbuf.buffers:VectorReplayBuffer": "jaxbuf.buffers:ReplayBuffer",
    "jaxbuf.prioritized.buffer:PrioritizedVectorReplayBuffer": (
        "jaxbuf.prioritized.buffer:PrioritizedReplayBuffer"
    ),
    "jaxbuf.her:HERVectorReplayBuffer": "jaxbuf.her:HERReplayBuffer",
}
"""Class names that checkpoints of jaxbuf 0.2 may hold for what is now one class per kind
(``buffer_num`` is a static field of the class, so nothing else changes)."""


def canonical(name: str) -> str:
    """The current name of the class a checkpoint recorded as ``name``."""
    return ALIASES.get(name, name)


_registered: dict[str, type] = {}


def class_name(cls: type) -> str:
    """The name a checkpoint records for ``cls``: ``"module:qualname"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_buffer(cls: type) -> type:
    """Class decorator: allow checkpoints to hold (and ``restore`` to rebuild) ``cls``.

    ``cls`` must be a dataclass pytree node (``flax.struct.PyTreeNode`` or
    ``flax.struct.dataclass``) whose static fields are JSON-like values. Returns ``cls``.

    >>> import tempfile, jax.numpy as jnp, jaxbuf
    >>> from flax import struct
    >>> @jaxbuf.register_buffer
    ... class WithCounter(struct.PyTreeNode):  # a buffer plus the learner's own state
    ...     replay: jaxbuf.ReplayBuffer
    ...     updates: jnp.ndarray
    ...     tag: str = struct.field(pytree_node=False, default="run-1")
    >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
    ...           terminated=False, truncated=False)
    >>> node = WithCounter(jaxbuf.ReplayBuffer.create(ex, 4), jnp.int32(7))
    >>> path = tempfile.mkdtemp()
    >>> _ = jaxbuf.save(path, node)
    >>> back = jaxbuf.restore(path)
    >>> type(back).__name__, int(back.updates), back.tag, back.replay.maxsize
    ('WithCounter', 7, 'run-1', 4)
    """
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise InputError(
            f"jaxbuf: register_buffer: expects a dataclass pytree node class (flax.struct), got "
            f"{cls!r}"
        )
    _registered[class_name(cls)] = cls
    return cls


def is_registered(cls: type) -> bool:
    """Whether ``cls`` is a built-in jaxbuf class or was passed to :func:`register_buffer`."""
    name = class_name(cls)
    return name in _registered or name in BUILTIN_CLASSES


def resolve(name: str) -> type:
    """The class recorded as ``name`` (``"module:qualname"``), if it is registered.

    Raises:
      CheckpointMismatchError: ``name`` is neither built in nor registered in this process.
    """
    name = canonical(name)
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN_CLASSES:
        raise CheckpointMismatchError(
            f"jaxbuf: the checkpoint holds class '{name}', which is not a registered buffer "
            "class; import the module that registers it (jaxbuf.checkpoint.register_buffer) "
            "or pass like= to restore"
        )
    module, qualname = name.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    _registered[name] = obj
    return obj
