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


def test_r2d2_priorities_follow_the_sampling_law_and_idle_windows_get_zero(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import jax
    import jax.numpy as jnp
    import r2d2_cartpole as r2

    import jaxbuf

    ex = dict(
        obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0), terminated=False, truncated=False
    )
    buf = jaxbuf.PrioritizedReplayBuffer.create(ex, 16, alpha=1.0, beta=0.4)
    rows = jax.tree.map(lambda x: jnp.stack([x] * 10), ex)
    rows["terminated"] = jnp.arange(10) == 9  # one episode of 10 steps
    buf, _ = buf.add(rows, buffer_ids=jnp.zeros(10, jnp.int32))
    # two windows of 4 steps with a burn-in of 2: starts 2 (full) and 8 (steps 8-9 only)
    seq = buf.sample_sequences(jax.random.key(0), 2, 4, burn_in=2, priority="start")
    seq = seq.replace(
        indices=jnp.array([[2, 3, 4, 5], [8, 9, 9, 9]]),
        mask=jnp.array([[True] * 4, [True, True, False, False]]),
        burn_in=jnp.array([[True, True, False, False]] * 2),
    )
    train = seq.mask & ~seq.burn_in
    td = jnp.array([[9.0, 9.0, 1.0, -3.0], [5.0, 5.0, 0.0, 0.0]])
    new = r2.update_priorities(buf, seq, train, td, eta=0.5, law="start")
    leaf = np.asarray(new.tree.get(jnp.arange(10)))
    eps = 2.0**-23
    # start 2: 0.5 * max(1, 3) + 0.5 * mean(1, 3) = 2.5 (the burn-in's 9s do not count)
    np.testing.assert_allclose(leaf[2], 2.5 + eps, rtol=1e-6)
    np.testing.assert_allclose(leaf[8], eps, rtol=1e-6)  # nothing after the burn-in
    others = [i for i in range(10) if i not in (2, 8)]
    np.testing.assert_allclose(leaf[others], np.asarray(buf.tree.get(jnp.array(others))))
    # the sum law: every step after the burn-in gets its window's priority
    leaf = np.asarray(
        r2.update_priorities(buf, seq, train, td, 0.5, "sum").tree.get(jnp.arange(10))
    )
    np.testing.assert_allclose(leaf[[4, 5]], 2.5 + eps, rtol=1e-6)
    np.testing.assert_allclose(leaf[[0, 1, 2, 3, 6, 7, 8, 9]], 1.0)


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
