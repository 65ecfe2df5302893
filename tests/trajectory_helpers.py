"""Shared builders for the RLinf file-mode tests.

``make_traj(tag, ...)`` builds a trajectory whose every row identifies itself: for chunk step
t and env b the row code is ``tag * 10_000 + t * 100 + b``; ``rewards``, ``actions``,
``prev_logprobs`` and ``curr_obs["states"]`` hold the code, ``next_obs["states"]`` the code +
0.5, and ``dones`` (stored with ``T + E`` rows whose reset rows are all True) is True exactly
where ``code % 3 == 0`` after trimming. A sampled row is consistent iff all of these agree.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import types

import numpy as np

from jaxbuf.trajectory import Trajectory


def row_codes(tag: int, T: int, B: int) -> np.ndarray:
    t, b = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
    return (tag * 10_000 + t * 100 + b).astype(np.float32)


def make_traj(
    tag: int = 0,
    T: int = 4,
    B: int = 2,
    E: int = 2,
    C: int = 3,
    A: int = 2,
    mwid: str = "w_0",
    image: tuple[int, ...] | None = None,
    prev_values: bool = False,
) -> Trajectory:
    codes = row_codes(tag, T, B)
    dones = np.ones((T + E, B, C), bool)
    aligned = np.repeat(((codes % 3) == 0)[:, :, None], C, axis=2)
    per = T // E
    for e in range(E):
        dones[e * (per + 1) + 1 : (e + 1) * (per + 1)] = aligned[e * per : (e + 1) * per]
    curr = {"states": np.repeat(codes[:, :, None], 5, axis=2)}
    if image is not None:
        curr["main_images"] = np.full((T, B, *image), tag % 256, np.uint8)
    traj = Trajectory(
        max_episode_length=T * C,
        model_weights_id=mwid,
        actions=np.repeat(codes[:, :, None], C * A, axis=2),
        rewards=np.repeat(codes[:, :, None], C, axis=2),
        dones=dones,
        terminations=dones.copy(),
        truncations=np.zeros_like(dones),
        prev_logprobs=np.repeat(codes[:, :, None], C * A, axis=2),
        curr_obs=curr,
        next_obs={"states": np.repeat(codes[:, :, None] + 0.5, 5, axis=2)},
        forward_inputs={"action": np.repeat(codes[:, :, None], C * A, axis=2)},
    )
    if prev_values:
        values = np.full((T + E, B, 1), -1.0, np.float32)
        for e in range(E):
            values[e * (per + 1) + 1 : (e + 1) * (per + 1), :, 0] = codes[e * per : (e + 1) * per]
        traj.prev_values = values
    return traj


def assert_rows_consistent(batch: dict, n: int) -> np.ndarray:
    """Check every row of a sampled batch is one intact (t, b) cell; return its codes."""
    code = np.asarray(batch["rewards"])[:, 0]
    assert np.asarray(batch["rewards"]).shape[0] == n
    np.testing.assert_array_equal(
        np.asarray(batch["rewards"]), code[:, None].repeat(np.asarray(batch["rewards"]).shape[1], 1)
    )
    np.testing.assert_array_equal(np.asarray(batch["actions"]).min(1), code)
    np.testing.assert_array_equal(np.asarray(batch["actions"]).max(1), code)
    np.testing.assert_array_equal(np.asarray(batch["prev_logprobs"])[:, 0], code)
    np.testing.assert_array_equal(np.asarray(batch["curr_obs"]["states"])[:, 0], code)
    np.testing.assert_array_equal(np.asarray(batch["next_obs"]["states"])[:, 0], code + 0.5)
    np.testing.assert_array_equal(np.asarray(batch["dones"])[:, -1], (code % 3) == 0)
    return code


def load_rlinf():
    """Import RLinf 0.3.0's buffer with the stand-in modules of rlinf-semantics.md §15.

    Needs ``pip install torch`` and ``pip install --no-deps rlinf==0.3.0``; returns
    ``(TrajectoryReplayBuffer, Trajectory)`` of RLinf.
    """
    spec = importlib.util.find_spec("rlinf")
    root = list(spec.submodule_search_locations)[0]
    if "rlinf.data.replay_buffer" not in sys.modules:
        pkg = types.ModuleType("rlinf")
        pkg.__path__ = [root]
        sys.modules["rlinf"] = pkg
        scheduler = types.ModuleType("rlinf.scheduler")
        scheduler.__path__ = []
        worker = types.ModuleType("rlinf.scheduler.worker")

        class Worker:
            logger = logging.getLogger("rlinf-standin")

        worker.Worker = Worker
        sys.modules["rlinf.scheduler"] = scheduler
        sys.modules["rlinf.scheduler.worker"] = worker
    from rlinf.data.embodied_io_struct import Trajectory as RTrajectory
    from rlinf.data.replay_buffer import TrajectoryReplayBuffer as RBuffer

    return RBuffer, RTrajectory


def listed_files(directory: str) -> list[str]:
    return sorted(
        n for n in os.listdir(directory) if n.startswith("trajectory_") and not n.endswith(".json")
    )


def reader(**kwargs):
    """A read-only buffer over a directory (no persistence, whole-buffer sampling window)."""
    from jaxbuf.trajectory import TrajectoryReplayBuffer

    return TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0, **kwargs)


def tags(buffer, n=400):
    """The sorted trajectory tags (``row_codes`` // 10_000) seen in ``n`` sampled rows."""
    return sorted(set((buffer.sample(n)["rewards"][:, 0] // 10_000).astype(int)))
