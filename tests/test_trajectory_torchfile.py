"""The torch-free ``.pt`` codec: round trips, torch cross-checks, corrupt and hostile files."""

from __future__ import annotations

import io
import pickle
import zipfile

import hypothesis.extra.numpy as hnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbuf.trajectory.torchfile import TorchFileError, dump_pt, load_pt, supported_dtypes

DTYPES = [np.dtype(d) for d in supported_dtypes()]


def _round_trip(payload):
    buf = io.BytesIO()
    dump_pt(payload, buf, "archive")
    buf.seek(0)
    return load_pt(buf), buf


def _assert_same(a, b):
    assert type(a) is type(b) or isinstance(a, dict) and isinstance(b, dict)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    else:
        assert a == b


@st.composite
def _arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    raw = draw(hnp.arrays(np.uint8, (int(np.prod(shape)) * dtype.itemsize,)))
    return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)


_leaves = st.one_of(
    _arrays(), st.integers(-(2**80), 2**80), st.text(max_size=8), st.booleans(), st.none()
)
_payloads = st.dictionaries(
    st.text(max_size=6),
    st.one_of(_leaves, st.dictionaries(st.text(max_size=4), _arrays(), max_size=3)),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(_payloads)
def test_round_trip_is_bit_exact(payload):
    loaded, _ = _round_trip(payload)
    _assert_same(payload, loaded)


def test_storages_are_64_byte_aligned_and_records_complete():
    _, buf = _round_trip({"a": np.ones((3, 5), np.float32), "b": np.zeros(7, np.uint8)})
    with zipfile.ZipFile(buf) as zf:
        names = zf.namelist()
        assert names[0] == "archive/data.pkl"
        assert {
            "archive/byteorder",
            "archive/version",
            "archive/.format_version",
            "archive/data/0",
            "archive/data/1",
        } <= set(names)
        for info in zf.infolist():
            if "/data/" in info.filename:
                data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert data_start % 64 == 0


def test_unsupported_values_are_refused_with_their_location():
    with pytest.raises(TorchFileError, match=r"payload\['x'\]: dtype <U1 has no torch"):
        dump_pt({"x": np.array(["a"])}, io.BytesIO())
    with pytest.raises(TorchFileError, match=r"payload\['y'\]\['z'\]: cannot store"):
        dump_pt({"y": {"z": [1, 2]}}, io.BytesIO())


def test_corrupt_and_hostile_files_are_refused():
    _, buf = _round_trip({"a": np.arange(100, dtype=np.float32)})
    data = buf.getvalue()
    with pytest.raises(TorchFileError):
        load_pt(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(TorchFileError, match="not a torch zip file"):
        load_pt(io.BytesIO(b"definitely not a zip"))
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("x/data.pkl", pickle.dumps(print, protocol=2))
    with pytest.raises(TorchFileError, match=r"unsupported object __builtin__\.print"):
        load_pt(io.BytesIO(evil.getvalue()))


def test_torch_reads_our_files_with_weights_only():
    torch = pytest.importorskip("torch")
    payload = {
        "max_episode_length": 7,
        "model_weights_id": "uuid_3",
        "big": 2**70,
        "f32": np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32),
        "b": np.array([[True, False]]),
        "u16": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "bf16": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "empty": np.zeros((0, 3), np.int64),
        "obs": {"img": np.arange(24, dtype=np.uint8)},
        "none": {},
    }
    buf = io.BytesIO()
    dump_pt(payload, buf, "trajectory_0_uuid_3")
    buf.seek(0)
    out = torch.load(buf, weights_only=True)
    assert list(out) == list(payload)
    assert out["max_episode_length"] == 7 and out["big"] == 2**70 and out["none"] == {}
    assert out["bf16"].dtype == torch.bfloat16 and out["u16"].dtype == torch.uint16
    np.testing.assert_array_equal(out["bf16"].float().numpy(), np.arange(4))
    for key in ("f32", "b", "u16", "empty"):
        np.testing.assert_array_equal(out[key].numpy(), payload[key])
    np.testing.assert_array_equal(out["obs"]["img"].numpy(), payload["obs"]["img"])


def test_we_read_torch_save_including_views_and_shared_storage(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {
        "view": base[1:, ::2],  # offset + non-unit strides over a shared storage
        "transposed": base.t(),
        "whole": base,
        "bf16": torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16),
        "u32": torch.tensor([1, 2, 3]).to(torch.uint32),
        "nested": {"b": torch.tensor([True, False]), "c": torch.zeros(2, 0)},
        "s": "text",
        "i": -3,
    }
    path = tmp_path / "t.pt"
    torch.save(obj, path)
    out = load_pt(str(path))
    np.testing.assert_array_equal(out["view"], base[1:, ::2].numpy())
    np.testing.assert_array_equal(out["transposed"], base.t().numpy())
    np.testing.assert_array_equal(out["whole"], base.numpy())
    assert out["bf16"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["bf16"].astype(np.float32), [[1.5, -2.0]])
    assert out["u32"].dtype == np.uint32 and out["nested"]["c"].shape == (2, 0)
    assert out["s"] == "text" and out["i"] == -3
