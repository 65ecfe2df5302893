"""Checkpoints, rank partitions, corrupt/missing files, RLinf gen-A/B fixtures, merge, split."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from trajectory_helpers import assert_rows_consistent, listed_files, make_traj
from trajectory_helpers import reader as _reader
from trajectory_helpers import tags as _tags

from jaxbuf.trajectory import (
    CheckpointError,
    TrajectoryFileError,
    TrajectoryReplayBuffer,
    merge_buffers,
    partition_ids,
    read_listing,
    split_buffer,
    write_trajectory_file,
)
from jaxbuf.trajectory.listing import write_listing


def _live(tmp_path, name, n, fmt="pt", tag0=0, **kwargs):
    buffer = TrajectoryReplayBuffer(
        storage_dir=str(tmp_path / name), storage_format=fmt, sample_window_size=0, **kwargs
    )
    buffer.add_trajectories([make_traj(tag0 + i, mwid=f"m_{i}") for i in range(n)])
    buffer.flush()
    return buffer


@pytest.mark.parametrize("fmt", ["pt", "npz", "pkl"])
def test_checkpoint_round_trip_every_format(tmp_path, fmt):
    if fmt == "pkl":
        pytest.importorskip("torch")
    live = _live(tmp_path, "live", 4, fmt=fmt)
    ckpt = str(tmp_path / "ckpt")
    live.save_checkpoint(ckpt)
    live.close()
    ext = {"pt": ".pt", "npz": ".npz", "pkl": ".pkl"}[fmt]
    assert listed_files(ckpt) == [f"trajectory_{i}_m_{i}{ext}" for i in range(4)]
    for name in listed_files(ckpt):  # hard links: no copy on one filesystem
        assert os.path.samefile(os.path.join(ckpt, name), os.path.join(live.storage_dir, name))
    meta = json.load(open(os.path.join(ckpt, "metadata.json")))
    assert list(meta)[:7] == [
        "storage_dir",
        "storage_format",
        "trajectory_format",
        "size",
        "total_samples",
        "trajectory_counter",
        "seed",
    ]
    assert meta["storage_dir"] == ckpt and meta["storage_format"] == fmt
    reader = _reader()
    report = reader.load_checkpoint(ckpt)
    assert report.loaded == [0, 1, 2, 3] and report.skipped == [] and report.fmt == fmt
    assert len(reader) == 4 and reader.total_samples == 32 and reader.storage_format == fmt
    assert_rows_consistent(reader.sample(300), 300)
    assert _tags(reader) == [0, 1, 2, 3]


def test_checkpoint_is_self_contained_after_live_dir_changes(tmp_path):
    live = _live(tmp_path, "live", 3)
    ckpt = str(tmp_path / "ckpt")
    live.save_checkpoint(ckpt)
    live.clear()
    live.add_trajectories([make_traj(90, mwid="m_0")])  # rewrites trajectory_0_m_0.pt
    live.close()
    reader = _reader()
    reader.load_checkpoint(ckpt)
    assert _tags(reader) == [0, 1, 2]


def test_save_checkpoint_into_storage_dir_itself(tmp_path):
    live = _live(tmp_path, "live", 2)
    live.sample(3)
    live.save_checkpoint(live.storage_dir)
    want = live.sample(5)["rewards"]
    live.close()
    reader = _reader()
    reader.load_checkpoint(live.storage_dir)
    np.testing.assert_array_equal(reader.sample(5)["rewards"], want)


def test_rank_partition_three_ids_over_two_ranks():
    assert partition_ids([0, 1, 2], 2, 0) == [0, 1]
    assert partition_ids([0, 1, 2], 2, 1) == [2]
    with pytest.raises(ValueError, match=r"local_rank must be an int in \[0, 2\), got 2"):
        partition_ids([0, 1, 2], 2, 2)
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        partition_ids([0], 0, 0)


@given(st.integers(0, 40), st.integers(1, 9))
def test_partition_blocks_are_contiguous_balanced_and_cover(n, world):
    ids = list(range(100, 100 + n))
    blocks = [partition_ids(ids, world, r) for r in range(world)]
    assert sum(blocks, []) == ids
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_distributed_load_takes_the_rank_block(tmp_path):
    live = _live(tmp_path, "live", 3)
    live.close()
    shares = []
    for rank in range(2):
        reader = _reader()
        report = reader.load_checkpoint(
            live.storage_dir, is_distributed=True, local_rank=rank, world_size=2
        )
        shares.append(report.loaded)
        assert len(reader) == len(report.loaded)
        assert reader.total_samples == 8 * len(report.loaded)
        assert _tags(reader) == report.loaded
    assert shares == [[0, 1], [2]]
    with pytest.raises(ValueError, match="local_rank"):
        _reader().load_checkpoint(live.storage_dir, is_distributed=True, local_rank=2, world_size=2)


def test_distributed_rank_seeds_differ_and_counter_follows_block(tmp_path):
    live = _live(tmp_path, "live", 4)
    live.close()
    a, b = _reader(), _reader()
    a.load_checkpoint(live.storage_dir, is_distributed=True, local_rank=0, world_size=1)
    b.load_checkpoint(live.storage_dir)
    assert not np.array_equal(a.sample(50)["rewards"], b.sample(50)["rewards"])
    c = _reader()
    c.load_checkpoint(live.storage_dir, is_distributed=True, local_rank=0, world_size=2)
    assert c.add_trajectories([make_traj(9)]) == [2]  # counter = max id in block + 1


def test_loading_into_a_persisting_buffer_links_files_into_its_storage_dir(tmp_path):
    src = _live(tmp_path, "src", 3)
    src.close()
    dst = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "dst"), sample_window_size=0)
    dst.load_checkpoint(src.storage_dir, is_distributed=True, local_rank=1, world_size=2)
    dst.add_trajectories([make_traj(50, mwid="new")])
    dst.flush()
    assert listed_files(dst.storage_dir) == ["trajectory_2_m_2.pt", "trajectory_3_new.pt"]
    assert json.load(open(tmp_path / "src" / "metadata.json"))["size"] == 3  # untouched
    dst.close()
    again = _reader()
    again.load_checkpoint(dst.storage_dir)
    assert _tags(again) == [2, 50]
    with TrajectoryReplayBuffer(storage_dir=src.storage_dir) as same:
        with pytest.raises(ValueError, match="cannot load a rank's share"):
            same.load_checkpoint(src.storage_dir, is_distributed=True, local_rank=0, world_size=2)


def test_missing_and_corrupt_files_name_the_file_and_can_be_skipped(tmp_path):
    live = _live(tmp_path, "live", 4)
    live.close()
    d = live.storage_dir
    one = os.path.join(d, "trajectory_1_m_1.pt")
    saved_one = open(one, "rb").read()
    os.unlink(one)
    corrupt = os.path.join(d, "trajectory_2_m_2.pt")
    with open(corrupt, "r+b") as fh:
        fh.truncate(300)
    with pytest.raises(FileNotFoundError, match="trajectory_1_m_1.pt"):
        _reader().load_checkpoint(d)
    open(one, "wb").write(saved_one)
    with pytest.raises(TrajectoryFileError, match="trajectory_2_m_2.pt") as info:
        _reader().load_checkpoint(d)
    assert info.value.path == corrupt
    os.unlink(one)
    reader = _reader()
    report = reader.load_checkpoint(d, skip_corrupt=True)
    assert report.loaded == [0, 3]
    assert [(s.trajectory_id, os.path.basename(s.path)) for s in report.skipped] == [
        (1, "trajectory_1_m_1.pt"),
        (2, "trajectory_2_m_2.pt"),
    ]
    assert "not found" in report.skipped[0].reason and "corrupt" in report.skipped[1].reason
    assert _tags(reader) == [0, 3] and len(reader) == 2 and reader.total_samples == 16
    lazy = _reader(cache_size=1)
    with pytest.raises(FileNotFoundError):  # existence is always checked
        lazy.load_checkpoint(d, verify=False)
    report = lazy.load_checkpoint(d, verify=False, skip_corrupt=True)
    assert report.loaded == [0, 3]  # the listed size is always checked too
    open(one, "wb").write(saved_one)
    write_trajectory_file(corrupt, make_traj(2, mwid="m_2").to_payload(), "pt")
    good_two = open(corrupt, "rb").read()
    flipped = bytearray(good_two)
    flipped[len(flipped) // 2] ^= 0xFF
    open(corrupt, "wb").write(bytes(flipped))  # same size, other bytes
    lazy = _reader(cache_size=1)
    report = lazy.load_checkpoint(d, verify=False)
    assert report.loaded == [0, 1, 2, 3]  # same size: only found when read
    with pytest.raises(TrajectoryFileError, match="trajectory_2_m_2.pt: sha256 .* differs"):
        lazy.sample(400)


def test_skipping_the_newest_files_still_refills_the_cache(tmp_path):
    live = _live(tmp_path, "live", 4)
    live.close()
    os.unlink(os.path.join(live.storage_dir, "trajectory_3_m_3.pt"))
    reader = _reader(cache_size=2)
    report = reader.load_checkpoint(live.storage_dir, verify=False, skip_corrupt=True)
    assert report.loaded == [0, 1, 2] and reader.get_stats()["cache_size"] == 1
    assert _tags(reader) == [0, 1, 2]


def test_invalid_saved_rng_state_names_the_metadata(tmp_path):
    live = _live(tmp_path, "live", 1)
    live.close()
    meta_path = os.path.join(live.storage_dir, "metadata.json")
    meta = json.load(open(meta_path))
    meta["jaxbuf"]["rng_state"] = {"bit_generator": "MT19937"}
    json.dump(meta, open(meta_path, "w"))
    reader = _reader()
    with pytest.raises(CheckpointError, match="metadata.json: invalid jaxbuf.rng_state"):
        reader.load_checkpoint(live.storage_dir)
    assert len(reader) == 0  # nothing was half-loaded


def test_file_that_disagrees_with_its_index_entry_is_corrupt(tmp_path):
    live = _live(tmp_path, "live", 2)
    live.close()
    write_trajectory_file(
        os.path.join(live.storage_dir, "trajectory_1_m_1.pt"),
        make_traj(1, T=2, E=1).to_payload(),
        "pt",
    )
    with pytest.raises(TrajectoryFileError, match=r"trajectory_1_m_1.pt: size .* differs"):
        _reader().load_checkpoint(live.storage_dir)
    _drop_checksums(live.storage_dir)  # as RLinf writes it: the contents are still checked
    with pytest.raises(TrajectoryFileError, match=r"index entry of trajectory 1 says shape"):
        _reader().load_checkpoint(live.storage_dir)


def _drop_checksums(directory):
    path = os.path.join(directory, "trajectory_index.json")
    index = json.load(open(path))
    del index["jaxbuf_files"]
    json.dump(index, open(path, "w"))


def test_bad_metadata_and_index_name_the_file(tmp_path):
    live = _live(tmp_path, "live", 2)
    live.close()
    d = live.storage_dir
    meta, index = os.path.join(d, "metadata.json"), os.path.join(d, "trajectory_index.json")
    good_index = open(index).read()
    with open(index, "w") as fh:
        fh.write(good_index[:-9])
    with pytest.raises(CheckpointError, match="trajectory_index.json is not valid JSON"):
        _reader().load_checkpoint(d)
    data = json.loads(good_index)
    data["trajectory_index"]["1"]["num_samples"] = 5
    with open(index, "w") as fh:
        json.dump(data, fh)
    with pytest.raises(CheckpointError, match=r"trajectory 1: num_samples=5 but shape"):
        _reader().load_checkpoint(d)
    data["trajectory_id_list"].append(7)
    with open(index, "w") as fh:
        json.dump(data, fh)
    with pytest.raises(CheckpointError, match=r"names ids without index entries: \[7\]"):
        _reader().load_checkpoint(d)
    os.unlink(meta)
    with pytest.raises(FileNotFoundError, match="buffer metadata not found: .*metadata.json"):
        _reader().load_checkpoint(d)


# --------------------------------------------------------------- RLinf on-disk fixtures


def _rlinf_index(entries):
    return {
        "trajectory_index": {str(e["trajectory_id"]): e for e in entries},
        "trajectory_id_list": [e["trajectory_id"] for e in entries],
    }


def _entry(tid, traj, mwid):
    shape = list(traj.prev_logprobs.shape)
    return {
        "num_samples": shape[0] * shape[1],
        "trajectory_id": tid,
        "max_episode_length": traj.max_episode_length,
        "shape": shape,
        "model_weights_id": mwid,
    }


def test_reads_generation_a_pointer_checkpoint(tmp_path):
    """Gen A (storage_dir API): the checkpoint holds only metadata + index; files stay in
    storage_dir, named with the producer's ``{uuid}_{update_count}`` or empty id; T+E rows."""
    storage, ckpt = tmp_path / "rank_0", tmp_path / "ckpt" / "replay_buffer" / "rank_0"
    storage.mkdir()
    ckpt.mkdir(parents=True)
    mwids = ["", "6f1c2b9e-0d7e-5b8e-9a52-3c1b2f6d4e11_0", "6f1c2b9e-0d7e-5b8e-9a52-3c1b2f6d4e11_1"]
    entries = []
    for tid, mwid in enumerate(mwids):
        traj = make_traj(tid, mwid=mwid, T=6, E=3)
        write_trajectory_file(str(storage / f"trajectory_{tid}_{mwid}.pt"), traj.to_payload(), "pt")
        entries.append(_entry(tid, traj, mwid))
    (ckpt / "metadata.json").write_text(
        json.dumps(
            {
                "storage_dir": str(storage),
                "storage_format": "pt",
                "size": 3,
                "total_samples": 36,
                "trajectory_counter": 3,
                "seed": 42,
            }
        )
    )
    (ckpt / "trajectory_index.json").write_text(json.dumps(_rlinf_index(entries)))
    reader = _reader()
    report = reader.load_checkpoint(str(ckpt))
    assert report.loaded == [0, 1, 2] and reader.seed == 42
    assert_rows_consistent(reader.sample(200), 200)
    assert _tags(reader) == [0, 1, 2]
    assert read_listing(str(ckpt)).paths[0] == str(storage / "trajectory_0_.pt")


