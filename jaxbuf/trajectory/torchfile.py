"""A torch-free reader and writer for ``torch.save`` zip files holding dicts of tensors.

RLinf stores each trajectory as ``torch.save(dict)``; this module reads and writes the same
container with numpy only, so jaxbuf needs no torch to use RLinf's default ``.pt`` format.

Container (PyTorch zip serialization, version 3), all entries stored uncompressed under one
top-level folder ``<archive>/``:

* ``data.pkl``: pickle (protocol 2) of the payload. A tensor is the reduce
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``
  whose ``storage`` is the persistent id ``('storage', torch.<Kind>Storage, key, 'cpu', numel)``;
  dtypes without a legacy storage class (uint16/32/64) use ``_rebuild_tensor_v3`` with a
  ``torch.storage.UntypedStorage`` (numel counted in bytes) and the dtype as last argument.
* ``data/<key>``: the raw little-endian storage bytes, each 64-byte aligned in the file.
* ``byteorder`` (``little``), ``version`` (``3``), ``.format_version`` (``1``),
  ``.storage_alignment`` (``64``).

The writer emits only globals that ``torch.load(weights_only=True)`` accepts. The reader is a
restricted unpickler: any global outside the small tensor vocabulary above is refused, so a
malicious file cannot run code. Payload values are ``int``, ``bool``, ``float``, ``str``,
``None``, ``np.ndarray`` and (nested) ``dict`` with ``str`` keys.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import IO, Any

import ml_dtypes
import numpy as np

from jaxbuf.errors import JaxbufError

__all__ = ["TorchFileError", "dump_pt", "load_pt", "supported_dtypes"]


class TorchFileError(JaxbufError, ValueError):
    """A ``.pt`` file that is not a readable torch zip file, or an unsupported payload."""


# torch legacy typed-storage class name <-> numpy dtype.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}
_DTYPE_STORAGE = {dt: name for name, dt in _STORAGE_DTYPES.items()}
# torch dtype attribute names (canonical and aliases) <-> numpy dtype, for _rebuild_tensor_v3.
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "half": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "cfloat": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "cdouble": np.dtype(np.complex128),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
}
_V3_ONLY = {
    np.dtype(np.uint16): "uint16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.uint64): "uint64",
}
_ALIGN = 64


def supported_dtypes() -> tuple[np.dtype, ...]:
    """numpy dtypes that :func:`dump_pt` can store."""
    return tuple(_DTYPE_STORAGE) + tuple(_V3_ONLY)


# ----------------------------------------------------------------------------------- writer


class _PickleEmitter:
    """Emits pickle protocol-2 opcodes by hand (torch globals without importing torch)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.storages: list[memoryview] = []

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def str_(self, value: str) -> None:
        raw = value.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def int_(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def tuple_of_ints(self, values: tuple[int, ...]) -> None:
        if not values:
            self.out += b")"
            return
        if len(values) > 3:
            self.out += b"("
        for v in values:
            self.int_(int(v))
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")

    def value(self, value: Any, where: str) -> None:
        if value is None:
            self.out += b"N"
        elif isinstance(value, bool):
            self.out += b"\x88" if value else b"\x89"
        elif isinstance(value, (int, np.integer)):
            self.int_(int(value))
        elif isinstance(value, float):
            self.out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str):
            self.str_(value)
        elif isinstance(value, dict):
            self.dict_(value, where)
        elif isinstance(value, np.ndarray):
            self.tensor(value, where)
        else:
            raise TorchFileError(
                f"jaxbuf: {where}: cannot store a value of type {type(value).__name__} in a .pt "
                f"file "
                "(expected int, float, bool, str, None, numpy array or dict)"
            )

    def dict_(self, value: dict, where: str) -> None:
        self.out += b"}"
        if not value:
            return
        self.out += b"("
        for key, item in value.items():
            if not isinstance(key, str):
                raise TorchFileError(f"jaxbuf: {where}: dict keys must be str, got {key!r}")
            self.str_(key)
            self.value(item, f"{where}[{key!r}]")
        self.out += b"u"

    def tensor(self, array: np.ndarray, where: str) -> None:
        dtype = array.dtype
        if dtype not in _DTYPE_STORAGE and dtype not in _V3_ONLY:
            raise TorchFileError(
                f"jaxbuf: {where}: dtype {dtype} has no torch equivalent; supported: "
                f"{sorted(str(d) for d in supported_dtypes())}"
            )
        if dtype.byteorder == ">":
            array = array.astype(dtype.newbyteorder("<"))
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        key = str(len(self.storages))
        self.storages.append(data)
        shape = tuple(int(s) for s in array.shape)
        strides = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        v3 = dtype in _V3_ONLY
        self.global_("torch._utils", "_rebuild_tensor_v3" if v3 else "_rebuild_tensor_v2")
        self.out += b"(("
        self.str_("storage")
        if v3:
            self.global_("torch.storage", "UntypedStorage")
        else:
            self.global_("torch", _DTYPE_STORAGE[dtype])
        self.str_(key)
        self.str_("cpu")
        self.int_(len(data) if v3 else int(array.size))
        self.out += b"tQ"  # TUPLE (persistent id), BINPERSID
        self.int_(0)
        self.tuple_of_ints(shape)
        self.tuple_of_ints(strides)
        self.out += b"\x89"  # requires_grad=False
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # OrderedDict()
        if v3:
            self.global_("torch", _V3_ONLY[dtype])
        self.out += b"tR"  # TUPLE (args), REDUCE


