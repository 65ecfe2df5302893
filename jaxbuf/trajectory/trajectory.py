"""``Trajectory``: one rollout window of B parallel envs, time-major, as RLinf stores it.

Shapes: T chunk steps, B envs, C actions per chunk, A action dim.

* ``actions [T, B, C*A]``, ``rewards [T, B, C]`` (required), ``prev_logprobs [T, B, ...]``,
  ``intervene_flags``, ``versions`` and every entry of ``forward_inputs``, ``curr_obs`` and
  ``next_obs``: ``[T, B, ...]``.
* ``terminations``, ``truncations``, ``dones`` and ``prev_values``: ``[T, B, ...]`` or
  ``[T + E, B, ...]`` where each of the E rollout epochs starts with one extra reset row and
  ``T % E == 0``.

Flattening for sampling: the T+E-row fields drop the first row of each of the E blocks of
``T/E + 1`` rows, so row t is "done after step t"; then every array with ``ndim >= 2`` is
reshaped ``[T, B, ...] -> [T*B, ...]`` row-major, so flat row ``i`` is ``(t, b) = (i // B,
i % B)``. 0-d/1-d arrays, ``max_episode_length`` and ``model_weights_id`` are dropped.
RLinf leaves ``prev_values`` untrimmed, misaligned with the other fields; jaxbuf trims it
like ``dones`` (see docs/differences-from-rlinf.md).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import ml_dtypes
import numpy as np

from jaxbuf.errors import InputError
from jaxbuf.trajectory.names import model_weights_id_problem

__all__ = [
    "ARRAY_FIELDS",
    "BATCH_DICT_ORDER",
    "DICT_FIELDS",
    "EPOCH_ROW_FIELDS",
    "FIELD_ORDER",
    "Trajectory",
    "TrajectoryShape",
    "as_host_array",
]

ARRAY_FIELDS = (
    "actions",
    "intervene_flags",
    "rewards",
    "terminations",
    "truncations",
    "dones",
    "prev_logprobs",
    "prev_values",
    "versions",
)
DICT_FIELDS = ("forward_inputs", "curr_obs", "next_obs")
BATCH_DICT_ORDER = ("curr_obs", "next_obs", "forward_inputs")  # RLinf's flatten order
FIELD_ORDER = ("max_episode_length", "model_weights_id") + ARRAY_FIELDS + DICT_FIELDS
EPOCH_ROW_FIELDS = ("terminations", "truncations", "dones", "prev_values")


def as_host_array(value: Any, where: str) -> np.ndarray:
    """Convert a numpy / jax / torch (CPU or not) / nested-list value to a numpy array.

    torch bfloat16 becomes ``ml_dtypes.bfloat16``. Object and string dtypes are refused.
    """
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, duck-typed
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import torch

            array = tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            array = tensor.numpy()
    else:
        array = np.asarray(value)
    if array.dtype.kind in "OUSV" and array.dtype != np.dtype(ml_dtypes.bfloat16):
        raise InputError(
            f"jaxbuf: {where}: expected a numeric or bool array, got dtype {array.dtype}"
        )
    return array


@dataclasses.dataclass(frozen=True)
class TrajectoryShape:
    """Validated geometry of a trajectory.

    Attributes:
        T: chunk steps (``rewards.shape[0]``).
        B: parallel envs (``rewards.shape[1]``).
        num_samples: ``T * B`` counted on ``prev_logprobs`` when set, else ``rewards``
            (as RLinf counts).
        shape: full shape of that same array (the index's ``shape`` entry).

    >>> import numpy as np
    >>> from jaxbuf import Trajectory
    >>> shape = Trajectory(rewards=np.zeros((6, 3))).validate()
    >>> shape.T, shape.B, shape.num_samples
    (6, 3, 18)
    """

    T: int
    B: int
    num_samples: int
    shape: tuple[int, ...]


@dataclasses.dataclass
class Trajectory:
    """One trajectory, with RLinf's fields in RLinf's order (see the module docstring).

    Array fields accept numpy, jax or torch arrays and are stored as numpy arrays. Dict fields
    map names to arrays and default to ``{}`` as in RLinf.

    Shapes are time-major, ``[T, B, ...]`` for T chunk steps of B envs; ``dones``,
    ``terminations``, ``truncations`` and ``prev_values`` may carry one extra reset row per
    rollout epoch (``T + E`` rows).

    >>> import numpy as np
    >>> from jaxbuf import Trajectory
    >>> traj = Trajectory(
    ...     model_weights_id="policy_3",                 # goes into the file name
    ...     rewards=np.ones((4, 2, 1), np.float32),      # [T, B, C]
    ...     actions=np.zeros((4, 2, 3), np.float32),     # [T, B, C * A]
    ...     dones=np.zeros((5, 2, 1), bool),             # [T + E, B, C], one epoch
    ...     curr_obs={"states": np.zeros((4, 2, 5), np.float32)},
    ... )
    >>> traj.validate()
    TrajectoryShape(T=4, B=2, num_samples=8, shape=(4, 2, 1))
    >>> {name: value.shape for name, value in traj.flatten().items() if name != "curr_obs"}
    {'actions': (8, 3), 'rewards': (8, 1), 'dones': (8, 1)}
    """

    max_episode_length: int = 0
    model_weights_id: str = ""
    actions: np.ndarray | None = None
    intervene_flags: np.ndarray | None = None
    rewards: np.ndarray | None = None
    terminations: np.ndarray | None = None
    truncations: np.ndarray | None = None
    dones: np.ndarray | None = None
    prev_logprobs: np.ndarray | None = None
    prev_values: np.ndarray | None = None
    versions: np.ndarray | None = None
    forward_inputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    curr_obs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    next_obs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        mel = self.max_episode_length
        if isinstance(mel, bool) or not isinstance(mel, (int, np.integer)):
            raise InputError(
                f"jaxbuf: max_episode_length must be an int, got {type(mel).__name__}"
            )
        self.max_episode_length = int(mel)
        mwid = self.model_weights_id
        if not isinstance(mwid, str):
            raise InputError(f"jaxbuf: model_weights_id must be a str, got {type(mwid).__name__}")
        problem = model_weights_id_problem(mwid)
        if problem is not None:
            raise InputError(
                f"jaxbuf: model_weights_id {mwid!r} {problem}; it becomes part of a file name"
            )
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, as_host_array(value, name))
        for name in DICT_FIELDS:
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
                continue
            if not isinstance(value, dict):
                raise InputError(
                    f"jaxbuf: {name} must be a dict of arrays, got {type(value).__name__}"
                )
            converted = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InputError(f"jaxbuf: {name}: keys must be str, got {key!r}")
                converted[key] = as_host_array(item, f"{name}[{key!r}]")
            setattr(self, name, converted)

    # ------------------------------------------------------------------------- validation

    def validate(self) -> TrajectoryShape:
        """Check shapes and return the geometry; raises ValueError naming the field.

        Rules: ``rewards`` is required with ``ndim >= 2`` and ``T, B > 0``; every other array
        (and dict entry) with ``ndim >= 2`` has ``shape[:2] == (T, B)``, except that the
        :data:`EPOCH_ROW_FIELDS` may have ``T + E`` rows with ``E > 0`` and ``T % E == 0``.
        """
        rewards = self.rewards
        if rewards is None:
            raise InputError("jaxbuf: rewards is required (shape [T, B, ...]) but is None")
        if rewards.ndim < 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
            raise InputError(
                f"jaxbuf: rewards must have shape [T, B, ...] with T, B > 0, got {rewards.shape}"
            )
        T, B = int(rewards.shape[0]), int(rewards.shape[1])
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is None or value.ndim < 2:
                continue
            if value.shape[1] != B:
                raise InputError(
                    f"jaxbuf: {name}: expected shape [T={T}, B={B}, ...], got {value.shape}"
                )
            rows = value.shape[0]
            if name in EPOCH_ROW_FIELDS and rows > T:
                extra = rows - T
                if T % extra:
                    raise InputError(
                        f"jaxbuf: {name}: {rows} rows = T + E with T={T}, E={extra}, but T % E != 0"
                    )
            elif rows != T:
                expect = "T or T + E" if name in EPOCH_ROW_FIELDS else "T"
                raise InputError(
                    f"jaxbuf: {name}: expected {expect} rows (T={T}, B={B}), got shape "
                    f"{value.shape}"
                )
        for name in DICT_FIELDS:
            for key, value in getattr(self, name).items():
                if value.ndim >= 2 and value.shape[:2] != (T, B):
                    raise InputError(
                        f"jaxbuf: {name}[{key!r}]: expected shape [T={T}, B={B}, ...], got "
                        f"{value.shape}"
                    )
        ref = self.prev_logprobs if self.prev_logprobs is not None else rewards
        if ref.ndim < 2:
            raise InputError(f"jaxbuf: prev_logprobs must have shape [T, B, ...], got {ref.shape}")
        return TrajectoryShape(
            T=T,
            B=B,
            num_samples=int(ref.shape[0]) * int(ref.shape[1]),
            shape=tuple(int(s) for s in ref.shape),
        )

    # ------------------------------------------------------------------------ conversions

    def flatten(self) -> dict[str, Any]:
        """The in-memory flat form used for sampling (see the module docstring).

        Returns a dict with the top-level arrays ``[T*B, ...]`` in field order, then, for each
        non-empty dict field in RLinf's order ``curr_obs, next_obs, forward_inputs``, a dict of
        its ``ndim >= 2`` entries as ``[T*B, ...]``.
        """
        T = self.validate().T
        flat: dict[str, Any] = {}
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is None or value.ndim < 2:
                continue
            if name in EPOCH_ROW_FIELDS and value.shape[0] > T:
                value = _drop_epoch_rows(value, T)
            flat[name] = value.reshape(-1, *value.shape[2:])
        for name in BATCH_DICT_ORDER:
            entries = getattr(self, name)
            if entries:
                flat[name] = {
                    k: v.reshape(-1, *v.shape[2:]) for k, v in entries.items() if v.ndim >= 2
                }
        return flat

    def to_payload(self) -> dict[str, Any]:
        """File payload: ``{field: value}`` for every non-None field, in field order."""
        payload: dict[str, Any] = {}
        for name in FIELD_ORDER:
            value = getattr(self, name)
            if value is None:
                continue
            payload[name] = dict(value) if name in DICT_FIELDS else value
        return payload

    def copy(self) -> Trajectory:
        """Deep copy with C-contiguous arrays (so later caller mutations do not leak in)."""
        kwargs: dict[str, Any] = {
            "max_episode_length": self.max_episode_length,
            "model_weights_id": self.model_weights_id,
        }
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            kwargs[name] = None if value is None else np.array(value, copy=True, order="C")
        for name in DICT_FIELDS:
            kwargs[name] = {
                k: np.array(v, copy=True, order="C") for k, v in getattr(self, name).items()
            }
        return Trajectory(**kwargs)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], where: str = "payload") -> Trajectory:
        """Rebuild a trajectory from a file payload; unknown keys are ignored with a warning."""
        unknown = [k for k in payload if k not in FIELD_ORDER]
        if unknown:
            warnings.warn(f"{where}: ignoring unknown trajectory fields {unknown}", stacklevel=2)
        kwargs = {k: v for k, v in payload.items() if k in FIELD_ORDER}
        return cls(**kwargs)


def _drop_epoch_rows(value: np.ndarray, T: int) -> np.ndarray:
    """``[T+E, ...] -> [T, ...]``: drop the leading reset row of each of the E epoch blocks."""
    extra = value.shape[0] - T
    blocks = value.reshape(extra, T // extra + 1, *value.shape[1:])
    return blocks[:, 1:].reshape(T, *value.shape[1:])
