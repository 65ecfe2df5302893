"""The CartPole examples run end to end (``--smoke``), and DQN resumes exactly from a checkpoint.

Each example runs in a subprocess, as a user would start it. They need the ``examples``
extra (gymnax, optax, matplotlib; tqdm optional).
"""

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
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(script: str, cwd: Path, *args: str, check: bool = True):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--smoke", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"{script} {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def load_curve(png: Path) -> dict:
    assert png.read_bytes()[:8] == PNG_MAGIC
    return json.loads(png.with_suffix(".json").read_text())


def test_ppo_smoke_writes_curve_and_reports_progress(tmp_path):
    out = tmp_path / "ppo.png"
    proc = run_example("ppo_cartpole.py", tmp_path, "--out", str(out))
    curve = load_curve(out)
    summary = curve["summary"]
    cfg = summary["config"]
    # SMOKE: 3 iterations of 16 envs x 16 steps, one evaluation (after iteration 2)
    assert summary["env_steps"] == cfg["iterations"] * cfg["num_envs"] * cfg["num_steps"] == 768
    assert curve["env_steps"] == [256, 512, 768]
    assert curve["eval_steps"] == [512]
    # CartPole returns are episode lengths: between 8 and 500 steps
    assert 8 <= summary["final_eval_return"] <= 500
    assert all(8 <= r <= 500 for r in curve["eval_return"])
    assert "PPO CartPole-v1" in proc.stdout + proc.stderr  # progress output
    assert "greedy evaluation" in proc.stdout
    # status lines on stderr: what compiles, before it does, then how long each phase took
    status = proc.stderr.splitlines()
    assert status[0] == "importing jax, flax, optax and gymnax (a few seconds)..."

    def where(start: str) -> int:
        return next(i for i, line in enumerate(status) if line.startswith(start))

    assert (
        where("compiling the training loop (one jitted lax.scan of 3 iterations of 16 envs")
        < where("compiling the training loop: done in ")
        < where("training (3 iterations of 16 envs x 16 steps)...")
        < where("training: done in ")
        < where("final greedy evaluation of 4 episodes (compiles first)...")
        < where("final greedy evaluation of 4 episodes: done in ")
    )
    assert "compiling" not in proc.stdout


def test_dqn_smoke_checkpoints_and_resumes_exactly(tmp_path):
    full_png, part_png, resumed_png = (tmp_path / f"{n}.png" for n in ("full", "part", "res"))
    run_example(
        "dqn_cartpole.py", tmp_path, "--out", str(full_png), "--ckpt-dir", str(tmp_path / "ck_full")
    )
    run_example(
        "dqn_cartpole.py",
        tmp_path,
        "--out",
        str(part_png),
        "--ckpt-dir",
        str(tmp_path / "ck"),
        "--stop-after",
        "20",
    )
    proc = run_example(
        "dqn_cartpole.py",
        tmp_path,
        "--out",
        str(resumed_png),
        "--ckpt-dir",
        str(tmp_path / "ck"),
        "--resume",
    )
    full, part, resumed = (load_curve(p) for p in (full_png, part_png, resumed_png))

    # SMOKE: 40 iterations of 16 envs, a checkpoint every 20 iterations
    assert full["summary"]["iterations_done"] == 40
    assert full["summary"]["buffer_size"] == 640
    assert full["summary"]["checkpoints"] == [20, 40]
    assert part["summary"]["iterations_done"] == 20
    assert part["summary"]["buffer_size"] == 320
    assert part["summary"]["checkpoints"] == [20]
    assert resumed["summary"]["resumed_from_iteration"] == 20
    assert resumed["summary"]["checkpoints"] == [20, 40]

    # the resumed run continued the interrupted one exactly: same buffer fill, same
    # parameters, same per-iteration curves as the uninterrupted run
    for key in ("iterations_done", "buffer_size", "params_checksum", "final_eval_return"):
        assert resumed["summary"][key] == full["summary"][key], key
    for key in ("train_return", "eval_return", "env_steps"):
        np.testing.assert_array_equal(
            np.array(resumed[key], dtype=float), np.array(full[key], dtype=float), err_msg=key
        )
    assert part["train_return"] == full["train_return"][:20]
    assert "DQN CartPole-v1" in proc.stdout + proc.stderr


def test_dqn_resume_refuses_a_different_config(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"lr": 1.0}))
    proc = run_example(
        "dqn_cartpole.py",
        tmp_path,
        "--ckpt-dir",
        str(ck),
        "--resume",
        "--out",
        str(tmp_path / "x.png"),
        check=False,
    )
    assert proc.returncode != 0
    assert "--resume" in proc.stderr and "same options" in proc.stderr


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import _common

    return _common


def test_progress_prints_plain_lines_without_tqdm(common, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    progress = common.Progress(total=3, desc="demo")
    progress.report(0, 16, float("nan"), float("nan"))  # first report always prints
    progress.report(1, 32, 20.0, float("nan"))  # throttled (< 5 s later)
    progress.report(2, 48, 21.5, 30.0)  # the last iteration always prints
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "demo: it 1/3  return    --  eval    --  steps 16",
        "demo: it 3/3  return   21.5  eval   30.0  steps 48",
    ]


def test_overrides_convert_to_the_field_type_and_reject_unknown_names(common):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float = 1.0
        steps: int = 2
        flag: bool = False

    cfg = common.with_overrides(Cfg(), ["lr=3e-4", "steps=7", "flag=true"])
    assert cfg == Cfg(lr=3e-4, steps=7, flag=True)
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        common.with_overrides(Cfg(), ["nope=1"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        common.with_overrides(Cfg(), ["lr"])
    with pytest.raises(SystemExit, match="steps: expected int, got '1e3'"):
        common.with_overrides(Cfg(), ["steps=1e3"])
    with pytest.raises(SystemExit, match="flag: expected true/false"):
        common.with_overrides(Cfg(), ["flag=maybe"])
