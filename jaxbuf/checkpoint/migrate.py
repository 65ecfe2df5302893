"""Restore checkpoints of jaxbuf classes whose fields have changed since they were written.

Each entry of :data:`LEGACY_LAYOUTS` names a class and the field set it was saved with (the
static fields and the pytree fields of its node in the checkpoint JSON); :func:`upgrade`
turns the saved values into an instance of today's class. ``restore`` without ``like``
applies it while rebuilding; ``restore`` with ``like`` first rebuilds (and upgrades) the
buffer as saved, then compares the result with ``like`` and places it on ``like``'s
shardings (:func:`needs_upgrade` tells it when).

Layouts handled:

* ``SumTree`` / ``MinTree`` of jaxbuf 0.2 before the trees were unified: ``levels`` (a
  tuple of flat arrays, root first, the padded leaves last) and the statics ``capacity`` and
  ``op``. Rebuilt from their leaves (``from_values``), which reproduces every internal node of
  the new layout exactly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _segment_tree_levels(class_path: str) -> Callable[[dict], Any]:
    def convert(fields: dict) -> Any:
        module, name = class_path.split(":")
        cls = getattr(importlib.import_module(module), name)
        capacity = int(fields["capacity"])
        return cls.from_values(fields["levels"][-1][..., :capacity])

    return convert


LEGACY_LAYOUTS: dict[tuple[str, frozenset[str]], Callable[[dict], Any]] = {
    (name, frozenset({"levels", "capacity", "op"})): _segment_tree_levels(name)
    for name in ("jaxbuf.prioritized.sum_tree:SumTree", "jaxbuf.prioritized.sum_tree:MinTree")
}
"""``(class name, saved field names) -> converter`` of the saved field values."""


def upgrade(class_name: str, fields: dict) -> Any | None:
    """Today's instance for a node saved as ``class_name`` with ``fields`` (name -> value),
    or ``None`` if that is not a known legacy layout."""
    convert = LEGACY_LAYOUTS.get((class_name, frozenset(fields)))
    return None if convert is None else convert(fields)


def needs_upgrade(meta: dict) -> bool:
    """Whether the checkpoint JSON ``meta`` holds any node of a legacy layout."""

    def rec(node: dict) -> bool:
        children = node.get("children", {})
        if node["type"] == "node":
            names = frozenset(children) | frozenset(node["static"])
            if (node["class"], names) in LEGACY_LAYOUTS:
                return True
        items = children.values() if isinstance(children, dict) else children
        return any(rec(child) for child in items)

    return rec(meta["tree"])
