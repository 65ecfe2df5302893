"""Offline-to-online DQN on gymnax CartPole-v1: a Minari dataset, then 50/50 mixed replay.

1. **Collect.** A scripted controller (push towards the side the pole falls to, with
   ``collect_eps`` random actions for variety) runs ``num_envs`` vmapped envs; the steps go
   into a ``jaxbuf.VectorReplayBuffer`` (one sub-buffer per env).
2. **Save.** ``jaxbuf.datasets.to_minari`` writes its finished episodes as a Minari dataset
   under ``--data-dir`` (default ``examples/results/minari``; the unfinished tail of each
   env is left out).
3. **Train.** A fresh double-DQN agent loads the dataset with ``jaxbuf.datasets.from_minari``
   and trains online; every update draws its batch with
   ``jaxbuf.mix(key, [offline, online], (f, 1 - f), batch_size)``: half offline, half fresh
   data with ``f = 0.5``. The same program runs once more with ``f = 0`` (no offline data,
   same seed, same everything else): the baseline. ``f`` is an argument of the compiled run,
   so both runs share one compilation.

Writes the learning curves of both runs to ``--out`` (PNG, and a JSON with the numbers).
Run ``python examples/offline_to_online.py`` (a few minutes on 2 CPU cores) or ``--smoke``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    RESULTS_DIR,
    Progress,
    Stopwatch,
    VecEnv,
    base_parser,
    last_finite,
    with_overrides,
)
from dqn_cartpole import QNetwork

import jaxbuf
from jaxbuf.datasets import from_minari, to_minari

DATASET_ID = "jaxbuf/cartpole/scripted-v0"


@dataclasses.dataclass(frozen=True)
class Config:
    """One iteration = one step of every env + ``updates_per_iteration`` updates."""

    num_envs: int = 8
    collect_steps: int = 500
    collect_eps: float = 0.3
    hidden: int = 256
    iterations: int = 1500
    updates_per_iteration: int = 8
    batch_size: int = 64
    offline_fraction: float = 0.5
    gamma: float = 0.99
    lr: float = 2.3e-3
    lr_end: float = 2.3e-5
    tau: float = 0.005
    learning_starts: int = 32
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.2
    eval_every: int = 75
    eval_episodes: int = 16
    final_eval_episodes: int = 64

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs


SMOKE = Config(
    hidden=64,
    collect_steps=40,
    collect_eps=0.9,
    iterations=40,
    updates_per_iteration=1,
    batch_size=32,
    learning_starts=4,
    eval_every=20,
    eval_episodes=2,
    final_eval_episodes=2,
)

EXAMPLE = {
    "obs": jnp.zeros(4, jnp.float32),
    "act": jnp.zeros((), jnp.int32),
    "rew": jnp.zeros((), jnp.float32),
    "terminated": jnp.zeros((), bool),
    "truncated": jnp.zeros((), bool),
    "obs_next": jnp.zeros(4, jnp.float32),
}


def scripted(obs: jax.Array) -> jax.Array:
    """Push right when ``3 * angle + angular velocity > 0`` (returns about 500 greedily)."""
    return (3.0 * obs[..., 2] + obs[..., 3] > 0).astype(jnp.int32)


def collect(cfg: Config, env: VecEnv, key: jax.Array) -> jaxbuf.VectorReplayBuffer:
    """``collect_steps`` steps of every env under the noisy scripted controller."""

    @jax.jit
    def run(key):
        k_reset, k_steps = jax.random.split(key)
        obs, state = env.reset(k_reset)
        buf = jaxbuf.VectorReplayBuffer.create(
            EXAMPLE, cfg.collect_steps * cfg.num_envs, cfg.num_envs
        )

        def body(carry, k):
            buf, obs, state = carry
            k_eps, k_rand, k_env = jax.random.split(k, 3)
            explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < cfg.collect_eps
            rand = jax.random.randint(k_rand, (cfg.num_envs,), 0, 2)
            act = jnp.where(explore, rand, scripted(obs))
            s = env.step(k_env, state, act)
            row = {
                "obs": obs,
                "act": act,
                "rew": s.rew,
                "terminated": s.terminated,
                "truncated": s.truncated,
                "obs_next": s.obs_next,
            }
            return (buf.add(row)[0], s.obs, s.state), None

        keys = jax.random.split(k_steps, cfg.collect_steps)
        return jax.lax.scan(body, (buf, obs, state), keys)[0][0]

    return run(key)


class Carry(NamedTuple):
    online: jaxbuf.VectorReplayBuffer
    params: Any
    target: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    iteration: jax.Array
    train_curve: jax.Array
    shown: jax.Array


def make_agent(cfg: Config, env: VecEnv, report: Any) -> tuple[Any, Any, Any]:
    """Jitted ``init(key) -> Carry``, ``chunk(carry, offline, fraction) -> Carry`` (the next
    ``eval_every`` iterations, one compiled scan) and ``evaluate(params, key) -> mean return``
    (``eval_episodes`` greedy episodes). ``report(iteration, env_steps, train_return)`` runs
    on the host every iteration (progress)."""
    net = QNetwork(env.num_actions, cfg.hidden)
    schedule = optax.linear_schedule(cfg.lr, cfg.lr_end, cfg.iterations * cfg.updates_per_iteration)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    greedy = lambda params: lambda obs: jnp.argmax(net.apply(params, obs), axis=-1)  # noqa: E731

    def loss_fn(params, target, batch):
        q = jnp.take_along_axis(net.apply(params, batch["obs"]), batch["act"][:, None], -1)[:, 0]
        a_star = jnp.argmax(net.apply(params, batch["obs_next"]), -1)
        q_next = jnp.take_along_axis(net.apply(target, batch["obs_next"]), a_star[:, None], -1)
        y = batch["rew"] + cfg.gamma * (1.0 - batch["terminated"]) * q_next[:, 0]
        return jnp.mean(optax.huber_loss(q - jax.lax.stop_gradient(y)))

    def update(c: Carry, offline, fraction, key) -> Carry:
        fractions = jnp.stack([fraction, 1.0 - fraction])
        batch, _, _ = jaxbuf.mix(key, [offline, c.online], fractions, cfg.batch_size)
        grads = jax.grad(loss_fn)(c.params, c.target, batch)
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        params = optax.apply_updates(c.params, updates)
        target = optax.incremental_update(params, c.target, cfg.tau)
        return c._replace(params=params, target=target, opt_state=opt_state)

    def iteration(offline, fraction, c: Carry, _):
        it = c.iteration
        key, k_eps, k_rand, k_env, k_learn = jax.random.split(c.key, 5)
        frac = jnp.clip(it / (cfg.eps_fraction * cfg.iterations), 0.0, 1.0)
        eps = cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)
        explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < eps
        rand = jax.random.randint(k_rand, (cfg.num_envs,), 0, env.num_actions)
        act = jnp.where(explore, rand, greedy(c.params)(c.obs))
        s = env.step(k_env, c.env_state, act)
        row = {
            "obs": c.obs,
            "act": act,
            "rew": s.rew,
            "terminated": s.terminated,
            "truncated": s.truncated,
            "obs_next": s.obs_next,
        }
        online, res = c.online.add(row)
        ended = s.terminated | s.truncated
        n = jnp.sum(ended)
        train_ret = jnp.where(
            n > 0, jnp.sum(res.episode_return * ended) / jnp.maximum(n, 1), jnp.nan
        )
        c = c._replace(online=online, env_state=s.state, obs=s.obs, key=key)

        def learn(c):
            keys = jax.random.split(k_learn, cfg.updates_per_iteration)
            return jax.lax.scan(lambda c, k: (update(c, offline, fraction, k), None), c, keys)[0]

        c = jax.lax.cond(it >= cfg.learning_starts, learn, lambda c: c, c)
        shown = jnp.where(jnp.isnan(train_ret), c.shown, train_ret)
        jax.debug.callback(report, it, (it + 1) * cfg.num_envs, shown)
        return c._replace(
            iteration=it + 1, train_curve=c.train_curve.at[it].set(train_ret), shown=shown
        ), None

    def init(key) -> Carry:
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        params = net.init(k_net, obs)
        online = jaxbuf.VectorReplayBuffer.create(
            EXAMPLE, cfg.iterations * cfg.num_envs, cfg.num_envs
        )
        curve = jnp.full((cfg.iterations,), jnp.nan, jnp.float32)
        return Carry(
            online,
            params,
            params,
            tx.init(params),
            env_state,
            obs,
            key,
            jnp.int32(0),
            curve,
            jnp.float32(jnp.nan),
        )

    def chunk(c: Carry, offline, fraction) -> Carry:
        body = lambda c, x: iteration(offline, fraction, c, x)  # noqa: E731
        return jax.lax.scan(body, c, None, length=cfg.eval_every)[0]

    def evaluate(params, key):
        return env.evaluate(greedy(params), key, cfg.eval_episodes)

    return jax.jit(init), jax.jit(chunk, donate_argnums=0), jax.jit(evaluate)


def plot(out: Path, runs: dict, cfg: Config, dataset_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, run), color in zip(runs.items(), ("C0", "C1")):
        steps = np.asarray(run["env_steps"])
        ax.plot(steps, last_finite(run["train_return"]), color=color, alpha=0.35, lw=1)
        ax.plot(
            run["eval_steps"], run["eval_return"], "o-", color=color, label=f"{name} (greedy eval)"
        )
    ax.axhline(500, color="grey", ls="--", lw=1)
    ax.set_xlabel("online environment steps")
    ax.set_ylabel("return (thin: training episodes)")
    ax.set_title(f"DQN on CartPole-v1: {dataset_steps:,} offline steps mixed 50/50, or none")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "offline_to_online.png")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="MINARI_DATASETS_PATH for the dataset (default: examples/results/minari)",
    )
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    env = VecEnv("CartPole-v1", cfg.num_envs)
    key = jax.random.key(args.seed)
    k_collect, k_train, k_eval = jax.random.split(key, 3)
    clock = Stopwatch()

    print(
        f"collecting {cfg.collect_steps} steps x {cfg.num_envs} envs "
        f"(scripted controller, eps {cfg.collect_eps})",
        flush=True,
    )
    with clock.phase("collect"):
        data = collect(cfg, env, k_collect)
    data_dir = args.data_dir or RESULTS_DIR / "minari"
    os.environ["MINARI_DATASETS_PATH"] = str(data_dir.resolve())
    if (data_dir / DATASET_ID).exists():
        shutil.rmtree(data_dir / DATASET_ID)  # a rerun replaces the dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari asks for author, permalink...
        dataset = to_minari(
            data,
            DATASET_ID,
            env="CartPole-v1",
            algorithm_name="scripted, noisy",
            description="CartPole-v1 steps of a noisy scripted controller",
        )
    offline = from_minari(DATASET_ID)
    ends = np.asarray(offline[:]["done"])
    print(
        f"Minari dataset {DATASET_ID} in {data_dir}: {dataset.total_episodes} episodes, "
        f"{dataset.total_steps} steps (mean return {offline[:]['rew'].sum() / ends.sum():.1f}); "
        f"loaded back with from_minari",
        flush=True,
    )

    if cfg.iterations % cfg.eval_every or cfg.final_eval_episodes % cfg.eval_episodes:
        raise SystemExit(
            "iterations and final_eval_episodes must be multiples of eval_every and eval_episodes"
        )
    bars: list[Progress] = []  # the progress bar of the run in flight
    report = lambda it, steps, ret: bars[-1].report(it, steps, ret, bars[-1].eval_return)  # noqa: E731
    init, chunk, evaluate = make_agent(cfg, env, report)
    print("compiling (one program for both runs)...", flush=True)
    with clock.phase("compile"):
        carry = init(k_train)
        chunk = chunk.lower(carry, offline, jnp.float32(0.5)).compile()
        evaluate = evaluate.lower(carry.params, k_eval).compile()
    runs = {}
    for name, fraction in (("50/50 offline + online", cfg.offline_fraction), ("online only", 0.0)):
        bars.append(Progress(cfg.iterations, f"DQN {name}"))
        bars[-1].eval_return = float("nan")
        phase = "offline" if fraction > 0 else "online_only"
        carry = init(k_train)  # the same start for both runs
        evals = []
        with clock.phase(f"{phase}_train"):
            for e in range(cfg.iterations // cfg.eval_every):
                carry = chunk(carry, offline, jnp.float32(fraction))
                evals.append(float(evaluate(carry.params, jax.random.fold_in(k_eval, e))))
                bars[-1].eval_return = evals[-1]
        bars[-1].close()
        finals = [
            evaluate(carry.params, jax.random.fold_in(k_eval, 10_000 + i))
            for i in range(cfg.final_eval_episodes // cfg.eval_episodes)
        ]
        final = float(np.mean(finals))
        train_curve = np.asarray(carry.train_curve)
        steps = (np.arange(cfg.iterations) + 1) * cfg.num_envs
        eval_steps = steps[cfg.eval_every - 1 :: cfg.eval_every]
        reached = eval_steps[np.asarray(evals) >= 475]
        runs[name] = {
            "offline_fraction": fraction,
            "final_eval_return": final,
            "first_eval_ge_475_at_env_steps": int(reached[0]) if len(reached) else None,
            "env_steps": steps.tolist(),
            "train_return": [None if np.isnan(v) else float(v) for v in train_curve],
            "eval_steps": eval_steps.tolist(),
            "eval_return": evals,
        }
        print(
            f"{name}: greedy evaluation {final:.1f} (mean of {cfg.final_eval_episodes} "
            f"episodes) after {steps[-1]:,} online env steps",
            flush=True,
        )

    plot(args.out, runs, cfg, dataset.total_steps)
    summary = {
        "dataset": {
            "id": DATASET_ID,
            "episodes": dataset.total_episodes,
            "steps": dataset.total_steps,
        },
        **clock.times,
        "config": dataclasses.asdict(cfg),
        "command": " ".join(
            ["python", "examples/offline_to_online.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "seed": args.seed,
        "runs": runs,
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(f"curves: {args.out}; times: {clock.times}", flush=True)
    return summary


if __name__ == "__main__":
    main()
