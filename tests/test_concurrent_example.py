"""examples/async_dqn_cartpole.py runs end to end with a tiny budget (``--smoke``, ~15 s), and
examples/plot_runs.py draws several runs of an example in one figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnax")

ROOT = Path(__file__).resolve().parents[1]


def test_async_dqn_smoke(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = tmp_path / "curve.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "async_dqn_cartpole.py"),
            "--smoke",
            "--steps",
            "1280",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["env_steps"] == 1280
    cfg = summary["config"]
    # The limiter held the learner to the ratio: (1280 - 64) * 2 sampled rows, within the band.
    sampled = summary["learner_updates"] * cfg["batch_size"]
    target = (1280 - cfg["min_size_to_sample"]) * cfg["samples_per_insert"]
    assert abs(sampled - target) <= max((8 * 2 + 16) / 2, 7 * 2, 16)
    assert out.read_bytes().startswith(b"\x89PNG")
    assert cfg["deterministic"]  # the default: fixed insert turns
    assert "compiling the learner update" in proc.stdout  # says what it does while compiling


def test_plot_runs_draws_several_runs_and_names_a_bad_file(tmp_path):
    """examples/plot_runs.py puts the curves of several runs (their .json files) in one PNG."""
    curve = {
        "summary": {"final_eval_return": 500.0},
        "env_steps": [100, 200, 300],
        "train_return": [10.0, None, 30.0],
        "eval_steps": [150, 300],
        "eval_return": [20.0, 500.0],
    }
    runs = []
    for name in ("a", "b"):
        runs.append(tmp_path / f"{name}.json")
        runs[-1].write_text(json.dumps(curve))
    script = [sys.executable, str(ROOT / "examples" / "plot_runs.py")]
    out = tmp_path / "both.png"
    proc = subprocess.run(
        [*script, "--out", str(out), *map(str, runs), "--label", "seed 0", "--label", "seed 1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = subprocess.run(
        [*script, "--out", str(tmp_path / "x.png"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "bad.json" in proc.stderr
    proc = subprocess.run(
        [*script, "--out", str(tmp_path / "x.png"), *map(str, runs), "--label", "one"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--label given 1 times for 2 runs" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_running_mean_averages_the_last_window_values():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from plot_runs import running_mean
    finally:
        sys.path.remove(str(ROOT / "examples"))
    x = np.array([1.0, 2, 3, 4, 5])
    np.testing.assert_allclose(running_mean(x, 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(running_mean(np.array([4.0, 2]), 10), [4, 3])
