"""Trajectory file formats: ``pt`` (torch zip), ``pkl`` (pickle of torch tensors), ``npz``.

A *payload* is what one trajectory file of RLinf's on-disk layout holds: a dict
``field -> value`` in :data:`~jaxbuf.trajectory.trajectory.FIELD_ORDER` order with ``int``
``max_episode_length``, ``str`` ``model_weights_id``, numpy arrays ``[T(+E), B, ...]`` and
nested dicts of arrays. Formats:

* ``"pt"`` (default): ``torch.save`` zip container, written and read by jaxbuf's torch-free
  codec (:mod:`jaxbuf.trajectory.torchfile`); RLinf reads it with
  ``torch.load(weights_only=True)``.
* ``"pkl"``: ``pickle.dump`` of a dict of torch tensors, as RLinf writes for any format other
  than ``"pt"``. Needs PyTorch (``pip install 'jaxbuf[torch]'``); reading goes through a
  restricted unpickler that only rebuilds tensors, and needs torch >= 2.6: the tensor blobs
  go to ``torch.load(weights_only=True)``, which older releases do not make safe
  (CVE-2025-32434).
* ``"npz"``: jaxbuf's native numpy format (``np.savez``, no pickle); not readable by RLinf.

Every write goes to a temporary name, is fsynced and renamed (:mod:`.atomic`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from collections import OrderedDict
from typing import IO, Any

import ml_dtypes
import numpy as np

from jaxbuf.errors import (
    InputError,
    MissingDependencyError,
    TrajectoryFileError,
    TrajectoryNotFoundError,
)
from jaxbuf.trajectory.atomic import atomic_write
from jaxbuf.trajectory.torchfile import TorchFileError, dump_pt, load_pt

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "check_format",
    "file_extension",
    "format_from_metadata",
    "read_trajectory_file",
    "torch_available",
    "write_trajectory_file",
]

FORMATS = ("pt", "pkl", "npz")
"""The trajectory file formats, by the name the ``storage_format`` option takes."""
DEFAULT_FORMAT = "pt"
"""The format of new files unless ``storage_format`` says otherwise (readable by RLinf)."""
_TORCH_HINT = "install PyTorch with `pip install 'jaxbuf[torch]'`"
SAFE_TORCH = (2, 6)
"""Oldest torch whose ``torch.load(weights_only=True)`` is safe on untrusted data."""


def torch_available() -> bool:
    """Whether ``import torch`` succeeds (needed only for the ``pkl`` format)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _import_torch(why: str):
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"jaxbuf: {why} needs PyTorch, which is not installed; {_TORCH_HINT}"
        ) from exc
    return torch


def torch_version(torch) -> tuple[int, int]:
    """``(major, minor)`` of an imported torch (``(0, 0)`` when unparsable)."""
    match = re.match(r"(\d+)\.(\d+)", str(getattr(torch, "__version__", "")))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _torch_for_reading(path: str):
    torch = _import_torch(f"reading the .pkl trajectory file {path}")
    if torch_version(torch) < SAFE_TORCH:
        raise MissingDependencyError(
            f"jaxbuf: reading the .pkl trajectory file {path} needs torch >= "
            f"{SAFE_TORCH[0]}.{SAFE_TORCH[1]}, found {getattr(torch, '__version__', '?')}: "
            "older torch.load(weights_only=True) can run code from a crafted file "
            f"(CVE-2025-32434); {_TORCH_HINT}"
        )
    return torch


def check_format(fmt: Any, argument: str = "storage_format") -> str:
    """Validate a format name given by the user; ``pkl`` without torch raises ImportError."""
    if fmt not in FORMATS:
        raise InputError(f"jaxbuf: {argument} must be one of {FORMATS}, got {fmt!r}")
    if fmt == "pkl":
        _import_torch(f"{argument}='pkl'")
    return fmt


def format_from_metadata(value: Any) -> str:
    """Map a format value read from ``metadata.json`` to a format, with RLinf's rule.

    RLinf writes ``.pt`` for ``"pt"`` and ``.pkl`` for any other value; ``"npz"`` is ours.
    """
    if value is None or value == "pt":
        return "pt"
    if value == "npz":
        return "npz"
    return "pkl"


def file_extension(fmt: str) -> str:
    """File extension (with the dot) of a format: ``.pt``, ``.npz`` or ``.pkl``."""
    return {"pt": ".pt", "npz": ".npz"}.get(fmt, ".pkl")


# ------------------------------------------------------------------------------------ npz


