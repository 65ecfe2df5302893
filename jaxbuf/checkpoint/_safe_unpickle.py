"""A restricted unpickler for the child buffers Tianshou pickles into its HDF5 files.

Tianshou's ``save_hdf5`` writes a vector buffer's per-child counters (insertion index,
episode return, length and start) only inside a pickled object array of child
``ReplayBuffer`` objects, and a prioritized buffer's priorities only inside a pickled
``SegmentTree``; nothing else in the file holds them. Plain ``pickle.loads`` would import and
call whatever the file names, so this unpickler resolves only:

* NumPy's array and scalar reconstructors, ``ndarray`` and ``dtype``;
* Tianshou's ``ReplayBuffer``, ``PrioritizedReplayBuffer``, ``SegmentTree`` and ``Batch``,
  replaced by :class:`Record` (a plain attribute bag; no Tianshou code runs and Tianshou need
  not be installed);
* NumPy's ``RandomState`` and bit-generator constructors, replaced by :class:`Record` too
  (jaxbuf samples with explicit keys, so the child RNG state is dropped).

Any other global raises ``pickle.UnpicklingError`` naming it.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

try:
    from numpy._core import multiarray, numeric
except ImportError:  # NumPy < 2
    from numpy.core import multiarray, numeric


class Record:
    """Stand-in for a pickled object: keeps its state dict as attributes, runs no code."""

    def __init__(self, *args: Any) -> None:
        del args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = state[1]  # (slots, dict) form
        if isinstance(state, dict):
            self.__dict__.update(state)


def _record_factory(*args: Any) -> Record:
    return Record(*args)


_NUMPY = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _pkg in ("numpy.core", "numpy._core"):
    _NUMPY[(f"{_pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
    _NUMPY[(f"{_pkg}.multiarray", "scalar")] = multiarray.scalar
    _NUMPY[(f"{_pkg}.numeric", "_frombuffer")] = numeric._frombuffer

_STAND_INS = {
    ("tianshou.data.buffer.buffer_base", "ReplayBuffer"): Record,
    ("tianshou.data.buffer.prio", "PrioritizedReplayBuffer"): Record,
    ("tianshou.data.utils.segtree", "SegmentTree"): Record,
    ("tianshou.data.batch", "Batch"): Record,
    ("numpy.random._pickle", "__randomstate_ctor"): _record_factory,
    ("numpy.random._pickle", "__bit_generator_ctor"): _record_factory,
    ("numpy.random._pickle", "__generator_ctor"): _record_factory,
    ("numpy.random._mt19937", "MT19937"): Record,
}


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, what: str) -> None:
        super().__init__(io.BytesIO(data))
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _NUMPY:
            return _NUMPY[key]
        if key in _STAND_INS:
            return _STAND_INS[key]
        raise pickle.UnpicklingError(
            f"jaxbuf: refusing to load '{module}.{name}' from {self._what}; only Tianshou "
            "buffer children, SegmentTree, Batch and NumPy arrays are read"
        )


def loads(data: bytes, what: str) -> Any:
    """Unpickle ``data`` allowing only the globals listed in the module docstring.

    ``what`` names the source (file and member) in error messages.
    """
    return _Restricted(data, what).load()
