"""In-memory pieces of the trajectory buffer: the read cache, batch layouts and gathering.

A *flat* trajectory is the dict ``field -> [T*B, ...]`` (nested dicts for observations) that
``Trajectory.flatten`` returns; its *layout* is the field names with per-row shapes and
dtypes. Every trajectory of one buffer must share a layout, since a batch stacks rows of many.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from jaxbuf.errors import InputError

__all__ = ["FifoCache", "gather", "layout_difference", "signature"]


class FifoCache:
    """Flattened trajectories by id; evicts the oldest *inserted* id beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, dict] = OrderedDict()

    def get(self, tid: int) -> dict | None:
        return self._items.get(tid)

    def put(self, tid: int, flat: dict) -> None:
        self._items[tid] = flat  # an existing id keeps its place (RLinf overwrites its slot)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def discard(self, tid: int) -> None:
        self._items.pop(tid, None)

    def clear(self) -> None:
        self._items.clear()

    def ids(self) -> list[int]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


def signature(flat: dict) -> tuple:
    """Field names, per-row shapes and dtypes of a flattened trajectory (its layout)."""
    sig = []
    for key, value in flat.items():
        if isinstance(value, dict):
            sig.append((key, tuple((k, v.shape[1:], v.dtype) for k, v in value.items())))
        else:
            sig.append((key, value.shape[1:], value.dtype))
    return tuple(sig)


def _fields(sig: tuple) -> dict[str, tuple]:
    out = {}
    for item in sig:
        if len(item) == 2:  # nested dict
            for k, shape, dtype in item[1]:
                out[f"{item[0]}/{k}"] = (shape, np.dtype(dtype))
        else:
            out[item[0]] = (item[1], np.dtype(item[2]))
    return out


def layout_difference(expected: tuple, actual: tuple) -> str | None:
    """The first difference between two layouts, in words, or None when they agree."""
    if expected == actual:
        return None
    want, got = _fields(expected), _fields(actual)
    for name in want:
        if name not in got:
            return f"field {name!r} is missing (the stored trajectories have it)"
    for name in got:
        if name not in want:
            return f"field {name!r} is not in the stored trajectories"
    for name, (shape, dtype) in want.items():
        if got[name] != (shape, dtype):
            return (
                f"field {name!r}: rows of shape {tuple(got[name][0])} and dtype {got[name][1]}, "
                f"but the stored trajectories have shape {tuple(shape)} and dtype {dtype}"
            )
    return "fields are in another order than in the stored trajectories"


def gather(
    flats: list[tuple[int, dict]], groups: list[np.ndarray], local: np.ndarray, n: int
) -> dict[str, Any]:
    """Assemble the batch: rows ``groups[j]`` come from ``flats[j]`` at rows ``local[...]``."""
    tid0, template = flats[0]
    sig0 = signature(template)
    batch: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, dict):
            batch[key] = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in value.items()}
        else:
            batch[key] = np.empty((n, *value.shape[1:]), value.dtype)
    for (tid, flat), rows in zip(flats, groups, strict=True):
        if flat is not template and signature(flat) != sig0:
            raise InputError(
                f"jaxbuf: trajectories {tid0} and {tid} in the sampling window have different "
                f"fields, "
                f"shapes or dtypes: {sig0} vs {signature(flat)}"
            )
        src = local[rows]
        for key, value in flat.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    batch[key][k][rows] = v[src]
            else:
                batch[key][rows] = value[src]
    return batch
