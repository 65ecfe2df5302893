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


def test_r2d2_smoke_trains_a_recurrent_agent_from_sequences(tmp_path):
    out = tmp_path / "r2d2.png"
    proc = run_example("r2d2_cartpole.py", tmp_path, "--out", str(out))
    curve = load_curve(out)
    summary = curve["summary"]
    cfg = summary["config"]
    # SMOKE: 24 iterations of 4 envs, evaluations after iterations 12 and 24
    assert summary["env_steps"] == cfg["iterations"] * cfg["num_envs"] == 96
    assert curve["eval_steps"] == [48, 96]
    assert cfg["hide_velocities"] and cfg["burn_in"] < cfg["length"]
    assert 8 <= summary["final_eval_return"] <= 500
    text = proc.stdout + proc.stderr
    assert "compiling the training loop" in text and "R2D2 (LSTM) seed 0" in text


def test_r2d2_targets_stop_at_terminated_and_bootstrap_elsewhere(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import jax.numpy as jnp
    import r2d2_cartpole as r2

    # one window of 5 steps: step 2 terminates the episode, steps 3-4 are masked
    rew = jnp.array([[1.0, 2.0, 4.0, 0.0, 0.0]])
    term = jnp.array([[False, False, True, False, False]])
    mask = jnp.array([[True, True, True, False, False]])
    boot = jnp.array([[10.0, 20.0, 30.0, 0.0, 0.0]])
    y = np.asarray(r2.nstep_in_window(rew, term, mask, boot, 0.5, 2))[0]
    # t=0: 1 + 0.5*2 + 0.25*boot[1]; t=1: 2 + 0.5*4 (terminated: no bootstrap); t=2: 4
    np.testing.assert_allclose(y[:3], [1 + 1 + 0.25 * 20, 2 + 2, 4])
    # a window cut by its end (mask false after step 1, not terminated) bootstraps there
    mask2 = jnp.array([[True, True, False, False, False]])
    y2 = np.asarray(r2.nstep_in_window(rew, term * False, mask2, boot, 0.5, 3))[0]
    np.testing.assert_allclose(y2[:2], [1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 20])


def test_r2d2_compare_figure_lists_every_run(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import r2d2_cartpole as r2

    cfg = r2.SMOKE
    curve = np.full(cfg.iterations, np.nan)
    curve[[11, 23]] = [20.0, 40.0]
    records = [
        {
            "agent": name,
            "recurrent": rec,
            "seed": seed,
            "final_eval_return": 30.0,
            "eval_curve": curve,
            "times": {"train_wall_s": 1.0},
        }
        for name, rec in (("R2D2 (LSTM)", True), ("feed-forward", False))
        for seed in (0, 1)
    ]
    out = tmp_path / "cmp.png"
    r2.plot_compare(out, cfg, records, "python examples/r2d2_cartpole.py --compare")
    doc = load_curve(out)
    assert [(r["agent"], r["seed"]) for r in doc["runs"]] == [
        (r["agent"], r["seed"]) for r in records
    ]
    assert doc["runs"][0]["eval_steps"] == [48, 96]
    assert doc["runs"][0]["eval_return"] == [20.0, 40.0]
    assert doc["command"].endswith("--compare")