def _npz_layout(value: dict, arrays: dict[str, np.ndarray], where: str) -> list:
    layout = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise InputError(f"jaxbuf: {where}: dict keys must be str, got {key!r}")
        if isinstance(item, dict):
            layout.append([key, "dict", _npz_layout(item, arrays, f"{where}[{key!r}]")])
        elif isinstance(item, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = item
            layout.append([key, "array", [name, str(item.dtype)]])
        elif isinstance(item, bool):
            layout.append([key, "bool", item])
        elif isinstance(item, (int, np.integer)):
            layout.append([key, "int", int(item)])
        elif isinstance(item, (float, str)) or item is None:
            layout.append([key, type(item).__name__, item])
        else:
            raise InputError(f"jaxbuf: {where}[{key!r}]: cannot store {type(item).__name__} in npz")
    return layout


def _npz_build(layout: list, archive: Any) -> dict:
    out: dict[str, Any] = {}
    for key, kind, value in layout:
        if kind == "dict":
            out[key] = _npz_build(value, archive)
        elif kind == "array":
            name, dtype_name = value
            array = archive[name]
            dtype = np.dtype(getattr(ml_dtypes, dtype_name, dtype_name))
            out[key] = array.view(dtype) if array.dtype != dtype else array
        elif kind in ("int", "bool", "float", "str", "NoneType"):
            out[key] = value
        else:
            raise InputError(f"jaxbuf: unknown layout kind {kind!r} for {key!r}")
    return out


def _dump_npz(payload: dict, fileobj: IO[bytes]) -> None:
    arrays: dict[str, np.ndarray] = {}
    layout = _npz_layout(payload, arrays, "payload")
    np.savez(fileobj, __layout__=np.array(json.dumps(layout)), **arrays)


def _load_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        layout = json.loads(str(archive["__layout__"][()]))
        return _npz_build(layout, archive)


# ------------------------------------------------------------------------------------ pkl


def _to_torch(value: Any, torch) -> Any:
    if isinstance(value, dict):
        return {k: _to_torch(v, torch) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype == np.dtype(ml_dtypes.bfloat16):
            return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(array.copy())
    return value


def _from_torch(value: Any, torch) -> Any:
    if isinstance(value, dict):
        return {k: _from_torch(v, torch) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return tensor.numpy().copy()
    return value


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles RLinf ``.pkl`` payloads, refusing every global that is not a tensor part."""

    def __init__(self, fileobj: IO[bytes], torch) -> None:
        super().__init__(fileobj)
        self._torch = torch

    def find_class(self, module: str, name: str) -> Any:
        torch = self._torch
        if module == "torch.storage" and name == "_load_from_bytes":
            return lambda blob: torch.load(io.BytesIO(blob), weights_only=True)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return getattr(torch._utils, name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


# ------------------------------------------------------------------------------ dispatch


def write_trajectory_file(path: str, payload: dict, fmt: str) -> dict:
    """Write one trajectory payload atomically at ``path`` in format ``fmt``.

    Returns the file's ``{"name", "size", "sha256"}`` record (hashed from the bytes written,
    so the file is not read back).

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory
    >>> from jaxbuf.trajectory import read_trajectory_file, write_trajectory_file
    >>> path = os.path.join(tempfile.mkdtemp(), "trajectory_0_w_0.pt")
    >>> traj = Trajectory(model_weights_id="w_0", rewards=np.ones((2, 2), np.float32))
    >>> payload = traj.to_payload()  # {field: array} in RLinf's field order
    >>> record = write_trajectory_file(path, payload, "pt")
    >>> record["name"], record["size"] == os.path.getsize(path), len(record["sha256"])
    ('trajectory_0_w_0.pt', True, 64)
    >>> read_trajectory_file(path, "pt")["rewards"].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    data = io.BytesIO()
    if fmt == "pt":
        dump_pt(payload, data, archive_name=os.path.basename(path).removesuffix(".pt"))
    elif fmt == "npz":
        _dump_npz(payload, data)
    elif fmt == "pkl":
        torch = _import_torch("writing a .pkl trajectory file")
        pickle.dump(_to_torch(payload, torch), data, protocol=4)
    else:
        raise InputError(f"jaxbuf: unknown trajectory format {fmt!r}; expected one of {FORMATS}")
    blob = data.getbuffer()
    with atomic_write(path) as fh:
        fh.write(blob)
    return {
        "name": os.path.basename(path),
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


def read_trajectory_file(path: str, fmt: str) -> dict:
    """Read one trajectory payload (numpy arrays) from ``path`` written in format ``fmt``.

    Raises FileNotFoundError naming the file when it is missing, and
    :class:`~jaxbuf.errors.TrajectoryFileError` naming it when it is corrupt.

    >>> import os, tempfile, numpy as np
    >>> from jaxbuf import Trajectory
    >>> from jaxbuf.trajectory import read_trajectory_file, write_trajectory_file
    >>> path = os.path.join(tempfile.mkdtemp(), "trajectory_0_w_0.npz")
    >>> payload = Trajectory(rewards=np.arange(4.0).reshape(2, 2)).to_payload()
    >>> _ = write_trajectory_file(path, payload, "npz")
    >>> traj = Trajectory.from_payload(read_trajectory_file(path, "npz"))
    >>> traj.rewards.tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"not a trajectory")
    >>> read_trajectory_file(path, "npz")
    Traceback (most recent call last):
    ...
    jaxbuf.errors.TrajectoryFileError: jaxbuf: corrupt trajectory file .../trajectory_0_w_0.npz: ...
    """
    if fmt not in FORMATS:
        raise InputError(f"jaxbuf: unknown trajectory format {fmt!r}; expected one of {FORMATS}")
    torch = _torch_for_reading(path) if fmt == "pkl" else None
    try:
        if fmt == "pt":
            payload = load_pt(path)
        elif fmt == "npz":
            payload = _load_npz(path)
        else:
            with open(path, "rb") as fh:
                payload = _from_torch(_TensorUnpickler(fh, torch).load(), torch)
    except FileNotFoundError as exc:
        raise TrajectoryNotFoundError(f"jaxbuf: trajectory file not found: {path}") from exc
    except TorchFileError as exc:
        raise TrajectoryFileError(path, f"{type(exc).__name__}: {exc}") from exc
    except (MemoryError, RecursionError) as exc:
        raise TrajectoryFileError(path, f"{type(exc).__name__}: damaged or hostile file") from exc
    except Exception as exc:  # a damaged file makes the decoders raise assorted types
        raise TrajectoryFileError(path, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict):
        raise TrajectoryFileError(path, f"expected a dict payload, got {type(payload).__name__}")
    return payload
