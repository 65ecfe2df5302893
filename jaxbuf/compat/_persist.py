"""Pickling and ``save_hdf5`` / ``load_hdf5`` of the Tianshou facade (HDF5 needs h5py).

Pickling keeps the state as NumPy arrays, the PRNG key and the recipe.

A facade file holds the pure state in jaxbuf's checkpoint description
(:func:`jaxbuf.checkpoint.schema.describe`: a JSON tree in the ``meta`` attribute, the leaves
as datasets ``leaves/<n>``), the facade's recipe (``kind``/``options``) and its PRNG key.
``load_hdf5`` also reads files written by Tianshou's own ``save_hdf5`` (through
:func:`jaxbuf.from_tianshou_hdf5`), so a buffer saved by a Tianshou run loads into the facade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.checkpoint import schema
from jaxbuf.checkpoint.tianshou_hdf5 import from_tianshou_hdf5
from jaxbuf.compat import _kinds
from jaxbuf.compat._facade import Facade
from jaxbuf.errors import (
    CheckpointError,
    CheckpointMismatchError,
    MissingDependencyError,
    message,
)

FORMAT = "jaxbuf.compat.tianshou"
VERSION = 1


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is an optional dependency
        raise MissingDependencyError(
            message("save_hdf5/load_hdf5", "need h5py (pip install h5py)")
        ) from err
    return h5py


def _json_options(options: dict) -> str:
    return json.dumps({k: v for k, v in options.items() if k != "compute_reward_fn"})


def save(facade: Any, path: str | os.PathLike, compression: str | None = None) -> None:
    """Write ``facade`` (its state, recipe and key) to the HDF5 file ``path``."""
    h5py = _h5py()
    with h5py.File(os.fspath(path), "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["facade"] = type(facade).__name__
        f.attrs["kind"] = facade._kind
        f.attrs["options"] = _json_options(facade._options)
        f.create_dataset("key", data=np.asarray(jax.random.key_data(facade._key)))
        if facade._state is None:
            return
        meta, leaves = schema.describe(facade._state)
        f.attrs["meta"] = json.dumps(meta)
        group = f.create_group("leaves")
        for i, leaf in enumerate(leaves):
            group.create_dataset(str(i), data=np.asarray(leaf), compression=compression)


def load(
    cls: type, path: str | os.PathLike, compute_reward_fn: Callable | None = None
) -> tuple[str, dict, Any, np.ndarray | None]:
    """``(kind, options, state or None, key data or None)`` read from ``path``."""
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(message("load_hdf5", f"no file at {path}"))
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            state = from_tianshou_hdf5(path)
            kind, options = _kinds.recipe_of(state)
            return kind, options, state, None
        version = int(f.attrs.get("version", -1))
        if version != VERSION:
            raise CheckpointMismatchError(
                message(
                    "load_hdf5",
                    f"{path} has facade format version {version}, this "
                    f"jaxbuf reads version {VERSION}",
                )
            )
        kind = str(f.attrs["kind"])
        options = json.loads(f.attrs["options"])
        key = np.asarray(f["key"])
        if kind == "her":
            if compute_reward_fn is None:
                raise CheckpointError(
                    message(
                        "load_hdf5",
                        f"{path} holds a HER buffer: pass compute_reward_fn= "
                        "(functions are not saved)",
                    )
                )
            options["compute_reward_fn"] = compute_reward_fn
        if "meta" not in f.attrs:
            return kind, options, None, key
        meta = json.loads(f.attrs["meta"])
        schema.check_header(meta, path)
        if kind == "her":
            meta["tree"]["static"]["compute_reward_fn"] = compute_reward_fn
        leaves = [
            schema.from_saved_leaf(entry, jnp.asarray(np.asarray(f["leaves"][str(i)])))
            for i, entry in enumerate(meta["leaves"])
        ]
    state = schema.build(meta, leaves, path)
    if kind == "her":
        goal = state.input_spec()["obs"]["achieved_goal"]
        fn = _kinds.reward_fn_for(compute_reward_fn, np.zeros(goal.shape, goal.dtype))
        state = state.replace(compute_reward_fn=fn)
    return kind, options, state, key


class Persistence:
    """Pickling and HDF5 files of a :class:`Facade` (the state as NumPy, the key, the recipe)."""

    def __getstate__(self) -> dict:
        state = self._state
        return {
            "kind": self._kind,
            "options": self._options,
            "state": None if state is None else jax.device_get(state),
            "key": np.asarray(jax.random.key_data(self._key)),
        }

    def __setstate__(self, data: dict) -> None:
        self._kind, self._options = data["kind"], data["options"]
        state = data["state"]
        if state is not None:
            state = jax.tree_util.tree_map(jnp.array, state)
            if self._kind == "her":
                goal = state.input_spec()["obs"]["achieved_goal"]
                fn = _kinds.reward_fn_for(state.compute_reward_fn, np.zeros(goal.shape, goal.dtype))
                state = state.replace(compute_reward_fn=fn)
        self._state = state
        self._key = jax.random.wrap_key_data(jnp.asarray(data["key"]))

    def save_hdf5(self, path: str, compression: str | None = None) -> None:
        """Write the buffer to an HDF5 file (``load_hdf5`` reads it back)."""
        save(self, path, compression)

    @classmethod
    def load_hdf5(
        cls, path: str, device: Any = None, *, compute_reward_fn: Callable | None = None
    ) -> Facade:
        """A buffer from a ``save_hdf5`` file of this facade or of Tianshou itself.

        ``device`` is accepted for Tianshou's signature and ignored (JAX places the arrays);
        HER buffers need ``compute_reward_fn`` (functions are not saved).
        """
        kind, options, state, key = load(cls, path, compute_reward_fn)
        if state is not None:
            out = cls.from_state(state)
        else:
            out = object.__new__(cls._class_for(kind, options))
            out._setup(kind, options, {})
        out._options = options
        if key is not None:
            out._key = jax.random.wrap_key_data(jnp.asarray(key))
        return out
