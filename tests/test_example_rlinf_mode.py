"""``examples/rlinf_mode.py --smoke`` runs end to end (issue 8's RLinf-mode workflow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rlinf_mode_example_smoke(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "rlinf_mode.py"),
            "--smoke",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "resumed sampler continues the same sequence: True" in out
    assert "rank 0: demo share ids 0..5 (6 of 12)" in out
    assert "rank 1: demo share ids 6..11 (6 of 12)" in out
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert losses[-1] < 0.1 * losses[0]
    assert float(re.search(r"max \|W - W_true\| = (\d+\.\d+)", out).group(1)) < 0.1
    assert os.path.isfile(tmp_path / "ckpt" / "replay_buffer" / "rank_1" / "metadata.json")
    assert out.rstrip().endswith("done")
    status = done.stderr.splitlines()
    assert status[0] == "importing jax and jaxbuf (a few seconds)..."
    assert "compiling the jitted SGD step (first call, about a second)..." in status
    assert [line.split(":")[0] for line in status if line.startswith("[stage")] == [
        f"[stage {n}" for n in range(1, 6)
    ]