def test_reads_generation_b_cache_mode_checkpoint_with_legacy_index_name(tmp_path):
    """Gen B: no storage_dir, ``trajectory_format``; cache-mode files already have T-row
    dones; the merge tool's misspelt ``trajector_index.json`` as the only index; an entry
    without a model_weights_id (it does not name its file) is found by the id glob."""
    d = tmp_path / "merged"
    d.mkdir()
    entries = []
    for tid in range(3):
        traj = make_traj(tid)
        flat_dones = traj.flatten()["dones"].reshape(4, 2, 3)
        traj.dones, traj.terminations = flat_dones, flat_dones.copy()
        name = f"trajectory_{tid}_{'bare-uuid' if tid != 1 else 'renamed'}.pt"
        write_trajectory_file(str(d / name), traj.to_payload(), "pt")
        entries.append(_entry(tid, traj, "bare-uuid"))
        if tid == 1:
            del entries[-1]["model_weights_id"]
    (d / "metadata.json").write_text(
        json.dumps(
            {
                "trajectory_format": "pt",
                "size": 3,
                "total_samples": 24,
                "trajectory_counter": 3,
                "seed": 1234,
            }
        )
    )
    (d / "trajector_index.json").write_text(json.dumps(_rlinf_index(entries)))
    reader = _reader()
    assert reader.load_checkpoint(str(d)).loaded == [0, 1, 2]
    assert_rows_consistent(reader.sample(200), 200)


