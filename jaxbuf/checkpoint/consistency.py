"""Checks that a restored buffer's static configuration agrees with its arrays.

The JSON description of a checkpoint carries the static configuration (``subbuffer_size``,
``buffer_num``, ...) separately from the arrays, so an edited or damaged description could
rebuild a buffer whose configuration does not fit its storage, or whose counters point
outside it; such a buffer would then add and sample silently wrong. :func:`check_restored`
walks the restored pytree and, for every node that has ``storage``, ``counters``,
``subbuffer_size`` and ``buffer_num``, checks:

* ``subbuffer_size`` and ``buffer_num`` are positive ints;
* every storage array has leading dimensions ``[subbuffer_size, buffer_num]``;
* ``counters`` is ``[buffer_num, 5]`` (after any leading axes of a vmapped stack, which the
  storage arrays share) (columns ``insertion_idx, lengths, last_slot, ep_len,
  ep_start``) with ``0 <= insertion_idx < m``, ``0 <= lengths <= m``,
  ``0 <= last_slot < m``, ``ep_len >= 0`` and ``0 <= ep_start < m``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxbuf.errors import CheckpointCorruptError

__all__ = ["check_restored"]

# per counter column: name, upper bound as a function of m (None: none), bound inclusive
_COLUMNS = (
    ("insertion_idx", lambda m: m, False),
    ("lengths", lambda m: m, True),
    ("last_slot", lambda m: m, False),
    ("ep_len", None, False),
    ("ep_start", lambda m: m, False),
)


def _nodes(tree: Any, path: str):
    """(path, node) of ``tree`` and every dataclass, dict, list or tuple inside it."""
    yield path, tree
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        for field in dataclasses.fields(tree):
            child = getattr(tree, field.name, None)
            yield from _nodes(child, f"{path}.{field.name}" if path else field.name)
    elif isinstance(tree, dict):
        for key, child in tree.items():
            yield from _nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, child in enumerate(tree):
            yield from _nodes(child, f"{path}[{i}]")


def _host(array: Any) -> np.ndarray | None:
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        return None  # another process holds part of it; its own restore checks that part
    return np.asarray(array)


def _check_node(node: Any, path: str, where: str) -> None:
    prefix = f"{path}." if path else ""

    def fail(field: str, what: str) -> None:
        raise CheckpointCorruptError(
            f"jaxbuf: the checkpoint at {where} is inconsistent: {prefix}{field}: {what}"
        )

    m, n = node.subbuffer_size, node.buffer_num
    for name, value in (("subbuffer_size", m), ("buffer_num", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fail(name, f"expected a positive int, got {value!r}")
    counters = node.counters
    cshape = tuple(getattr(counters, "shape", ()))
    if len(cshape) < 2 or cshape[-2:] != (n, len(_COLUMNS)):
        fail(
            "counters",
            f"shape {cshape} but buffer_num={n} requires (..., {n}, {len(_COLUMNS)})",
        )
    batch = cshape[:-2]  # leading axes of a vmapped stack of buffers
    want = (*batch, m, n)
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(node.storage):
        shape = tuple(getattr(leaf, "shape", ()))
        if shape[: len(want)] != want:
            fail(
                "storage" + jax.tree_util.keystr(key_path),
                f"leading dimensions {shape[: len(want)]} but subbuffer_size={m} and "
                f"buffer_num={n} require {want}",
            )
    values = _host(counters)
    if values is None:
        return
    values = values.reshape(-1, n, len(_COLUMNS))
    for j, (name, upper, inclusive) in enumerate(_COLUMNS):
        column = values[..., j]
        bad = column < 0
        if upper is not None:
            bad |= column > upper(m) if inclusive else column >= upper(m)
        if np.any(bad):
            k = int(np.argmax(bad.any(axis=0)))
            held = int(column[:, k][bad[:, k]][0])
            bound = "" if upper is None else f" {'<=' if inclusive else '<'} {upper(m)}"
            fail(
                f"counters[..., {j}] ({name})",
                f"sub-buffer {k} holds {held}, outside 0 <= {name}{bound} (subbuffer_size={m})",
            )


def check_restored(tree: Any, where: Any) -> None:
    """Raise CheckpointCorruptError naming ``where`` and the field when a restored buffer's
    configuration disagrees with its arrays (module docstring)."""
    for path, node in _nodes(tree, ""):
        if all(hasattr(node, a) for a in ("storage", "counters", "subbuffer_size", "buffer_num")):
            _check_node(node, path, str(where))
