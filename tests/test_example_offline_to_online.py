"""``examples/offline_to_online.py --smoke`` runs end to end: a scripted-controller dataset
saved with ``to_minari``, loaded with ``from_minari``, and two DQN runs (50/50 mixed replay
and online only) whose curves are written. Needs the ``examples`` and ``minari`` extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("gymnax")

ROOT = Path(__file__).resolve().parents[1]


def test_offline_to_online_smoke(tmp_path, monkeypatch):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out, data = tmp_path / "curve.png", tmp_path / "minari"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "offline_to_online.py"), "--smoke",
         "--out", str(out), "--data-dir", str(data)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(out.with_suffix(".json").read_text())
    cfg = summary["config"]
    assert summary["seed"] == 0 and "--smoke" in summary["command"]
    runs = summary["runs"]
    assert [r["offline_fraction"] for r in runs.values()] == [0.5, 0.0]
    for run in runs.values():
        assert run["env_steps"][-1] == cfg["iterations"] * cfg["num_envs"]
        assert len(run["eval_return"]) == cfg["iterations"] // cfg["eval_every"]
        assert all(8 <= r <= 500 for r in run["eval_return"] + [run["final_eval_return"]])
    assert "compiling" in done.stdout and "greedy evaluation" in done.stdout

    # the dataset is a Minari dataset on disk, loadable by Minari and by jaxbuf
    import minari

    from jaxbuf.datasets import from_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = minari.load_dataset(summary["dataset"]["id"])
    assert dataset.total_steps == summary["dataset"]["steps"] > 0
    assert dataset.total_episodes == summary["dataset"]["episodes"]
    assert dataset.recover_environment().spec.id == "CartPole-v1"
    buf = from_minari(dataset)
    assert int(buf.size) == dataset.total_steps
    assert bool(buf[:]["done"][-1])  # only finished episodes were written
