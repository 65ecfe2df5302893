"""TrajectoryReplayBuffer: adding, sampling law, cache, persistence, config, concurrency."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading

import jax
import numpy as np
import pytest
from trajectory_helpers import assert_rows_consistent, listed_files, make_traj

import jaxbuf.trajectory.buffer as buffer_module
from jaxbuf.errors import InputError
from jaxbuf.trajectory import (
    Trajectory,
    TrajectoryReplayBuffer,
    TrajectoryWriteError,
    read_listing,
)


@pytest.fixture
def buf(tmp_path):
    buffer = TrajectoryReplayBuffer(
        storage_dir=str(tmp_path / "live"), cache_size=2, sample_window_size=0
    )
    yield buffer
    buffer.close()


def _index(directory):
    with open(os.path.join(directory, "trajectory_index.json")) as fh:
        return json.load(fh)


def test_add_assigns_ids_writes_files_and_listing(buf):
    assert buf.add_trajectories([make_traj(0, mwid=""), make_traj(1, mwid="u-1_2")]) == [0, 1]
    assert buf.add_trajectories([make_traj(2, T=6, E=3, B=3)]) == [2]
    buf.flush()
    assert listed_files(buf.storage_dir) == [
        "trajectory_0_.pt",
        "trajectory_1_u-1_2.pt",
        "trajectory_2_w_0.pt",
    ]
    index = _index(buf.storage_dir)
    assert index["trajectory_id_list"] == [0, 1, 2]
    assert index["trajectory_index"]["2"] == {
        "num_samples": 18,
        "trajectory_id": 2,
        "max_episode_length": 18,
        "shape": [6, 3, 6],
        "model_weights_id": "w_0",
    }
    meta = json.load(open(os.path.join(buf.storage_dir, "metadata.json")))
    assert {k: meta[k] for k in ("size", "total_samples", "trajectory_counter", "seed")} == {
        "size": 3,
        "total_samples": 34,
        "trajectory_counter": 3,
        "seed": 1234,
    }
    assert meta["storage_format"] == meta["trajectory_format"] == "pt"
    assert meta["storage_dir"] == buf.storage_dir
    assert len(buf) == 3 and buf.total_samples == 34 and buf.is_ready(3) and not buf.is_ready(4)
    assert asyncio.run(buf.is_ready_async(3)) and not asyncio.run(buf.is_ready_async(4))
    assert buf.get_stats() == {
        "num_trajectories": 3,
        "total_samples": 34,
        "cache_size": 2,
        "pending_writes": 0,
    }


def test_sample_returns_exactly_num_chunks_intact_rows(buf):
    buf.add_trajectories([make_traj(i, prev_values=True) for i in range(3)])
    batch = buf.sample(1000)  # > the 24 transitions held: RLinf would return 24
    assert list(batch) == [
        "actions",
        "rewards",
        "terminations",
        "truncations",
        "dones",
        "prev_logprobs",
        "prev_values",
        "curr_obs",
        "next_obs",
        "forward_inputs",
    ]
    code = assert_rows_consistent(batch, 1000)
    np.testing.assert_array_equal(batch["prev_values"][:, 0], code)
    assert batch["curr_obs"]["states"].shape == (1000, 5) and batch["dones"].dtype == bool
    assert set(code.astype(int)) == {
        c + 10_000 * i for i in range(3) for c in (0, 1, 100, 101, 200, 201, 300, 301)
    }


def test_sampling_is_uniform_over_transitions_of_the_window(tmp_path):
    buffer = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=2, seed=7)
    buffer.add_trajectories(
        [make_traj(0, T=4, B=2), make_traj(1, T=4, B=2), make_traj(2, T=8, B=3, E=2)]
    )
    code = buffer.sample(24_000)["rewards"][:, 0].astype(int)
    tags = code // 10_000
    assert set(tags) == {1, 2}  # window = the last two trajectories
    # 8 vs 24 transitions: P(tag 2) = 0.75; binomial sd ~ 0.0028
    assert abs(np.mean(tags == 2) - 0.75) < 0.012
    counts = np.unique(code, return_counts=True)[1]
    assert len(counts) == 32
    # every transition equally likely: 24000/32 = 750 each, sd ~ 27
    assert counts.min() > 640 and counts.max() < 860


def test_same_seed_same_batches_and_seed_none_is_recorded(tmp_path):
    a = TrajectoryReplayBuffer(seed=3, save_trajectories=False)
    b = TrajectoryReplayBuffer(seed=3, save_trajectories=False)
    for buffer in (a, b):
        buffer.add_trajectories([make_traj(i) for i in range(4)])
    for _ in range(3):
        np.testing.assert_array_equal(a.sample(9)["rewards"], b.sample(9)["rewards"])
    c = TrajectoryReplayBuffer(seed=None, save_trajectories=False)
    assert isinstance(c.seed, int) and c.seed >= 0


def test_rng_state_is_checkpointed_and_resumed(buf, tmp_path):
    buf.add_trajectories([make_traj(i) for i in range(4)])
    for _ in range(3):
        buf.sample(5)
    buf.save_checkpoint(str(tmp_path / "ckpt"))
    expected = [buf.sample(7)["rewards"] for _ in range(3)]
    resumed = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0, seed=99)
    resumed.load_checkpoint(str(tmp_path / "ckpt"))
    assert resumed.seed == 1234
    for want in expected:
        np.testing.assert_array_equal(resumed.sample(7)["rewards"], want)


def test_cache_is_fifo_and_misses_are_read_from_disk_then_cached(buf, monkeypatch):
    buf.add_trajectories([make_traj(i) for i in range(4)])
    buf.flush()
    assert buf._cache.ids() == [2, 3]
    reads = []
    real = buffer_module.read_trajectory_file

    def counting_read(path, fmt):
        reads.append(os.path.basename(path))
        return real(path, fmt)

    monkeypatch.setattr(buffer_module, "read_trajectory_file", counting_read)
    buf.sample(200)
    assert sorted(reads) == ["trajectory_0_w_0.pt", "trajectory_1_w_0.pt"]
    assert len(buf._cache) == 2
    buf.clear_cache()
    assert buf.get_stats()["cache_size"] == 0
    assert_rows_consistent(buf.sample(50), 50)


def test_window_and_memory_only_mode(tmp_path):
    with pytest.raises(ValueError, match="requires enable_cache=True"):
        TrajectoryReplayBuffer(save_trajectories=False, enable_cache=False)
    buffer = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=3, cache_size=1)
    buffer.add_trajectories([make_traj(i) for i in range(10)])
    tags = set((buffer.sample(500)["rewards"][:, 0] // 10_000).astype(int))
    assert tags == {7, 8, 9}
    assert len(buffer) == 10  # index entries remain, as in RLinf
    assert sorted(buffer._resident) == [7, 8, 9]  # older memory-only data is released
    with pytest.raises(RuntimeError, match="save_checkpoint needs save_trajectories=True"):
        buffer.save_checkpoint(str(tmp_path / "c"))
    assert buffer.storage_dir is None and not os.listdir(tmp_path)


def test_pending_trajectories_are_sampled_from_memory(buf, monkeypatch):
    gate = threading.Event()
    real = buffer_module.write_trajectory_file

    def slow_write(path, payload, fmt):
        gate.wait(10)
        real(path, payload, fmt)

    monkeypatch.setattr(buffer_module, "write_trajectory_file", slow_write)
    buf.clear_cache()
    buf.add_trajectories([make_traj(i) for i in range(3)])
    buf.clear_cache()  # the writer must survive this (RLinf's clear_cache kills it)
    assert buf.get_stats()["pending_writes"] > 0
    assert_rows_consistent(buf.sample(40), 40)  # no read of a half-written file
    gate.set()
    buf.flush()
    assert listed_files(buf.storage_dir) == [f"trajectory_{i}_w_0.pt" for i in range(3)]


def test_write_errors_surface_and_listing_skips_the_failed_file(buf, monkeypatch):
    real = buffer_module.write_trajectory_file
    full = {"disk": True}

    def failing(path, payload, fmt):
        if "trajectory_1_" in path and full["disk"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload, fmt)

    monkeypatch.setattr(buffer_module, "write_trajectory_file", failing)
    buf.add_trajectories([make_traj(i) for i in range(3)])
    with pytest.raises(TrajectoryWriteError, match="trajectory_1_w_0.pt: OSError: .*No space"):
        buf.flush()
    assert _index(buf.storage_dir)["trajectory_id_list"] == [0, 2]
    assert_rows_consistent(buf.sample(30), 30)  # the failed one is still served from memory
    buf.add_trajectories([make_traj(1)])  # id 3 is fine
    for _ in range(3):  # every flush retries and raises while trajectory 1 is not durable
        with pytest.raises(TrajectoryWriteError, match="trajectory 1: writing") as info:
            buf.flush()
        assert info.value.trajectory_ids == [1]
    assert _index(buf.storage_dir)["trajectory_id_list"] == [0, 2, 3]
    with pytest.raises(TrajectoryWriteError, match="trajectory 1"):
        buf.save_checkpoint(str(buf.storage_dir) + "-ckpt")
    full["disk"] = False  # space freed: the next flush makes it durable
    buf.flush()
    assert _index(buf.storage_dir)["trajectory_id_list"] == [0, 2, 3, 1]
    buf.save_checkpoint(str(buf.storage_dir) + "-ckpt")
    reader = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    assert sorted(reader.load_checkpoint(str(buf.storage_dir) + "-ckpt").loaded) == [0, 1, 2, 3]


def test_failed_write_can_be_dropped_explicitly(buf, monkeypatch):
    real = buffer_module.write_trajectory_file

    def failing(path, payload, fmt):
        if "trajectory_1_" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload, fmt)

    monkeypatch.setattr(buffer_module, "write_trajectory_file", failing)
    buf.add_trajectories([make_traj(i) for i in range(3)])
    with pytest.raises(TrajectoryWriteError):
        buf.flush()
    assert buf.drop_failed_writes() == [1]
    buf.flush()  # nothing pending any more
    assert len(buf) == 2 and buf.total_samples == 16
    assert sorted(set((buf.sample(200)["rewards"][:, 0] // 10_000).astype(int))) == [0, 2]
    assert _index(buf.storage_dir)["trajectory_id_list"] == [0, 2]
    assert buf.drop_failed_writes() == []


def test_error_surfaces_at_next_add(buf, monkeypatch):
    def failing(path, payload, fmt):
        raise PermissionError("read-only filesystem")

    monkeypatch.setattr(buffer_module, "write_trajectory_file", failing)
    buf.add_trajectories([make_traj(0)])
    while buf.get_stats()["pending_writes"]:
        threading.Event().wait(0.01)
    with pytest.raises(TrajectoryWriteError, match="read-only filesystem"):
        buf.add_trajectories([make_traj(1)])
    assert len(buf) == 1  # the add that reported the error did nothing
    assert buf.drop_failed_writes() == [0]


def test_add_validates_everything_first(buf):
    with pytest.raises(TypeError, match="must be a list of Trajectory"):
        buf.add_trajectories(make_traj(0))
    with pytest.raises(TypeError, match=r"trajectories\[1\] must be a Trajectory"):
        buf.add_trajectories([make_traj(0), {"rewards": 1}])
    bad = make_traj(1)
    bad.actions = np.zeros((3, 2, 6), np.float32)
    with pytest.raises(ValueError, match=r"trajectories\[1\]: actions: expected T rows"):
        buf.add_trajectories([make_traj(0), bad])
    with pytest.raises(ValueError, match=r"trajectories\[0\]: rewards is required"):
        buf.add_trajectories([Trajectory(prev_logprobs=np.zeros((2, 2, 1)))])
    assert len(buf) == 0 and buf.get_stats()["pending_writes"] == 0


def test_caller_mutation_after_add_does_not_leak(buf):
    traj = make_traj(0)
    buf.add_trajectories([traj])
    traj.rewards[...] = -5
    traj.curr_obs["states"][...] = -5
    assert_rows_consistent(buf.sample(20), 20)


def test_sample_errors_and_jax_output(buf):
    with pytest.raises(RuntimeError, match="Cannot sample from an empty buffer"):
        buf.sample(4)
    with pytest.raises(ValueError, match="num_chunks must be >= 1, got 0"):
        buf.sample(0)
    with pytest.raises(TypeError, match="num_chunks must be an int"):
        buf.sample(2.0)
    buf.add_trajectories([make_traj(0)])
    batch = buf.sample_jax(6)
    assert isinstance(batch["rewards"], jax.Array) and batch["rewards"].shape == (6, 3)
    assert isinstance(batch["curr_obs"]["states"], jax.Array)
    assert isinstance(buf.sample(3, as_jax=True)["dones"], jax.Array)


def test_add_refuses_a_trajectory_whose_layout_differs(tmp_path):
    buffer = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    other = make_traj(1)
    other.actions = np.zeros((4, 2, 9), np.float32)
    with pytest.raises(InputError, match=r"trajectories\[1\]: field 'actions': rows of shape"):
        buffer.add_trajectories([make_traj(0), other])
    assert len(buffer) == 0  # nothing of the refused call was added
    buffer.add_trajectories([make_traj(0)])
    with pytest.raises(InputError, match=r"trajectories\[0\]: field 'actions'"):
        buffer.add_trajectories([other])
    assert_rows_consistent(buffer.sample(50), 50)
    # the layout is learnt again after a restart from the stored files
    live = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "live"), cache_size=1)
    live.add_trajectories([make_traj(i) for i in range(3)])
    live.close()
    resumed = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "live"), enable_cache=False)
    odd = make_traj(5)
    odd.curr_obs = {"states": np.zeros((4, 2, 7), np.float32)}
    with pytest.raises(InputError, match=r"field 'curr_obs/states'"):
        resumed.add_trajectories([odd])
    resumed.add_trajectories([make_traj(5)])
    assert_rows_consistent(resumed.sample(100), 100)
    resumed.close()


def test_clear_and_close(buf):
    buf.add_trajectories([make_traj(i) for i in range(3)])
    buf.clear()
    assert len(buf) == 0 and buf.total_samples == 0
    buf.flush()
    assert _index(buf.storage_dir)["trajectory_id_list"] == []
    assert buf.add_trajectories([make_traj(7)]) == [0]  # ids restart at 0
    buf.close()
    buf.close()
    assert buf.add_trajectories([make_traj(8)]) == [1]  # a closed buffer restarts its writer
    buf.flush()
    assert _index(buf.storage_dir)["trajectory_id_list"] == [0, 1]
    assert read_listing(buf.storage_dir).counter == 2


def test_constructor_aliases_and_config_errors(tmp_path):
    b = TrajectoryReplayBuffer(
        auto_save=True, auto_save_path=str(tmp_path / "a"), trajectory_format="npz"
    )
    assert (b.save_trajectories, b.auto_save, b.storage_dir, b.storage_format) == (
        True,
        True,
        str(tmp_path / "a"),
        "npz",
    )
    b.add_trajectories([make_traj(0)])
    b.close()
    assert listed_files(str(tmp_path / "a")) == ["trajectory_0_w_0.npz"]
    assert not TrajectoryReplayBuffer(auto_save=False, auto_save_path="").save_trajectories
    c = TrajectoryReplayBuffer(
        storage_dir=None,
        auto_save_path=str(tmp_path / "c"),
        storage_format=None,
        save_trajectories=False,
    )
    assert c.storage_format == "pt" and c.storage_dir is None  # not persisting: no directory
    with pytest.raises(
        ValueError, match="save_trajectories=True conflicts with its alias auto_save=False"
    ):
        TrajectoryReplayBuffer(save_trajectories=True, auto_save=False)
    with pytest.raises(ValueError, match="storage_format='pt' conflicts"):
        TrajectoryReplayBuffer(
            storage_format="pt", trajectory_format="npz", save_trajectories=False
        )
    with pytest.raises(ValueError, match="storage_format must be one of"):
        TrajectoryReplayBuffer(storage_format="h5", save_trajectories=False)
    with pytest.raises(ValueError, match="cache_size must be >= 1, got 0"):
        TrajectoryReplayBuffer(cache_size=0, save_trajectories=False)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        TrajectoryReplayBuffer(seed=-1, save_trajectories=False)
    with pytest.raises(TypeError, match="positional"):
        TrajectoryReplayBuffer(1234, str(tmp_path))


def test_default_storage_dir_is_a_fresh_log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXBUF_LOG_DIR", str(tmp_path / "logs"))
    a, b = TrajectoryReplayBuffer(), TrajectoryReplayBuffer()
    assert a.storage_dir != b.storage_dir
    assert os.path.dirname(a.storage_dir) == str(tmp_path / "logs" / "replay_buffer")
    assert os.path.isdir(a.storage_dir)


def test_resume_on_construction(tmp_path):
    live = str(tmp_path / "live")
    with TrajectoryReplayBuffer(storage_dir=live, cache_size=1) as first:
        first.add_trajectories([make_traj(i) for i in range(3)])
    second = TrajectoryReplayBuffer(storage_dir=live, cache_size=1, sample_window_size=0)
    assert len(second) == 3 and second.add_trajectories([make_traj(3)]) == [3]
    second.flush()
    assert _index(live)["trajectory_id_list"] == [0, 1, 2, 3]
    assert set((second.sample(400)["rewards"][:, 0] // 10_000).astype(int)) == {0, 1, 2, 3}
    second.close()


def test_concurrent_sample_and_add_never_tears_rows(tmp_path):
    buffer = TrajectoryReplayBuffer(
        storage_dir=str(tmp_path / "live"), cache_size=2, sample_window_size=6
    )
    buffer.add_trajectories([make_traj(0)])
    errors, stop = [], threading.Event()

    def producer():
        try:
            for i in range(1, 60):
                buffer.add_trajectories([make_traj(i, T=4 + 2 * (i % 3), E=2, B=1 + i % 3)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def consumer():
        try:
            while not stop.is_set():
                assert_rows_consistent(buffer.sample(64), 64)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=producer)] + [
        threading.Thread(target=consumer) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    buffer.close()
    assert errors == []
    assert len(buffer) == 60 and _index(buffer.storage_dir)["trajectory_id_list"] == list(range(60))
