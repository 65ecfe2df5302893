"""docs/coming-from-flashbax.md: every ``# jaxbuf`` code block runs, in order, in one namespace.

The ``# flashbax`` blocks are for comparison and are not run (flashbax is an optional peer).
"""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "coming-from-flashbax.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks(tag: str) -> list[str]:
    return [b for b in BLOCK.findall(PAGE.read_text()) if b.startswith(f"# {tag}\n")]


def test_every_python_block_is_tagged():
    assert len(blocks("jaxbuf")) + len(blocks("flashbax")) == len(BLOCK.findall(PAGE.read_text()))


def test_jaxbuf_blocks_run():
    code = blocks("jaxbuf")
    assert len(code) == 6  # setup, flat, trajectories, prioritised, mix, save
    namespace: dict = {}
    for i, block in enumerate(code):
        exec(compile(block, f"{PAGE.name} jaxbuf block {i}", "exec"), namespace)
    # what the blocks built, checked here as well as by their own asserts
    assert namespace["windows"]["obs"].shape == (32, 20, 4)
    assert namespace["batch"]["weight"].shape == (256,)
    assert namespace["restored"].buffer_num == 8
