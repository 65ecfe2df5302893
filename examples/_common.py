"""Shared pieces of the CartPole examples: vmapped gymnax envs, greedy evaluation, progress
reporting from inside ``jax.jit``, the learning-curve plot and the command line.

Environment contract (gymnax >= 1.0): ``env.step`` returns
``(obs, state, reward, terminated, truncated, info)`` and auto-resets, so ``obs`` after a
finished episode is already the *reset* observation; the true last observation of the
episode is ``info["final_observation"]``. The examples store that one as ``obs_next``, which
is what makes bootstrapping a truncated step (CartPole-v1 stops at 500 steps) correct.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Default output folder of the examples (git-ignored)."""


class Step(NamedTuple):
    """One vectorised environment step; every field has a leading axis ``num_envs``.

    ``obs`` is the observation to act on next (the reset one after a finished episode),
    ``obs_next`` the true successor of the acted-on observation (``final_observation``).
    """

    obs: jax.Array
    state: Any
    rew: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    obs_next: jax.Array


class VecEnv:
    """``num_envs`` copies of a gymnax environment, stepped with ``jax.vmap``.

    Args:
      name: gymnax id, e.g. ``"CartPole-v1"``.
      num_envs: number of parallel copies (static).
    """

    def __init__(self, name: str, num_envs: int):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env, self.params = gymnax.make(name)
        self.num_envs = num_envs
        self.obs_shape = tuple(self.env.observation_space(self.params).shape)
        self.num_actions = int(self.env.action_space(self.params).n)
        self.max_steps = int(self.params.max_steps_in_episode)

    def reset(self, key: chex.PRNGKey, num: int | None = None) -> tuple[jax.Array, Any]:
        """``(obs [num, *obs_shape], state)`` of ``num`` (default ``num_envs``) fresh copies."""
        keys = jax.random.split(key, self.num_envs if num is None else num)
        return jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.params)

    def step(self, key: chex.PRNGKey, state: Any, action: jax.Array) -> Step:
        """Advance every copy by one step (auto-reset); ``action`` is int[N]; see :class:`Step`."""
        keys = jax.random.split(key, action.shape[0])
        out = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(keys, state, action, self.params)
        if len(out) != 6:
            raise RuntimeError(
                "these examples need gymnax >= 1.0, whose step returns (obs, state, reward, "
                f"terminated, truncated, info); got a {len(out)}-tuple"
            )
        obs, state, rew, terminated, truncated, info = out
        return Step(
            obs,
            state,
            rew.astype(jnp.float32),
            terminated.astype(bool),
            truncated.astype(bool),
            info["final_observation"],
        )

    def evaluate(
        self, act: Callable[[jax.Array], jax.Array], key: chex.PRNGKey, num_episodes: int
    ) -> jax.Array:
        """Mean undiscounted return of ``act`` over ``num_episodes`` episodes (jittable).

        ``act`` maps observations ``[N, *obs_shape]`` to actions ``[N]``. One episode per
        parallel copy; the scan runs ``max_steps`` steps, after which every episode has ended.
        """
        k_reset, k_steps = jax.random.split(key)
        obs, state = self.reset(k_reset, num_episodes)

        def body(carry, k):
            obs, state, ret, alive = carry
            s = self.step(k, state, act(obs))
            ret = ret + s.rew * alive
            alive = alive & ~(s.terminated | s.truncated)
            return (s.obs, s.state, ret, alive), None

        init = (obs, state, jnp.zeros(num_episodes), jnp.ones(num_episodes, bool))
        (_, _, ret, _), _ = jax.lax.scan(body, init, jax.random.split(k_steps, self.max_steps))
        return ret.mean()


class Stopwatch:
    """Wall-clock and process CPU seconds (all threads) of named phases of a run."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as ``<name>_wall_s`` and ``<name>_cpu_s``."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.times[f"{name}_wall_s"] = round(time.perf_counter() - wall, 1)
        self.times[f"{name}_cpu_s"] = round(time.process_time() - cpu, 1)


class Progress:
    """A progress bar (tqdm when installed, else plain prints) fed from inside ``jit``.

    :meth:`report` is meant for ``jax.debug.callback``: it receives concrete numbers once per
    iteration while the compiled loop runs.
    """

    def __init__(self, total: int, desc: str):
        self.total = total
        self.desc = desc
        self.done = 0
        self.last_print = 0.0
        self.bar = None
        self.bar_started = False

    def _start_bar(self) -> None:
        """Open the bar at the first report (so its rate excludes compilation)."""
        self.bar_started = True
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(
            total=self.total, initial=self.done, desc=self.desc, unit="it", dynamic_ncols=True
        )

    def skip_to(self, done: int) -> None:
        """Start counting at ``done`` iterations (a resumed run)."""
        self.done = done

    def report(self, iteration: Any, env_steps: Any, train_return: Any, eval_return: Any) -> None:
        """Advance to ``iteration + 1`` and show the latest training/evaluation returns."""
        if not self.bar_started:
            self._start_bar()
        self.done = int(iteration) + 1
        now = time.perf_counter()
        interval = 0.2 if self.bar is not None else 5.0
        if now - self.last_print < interval and self.done != self.total:
            return
        self.last_print = now
        show = lambda x: "   --" if np.isnan(float(x)) else f"{float(x):6.1f}"
        text = f"return {show(train_return)}  eval {show(eval_return)}  steps {int(env_steps):,}"
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        else:
            print(f"{self.desc}: it {self.done}/{self.total}  {text}", flush=True)

    def close(self) -> None:
        """Close the bar (if one was opened)."""
        if self.bar is not None:
            self.bar.close()


def last_finite(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs (iterations in which no episode finished); leading NaNs stay NaN."""
    x = np.asarray(x, np.float64).copy()
    for i in range(1, len(x)):
        if np.isnan(x[i]):
            x[i] = x[i - 1]
    return x


