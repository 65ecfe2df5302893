"""Draw several runs of an example in one figure, from the ``.json`` files the runs wrote.

Every example writes its numbers beside its ``--out`` PNG (``curve.png`` -> ``curve.json``).
This script reads a few of those files and plots, per run, the periodic greedy evaluations
(markers) and a running mean of the training-episode returns (thin line of the same
colour), with the final greedy evaluation in the legend:

    python examples/plot_runs.py --out compare.png seed0.json seed1.json
    python examples/plot_runs.py --out compare.png a.json b.json --label "seed 0" --label "seed 1"

Runs that coincide are drawn with different line styles, so both stay visible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STYLES = [("-", "o"), ("--", "x"), (":", "s"), ("-.", "^")]


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    end = np.arange(1, len(x) + 1)
    start = np.maximum(end - window, 0)
    return (c[end] - c[start]) / (end - start)


def plot_runs(runs: list[Path], out: Path, labels: list[str], title: str, window: int) -> None:
    """Write the figure of ``runs`` (curve JSON files) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if labels and len(labels) != len(runs):
        raise SystemExit(f"--label given {len(labels)} times for {len(runs)} runs")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, path in enumerate(runs):
        try:
            curve = json.loads(path.read_text())
            summary = curve["summary"]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"{path}: not a curve file an example wrote ({err})") from None
        ls, marker = STYLES[i % len(STYLES)]
        color = f"C{i}"
        name = labels[i] if labels else path.stem
        train = np.array([np.nan if v is None else v for v in curve["train_return"]], float)
        keep = ~np.isnan(train)
        steps = np.asarray(curve["env_steps"], float)[keep]
        ax.plot(steps, running_mean(train[keep], window), ls, color=color, lw=0.8, alpha=0.5)
        ax.plot(
            curve["eval_steps"],
            curve["eval_return"],
            ls,
            marker=marker,
            color=color,
            fillstyle="none",
            label=f"{name} ({summary['final_eval_return']:.1f})",
        )
    ax.plot([], [], color="grey", lw=0.8, alpha=0.5, label=f"training episodes ({window}-mean)")
    ax.axhline(475, color="grey", ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="lower right", title="greedy evaluation (final)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="curve .json files written by runs")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--label", action="append", default=[], help="one per run, in order")
    parser.add_argument("--title", default="Learning curves")
    parser.add_argument("--window", type=int, default=50, help="training episodes per running mean")
    args = parser.parse_args(argv)
    plot_runs(args.runs, args.out, args.label, args.title, args.window)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
