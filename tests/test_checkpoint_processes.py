"""Checkpoints across processes: 8 devices to 4, and saves killed with ``os._exit``.

Each case runs tests/checkpoint_worker.py in a fresh interpreter (the device count is fixed
when JAX starts). The independent workers are started together to keep the wall time low.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import checkpoint_worker as worker
import pytest
from checkpoint_roundtrip import assert_bit_identical

import jaxbuf.checkpoint as ckpt

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CRASHES = ("crash_async", "crash_before_commit", "crash_after_commit")


def _start(mode: str, directory: Path, devices: int = 1) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(TESTS / "checkpoint_worker.py"), mode, str(directory)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every worker (save8 and the crashes in parallel, then restore4); collect output."""
    root = tmp_path_factory.mktemp("procs")
    procs = {"save8": _start("save8", root / "save8", devices=8)}
    procs.update({mode: _start(mode, root / mode) for mode in CRASHES})
    out = {mode: _finish(p) for mode, p in procs.items()}
    out["restore4"] = _finish(_start("restore4", root / "save8", devices=4))
    return root, out


def test_saved_on_8_devices_restores_onto_4(runs):
    root, out = runs
    assert out["save8"].strip().endswith("OK")
    assert "restored on 4 devices" in out["restore4"] and out["restore4"].strip().endswith("OK")
    # And onto this process's single device, without like.
    assert_bit_identical(ckpt.restore(root / "save8"), worker.sharded_buffer())


def test_killed_during_async_save_restores_previous_step(runs):
    root, out = runs
    assert "in flight: True" in out["crash_async"]
    directory = root / "crash_async"
    with ckpt.checkpoint_manager(directory) as mngr:
        assert mngr.all_steps() == [1]
        assert_bit_identical(mngr.restore().buffer, worker.generation(1))
        mngr.save(2, buffer=worker.generation(2), wait=True)  # the step number is free again
        assert mngr.all_steps() == [1, 2]
    assert not [p for p in directory.iterdir() if "tmp" in p.name]


def test_killed_before_commit_leaves_previous_generation(runs):
    root, out = runs
    assert "crashing before commit" in out["crash_before_commit"]
    directory = root / "crash_before_commit"
    names = sorted(p.name for p in directory.iterdir())
    assert names[0] == "1" and names[1].startswith("2.orbax-checkpoint-tmp"), names
    assert_bit_identical(ckpt.restore(directory), worker.generation(1))
    assert ckpt.save(directory, worker.generation(3)) == 2
    assert sorted(p.name for p in directory.iterdir()) == ["2"]
    assert_bit_identical(ckpt.restore(directory), worker.generation(3))


def test_killed_after_commit_keeps_the_new_generation(runs):
    root, out = runs
    assert "crashing after commit" in out["crash_after_commit"]
    directory = root / "crash_after_commit"
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]
    assert_bit_identical(ckpt.restore(directory), worker.generation(2))
    assert_bit_identical(ckpt.restore(directory, step=1), worker.generation(1))
