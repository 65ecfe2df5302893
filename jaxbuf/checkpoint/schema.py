"""The JSON description that makes a buffer checkpoint self-describing.

A buffer pytree is described node by node: ``None``, ``dict`` (string keys), ``list``,
``tuple``, registered dataclass nodes (class name, static fields, pytree fields) and array
leaves. Leaves are numbered in ``jax.tree_util`` flatten order and listed with their path,
shape and dtype. The description is enough to rebuild the buffer (``restore`` without
``like``) and to compare a checkpoint against a target layout field by field.

Checkpoint JSON, schema version 2::

    {"format": "jaxbuf.buffer", "schema_version": 2, "jaxbuf_version": "0.2.0",
     "tree": {"type": "node", "class": "jaxbuf.buffers:ReplayBuffer",
              "static": {"stack_num": 1, ...},
              "children": {"storage": {"type": "dict", "children": {...}}, ...}},
     "leaves": [{"path": "storage.act", "shape": [8, 1], "dtype": "int32"}, ...]}

Version history: 1 (jaxbuf 0.1) stored the core buffer's storage as ``[maxsize, ...]`` in
global-slot order and six counter leaves; 2 (jaxbuf 0.2) stores it time-major
(``[subbuffer_size, buffer_num, ...]``) with the int32 counters packed in one
``counters: int32[buffer_num, 5]`` leaf. A version-1 checkpoint raises
``SchemaVersionError``; nothing converts it (0.1 was never released).

Leaf entries may add ``"key_impl"`` (typed PRNG keys, dtype ``key<...>``) or ``"python"``
(a Python ``bool``/``int``/``float`` leaf, saved as a 0-d array). Static values are JSON
with tags for what JSON lacks: ``{"__tuple__": [...]}``, ``{"__dict__": {...}}``,
``{"__dtype__": "float32"}``; a value that cannot be written (a callable, say) is recorded as
``{"__unserializable__": "<type>"}`` and must then come from ``like`` on restore.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.checkpoint import migrate, registry
from jaxbuf.errors import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    InputError,
    SchemaVersionError,
)

FORMAT = "jaxbuf.buffer"
SCHEMA_VERSION = 2
"""Version of the checkpoint layout described above; bump it on any incompatible change."""

_KEY_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
PLACEMENT_STATICS = ("storage_memory_kind",)
"""Static fields that say where arrays live, not what they hold: a restore follows ``like``'s
value, so :func:`differences` does not compare them."""
_PYTHON_SCALARS = {"bool": bool, "int": int, "float": float}


def path_str(path: tuple) -> str:
    """``('storage', 'obs')`` as ``storage.obs``; the root is ``<root>``."""
    return ".".join(str(p) for p in path) if path else "<root>"


# ---------------------------------------------------------------- static values
def encode_static(value: Any) -> Any:
    """A static field value as JSON (tagged where JSON has no equivalent)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, tuple):
        return {"__tuple__": [encode_static(v) for v in value]}
    if isinstance(value, list):
        return [encode_static(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: encode_static(v) for k, v in value.items()}}
    try:
        return {"__dtype__": jnp.dtype(value).name}
    except TypeError:
        return {"__unserializable__": type(value).__qualname__}


