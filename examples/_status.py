"""Status lines for the examples: what a slow step is doing before it starts, and how long it
took once it is done.

They go to stderr (like the progress bar), so an example's stdout is the same with or without
them. This module imports nothing heavy, so a script can import it before jax and say so while
jax loads.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


def say(text: str) -> None:
    """Print one status line to stderr at once."""
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(what: str, note: str = "") -> Iterator[None]:
    """``what (note)...`` before the ``with`` block, ``what: done in X s`` after it."""
    say(f"{what} ({note})..." if note else f"{what}...")
    start = time.perf_counter()
    yield
    say(f"{what}: done in {time.perf_counter() - start:.1f} s")


class Sections:
    """Wall time of consecutive sections: each :meth:`next` (and :meth:`end`) reports how long
    the previous section took, e.g. ``[circular storage: 1.1 s]``."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.start = 0.0
        self.times: dict[str, float] = {}

    def next(self, name: str) -> None:
        """End the running section (if any) and start ``name``."""
        self.end()
        self.name, self.start = name, time.perf_counter()

    def end(self) -> None:
        """End the running section and report its time."""
        if self.name is not None:
            took = time.perf_counter() - self.start
            self.times[self.name] = took
            say(f"[{self.name}: {took:.1f} s]")
        self.name = None