# ------------------------------------------------------------------------ merge and split


def _ranks(tmp_path, sizes, fmt="pt"):
    src = tmp_path / "src"
    for rank, n in sizes.items():
        _live(src, f"rank_{rank}", n, fmt=fmt, tag0=100 * rank).close()
    return str(src)


def _merged_tags(path):
    index = json.load(open(os.path.join(path, "trajectory_index.json")))
    reader = _reader()
    reader.load_checkpoint(path)
    return index["trajectory_id_list"], reader


def test_merge_interleaves_by_original_id_in_numeric_rank_order(tmp_path):
    src = _ranks(tmp_path, {0: 3, 1: 2})
    report = merge_buffers(src, str(tmp_path / "merged"))
    order = [(os.path.basename(s), old) for s, old, _ in report.mapping]
    assert order == [("rank_0", 0), ("rank_1", 0), ("rank_0", 1), ("rank_1", 1), ("rank_0", 2)]
    ids, reader = _merged_tags(report.save_path)
    assert ids == [0, 1, 2, 3, 4] and report.total_samples == 40
    for new, tag in enumerate([0, 100, 1, 101, 2]):  # file new id holds the right data
        one = _reader()
        one.load_checkpoint(report.save_path, is_distributed=True, local_rank=new, world_size=5)
        assert _tags(one, 20) == [tag]
    assert os.path.exists(os.path.join(src, "rank_0", "trajectory_0_m_0.pt"))  # copied


