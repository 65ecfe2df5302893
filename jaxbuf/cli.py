"""Command line ``jaxbuf`` (also ``python -m jaxbuf``): inspect, merge and split RLinf buffers.

::

    jaxbuf inspect --load-path P [--num-chunks N] [--sample-window-size W] [--cache-size C]
                   [--enable-cache] [--seed S] [--skip-corrupt] [--quiet]
    jaxbuf merge --source-path S --save-path D [--copy | --move | --link] [--quiet]
    jaxbuf split --source-path S --save-path D --split-count N [--copy | --move | --link]

``inspect`` loads a buffer directory without writing to it, samples once and prints the batch
keys with shapes and dtypes. ``merge`` interleaves ``S/rank_*`` buffers (numeric rank order)
into ``D``; ``split`` writes the first N trajectories of ``S`` to ``D``. Files are copied unless
``--move`` (or ``--link``, hard links) is given. Progress goes to stderr; the exit status is 0
on success and 1 on a failure, whose message goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxbuf", description="Inspect, merge and split RLinf-format replay buffers."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="load a buffer, sample once, print the batch")
    inspect.add_argument(
        "--load-path",
        required=True,
        help="directory holding metadata.json and trajectory_index.json",
    )
    inspect.add_argument("--num-chunks", type=int, default=4)
    inspect.add_argument(
        "--sample-window-size",
        type=int,
        default=10,
        help="sample from the last W trajectories (0: all)",
    )
    inspect.add_argument("--cache-size", type=int, default=5)
    inspect.add_argument(
        "--enable-cache",
        action="store_true",
        help="accepted for RLinf compatibility; inspect always caches",
    )
    inspect.add_argument("--seed", type=int, default=1234)
    inspect.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave out missing or corrupt trajectory files and report them",
    )
    inspect.add_argument("--quiet", action="store_true", help="no progress output")

    for name, helptext in (
        ("merge", "interleave rank_* buffers into one"),
        ("split", "write the first N trajectories to a new buffer"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument(
            "--source-path",
            default=".",
            help="directory of rank_* buffers" if name == "merge" else "buffer directory",
        )
        sub.add_argument("--save-path", required=True, help="new (empty) buffer directory")
        if name == "split":
            sub.add_argument("--split-count", type=int, required=True)
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument(
            "--copy",
            dest="mode",
            action="store_const",
            const="copy",
            help="copy the trajectory files (default)",
        )
        mode.add_argument(
            "--move",
            dest="mode",
            action="store_const",
            const="move",
            help="move the files out of the source",
        )
        mode.add_argument(
            "--link",
            dest="mode",
            action="store_const",
            const="link",
            help="hard-link the files (copies across filesystems)",
        )
        sub.set_defaults(mode="copy")
        sub.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _describe(batch: dict, prefix: str = "") -> list[tuple[str, tuple, str]]:
    rows = []
    for key, value in batch.items():
        if isinstance(value, dict):
            rows += _describe(value, f"{prefix}{key}/")
        else:
            rows.append((f"{prefix}{key}", tuple(value.shape), str(value.dtype)))
    return rows


def _inspect(args: argparse.Namespace) -> int:
    from jaxbuf.trajectory.buffer import TrajectoryReplayBuffer

    buffer = TrajectoryReplayBuffer(
        seed=args.seed,
        save_trajectories=False,
        enable_cache=True,
        cache_size=args.cache_size,
        sample_window_size=args.sample_window_size,
    )
    report = buffer.load_checkpoint(
        args.load_path, skip_corrupt=args.skip_corrupt, show_progress=not args.quiet
    )
    print(
        f"loaded {report.path}: {len(buffer)} trajectories, {buffer.total_samples} "
        f"transitions, format {report.fmt}"
    )
    for skipped in report.skipped:
        print(
            f"skipped trajectory {skipped.trajectory_id} ({skipped.path}): {skipped.reason}",
            file=sys.stderr,
        )
    try:
        batch = buffer.sample(args.num_chunks)
    except RuntimeError as exc:
        print(f"[sample] failed: {_reason(exc)}", file=sys.stderr)
        return 1
    print("[sample] keys:", list(batch))
    rows = _describe(batch)
    width = max(len(name) for name, _, _ in rows)
    for name, shape, dtype in rows:
        print(f"  {name:<{width}}  {shape!s:<20} {dtype}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from jaxbuf.trajectory.transfer import merge_buffers, split_buffer

    if args.command == "merge":
        report = merge_buffers(
            args.source_path, args.save_path, mode=args.mode, show_progress=not args.quiet
        )
        sources = len({src for src, _, _ in report.mapping})
        print(
            f"merged {report.count} trajectories ({report.total_samples} transitions) from "
            f"{sources} rank buffers into {report.save_path} ({args.mode})"
        )
    else:
        report = split_buffer(
            args.source_path,
            args.save_path,
            args.split_count,
            mode=args.mode,
            show_progress=not args.quiet,
        )
        print(
            f"split the first {report.count} trajectories ({report.total_samples} "
            f"transitions) into {report.save_path} ({args.mode})"
        )
    return 0


def _reason(exc: BaseException) -> str:
    """The message of ``exc`` without the ``jaxbuf:`` prefix the command line already shows."""
    return str(exc).removeprefix("jaxbuf: ")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _inspect(args) if args.command == "inspect" else _transfer(args)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"jaxbuf {args.command}: error: {_reason(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
