"""Command line ``jaxbuf`` (also ``python -m jaxbuf``): inspect, merge and split RLinf buffers.

::

    jaxbuf inspect --load-path P [--num-chunks N] [--sample-window-size W] [--cache-size C]
                   [--enable-cache] [--seed S] [--skip-corrupt] [--quiet]
    jaxbuf merge --source-path S --save-path D [--copy | --move | --link] [--quiet]
    jaxbuf split [--source-path S] --save-path D --split-count N [--copy | --move | --link]

``inspect`` loads a buffer directory without writing to it, samples once and prints the batch
keys with shapes and dtypes; a directory of ``rank_*`` buffers is refused with the ``merge``
command to run first. ``merge`` interleaves ``S/rank_*`` buffers (numeric rank order)
into ``D``; ``split`` writes the first N trajectories of ``S`` to ``D``. Files are copied unless
``--move`` (or ``--link``, hard links) is given. Progress goes to stderr; the exit status is 0
on success and 1 on a failure, whose message goes to stderr (2 for a usage error). Every
option's default is shown in ``--help``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default, also for options given no help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default is argparse.SUPPRESS or action.dest == "mode":
            return text  # the --copy/--move/--link group names its default on --copy
        if "%(default)" not in text and action.option_strings:
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxbuf`` argument parser (subcommands ``inspect``, ``merge``, ``split``).

    >>> build_parser().parse_args(["inspect", "--load-path", "/b"]).num_chunks
    4
    """
    parser = argparse.ArgumentParser(
        prog="jaxbuf",
        description="Inspect, merge and split RLinf-format replay buffers.",
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser = lambda *a, **k: commands.add_parser(*a, formatter_class=_HelpFormatter, **k)

    inspect = add_parser("inspect", help="load a buffer, sample once, print the batch")
    inspect.add_argument(
        "--load-path",
        required=True,
        help="directory holding metadata.json and trajectory_index.json",
    )
    inspect.add_argument(
        "--num-chunks", type=_positive_int, default=4, help="transitions to sample (> 0)"
    )
    inspect.add_argument(
        "--sample-window-size",
        type=int,
        default=10,
        help="sample from the last W trajectories (0: all)",
    )
    inspect.add_argument("--cache-size", type=int, default=5, help="trajectories kept in memory")
    inspect.add_argument(
        "--enable-cache",
        action="store_true",
        help="accepted for RLinf compatibility; inspect always caches",
    )
    inspect.add_argument("--seed", type=int, default=1234, help="sampling seed")
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
        sub = add_parser(name, help=helptext)
        if name == "merge":
            sub.add_argument("--source-path", required=True, help="directory of rank_* buffers")
        else:
            sub.add_argument("--source-path", default=".", help="buffer directory")
        sub.add_argument("--save-path", required=True, help="new (empty) buffer directory")
        if name == "split":
            sub.add_argument("--split-count", type=int, required=True, help="trajectories to write")
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument(
            "--copy",
            dest="mode",
            action="store_const",
            const="copy",
            help="copy the trajectory files (the default mode)",
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


def _refuse_rank_dirs(path: str) -> None:
    """A directory of ``rank_*`` buffers (and no buffer of its own) cannot be inspected."""
    from jaxbuf.trajectory.listing import METADATA_FILE

    if not os.path.isdir(path) or os.path.exists(os.path.join(path, METADATA_FILE)):
        return
    ranks = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(path)
        if (m := re.fullmatch(r"rank_(\d+)", name)) and os.path.isdir(os.path.join(path, name))
    )
    if ranks:
        from jaxbuf.errors import InputError  # here: the CLI's --help does not import jax

        names = ", ".join(name for _, name in ranks[:4]) + (", ..." if len(ranks) > 4 else "")
        raise InputError(
            f"{path} holds {len(ranks)} per-rank buffers ({names}), not one buffer; merge them "
            f"first with `jaxbuf merge --source-path {path} --save-path MERGED`, then inspect "
            "MERGED (or inspect one rank, e.g. --load-path "
            f"{os.path.join(path, ranks[0][1])})"
        )


def _inspect(args: argparse.Namespace) -> int:
    from jaxbuf.trajectory.buffer import TrajectoryReplayBuffer

    _refuse_rank_dirs(args.load_path)
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
