"""Where the storage lives: device memory (the default) or the host's pinned memory.

A buffer created with ``storage_memory_kind="pinned_host"`` keeps its field leaves (the
``[subbuffer_size, buffer_num, ...]`` storage arrays) in the host memory of its device, while
the counters, episode statistics and priority tree stay in device memory. Everything here is
expressed with JAX memory kinds, so it runs eagerly and under ``jit``/``lax.scan``:

* arrays move with ``jax.device_put(x, jax.memory.Space.Host / Device)``, which keeps an
  array's sharding and changes only its memory kind;
* operations on host arrays (the gather of a read, the scatter of an add) run inside
  ``compute_on("device_host")`` with every operand on the host (JAX refuses to mix memory
  spaces in one operation), and only their results move: a read moves the gathered rows to
  the device, an add moves the new rows to the host.

JAX types ``pinned_host`` arrays as host memory inside ``jit``, so a jitted (and donated)
add returns its storage in host memory with no ``out_shardings``. ``unpinned_host`` has no
such type in JAX 0.10 (inside ``jit`` it is typed as device memory, the outputs of a jitted
function land in device memory, and donating such an input can abort the process), so it is
refused (see :func:`check_kind`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.experimental.compute_on import compute_on

from jaxbuf.errors import ConfigError, message

HOST_KINDS = ("pinned_host",)
"""The storage memory kinds a buffer accepts besides the device's own memory."""


def available_kinds() -> tuple[str, ...]:
    """The memory kinds the first local device can address (e.g. ``('device', 'pinned_host',
    'unpinned_host')`` on CPU and GPU)."""
    device = jax.local_devices()[0]
    try:
        return tuple(m.kind for m in device.addressable_memories())
    except Exception:  # a backend without memory kinds
        return (device.default_memory().kind,) if hasattr(device, "default_memory") else ()


def check_kind(where: str, kind: Any) -> str | None:
    """``kind`` checked for a ``storage_memory_kind`` option: ``None`` for device memory.

    ``None`` and ``"device"`` mean device memory; ``"pinned_host"`` is accepted where the
    backend offers it. Anything else raises :class:`~jaxbuf.errors.ConfigError` naming the
    kinds that can be used here.
    """
    if kind is None or kind == "device":
        return None
    available = available_kinds()
    usable = ["device"] + [k for k in HOST_KINDS if k in available]
    if kind == "unpinned_host" and kind in available:
        raise ConfigError(
            message(
                where,
                "storage_memory_kind='unpinned_host' is not supported: inside jit JAX types "
                "unpinned host arrays as device memory, so a jitted add would hand the "
                f"storage back in device memory; use one of {usable} (this device offers "
                f"{list(available)})",
            )
        )
    if not isinstance(kind, str) or kind not in usable:
        raise ConfigError(
            message(
                where,
                f"storage_memory_kind must be None or one of {usable} (the memory kinds this "
                f"device offers are {list(available)}), got {kind!r}",
            )
        )
    return kind


def to_host(tree: Any) -> Any:
    """Every leaf of ``tree`` in the host memory of its device(s) (sharding kept)."""
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, jax.memory.Space.Host), tree)


def to_device(tree: Any) -> Any:
    """Every leaf of ``tree`` in device memory (sharding kept)."""
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, jax.memory.Space.Device), tree)


def on_host(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` computed on the host, with every array of ``args`` moved there first.

    The result stays in host memory; move what the device needs with :func:`to_device`.
    """
    args = to_host(args)
    with compute_on("device_host"):
        return fn(*args)


def memory_kind_of(x: Any) -> str | None:
    """The memory kind of a concrete array (``None`` for a tracer or a NumPy array)."""
    sharding = getattr(x, "sharding", None)
    return getattr(sharding, "memory_kind", None)


def place_storage(tree: Any) -> Any:
    """``tree`` with the storage of every core buffer in it moved to its memory kind.

    For buffers restored from a checkpoint onto the default device: a buffer created with
    ``storage_memory_kind`` gets its storage leaves back in host memory; other leaves, and
    buffers without the option, are returned as they are.
    """
    from jaxbuf.buffers import ReplayBuffer

    def place(node: Any) -> Any:
        if isinstance(node, ReplayBuffer) and node.storage_memory_kind is not None:
            return node.replace(storage=to_host(node.storage))
        return node

    return jax.tree_util.tree_map(place, tree, is_leaf=lambda node: isinstance(node, ReplayBuffer))
