"""examples/async_dqn_cartpole.py runs end to end with a tiny budget (``--smoke``, ~15 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