def _aligned_extra(offset: int, name: bytes) -> bytes:
    """Local-header extra field ("FB" padding, as torch writes) aligning the data to 64 bytes."""
    header = 30 + len(name)
    pad = (-(offset + header + 4)) % _ALIGN
    return b"FB" + struct.pack("<H", pad) + b"Z" * pad


def dump_pt(payload: dict[str, Any], fileobj: IO[bytes], archive_name: str = "archive") -> None:
    """Write ``payload`` to ``fileobj`` in torch's zip format (see the module docstring).

    ``archive_name`` is the top-level folder inside the zip; ``torch.save(obj, path)`` uses the
    file name without its extension. Arrays are stored C-contiguous, little-endian.
    """
    if not isinstance(payload, dict):
        raise TorchFileError(f"jaxbuf: payload must be a dict, got {type(payload).__name__}")
    emitter = _PickleEmitter()
    emitter.dict_(payload, "payload")
    emitter.out += b"."
    records: list[tuple[str, bytes | memoryview]] = [
        ("data.pkl", bytes(emitter.out)),
        (".format_version", b"1"),
        (".storage_alignment", b"64"),
        ("byteorder", b"little"),
    ]
    records += [(f"data/{i}", data) for i, data in enumerate(emitter.storages)]
    records.append(("version", b"3\n"))
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in records:
            info = zipfile.ZipInfo(f"{archive_name}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.extra = _aligned_extra(zf.fp.tell(), info.filename.encode())
            zf.writestr(info, data)


# ----------------------------------------------------------------------------------- reader


class _StorageType:
    def __init__(self, dtype: np.dtype | None) -> None:
        self.dtype = dtype  # None: untyped (bytes)


class _TorchDtype:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


def _rebuild(
    storage: np.ndarray, offset: int, size: tuple, stride: tuple, dtype: np.dtype
) -> np.ndarray:
    if storage.dtype != dtype:  # untyped storage: reinterpret the bytes
        usable = len(storage) - len(storage) % dtype.itemsize
        storage = storage[:usable].view(dtype)
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise TorchFileError(f"jaxbuf: invalid tensor geometry size={size} stride={stride}")
    if math.prod(size) == 0:
        return np.zeros(size, dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= len(storage):
        raise TorchFileError(
            f"jaxbuf: tensor (offset={offset}, size={size}, stride={stride}) exceeds its storage "
            f"of "
            f"{len(storage)} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * dtype.itemsize for s in stride)
    )
    return np.array(view, copy=True)


def _rebuild_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks, metadata
    return _rebuild(storage, offset, size, stride, storage.dtype)


def _rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks, metadata
    if not isinstance(dtype, _TorchDtype):
        raise TorchFileError(f"jaxbuf: _rebuild_tensor_v3: expected a torch dtype, got {dtype!r}")
    return _rebuild(storage, offset, size, stride, dtype.dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, big_endian: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._zf = zf
        self._prefix = prefix
        self._big_endian = big_endian
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_v2
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_v3
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(_TORCH_DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(None)
        raise TorchFileError(f"jaxbuf: unsupported object {module}.{name} (only tensors and dicts)")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise TorchFileError(f"jaxbuf: unsupported persistent id {pid!r}")
        _, kind, key, _location, numel = pid
        if key in self._storages:
            return self._storages[key]
        dtype = kind.dtype if kind.dtype is not None else np.dtype(np.uint8)
        try:
            raw = self._zf.read(f"{self._prefix}data/{key}")
        except KeyError as exc:
            raise TorchFileError(f"jaxbuf: storage record data/{key} is missing") from exc
        if len(raw) < int(numel) * dtype.itemsize:
            raise TorchFileError(
                f"jaxbuf: storage data/{key} holds {len(raw)} bytes, expected "
                f"{int(numel) * dtype.itemsize}"
            )
        array = np.frombuffer(raw, dtype=dtype, count=int(numel))
        if self._big_endian and dtype.itemsize > 1:
            array = array.byteswap()
        self._storages[key] = array
        return array


def load_pt(source: str | IO[bytes]) -> Any:
    """Read a ``torch.save`` zip file into numpy arrays, dicts and Python scalars.

    Tensors become C-contiguous numpy arrays (bfloat16 as ``ml_dtypes.bfloat16``); views keep
    their own offset/shape/stride. Raises :class:`TorchFileError` on anything else, including
    the pre-1.6 non-zip torch format, truncated files and unknown globals.
    """
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TorchFileError(f"jaxbuf: not a torch zip file: {exc}") from exc
    with zf:
        names = zf.namelist()
        pkl_names = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise TorchFileError("jaxbuf: no <archive>/data.pkl record (not a torch.save zip file)")
        prefix = pkl_names[0][: -len("data.pkl")]
        try:
            order = (
                zf.read(prefix + "byteorder").decode()
                if prefix + "byteorder" in names
                else "little"
            )
            unpickler = _Unpickler(zf.read(pkl_names[0]), zf, prefix, order == "big")
            return unpickler.load()
        except TorchFileError:
            raise
        except (
            zipfile.BadZipFile,
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            struct.error,
            UnicodeDecodeError,
            AttributeError,
            IndexError,
        ) as exc:
            raise TorchFileError(
                f"jaxbuf: corrupt torch zip file: {type(exc).__name__}: {exc}"
            ) from exc
