"""Batches in and out of the Tianshou facade: duck-typed input, attribute-access output.

Input: a ``dict``, any ``Mapping`` or a Tianshou ``Batch`` (recognised by shape, never by
import: an object with ``keys()`` and ``__getitem__``, or one whose fields live in
``__dict__``), nested to any depth. Output: :class:`BatchDict`, a ``dict`` whose keys are
also attributes, holding NumPy arrays, so ``batch.obs`` and ``batch["obs"]`` both work.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxbuf.errors import FieldAttributeError, InputError, message

FLAGS = ("terminated", "truncated", "done")
"""Top-level keys that Tianshou casts to bool; 0/1 integers and floats are accepted here."""


class BatchDict(dict):
    """A ``dict`` of NumPy arrays whose keys are also attributes (``b.obs is b["obs"]``).

    What the facade returns from reads and samples. ``len(b)`` is the number of keys (a
    Tianshou ``Batch`` gives the batch size: use ``len(b.act)``). Not a JAX pytree node:
    convert with ``dict(b)`` (nested values are ``BatchDict`` too) before ``jax.tree.map``.

    Example:
      >>> import numpy as np
      >>> from jaxbuf.compat.tianshou import BatchDict
      >>> b = BatchDict(obs=np.zeros(3), act=np.arange(3))
      >>> b.obs is b["obs"], len(b), len(b.act)
      (True, 2, 3)
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise FieldAttributeError(
                f"jaxbuf: batch has no field '{name}'; fields are {sorted(self)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __getstate__(self) -> dict:
        return dict(self)

    def __setstate__(self, state: dict) -> None:
        self.update(state)


def _is_leaf(x: Any) -> bool:
    """Array-like values (and scalars, strings, None) are leaves; everything else may be a batch."""
    return (
        x is None
        or isinstance(x, (numbers.Number, np.generic, np.ndarray, jax.Array, str, bytes))
        or isinstance(x, (list, tuple))
        or hasattr(x, "__array__")
        or hasattr(x, "__jax_array__")
    )


def fields_of(x: Any) -> dict | None:
    """The fields of a mapping or batch-like object as a plain dict, or None for a leaf."""
    if isinstance(x, Mapping):
        return dict(x)
    if _is_leaf(x):
        return None
    keys = getattr(x, "keys", None)
    if callable(keys) and hasattr(x, "__getitem__"):
        return {k: x[k] for k in keys()}
    if hasattr(x, "__dict__"):
        return {k: v for k, v in vars(x).items() if not k.startswith("_")}
    return None


def to_tree(x: Any) -> Any:
    """``x`` with every mapping / batch-like node a plain ``dict`` and lists as arrays."""
    fields = fields_of(x)
    if fields is None:
        return np.asarray(x) if isinstance(x, (list, tuple)) else x
    return {str(k): to_tree(v) for k, v in fields.items()}


def as_batch(batch: Any, where: str) -> dict:
    """The user's batch as a nested dict, with 0/1 flags cast to bool (as Tianshou)."""
    fields = fields_of(batch)
    if fields is None:
        raise InputError(
            message(
                where,
                "batch must be a dict, a Mapping or a Tianshou-style Batch, got "
                f"{type(batch).__name__}",
            )
        )
    out = {str(k): to_tree(v) for k, v in fields.items()}
    for key in FLAGS:
        if key in out and out[key] is not None:
            out[key] = _flag(out[key], key, where)
    return out


def _flag(value: Any, key: str, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(
            message(where, f"field '{key}' must hold booleans or 0/1, got dtype {arr.dtype}")
        )
    if not np.all((arr == 0) | (arr == 1)):
        raise InputError(
            message(where, f"field '{key}' must hold booleans or 0/1, got {arr.ravel()[:8]}")
        )
    return arr.astype(bool)


def to_numpy(tree: Any) -> Any:
    """A read's pytree as NumPy arrays (copies), with every dict a :class:`BatchDict`."""
    if isinstance(tree, Mapping):
        return BatchDict({k: to_numpy(v) for k, v in tree.items()})
    return np.array(tree)


def first_row(batch: dict, where: str) -> dict:
    """One transition out of a batch with a leading axis (for allocating from it)."""

    def row(path, x):
        arr = np.asarray(x)
        if arr.ndim == 0:
            name = ".".join(str(getattr(p, "key", p)) for p in path)
            raise InputError(
                message(
                    where,
                    f"field '{name}' needs a leading batch axis here (one row per buffer "
                    f"id), got a scalar",
                )
            )
        return arr[0]

    return jax.tree_util.tree_map_with_path(row, batch)


def single(batch: dict) -> dict:
    """One transition given without a batch axis, as NumPy values."""
    return jax.tree_util.tree_map(np.asarray, batch)
