"""Interoperability with RLinf 0.3.0 itself (generation B), run when it is installed.

Optional extra, recipe of rlinf-semantics.md §15: ``pip install torch`` (CPU wheel) and
``pip install --no-deps rlinf==0.3.0``; the stand-in modules are set up by
``trajectory_helpers.load_rlinf``. Generation A is not on PyPI; its layout is covered by the
hand-built fixtures in ``test_trajectory_checkpoint.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest
from trajectory_helpers import assert_rows_consistent, listed_files, load_rlinf, make_traj

from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer, merge_buffers

torch = pytest.importorskip("torch")
if importlib.util.find_spec("rlinf") is None:  # importing the real package needs omegaconf
    pytest.skip(
        "rlinf is not installed (optional: pip install --no-deps rlinf==0.3.0)",
        allow_module_level=True,
    )
RBuffer, RTrajectory = load_rlinf()

MWIDS = ["", "a_b-c", "6f1c2b9e-0d7e-5b8e-9a52-3c1b2f6d4e11_3"]


def _to_rlinf(traj: Trajectory):
    kwargs = {
        "max_episode_length": traj.max_episode_length,
        "model_weights_id": traj.model_weights_id,
    }
    for name in ("actions", "rewards", "terminations", "truncations", "dones", "prev_logprobs"):
        value = getattr(traj, name)
        if value is not None:
            kwargs[name] = torch.from_numpy(value.copy())
    for name in ("forward_inputs", "curr_obs", "next_obs"):
        kwargs[name] = {k: torch.from_numpy(v.copy()) for k, v in getattr(traj, name).items()}
    return RTrajectory(**kwargs)


def _numpy(batch):
    return {k: _numpy(v) if isinstance(v, dict) else v.numpy() for k, v in batch.items()}


def _ours(tmp_path, fmt="pt", n=3, name="live"):
    buffer = TrajectoryReplayBuffer(storage_dir=str(tmp_path / name), storage_format=fmt)
    buffer.add_trajectories([make_traj(i, mwid=MWIDS[i % 3]) for i in range(n)])
    return buffer


def _wait_for_rlinf_listing(directory, size):
    path = os.path.join(directory, "metadata.json")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(path) as fh:
                if json.load(fh)["size"] == size:
                    return
        except (OSError, ValueError):  # not there yet, or caught mid-write (RLinf's races)
            pass
        time.sleep(0.02)
    raise AssertionError(f"RLinf did not write {path}")


def _rlinf_reader(cache_size=2):
    return RBuffer(
        seed=1, enable_cache=True, cache_size=cache_size, sample_window_size=10, auto_save=False
    )


@pytest.mark.parametrize("fmt", ["pt", "pkl"])
def test_rlinf_loads_our_checkpoint_and_samples_intact_rows(tmp_path, fmt):
    buffer = _ours(tmp_path, fmt)
    buffer.save_checkpoint(str(tmp_path / "ckpt"))
    buffer.close()
    reader = _rlinf_reader()
    reader.load_checkpoint(str(tmp_path / "ckpt"))
    assert len(reader) == 3 and reader.total_samples == 24
    batch = _numpy(reader.sample(20))  # RLinf clamps requests above the 24 transitions held
    code = assert_rows_consistent(batch, 20)
    assert set((code // 10_000).astype(int)) <= {0, 1, 2}


def test_rlinf_partitions_our_checkpoint_like_we_do(tmp_path):
    buffer = _ours(tmp_path)
    buffer.close()
    for rank, want in ((0, [0, 1]), (1, [2])):
        reader = _rlinf_reader()
        reader.load_checkpoint(
            buffer.storage_dir, is_distributed=True, local_rank=rank, world_size=2
        )
        assert reader._trajectory_id_list == want


def test_rlinf_loads_our_merge_output(tmp_path):
    for rank in range(2):
        _ours(tmp_path / "src", n=2 + rank, name=f"rank_{rank}").close()
    report = merge_buffers(str(tmp_path / "src"), str(tmp_path / "merged"))
    reader = _rlinf_reader(cache_size=5)
    reader.load_checkpoint(report.save_path)
    assert reader._trajectory_id_list == [0, 1, 2, 3, 4]
    assert_rows_consistent(_numpy(reader.sample(30)), 30)


def test_we_read_rlinf_auto_save_dir_and_its_checkpoints(tmp_path):
    auto = RBuffer(
        seed=5, auto_save=True, auto_save_path=str(tmp_path / "rl_live"), sample_window_size=10
    )
    auto.add_trajectories([_to_rlinf(make_traj(i, mwid=MWIDS[i])) for i in range(3)])
    _wait_for_rlinf_listing(str(tmp_path / "rl_live"), 3)  # RLinf has no flush()
    auto.sample(8)  # RLinf checkpoints copy only the memoised sampling window
    auto.save_checkpoint(str(tmp_path / "rl_ckpt"))  # before close(): close is terminal
    auto.close(wait=True)
    cache_mode = RBuffer(seed=5, auto_save=False, sample_window_size=10)
    cache_mode.add_trajectories([_to_rlinf(make_traj(i + 10)) for i in range(2)])
    cache_mode.save_checkpoint(str(tmp_path / "rl_cache_ckpt"))  # T-row dones
    for directory, tags in (
        ("rl_live", [0, 1, 2]),
        ("rl_ckpt", [0, 1, 2]),
        ("rl_cache_ckpt", [10, 11]),
    ):
        ours = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
        report = ours.load_checkpoint(str(tmp_path / directory))
        assert report.loaded == list(range(len(tags))) and report.fmt == "pt"
        code = assert_rows_consistent(ours.sample(300), 300)
        assert sorted(set((code // 10_000).astype(int))) == tags
    assert listed_files(str(tmp_path / "rl_live"))[0] == "trajectory_0_.pt"


def test_we_read_rlinf_pkl_files(tmp_path):
    auto = RBuffer(
        seed=5,
        auto_save=True,
        auto_save_path=str(tmp_path / "rl_pkl"),
        sample_window_size=10,
        trajectory_format="pkl",
    )
    auto.add_trajectories([_to_rlinf(make_traj(i)) for i in range(2)])
    auto.close(wait=True)
    assert listed_files(str(tmp_path / "rl_pkl")) == [
        "trajectory_0_w_0.pkl",
        "trajectory_1_w_0.pkl",
    ]
    ours = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    assert ours.load_checkpoint(str(tmp_path / "rl_pkl")).fmt == "pkl"
    assert_rows_consistent(ours.sample(100), 100)


def test_flattening_matches_rlinf():
    traj = make_traj(4, T=6, B=3, E=3)
    theirs = _numpy(RBuffer(seed=1, auto_save=False)._flatten_trajectory(_to_rlinf(traj)))
    ours = traj.flatten()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        if isinstance(value, dict):
            for k in value:
                np.testing.assert_array_equal(value[k], theirs[key][k])
        else:
            np.testing.assert_array_equal(value, theirs[key])