def test_merge_orders_rank_10_after_rank_2(tmp_path):
    src = _ranks(tmp_path, {2: 1, 10: 1})
    report = merge_buffers(src, str(tmp_path / "merged"))
    assert [os.path.basename(s) for s, _, _ in report.mapping] == ["rank_2", "rank_10"]


def test_merge_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rank_\\* buffer directories"):
        merge_buffers(str(tmp_path), str(tmp_path / "out"))
    src = _ranks(tmp_path, {0: 1})
    _live(tmp_path / "src", "rank_1", 1, fmt="npz").close()
    with pytest.raises(ValueError, match="cannot merge formats 'pt'"):
        merge_buffers(src, str(tmp_path / "out"))
    os.rename(os.path.join(src, "rank_1"), os.path.join(src, "rank_x"))
    with pytest.raises(ValueError, match="rank_x: rank directories must be named"):
        merge_buffers(src, str(tmp_path / "out"))
    os.rename(os.path.join(src, "rank_x"), str(tmp_path / "elsewhere"))
    merge_buffers(src, str(tmp_path / "out"))
    with pytest.raises(FileExistsError, match="already holds a buffer"):
        merge_buffers(src, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="must not contain or lie inside"):
        merge_buffers(src, os.path.join(src, "rank_0", "inner"))