def decode_static(value: Any, where: str) -> Any:
    """Invert :func:`encode_static`; ``where`` names the field for the error message."""
    if isinstance(value, list):
        return [decode_static(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(decode_static(v, where) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode_static(v, where) for k, v in value["__dict__"].items()}
    if "__dtype__" in value:
        return jnp.dtype(value["__dtype__"])
    raise CheckpointMismatchError(
        f"jaxbuf: static field {where} was a {value.get('__unserializable__', '?')}, which a "
        "checkpoint cannot hold; pass like= (a buffer or jax.eval_shape of one) to restore"
    )


def _unserializable(value: Any) -> bool:
    return isinstance(value, dict) and "__unserializable__" in value


# ---------------------------------------------------------------- leaves
def _key_impl(dtype) -> str:
    for name in _KEY_IMPLS:
        if jax.eval_shape(lambda n=name: jax.random.key(0, impl=n)).dtype == dtype:
            return name
    raise InputError(f"jaxbuf: checkpoint: unknown PRNG key dtype {dtype}")


def _is_leaf(obj: Any) -> bool:
    return isinstance(
        obj, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct, bool, int, float)
    )


def _leaf_entry(obj: Any, path: tuple) -> dict:
    entry: dict = {"path": path_str(path)}
    if isinstance(obj, (bool, int, float)):
        entry.update(shape=[], dtype=jnp.dtype(type(obj)).name, python=type(obj).__name__)
        return entry
    dtype = obj.dtype
    entry.update(shape=list(obj.shape), dtype=str(dtype))
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        entry["key_impl"] = _key_impl(dtype)
    return entry


def leaf_abstract(entry: dict, sharding: jax.sharding.Sharding | None) -> jax.ShapeDtypeStruct:
    """The ``ShapeDtypeStruct`` of a leaf entry, placed with ``sharding``."""
    shape = tuple(entry["shape"])
    if "key_impl" in entry:
        impl = entry["key_impl"]
        data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
        dtype = jax.eval_shape(
            lambda: jax.random.wrap_key_data(
                jnp.zeros((*shape, *data.shape), data.dtype), impl=impl
            )
        ).dtype
    else:
        dtype = jnp.dtype(entry["dtype"])
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def from_saved_leaf(entry: dict, value: jax.Array) -> Any:
    """A restored array as the leaf type that was saved (a Python scalar stays one)."""
    if "python" in entry:
        return _PYTHON_SCALARS[entry["python"]](np.asarray(value).item())
    return value


# ---------------------------------------------------------------- describe
def _describe(obj: Any, path: tuple, leaves: list, table: list) -> dict:
    if obj is None:
        return {"type": "none"}
    if type(obj) is dict:
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise InputError(
                f"jaxbuf: checkpoints need string dict keys; {path_str(path)} has key(s) {bad}"
            )
        return {
            "type": "dict",
            "children": {k: _describe(obj[k], (*path, k), leaves, table) for k in sorted(obj)},
        }
    if type(obj) in (list, tuple):
        return {
            "type": type(obj).__name__,
            "children": [_describe(v, (*path, i), leaves, table) for i, v in enumerate(obj)],
        }
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not registry.is_registered(cls):
            raise InputError(
                f"jaxbuf: {path_str(path)} is a {registry.class_name(cls)}, which is not a "
                "registered buffer class; decorate it with jaxbuf.checkpoint.register_buffer "
                "(or list a jaxbuf class in jaxbuf.checkpoint.registry.BUILTIN_CLASSES)"
            )
        static, children = {}, {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("pytree_node", True):
                children[f.name] = _describe(value, (*path, f.name), leaves, table)
            else:
                static[f.name] = encode_static(value)
        return {
            "type": "node",
            "class": registry.class_name(cls),
            "static": static,
            "children": children,
        }
    if _is_leaf(obj):
        leaves.append(obj)
        table.append(_leaf_entry(obj, path))
        return {"type": "leaf", "index": len(leaves) - 1}
    raise InputError(
        f"jaxbuf: cannot checkpoint {path_str(path)} of type {type(obj).__qualname__}; buffer "
        "pytrees may hold dicts, lists, tuples, None, arrays and registered dataclass nodes"
    )


def describe(tree: Any) -> tuple[dict, list]:
    """The checkpoint JSON of ``tree`` and its leaves in ``jax.tree_util`` flatten order.

    ``tree`` may hold concrete arrays or ``jax.ShapeDtypeStruct`` leaves (an abstract buffer).
    """
    from jaxbuf import __version__

    leaves: list = []
    table: list = []
    node = _describe(tree, (), leaves, table)
    flat = jax.tree_util.tree_leaves(tree)
    if len(flat) != len(leaves) or any(a is not b for a, b in zip(flat, leaves)):
        raise InputError(
            f"jaxbuf: the pytree flattening of {type(tree).__qualname__} does not follow its "
            "dataclass field order, so its leaves cannot be named; checkpointing needs "
            "flax.struct (or chex) dataclass nodes"
        )
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "jaxbuf_version": __version__,
        "tree": node,
        "leaves": table,
    }
    return meta, leaves


def check_header(meta: Any, where: str) -> None:
    """Raise unless ``meta`` is a jaxbuf buffer description of a readable schema version.

    Raises:
      SchemaVersionError: another schema version.
      CheckpointCorruptError: ``meta`` is not jaxbuf's JSON.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointCorruptError(
            f"jaxbuf: {where} is not a jaxbuf buffer description (format {FORMAT!r})"
        )
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise SchemaVersionError(
            f"jaxbuf: {where} has checkpoint schema version {version!r} (written by jaxbuf "
            f"{meta.get('jaxbuf_version', '?')}); this jaxbuf reads schema version "
            f"{SCHEMA_VERSION}" + ("; upgrade jaxbuf to read it" if newer else "")
        )
    for key in ("tree", "leaves"):
        if key not in meta:
            raise CheckpointCorruptError(f"jaxbuf: {where} lacks the '{key}' entry")


# ---------------------------------------------------------------- rebuild
def build(meta: dict, leaves: list, where: Any = "the checkpoint") -> Any:
    """The buffer described by ``meta`` with its leaves taken from ``leaves`` (by index).

    Raises ``CheckpointMismatchError`` naming ``where`` if a saved class has other fields than
    this jaxbuf's class of that name (a checkpoint of another layout).
    """

    def rec(node: dict, path: tuple) -> Any:
        kind = node["type"]
        if kind == "none":
            return None
        if kind == "leaf":
            return leaves[node["index"]]
        if kind == "dict":
            return {k: rec(v, (*path, k)) for k, v in node["children"].items()}
        if kind in ("list", "tuple"):
            items = [rec(v, (*path, i)) for i, v in enumerate(node["children"])]
            return items if kind == "list" else tuple(items)
        cls = registry.resolve(node["class"])
        kwargs = {k: rec(v, (*path, k)) for k, v in node["children"].items()}
        for name, value in node["static"].items():
            kwargs[name] = decode_static(value, f"'{path_str((*path, name))}'")
        upgraded = migrate.upgrade(node["class"], kwargs)  # a layout of an older jaxbuf
        if upgraded is not None:
            return upgraded
        # A static option added in a later version (absent from older checkpoints) restores
        # to its default.
        for f in dataclasses.fields(cls):
            static = not f.metadata.get("pytree_node", True)
            if static and f.init and f.name not in kwargs and f.default is not dataclasses.MISSING:
                kwargs[f.name] = f.default
        fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
        if sorted(kwargs) != fields:
            raise CheckpointMismatchError(
                f"jaxbuf: {where}: '{path_str(path)}' was saved as {node['class']} with fields "
                f"{sorted(kwargs)}, but this jaxbuf's class has {fields} (written by jaxbuf "
                f"{meta.get('jaxbuf_version', '?')}; restore it with that version)"
            )
        return cls(**kwargs)

    return rec(meta["tree"], ())


# ---------------------------------------------------------------- compare
def _kind(node: dict) -> str:
    return node["class"] if node["type"] == "node" else node["type"]


def _layout(entry: dict) -> str:
    return f"shape {tuple(entry['shape'])} dtype {entry['dtype']}"


def differences(saved: dict, like: dict) -> list[str]:
    """Every way the checkpoint ``saved`` differs from the target ``like`` (both JSON).

    Each line names the field path, what ``like`` expects and what the checkpoint holds.
    """
    out: list[str] = []

    def rec(a: dict, b: dict, path: tuple) -> None:
        p = path_str(path)
        if a["type"] != b["type"] or (
            a["type"] == "node" and registry.canonical(a["class"]) != registry.canonical(b["class"])
        ):
            out.append(f"{p}: like expects {_kind(b)}, checkpoint has {_kind(a)}")
            return
        if a["type"] == "leaf":
            ea, eb = saved["leaves"][a["index"]], like["leaves"][b["index"]]
            if (ea["shape"], ea["dtype"]) != (eb["shape"], eb["dtype"]):
                out.append(f"{p}: like expects {_layout(eb)}, checkpoint has {_layout(ea)}")
            return
        if a["type"] == "node":
            for name in sorted(set(a["static"]) | set(b["static"])):
                if name in PLACEMENT_STATICS:
                    continue
                va, vb = a["static"].get(name), b["static"].get(name)
                if _unserializable(va) or _unserializable(vb):
                    continue
                if va != vb:
                    out.append(
                        f"{path_str((*path, name))} (static): like expects {vb!r}, "
                        f"checkpoint has {va!r}"
                    )
        ca, cb = a.get("children", {}), b.get("children", {})
        if isinstance(ca, list):
            if len(ca) != len(cb):
                out.append(f"{p}: like expects {len(cb)} items, checkpoint has {len(ca)}")
                return
            for i, (x, y) in enumerate(zip(ca, cb)):
                rec(x, y, (*path, i))
            return
        only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
        if only_a or only_b:
            notes = ([f"checkpoint lacks {only_b}"] if only_b else []) + (
                [f"checkpoint has extra {only_a}"] if only_a else []
            )
            out.append(
                f"{p}: like expects fields {sorted(cb)}, checkpoint has {sorted(ca)} "
                f"({'; '.join(notes)})"
            )
        for k in sorted(set(ca) & set(cb)):
            rec(ca[k], cb[k], (*path, k))

    rec(saved["tree"], like["tree"], ())
    return out
