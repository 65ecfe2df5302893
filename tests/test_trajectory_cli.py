"""The ``jaxbuf`` command line: inspect, merge, split, errors, and the text progress printer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from trajectory_helpers import listed_files, make_traj

from jaxbuf.cli import main
from jaxbuf.trajectory import TrajectoryReplayBuffer
from jaxbuf.trajectory.progress import TextProgress, progress


def _rank_buffers(root, sizes):
    for rank, n in sizes.items():
        with TrajectoryReplayBuffer(storage_dir=str(root / f"rank_{rank}")) as buffer:
            buffer.add_trajectories([make_traj(100 * rank + i, mwid="u_0") for i in range(n)])


def test_inspect_prints_keys_shapes_and_dtypes(tmp_path, capsys):
    _rank_buffers(tmp_path, {0: 2})
    before = sorted(os.listdir(tmp_path / "rank_0"))
    assert (
        main(
            [
                "inspect",
                "--load-path",
                str(tmp_path / "rank_0"),
                "--num-chunks",
                "16",
                "--cache-size",
                "1",
                "--enable-cache",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("rank_0: 2 trajectories, 16 transitions, format pt")
    assert out[1] == (
        "[sample] keys: ['actions', 'rewards', 'terminations', 'truncations', "
        "'dones', 'prev_logprobs', 'curr_obs', 'next_obs', 'forward_inputs']"
    )
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out[2:]}
    assert rows["actions"].split() == ["(16,", "6)", "float32"]
    assert rows["dones"].split() == ["(16,", "3)", "bool"]
    assert rows["curr_obs/states"].split() == ["(16,", "5)", "float32"]
    assert sorted(os.listdir(tmp_path / "rank_0")) == before  # inspect writes nothing


def test_inspect_reports_skips_and_failures(tmp_path, capsys):
    _rank_buffers(tmp_path, {0: 2})
    os.unlink(tmp_path / "rank_0" / "trajectory_0_u_0.pt")
    assert main(["inspect", "--load-path", str(tmp_path / "rank_0"), "--quiet"]) == 1
    assert "trajectory_0_u_0.pt" in capsys.readouterr().err
    assert (
        main(["inspect", "--load-path", str(tmp_path / "rank_0"), "--skip-corrupt", "--quiet"]) == 0
    )
    captured = capsys.readouterr()
    assert "skipped trajectory 0" in captured.err and "1 trajectories" in captured.out
    empty = tmp_path / "empty"
    with TrajectoryReplayBuffer(storage_dir=str(empty)) as buffer:
        buffer.save_checkpoint(str(empty))
    assert main(["inspect", "--load-path", str(empty), "--quiet"]) == 1
    assert "[sample] failed: Cannot sample from an empty buffer." in capsys.readouterr().err
    assert main(["inspect", "--load-path", str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "buffer metadata not found" in capsys.readouterr().err


def test_merge_then_split(tmp_path, capsys):
    _rank_buffers(tmp_path / "src", {0: 2, 1: 2})
    assert (
        main(
            [
                "merge",
                "--source-path",
                str(tmp_path / "src"),
                "--save-path",
                str(tmp_path / "merged"),
                "--copy",
                "--quiet",
            ]
        )
        == 0
    )
    assert "merged 4 trajectories (32 transitions) from 2 rank buffers" in capsys.readouterr().out
    index = json.load(open(tmp_path / "merged" / "trajectory_index.json"))
    assert index["trajectory_id_list"] == [0, 1, 2, 3]
    assert (
        main(
            [
                "split",
                "--source-path",
                str(tmp_path / "merged"),
                "--save-path",
                str(tmp_path / "head"),
                "--split-count",
                "3",
                "--move",
                "--quiet",
            ]
        )
        == 0
    )
    assert listed_files(str(tmp_path / "head")) == [f"trajectory_{i}_u_0.pt" for i in range(3)]
    assert listed_files(str(tmp_path / "merged")) == ["trajectory_3_u_0.pt"]
    assert (
        main(
            [
                "split",
                "--source-path",
                str(tmp_path / "merged"),
                "--save-path",
                str(tmp_path / "more"),
                "--split-count",
                "5",
                "--quiet",
            ]
        )
        == 1
    )
    assert "split_count=5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["merge", "--save-path", "x", "--copy", "--move"])


def test_python_dash_m_entry_point_with_progress(tmp_path):
    _rank_buffers(tmp_path / "src", {0: 1, 1: 1})
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [
                os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxbuf",
            "merge",
            "--source-path",
            str(tmp_path / "src"),
            "--save-path",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "merged 2 trajectories" in done.stdout and "merge" in done.stderr


def test_text_progress_printer(monkeypatch):
    stream = io.StringIO()
    bar = TextProgress(4, "copy", stream, interval=3600)
    for _ in range(4):
        bar.update()
    assert stream.getvalue().splitlines() == ["copy: 1/4 (25%)", "copy: 4/4 (100%)"]
    monkeypatch.setitem(sys.modules, "tqdm", None)  # fall back to the built-in printer
    stream = io.StringIO()
    assert list(progress(range(3), 3, "load", stream=stream)) == [0, 1, 2]
    assert stream.getvalue().splitlines()[-1] == "load: 3/3 (100%)"
    quiet = io.StringIO()
    assert list(progress(range(2), 2, "x", enabled=False, stream=quiet)) == [0, 1]
    assert quiet.getvalue() == ""


def _subparsers():
    from jaxbuf.cli import build_parser

    action = next(a for a in build_parser()._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("command", ["inspect", "merge", "split"])
def test_help_shows_every_default(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    sub = _subparsers()[command]
    shown = 0
    for action in sub._actions:
        if action.required or action.dest in ("help", "mode"):
            continue
        flag = action.option_strings[-1]
        after = text.split(f" {flag} ", 1)[1]
        assert f"(default: {action.default})" in after.split(" --", 1)[0], (command, flag)
        shown += 1
    assert shown == {"inspect": 7, "merge": 1, "split": 2}[command]
    if command != "inspect":
        assert "copy the trajectory files (the default mode)" in text
    if command == "inspect":
        assert "(default: 4)" in text and "(default: 1234)" in text


def test_merge_requires_source_path(tmp_path, capsys, monkeypatch):
    _rank_buffers(tmp_path, {0: 1})
    monkeypatch.chdir(tmp_path)  # rank_* here: the old default would have merged them
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", "--save-path", str(tmp_path / "merged"), "--quiet"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --source-path" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def test_inspect_of_rank_directories_says_to_merge(tmp_path, capsys):
    _rank_buffers(tmp_path, {0: 1, 1: 1, 10: 1})
    assert main(["inspect", "--load-path", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"jaxbuf inspect: error: {tmp_path} holds 3 per-rank buffers" in err
    assert "(rank_0, rank_1, rank_10)" in err
    assert f"jaxbuf merge --source-path {tmp_path} --save-path MERGED" in err
    # one rank is an ordinary buffer and inspects as before
    assert main(["inspect", "--load-path", str(tmp_path / "rank_1"), "--quiet"]) == 0


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_inspect_refuses_non_positive_num_chunks_before_loading(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--load-path", str(tmp_path / "nowhere"), "--num-chunks", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --num-chunks: expected a positive integer, got '{value}'" in err
    assert "metadata" not in err  # refused before any loading was tried
