"""Progress reporting for long file work: tqdm when installed, else a small text printer."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

__all__ = ["TextProgress", "progress"]

T = TypeVar("T")


class TextProgress:
    """Prints ``desc: done/total (pct%)`` lines to ``stream`` at most every ``interval`` s.

    The first and the last step are always printed.
    """

    def __init__(
        self, total: int, desc: str, stream: IO[str] | None = None, interval: float = 0.5
    ) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self._last = float("-inf")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or self.done == n or now - self._last >= self.interval:
            self._last = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            print(
                f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%)", file=self.stream, flush=True
            )


def progress(
    items: Iterable[T], total: int, desc: str, enabled: bool = True, stream: IO[str] | None = None
) -> Iterator[T]:
    """Iterate ``items`` while reporting progress (tqdm if importable, else :class:`TextProgress`).

    With ``enabled=False`` the items are yielded silently.
    """
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        bar = TextProgress(total, desc, stream)
        for item in items:
            yield item
            bar.update()
        return
    yield from tqdm(
        items, total=total, desc=desc, file=stream if stream is not None else sys.stderr
    )
