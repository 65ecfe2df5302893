"""Durability of file mode: atomic checkpoint overwrite, checksums, no stale fallback,
resumable merge/split, stale temporary files, overwrite guard, errors that name the file."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from trajectory_helpers import assert_rows_consistent, listed_files, make_traj
from trajectory_helpers import reader as _reader
from trajectory_helpers import tags as _tags

import jaxbuf.trajectory.atomic as atomic_module
import jaxbuf.trajectory.checkpoint as checkpoint_module
import jaxbuf.trajectory.transfer as transfer_module
from jaxbuf.errors import CheckpointError, TrajectoryFileError
from jaxbuf.trajectory import (
    TrajectoryReplayBuffer,
    merge_buffers,
    read_listing,
    split_buffer,
    write_trajectory_file,
)


def _live(path, tags, mwid=""):
    buffer = TrajectoryReplayBuffer(storage_dir=str(path), sample_window_size=0)
    buffer.add_trajectories([make_traj(t, mwid=mwid) for t in tags])
    buffer.flush()
    return buffer


def _snapshot(directory):
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))}


# ------------------------------------------------------------- checkpoint overwrite


@pytest.mark.parametrize("fail_at", ["second-file", "listing", "switch"])
def test_interrupted_save_over_a_checkpoint_leaves_the_old_one_bit_for_bit(
    tmp_path, monkeypatch, fail_at
):
    """Same names (ids restart after clear(), model_weights_id "") but other contents."""
    live = _live(tmp_path / "live", [0, 1, 2])
    ckpt = str(tmp_path / "ckpt")
    live.save_checkpoint(ckpt)
    before = _snapshot(ckpt)
    live.clear()
    live.add_trajectories([make_traj(t) for t in (7, 8, 9)])
    live.flush()
    calls = {"n": 0}
    real_link, real_listing = checkpoint_module.atomic_link_or_copy, checkpoint_module.write_listing

    def link(src, dst):
        calls["n"] += 1
        if fail_at == "second-file" and calls["n"] == 2:
            raise OSError(errno.EIO, "killed here")
        return real_link(src, dst)

    def listing(*args, **kwargs):
        if fail_at == "listing":
            raise OSError(errno.EIO, "killed here")
        return real_listing(*args, **kwargs)

    def switch(aside, target):
        raise OSError(errno.EIO, "killed here")

    monkeypatch.setattr(checkpoint_module, "atomic_link_or_copy", link)
    monkeypatch.setattr(checkpoint_module, "write_listing", listing)
    if fail_at == "switch":
        monkeypatch.setattr(checkpoint_module, "_switch", switch)
    with pytest.raises(OSError, match="killed here"):
        live.save_checkpoint(ckpt)
    assert _snapshot(ckpt) == before
    reader = _reader()
    assert reader.load_checkpoint(ckpt).loaded == [0, 1, 2] and _tags(reader) == [0, 1, 2]
    monkeypatch.undo()
    live.save_checkpoint(ckpt)  # the rerun replaces it with the new one
    reader = _reader()
    assert reader.load_checkpoint(ckpt).loaded == [0, 1, 2] and _tags(reader) == [7, 8, 9]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".ckpt")]
    live.close()


def test_switch_without_renameat2_recovers_after_a_crash_between_renames(tmp_path, monkeypatch):
    live = _live(tmp_path / "live", [0, 1])
    ckpt = str(tmp_path / "ckpt")
    live.save_checkpoint(ckpt)
    live.clear()
    live.add_trajectories([make_traj(5), make_traj(6)])
    live.flush()
    monkeypatch.setattr(checkpoint_module, "exchange", lambda a, b: False)
    real_rename = os.rename
    seen = []

    def rename(src, dst):
        seen.append(dst)
        if len(seen) == 2:  # the old one is aside, the new one not yet in place
            raise OSError(errno.EIO, "killed here")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="killed here"):
        live.save_checkpoint(ckpt)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not os.path.exists(ckpt)
    reader = _reader()  # loading finishes the switch: the old checkpoint comes back
    assert reader.load_checkpoint(ckpt).loaded == [0, 1] and _tags(reader) == [0, 1]
    live.save_checkpoint(ckpt)  # and without renameat2 a full save still switches
    reader = _reader()
    assert reader.load_checkpoint(ckpt).loaded == [0, 1] and _tags(reader) == [5, 6]
    live.close()


def test_save_over_another_buffers_checkpoint_needs_overwrite(tmp_path):
    first = _live(tmp_path / "a", [0, 1])
    ckpt = str(tmp_path / "ckpt")
    first.save_checkpoint(ckpt)
    first.save_checkpoint(ckpt)  # its own checkpoint: fine
    first.close()
    second = _live(tmp_path / "b", [5])
    with pytest.raises(CheckpointError, match="already holds a checkpoint of another buffer"):
        second.save_checkpoint(ckpt)
    assert _tags(_loaded(ckpt)) == [0, 1]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="files that are not a checkpoint"):
        second.save_checkpoint(str(other))
    assert (other / "keep.txt").read_text() == "mine"
    second.save_checkpoint(ckpt, overwrite=True)
    assert _tags(_loaded(ckpt)) == [5]
    second.close()
    # a buffer resumed from its storage_dir, or loaded from the checkpoint, may save over it
    resumed = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "b"), sample_window_size=0)
    resumed.save_checkpoint(ckpt)
    resumed.close()
    third = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "c"), sample_window_size=0)
    third.load_checkpoint(ckpt)
    third.add_trajectories([make_traj(6)])
    third.save_checkpoint(ckpt)
    assert _tags(_loaded(ckpt)) == [5, 6]
    with pytest.raises(ValueError, match="contains this buffer's storage_dir"):
        third.save_checkpoint(str(tmp_path))
    third.close()


def _loaded(path):
    reader = _reader()
    reader.load_checkpoint(path)
    return reader


# --------------------------------------------------------------------- checksums


def test_a_file_replaced_under_the_same_name_is_caught(tmp_path):
    live = _live(tmp_path / "live", [0, 1, 2])
    live.close()
    name = os.path.join(live.storage_dir, "trajectory_1_.pt")
    write_trajectory_file(name, make_traj(9).to_payload(), "pt")  # same shape, other values
    with pytest.raises(
        TrajectoryFileError, match=r"trajectory_1_.pt: (size|sha256) .* differs"
    ) as info:
        _reader().load_checkpoint(live.storage_dir)
    assert info.value.path == name
    reader = _reader()
    report = reader.load_checkpoint(live.storage_dir, skip_corrupt=True)
    assert report.loaded == [0, 2] and [s.trajectory_id for s in report.skipped] == [1]
    assert _tags(reader) == [0, 2]


@pytest.mark.parametrize("fmt", ["pt", "npz"])
def test_every_byte_flip_is_detected(tmp_path, fmt):
    live = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "live"), storage_format=fmt)
    live.add_trajectories([make_traj(3)])
    live.close()
    path = read_listing(live.storage_dir).paths[0]
    good = open(path, "rb").read()
    for pos in range(0, len(good), max(1, len(good) // 40)):
        flipped = bytearray(good)
        flipped[pos] ^= 0x01
        open(path, "wb").write(bytes(flipped))
        with pytest.raises(TrajectoryFileError, match=os.path.basename(path)):
            _reader().load_checkpoint(live.storage_dir)
    open(path, "wb").write(good)
    assert _reader().load_checkpoint(live.storage_dir).loaded == [0]


def test_listing_records_size_and_sha256_and_rlinf_listings_without_them_load(tmp_path):
    live = _live(tmp_path / "live", [0, 1])
    live.close()
    index_path = os.path.join(live.storage_dir, "trajectory_index.json")
    index = json.load(open(index_path))
    record = index["jaxbuf_files"]["1"]
    assert record["name"] == "trajectory_1_.pt" and len(record["sha256"]) == 64
    assert record["size"] == os.path.getsize(os.path.join(live.storage_dir, record["name"]))
    del index["jaxbuf_files"]
    json.dump(index, open(index_path, "w"))
    assert _reader().load_checkpoint(live.storage_dir).loaded == [0, 1]
    index["jaxbuf_files"] = {"0": dict(record, name="trajectory_0_.pt", sha256="0" * 64)}
    json.dump(index, open(index_path, "w"))
    with pytest.raises(TrajectoryFileError, match="trajectory_0_.pt"):
        _reader().load_checkpoint(live.storage_dir)


# ------------------------------------------------------------- no stale fallback


def test_a_missing_listed_file_is_not_replaced_by_a_stale_one(tmp_path):
    live = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "live"), sample_window_size=0)
    live.add_trajectories([make_traj(1, mwid="old")])
    live.clear()  # trajectory_0_old.pt stays on disk, listed nowhere
    live.add_trajectories([make_traj(2, mwid="new")])
    live.close()
    assert listed_files(live.storage_dir) == ["trajectory_0_new.pt", "trajectory_0_old.pt"]
    os.unlink(os.path.join(live.storage_dir, "trajectory_0_new.pt"))
    with pytest.raises(FileNotFoundError, match="trajectory_0_new.pt"):
        _reader().load_checkpoint(live.storage_dir)
    _strip(live.storage_dir)  # without checksums the listing still names the file
    with pytest.raises(FileNotFoundError, match="trajectory_0_new.pt"):
        _reader().load_checkpoint(live.storage_dir)


def _strip(directory):
    path = os.path.join(directory, "trajectory_index.json")
    index = json.load(open(path))
    index.pop("jaxbuf_files", None)
    json.dump(index, open(path, "w"))


# --------------------------------------------------------- resumable merge and split


def _ranks(root, sizes):
    for rank, n in sizes.items():
        _live(root / f"rank_{rank}", [100 * rank + i for i in range(n)], mwid="u").close()
    return str(root)


def _interrupt_after(monkeypatch, name, count):
    real = getattr(transfer_module, name)
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > count:
            raise OSError(errno.EIO, "killed here")
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer_module, name, flaky)


@pytest.mark.parametrize(
    "step, count",
    [("atomic_move", 0), ("atomic_move", 1), ("atomic_move", 3), ("write_listing", 0)],
)
def test_interrupted_merge_move_is_finished_by_rerunning_it(tmp_path, monkeypatch, step, count):
    src = _ranks(tmp_path / "src", {0: 2, 1: 2})
    dst = str(tmp_path / "merged")
    _interrupt_after(monkeypatch, step, count)
    with pytest.raises(OSError, match="killed here"):
        merge_buffers(src, dst, mode="move")
    monkeypatch.undo()
    for path in (dst, os.path.join(src, "rank_0")):
        with pytest.raises(CheckpointError, match=r"interrupted merge .*rerun `jaxbuf merge"):
            _reader().load_checkpoint(path)
    with pytest.raises(CheckpointError, match="interrupted merge"):
        merge_buffers(src, dst, mode="copy")  # another command is refused
    report = merge_buffers(src, dst, mode="move")
    assert report.count == 4
    assert _tags(_loaded(dst)) == [0, 1, 100, 101]
    for rank in ("rank_0", "rank_1"):
        assert os.listdir(os.path.join(src, rank)) == []


@pytest.mark.parametrize("stage", ["files", "source-listing"])
def test_interrupted_split_move_is_finished_by_rerunning_it(tmp_path, monkeypatch, stage):
    live = _live(tmp_path / "live", [0, 1, 2, 3], mwid="m")
    live.close()
    head = str(tmp_path / "head")
    if stage == "files":
        _interrupt_after(monkeypatch, "atomic_move", 1)
    else:
        real = transfer_module.write_listing

        def listing(directory, *args, **kwargs):
            if directory == live.storage_dir:
                raise OSError(errno.EIO, "killed here")
            return real(directory, *args, **kwargs)

        monkeypatch.setattr(transfer_module, "write_listing", listing)
    with pytest.raises(OSError, match="killed here"):
        split_buffer(live.storage_dir, head, 2, mode="move")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="interrupted split"):
        _reader().load_checkpoint(live.storage_dir)
    split_buffer(live.storage_dir, head, 2, mode="move")
    assert _tags(_loaded(head)) == [0, 1]
    rest = _loaded(live.storage_dir)
    assert rest.load_checkpoint(live.storage_dir).loaded == [2, 3] and _tags(rest) == [2, 3]


def test_interrupted_copy_marks_the_destination_incomplete(tmp_path, monkeypatch):
    src = _ranks(tmp_path / "src", {0: 2, 1: 1})
    dst = str(tmp_path / "merged")
    _interrupt_after(monkeypatch, "atomic_copy", 2)
    with pytest.raises(OSError, match="killed here"):
        merge_buffers(src, dst)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(dst, "metadata.json"))
    with pytest.raises(CheckpointError, match=r"interrupted merge.*rerun `jaxbuf merge"):
        _reader().load_checkpoint(dst)
    assert merge_buffers(src, dst).count == 3
    assert _tags(_loaded(dst)) == [0, 1, 100]
    assert _tags(_loaded(os.path.join(src, "rank_0"))) == [0, 1]  # copy leaves the sources


def test_disk_full_during_a_copy_names_the_file(tmp_path, monkeypatch):
    src = _ranks(tmp_path / "src", {0: 1})

    def full(inp, out, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(OSError, match=r"No space left on device \(writing .*trajectory_0_u.pt"):
        merge_buffers(src, str(tmp_path / "merged"))


# ------------------------------------------------------------------- small ones


def test_stale_temporary_files_are_removed_when_a_buffer_opens(tmp_path):
    live = _live(tmp_path / "live", [0])
    live.close()
    dead = os.path.join(live.storage_dir, ".trajectory_1_.pt.tmp-999999999-abcdef012345")
    mine = os.path.join(live.storage_dir, f".trajectory_2_.pt.tmp-{os.getpid()}-abcdef012345")
    for path in (dead, mine):
        open(path, "wb").write(b"half a file")
    TrajectoryReplayBuffer(storage_dir=live.storage_dir).close()
    assert not os.path.exists(dead) and os.path.exists(mine)  # a live writer's file stays


def test_damaged_json_names_the_file(tmp_path):
    live = _live(tmp_path / "live", [0])
    live.close()
    index = os.path.join(live.storage_dir, "trajectory_index.json")
    open(index, "w").write("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"trajectory_index.json is not valid JSON: nested"):
        _reader().load_checkpoint(live.storage_dir)
    open(index, "wb").write(b'{"trajectory_index": "\xff\xfe"}')
    with pytest.raises(CheckpointError, match="trajectory_index.json is not valid JSON"):
        _reader().load_checkpoint(live.storage_dir)


def test_hostile_pickle_bytes_name_the_file(tmp_path):
    import io
    import zipfile

    live = _live(tmp_path / "live", [0])
    live.close()
    path = os.path.join(live.storage_dir, "trajectory_0_.pt")
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("trajectory_0_/data.pkl", b"\x80\x04\x8d" + b"\xff" * 8)
        archive.writestr("trajectory_0_/version", b"3\n")
    open(path, "wb").write(data.getvalue())
    _strip(live.storage_dir)
    with pytest.raises(TrajectoryFileError, match="trajectory_0_.pt") as info:
        _reader().load_checkpoint(live.storage_dir)
    assert info.value.path == path


def test_temp_paths_keep_dot_dot_components(tmp_path):
    tmp = atomic_module.temp_path_for(os.path.join("a", "..", "b", "file.pt"))
    assert tmp.startswith(os.path.join("a", "..", "b", ".file.pt.tmp-"))


def test_clear_docstring_says_what_it_removes():
    doc = TrajectoryReplayBuffer.clear.__doc__
    assert "not** deleted" in doc and "listing" in doc and "failed write" in doc


def test_crashed_write_resumes_and_rows_stay_consistent(tmp_path):
    live = _live(tmp_path / "live", [0, 1])
    live.close()
    resumed = TrajectoryReplayBuffer(storage_dir=live.storage_dir, sample_window_size=0)
    resumed.add_trajectories([make_traj(2)])
    resumed.close()
    reader = _reader()
    assert reader.load_checkpoint(live.storage_dir).loaded == [0, 1, 2]
    assert_rows_consistent(reader.sample(100), 100)
