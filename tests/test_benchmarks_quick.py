"""The benchmark runner: the GPU profile's quick configuration runs on the CPU and writes its
JSON and Markdown results; the listing and the report writers behave as documented."""

from __future__ import annotations

import json

import pytest

from benchmarks import report, run
from benchmarks.config import PROFILES, smallest
from benchmarks.harness import Result, unavailable
from benchmarks.workloads import WORKLOADS, default


def test_gpu_profile_quick_add_writes_json_and_markdown(tmp_path, capsys):
    pytest.importorskip("flashbax")
    argv = ["--profile", "gpu", "--quick", "--smallest", "--workload", "add"]
    assert run.main([*argv, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["meta"]["profile"] == "gpu" and doc["meta"]["quick"] is True
    assert doc["meta"]["workloads"] == ["add"]
    cfg = smallest(PROFILES[("gpu", True)])
    assert cfg.capacities == (4096,) and cfg.batch_sizes == (256, 4096)
    got = {(r["workload"], tuple(sorted(r["params"].items())), r["lib"]) for r in doc["results"]}
    expected = {
        (w, (("capacity", 4096),), lib)
        for w in ("add/scan", "add/call")
        for lib in ("jaxbuf", "jaxbuf[routed]", "flashbax")
    }
    assert expected <= got
    timed = [r for r in doc["results"] if r["lib"] in ("jaxbuf", "flashbax")]
    assert all(r["status"] == "ok" and r["value"] > 0 for r in timed)
    md = (tmp_path / "latest.md").read_text()
    assert md.startswith("Profile gpu --quick, jax ")
    assert "| add/call | capacity=4096 | flashbax |" in md
    assert "| target | measured | verdict |" in md
    assert "speed add/scan capacity=4096 vs flashbax >= 10.0x" in md  # the GPU target
    assert doc["meta"]["config"]["reps"] == 1
    assert "== targets" in capsys.readouterr().out


def test_sharded_prioritized_quick_times_flashbax_per_device(tmp_path, capsys):
    pytest.importorskip("flashbax")
    argv = ["--quick", "--smallest", "--workload", "sharded_prioritized", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    by_lib = {r["lib"]: r for r in doc["results"]}
    libs = ("jaxbuf", "jaxbuf[sharded]", "jaxbuf[sharded-global]", "flashbax[per-device]")
    assert set(by_lib) == set(libs)
    for lib in libs:
        r = by_lib[lib]
        assert r["workload"] == "sharded_prioritized/sample_update"
        assert r["status"] == "ok" and r["value"] > 0, (lib, r["status"])
        assert r["params"] == {"devices": 1, "capacity": 16384}
    md = (tmp_path / "latest.md").read_text()
    row = next(line for line in md.splitlines() if "| flashbax[per-device] |" in line)
    assert row.split(" | ")[6].endswith("x")  # its peer/jaxbuf ratio is shown
    target = (
        "speed jaxbuf[sharded] sharded_prioritized/sample_update devices=1 capacity=16384 "
        "vs flashbax[per-device] >= 2.0x"
    )
    assert target in md and target in capsys.readouterr().out


def test_list_names_every_workload_and_its_profiles(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in WORKLOADS:
        assert name in out
    assert {"add", "sample", "prioritized", "stacked", "sequence", "gae", "examples"} <= set(
        default("gpu")
    )
    assert "examples" not in default("cpu") and "add" in default("cpu")


def test_unknown_workload_is_rejected(capsys):
    with pytest.raises(SystemExit):
        run.main(["--workload", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_markdown_shows_ratios_skipped_peers_and_throughput():
    params = {"capacity": 8}
    rows = [
        Result("add/call", params, "jaxbuf", "us per add", 2e-6, cpu=2e-6),
        Result("add/call", params, "flashbax", "us per add", 5e-6, cpu=4e-6),
        unavailable("add/call", params, "tianshou", "us per add", "not installed (tianshou)"),
        Result("examples/ppo", {"iterations": 2}, "jaxbuf", "us per env step", 1e-5),
    ]
    meta = {
        "profile": "cpu",
        "quick": False,
        "jax": "0",
        "backend": "cpu",
        "device_kind": "cpu",
        "cpus": 2,
        "commit": "abc",
        "stamp": "now",
        "wall_s": 1.0,
    }
    md = report.markdown(meta, rows, report.targets(rows))
    assert "| add/call | capacity=8 | flashbax | 5.00 us | 4.00 us |  | 2.50x | 2.00x |  |" in md
    assert "| tianshou | n/a |" in md and "skipped: not installed (tianshou)" in md
    assert "100,000 steps/s" in md
    assert "| speed add/call capacity=8 vs flashbax >= 1.0x | 2.50x (cpu 2.00x) | met |" in md
    assert "vs tianshou" not in md  # no target row against a skipped peer


def test_sequences_workload_times_both_libraries_and_reports_capacity_ratios(tmp_path):
    pytest.importorskip("flashbax")
    cfg = PROFILES[("cpu", True)]
    assert cfg.seq_capacities == (2**14, 2**16)
    argv = ["--quick", "--smallest", "--workload", "sequences", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    got = {(r["workload"], r["lib"], r["params"]["capacity"]) for r in doc["results"]}
    assert got == {
        (w, lib, 2**14)
        for w in ("sequences/call", "sequences/scan")
        for lib in ("jaxbuf", "jaxbuf[full_only]", "flashbax")
    }
    assert all(r["status"] == "ok" and r["value"] > 0 for r in doc["results"])
    assert all(r["params"]["batch"] == 64 and r["params"]["length"] == 80 for r in doc["results"])


def test_capacity_ratios_cover_every_library():
    def row(lib, cap, value):
        return Result("sequences/call", {"capacity": cap, "batch": 64}, lib, "us", value, cpu=value)

    rows_ = [row("jaxbuf", 4, 1.0), row("jaxbuf", 16, 1.2), row("flashbax", 4, 1.0)]
    rows_ += [row("flashbax", 16, 3.0), row("jaxbuf[full_only]", 4, 1.0)]
    got = report.capacity_ratios(rows_, ("sequences/call",))
    assert got == [
        ("jaxbuf sequences/call batch=64: cost at 16 / cost at 4 <= 1.3", "1.20 (cpu 1.20)", "met"),
        ("flashbax sequences/call batch=64: cost at 16 / cost at 4", "3.00 (cpu 3.00)", "info"),
    ]
    assert report.capacity_ratios(rows_[:1], ("sequences/call",)) == []
