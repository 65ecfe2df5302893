"""Trajectory file formats (pt, npz, pkl) and the atomic write helpers."""

from __future__ import annotations

import os
import pickle
import sys

import ml_dtypes
import numpy as np
import pytest
from trajectory_helpers import make_traj

from jaxbuf.trajectory import Trajectory, TrajectoryFileError
from jaxbuf.trajectory.atomic import (
    atomic_link_or_copy,
    atomic_move,
    atomic_write,
    atomic_write_json,
    is_temp_name,
)
from jaxbuf.trajectory.formats import (
    check_format,
    file_extension,
    format_from_metadata,
    read_trajectory_file,
    write_trajectory_file,
)

FORMATS = ["pt", "npz", "pkl"]


def _payload():
    traj = make_traj(5, mwid="a_b-c", prev_values=True)
    traj.versions = np.arange(8, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(4, 2, 1)
    traj.intervene_flags = np.ones((4, 2, 6), bool)
    return traj.to_payload()


def _assert_payload_equal(a, b):
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], dict):
            _assert_payload_equal(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    if fmt == "pkl":
        pytest.importorskip("torch")
    payload = _payload()
    path = str(tmp_path / f"trajectory_0_a_b-c{file_extension(fmt)}")
    write_trajectory_file(path, payload, fmt)
    loaded = read_trajectory_file(path, fmt)
    _assert_payload_equal(payload, loaded)
    assert [n for n in os.listdir(tmp_path) if is_temp_name(n)] == []
    again = Trajectory.from_payload(loaded)
    np.testing.assert_array_equal(again.flatten()["dones"], make_traj(5).flatten()["dones"])


def test_pkl_is_what_rlinf_writes_and_reads(tmp_path):
    torch = pytest.importorskip("torch")
    payload = _payload()
    path = str(tmp_path / "t.pkl")
    write_trajectory_file(path, payload, "pkl")
    with open(path, "rb") as fh:  # RLinf: pickle.load of a dict of torch tensors
        raw = pickle.load(fh)
    assert isinstance(raw["rewards"], torch.Tensor) and raw["model_weights_id"] == "a_b-c"
    np.testing.assert_array_equal(raw["rewards"].numpy(), payload["rewards"])
    assert raw["versions"].dtype == torch.bfloat16
    # and a pickle written by RLinf-style code (torch tensors, protocol 4) reads back
    with open(path, "wb") as fh:
        pickle.dump({"rewards": torch.ones(2, 2, 1), "curr_obs": {}}, fh, protocol=4)
    out = read_trajectory_file(path, "pkl")
    assert out["rewards"].dtype == np.float32 and out["curr_obs"] == {}


def test_pkl_reader_refuses_arbitrary_globals(tmp_path):
    pytest.importorskip("torch")
    path = str(tmp_path / "evil.pkl")
    with open(path, "wb") as fh:
        pickle.dump({"rewards": os.getcwd}, fh)
    with pytest.raises(TrajectoryFileError, match="refusing to load global posix.getcwd"):
        read_trajectory_file(path, "pkl")


@pytest.mark.parametrize("fmt", ["pt", "npz"])
def test_missing_and_truncated_files_name_the_file(tmp_path, fmt):
    path = str(tmp_path / f"trajectory_3_x{file_extension(fmt)}")
    with pytest.raises(FileNotFoundError, match="trajectory_3_x"):
        read_trajectory_file(path, fmt)
    write_trajectory_file(path, _payload(), fmt)
    data = open(path, "rb").read()
    for cut in (0, 40, len(data) // 2, len(data) - 10):
        with open(path, "wb") as fh:
            fh.write(data[:cut])
        with pytest.raises(TrajectoryFileError) as info:
            read_trajectory_file(path, fmt)
        assert info.value.path == path and path in str(info.value)


def test_format_rules_and_pkl_without_torch(monkeypatch):
    assert [file_extension(f) for f in ("pt", "npz", "pkl")] == [".pt", ".npz", ".pkl"]
    assert [format_from_metadata(v) for v in (None, "pt", "npz", "pkl", "pickle")] == [
        "pt",
        "pt",
        "npz",
        "pkl",
        "pkl",
    ]
    with pytest.raises(ValueError, match="storage_format must be one of"):
        check_format("h5")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"storage_format='pkl' needs PyTorch.*jaxbuf\[torch\]"):
        check_format("pkl")
    assert check_format("pt") == "pt" and check_format("npz") == "npz"


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(str(target), {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(str(target)) as fh:
        fh.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["f.json"]


def test_cross_filesystem_fallbacks_copy(tmp_path, monkeypatch):
    import errno

    src = tmp_path / "a"
    src.write_bytes(b"data")

    def exdev(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", exdev)
    assert atomic_link_or_copy(str(src), str(tmp_path / "b")) == "copy"
    assert (tmp_path / "b").read_bytes() == b"data"
    assert not os.path.samefile(src, tmp_path / "b")
    real_replace = os.replace

    def replace(src_path, dst_path):  # only the move's own rename crosses "filesystems"
        if src_path == str(tmp_path / "b"):
            exdev()
        real_replace(src_path, dst_path)

    monkeypatch.setattr(os, "replace", replace)
    atomic_move(str(tmp_path / "b"), str(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"data" and not (tmp_path / "b").exists()


def test_link_or_copy_and_move(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"data")
    assert atomic_link_or_copy(str(src), str(tmp_path / "b")) == "link"
    assert os.path.samefile(src, tmp_path / "b")
    assert atomic_link_or_copy(str(src), str(tmp_path / "b")) == "link"  # already linked
    atomic_move(str(tmp_path / "b"), str(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"data" and not (tmp_path / "b").exists()
    assert sorted(os.listdir(tmp_path)) == ["a", "c"]