def save_curve(
    out: Path,
    title: str,
    env_steps: np.ndarray,
    train_return: np.ndarray,
    eval_steps: np.ndarray,
    eval_return: np.ndarray,
    summary: dict,
) -> None:
    """Write the learning curve to ``out`` (PNG) and the numbers to ``out`` with ``.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(env_steps, last_finite(train_return), label="training episodes (mean return)")
    ax.plot(eval_steps, eval_return, "o-", label="greedy evaluation (mean return)")
    ax.axhline(475, color="grey", ls="--", lw=1, label="475")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    curve = {
        "summary": summary,
        "env_steps": np.asarray(env_steps).tolist(),
        "train_return": [None if np.isnan(v) else float(v) for v in np.asarray(train_return)],
        "eval_steps": np.asarray(eval_steps).tolist(),
        "eval_return": np.asarray(eval_return, np.float64).tolist(),
    }
    out.with_suffix(".json").write_text(json.dumps(curve, indent=1))


def report(
    script: str,
    algorithm: str,
    title: str,
    out: Path,
    cfg: Any,
    train_curve: np.ndarray,
    eval_curve: np.ndarray,
    final_eval: float,
    timing: dict,
    argv: list[str] | None,
    extra: dict | None = None,
) -> dict:
    """Summarise a run, write its curve (PNG + JSON) to ``out`` and print one line.

    ``train_curve`` / ``eval_curve`` hold one value per iteration done, NaN where no training
    episode finished / no evaluation ran; ``timing`` is :attr:`Stopwatch.times`; ``cfg`` needs
    ``env_steps_per_iteration`` and ``final_eval_episodes``.
    """
    steps = (np.arange(len(train_curve)) + 1) * cfg.env_steps_per_iteration
    has_eval = ~np.isnan(eval_curve)
    reached = steps[has_eval & (eval_curve >= 475)]
    args = sys.argv[1:] if argv is None else argv
    summary = {
        "algorithm": algorithm,
        "final_eval_return": final_eval,
        "final_eval_episodes": cfg.final_eval_episodes,
        "env_steps": int(steps[-1]) if len(steps) else 0,
        "first_eval_ge_475_at_env_steps": int(reached[0]) if len(reached) else None,
        **timing,
        "config": dataclasses.asdict(cfg),
        "command": " ".join(["python", f"examples/{script}", *args]),
        **(extra or {}),
    }
    save_curve(out, title, steps, train_curve, steps[has_eval], eval_curve[has_eval], summary)
    times = ", ".join(f"{k[:-2].replace('_', ' ')} {v} s" for k, v in timing.items())
    print(
        f"{algorithm}: greedy evaluation {final_eval:.1f} (mean of {cfg.final_eval_episodes} "
        f"episodes) after {summary['env_steps']:,} env steps; {times}; curve: {out}",
        flush=True,
    )
    return summary


def base_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """Arguments every example shares: ``--smoke``, ``--out``, ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--smoke", action="store_true", help="a few iterations of a tiny configuration (tests, CI)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / default_out,
        help="learning-curve PNG (a .json with the numbers is written beside it)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a Config field, e.g. --set lr=3e-4 (repeatable)",
    )
    return parser


def with_overrides(cfg: Any, pairs: list[str]) -> Any:
    """``cfg`` (a frozen dataclass) with ``NAME=VALUE`` overrides in each field's type."""
    fields = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set expects NAME=VALUE, NAME in {sorted(fields)}; got {pair!r}")
        kind = fields[name]
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {name}: expected true/false, got {value!r}")
            changes[name] = value.lower() in ("true", "1")
            continue
        try:
            changes[name] = kind(value)
        except ValueError:
            raise SystemExit(f"--set {name}: expected {kind.__name__}, got {value!r}") from None
    return dataclasses.replace(cfg, **changes)
