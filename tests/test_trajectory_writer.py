"""BackgroundWriter: FIFO order, error propagation, idempotent close, restart."""

from __future__ import annotations

import threading

import pytest

from jaxbuf.trajectory import TrajectoryWriteError
from jaxbuf.trajectory.writer import BackgroundWriter


def test_tasks_run_in_submission_order_on_one_thread():
    writer = BackgroundWriter()
    seen, threads = [], set()
    gate = threading.Event()
    writer.submit(gate.wait, "gate")
    for i in range(50):
        writer.submit(lambda i=i: (seen.append(i), threads.add(threading.get_ident())), f"t{i}")
    assert writer.pending == 51
    gate.set()
    writer.flush()
    assert seen == list(range(50)) and len(threads) == 1
    assert threading.get_ident() not in threads
    assert writer.pending == 0
    writer.close()


def test_errors_surface_once_and_later_tasks_still_run():
    writer = BackgroundWriter()
    done = []

    def boom():
        raise OSError("disk full")

    writer.submit(boom, "writing a.pt")
    writer.submit(lambda: done.append(1), "ok")
    writer.submit(boom, "writing b.pt")
    with pytest.raises(
        TrajectoryWriteError,
        match=r"writing a\.pt: OSError: disk full "
        r"\(and 1 more failed writes\)",
    ) as info:
        writer.flush()
    assert isinstance(info.value.__cause__, OSError)
    assert done == [1]
    writer.check()  # reported once
    writer.submit(boom, "writing c.pt")
    with pytest.raises(TrajectoryWriteError, match="c.pt"):
        writer.close()
    writer.close()  # idempotent, nothing left to report


def test_error_is_raised_by_the_next_check():
    writer = BackgroundWriter()
    ran = threading.Event()
    writer.submit(lambda: 1 / 0, "dividing")
    writer.submit(ran.set, "marker")
    assert ran.wait(10)
    with pytest.raises(TrajectoryWriteError, match="dividing: ZeroDivisionError"):
        writer.check()
    writer.close()


def test_submit_after_close_starts_a_new_thread():
    writer = BackgroundWriter()
    out = []
    writer.submit(lambda: out.append("a"), "a")
    writer.close()
    writer.close()
    writer.submit(lambda: out.append("b"), "b")
    writer.flush()
    assert out == ["a", "b"]
    writer.close()