def test_merge_move_empties_the_sources(tmp_path):
    src = _ranks(tmp_path, {0: 2, 1: 1})
    report = merge_buffers(src, str(tmp_path / "merged"), mode="move")
    assert report.count == 3
    for rank in ("rank_0", "rank_1"):
        assert os.listdir(os.path.join(src, rank)) == []
    _, reader = _merged_tags(report.save_path)
    assert _tags(reader) == [0, 1, 100]


def test_split_takes_the_first_n_and_renumbers(tmp_path):
    live = _live(tmp_path, "live", 5)
    live.close()
    index = json.load(open(os.path.join(live.storage_dir, "trajectory_index.json")))
    index["trajectory_id_list"] = [3, 0, 4, 1, 2]  # list order, not id order, decides
    write_listing(
        live.storage_dir,
        "pt",
        index["trajectory_id_list"],
        {int(k): v for k, v in index["trajectory_index"].items()},
        5,
        1234,
    )
    report = split_buffer(live.storage_dir, str(tmp_path / "split"), 3)
    assert [(old, new) for _, old, new in report.mapping] == [(3, 0), (0, 1), (4, 2)]
    assert listed_files(report.save_path) == [
        "trajectory_0_m_3.pt",
        "trajectory_1_m_0.pt",
        "trajectory_2_m_4.pt",
    ]
    ids, reader = _merged_tags(report.save_path)
    assert ids == [0, 1, 2] and _tags(reader) == [0, 3, 4]
    with pytest.raises(ValueError, match="split_count=6 but .* lists only 5"):
        split_buffer(live.storage_dir, str(tmp_path / "split2"), 6)


def test_split_move_leaves_a_valid_remainder(tmp_path):
    live = _live(tmp_path, "live", 4)
    live.close()
    split_buffer(live.storage_dir, str(tmp_path / "head"), 1, mode="move")
    rest = _reader()
    assert rest.load_checkpoint(live.storage_dir).loaded == [1, 2, 3]
    assert listed_files(live.storage_dir) == [f"trajectory_{i}_m_{i}.pt" for i in (1, 2, 3)]
