"""Untrusted listings: names that leave the directory, symlinks, and the torch floor."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
from trajectory_helpers import make_traj

import jaxbuf.trajectory.formats as formats_module
from jaxbuf.cli import main
from jaxbuf.errors import CheckpointError, TrajectoryFileError
from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer, split_buffer
from jaxbuf.trajectory.atomic import atomic_link_or_copy


def _reader(**kwargs):
    return TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0, **kwargs)


def _live(path, n=2):
    buffer = TrajectoryReplayBuffer(storage_dir=str(path), sample_window_size=0)
    buffer.add_trajectories([make_traj(i, mwid="m") for i in range(n)])
    buffer.close()
    return buffer.storage_dir


def _edit_index(directory, fn):
    path = os.path.join(directory, "trajectory_index.json")
    index = json.load(open(path))
    fn(index)
    json.dump(index, open(path, "w"))


# ------------------------------------------------------------------- path escape


@pytest.mark.parametrize("mwid", ["x/../../outside/evil", "..", "a\\b", "a\x00b", "../m"])
def test_a_crafted_model_weights_id_is_refused(tmp_path, mwid):
    victim = tmp_path / "outside"
    victim.mkdir()
    d = _live(tmp_path / "buf")

    def craft(index):
        index["trajectory_index"]["0"]["model_weights_id"] = mwid
        index.pop("jaxbuf_files")

    _edit_index(d, craft)
    with pytest.raises(CheckpointError, match="model_weights_id"):
        _reader().load_checkpoint(d)
    persisting = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "mine"))
    with pytest.raises(CheckpointError, match="model_weights_id"):
        persisting.load_checkpoint(d)
    persisting.close()
    assert os.listdir(victim) == []  # nothing created or linked outside
    assert main(["inspect", "--load-path", d, "--quiet"]) == 1


def test_a_crafted_file_record_name_is_refused(tmp_path):
    d = _live(tmp_path / "buf")

    def craft(index):
        index["jaxbuf_files"]["1"]["name"] = "../trajectory_1_m.pt"

    _edit_index(d, craft)
    with pytest.raises(CheckpointError, match=r"names '\.\./trajectory_1_m.pt'"):
        _reader().load_checkpoint(d)


def test_trajectories_cannot_be_given_a_dot_dot_id():
    with pytest.raises(ValueError, match=r"model_weights_id 'a\.\.b' contains '\.\.'"):
        Trajectory(model_weights_id="a..b")


# ---------------------------------------------------------------------- symlinks


def test_a_symlink_leaving_the_directory_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    d = _live(tmp_path / "buf", 3)
    target = secret / "key.pt"
    os.replace(os.path.join(d, "trajectory_1_m.pt"), target)
    os.symlink(target, os.path.join(d, "trajectory_1_m.pt"))
    with pytest.raises(TrajectoryFileError, match=r"trajectory_1_m.pt: is a symlink resolving"):
        _reader().load_checkpoint(d)
    reader = _reader()
    report = reader.load_checkpoint(d, skip_corrupt=True)
    assert report.loaded == [0, 2] and "symlink" in report.skipped[0].reason
    persisting = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "mine"))
    persisting.load_checkpoint(d, skip_corrupt=True)
    persisting.close()
    assert os.stat(target).st_nlink == 1  # the target was never hard-linked
    assert not os.path.exists(tmp_path / "mine" / "trajectory_1_m.pt")
    with pytest.raises(TrajectoryFileError, match="symlink"):
        split_buffer(d, str(tmp_path / "head"), 2)
    assert not os.path.exists(tmp_path / "head" / "trajectory_1_m.pt")


def test_a_symlink_inside_the_directory_is_read_but_never_linked_through(tmp_path):
    d = _live(tmp_path / "buf", 2)
    real = os.path.join(d, "trajectory_1_m.pt")
    moved = os.path.join(d, "moved.bin")
    os.replace(real, moved)
    os.symlink("moved.bin", real)
    persisting = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "mine"), sample_window_size=0)
    assert persisting.load_checkpoint(d).loaded == [0, 1]
    persisting.close()
    adopted = tmp_path / "mine" / "trajectory_1_m.pt"
    assert not os.path.islink(adopted) and os.path.samefile(adopted, moved)
    with pytest.raises(ValueError, match="refusing to hard-link through the symlink"):
        atomic_link_or_copy(real, str(tmp_path / "x.pt"))


# --------------------------------------------------------------------- torch floor


@pytest.mark.parametrize("version, ok", [("2.5.1", False), ("2.6.0+cu124", True), ("3.0", True)])
def test_pkl_reader_refuses_a_torch_without_the_weights_only_fix(monkeypatch, version, ok):
    fake = types.ModuleType("torch")
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "torch", fake)
    if ok:
        assert formats_module._torch_for_reading("x.pkl") is fake
    else:
        with pytest.raises(ImportError, match=r"needs torch >= 2.6, found 2.5.1.*CVE-2025-32434"):
            formats_module.read_trajectory_file("x.pkl", "pkl")


def test_torch_extra_requires_the_fixed_release():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = open(os.path.join(root, "pyproject.toml")).read().splitlines()
    assert 'torch = ["torch>=2.6"]' in lines
