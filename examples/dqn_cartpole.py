"""DQN on gymnax CartPole-v1: prioritized n-step replay, the whole run under one ``jax.jit``.

One compiled ``lax.scan`` runs every iteration of the run; an iteration

1. steps ``num_envs`` vmapped environments once (epsilon-greedy) and adds the 16 transitions
   to a ``jaxbuf.PrioritizedVectorReplayBuffer`` (one sub-buffer per env, so
   episodes never interleave). ``obs_next`` is gymnax's ``info["final_observation"]``: the
   true successor, also for the step that ended an episode before the auto-reset;
2. makes ``updates_per_iteration`` double-DQN updates, each on a prioritized sample:
   ``jaxbuf.nstep_targets`` follows the buffer's episode links and flags to give the
   discounted reward sum of up to ``n_step`` steps, the slot to bootstrap from and its
   discount. Truncation comes from the buffer's flags: a window that meets ``terminated``
   stops without bootstrap; one that meets ``truncated`` (CartPole-v1's 500-step limit) or
   the unfinished head of an episode stops and bootstraps from that slot's ``obs_next``.
   The loss is importance-weighted (the sample's ``weight``) and the new priorities are the
   absolute TD errors (``update_weight``); ``beta`` is annealed to 1 with ``set_beta``;
3. every ``eval_every`` iterations evaluates the greedy policy and keeps the best snapshot;
4. every ``ckpt_every`` iterations hands the whole training state to the host through an
   ordered ``io_callback``, which saves the buffer (contents, counters, priority trees) and
   everything else (parameters, target, optimizer, env states, PRNG key, curves) with
   ``jaxbuf.checkpoint.checkpoint_manager`` (orbax, async). ``--resume`` restores the latest
   checkpoint and runs the remaining iterations, so an interrupted run continues exactly
   where it stopped (same numbers as an uninterrupted run).

Run ``python examples/dqn_cartpole.py`` (full run), ``--smoke`` (a few iterations), and after
an interruption (or ``--stop-after N``) the same command with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (  # the examples/ folder
    RESULTS_DIR,
    Progress,
    Stopwatch,
    VecEnv,
    base_parser,
    report,
    with_overrides,
)
from jax.experimental import io_callback

import jaxbuf
import jaxbuf.checkpoint


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters. One iteration = one step of every env + ``updates_per_iteration``
    gradient updates; ``target_every``, ``eval_every`` and ``ckpt_every`` count iterations."""

    num_envs: int = 16
    hidden: int = 256
    iterations: int = 3125
    updates_per_iteration: int = 8
    buffer_size: int = 50_000
    batch_size: int = 64
    n_step: int = 3
    gamma: float = 0.99
    lr: float = 1e-3
    lr_end: float = 1e-5
    alpha: float = 0.6
    beta0: float = 0.4
    learning_starts: int = 64
    target_every: int = 16
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_fraction: float = 0.16
    eval_every: int = 125
    eval_episodes: int = 32
    final_eval_episodes: int = 128
    ckpt_every: int = 500

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs


SMOKE = Config(
    iterations=40,
    updates_per_iteration=2,
    buffer_size=2048,
    batch_size=32,
    learning_starts=8,
    target_every=10,
    eval_every=20,
    eval_episodes=4,
    final_eval_episodes=4,
    ckpt_every=20,
)


class QNetwork(nn.Module):
    """``obs [..., 4] -> Q [..., A]``: a ReLU MLP with two hidden layers of ``hidden``."""

    num_actions: int
    hidden: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(obs))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_actions)(x)


class Carry(NamedTuple):
    """The whole training state (a pytree); checkpointed as ``buffer`` + ``state`` (the rest).

    ``key`` is raw PRNG key data (uint32) so that it travels through callbacks and orbax;
    ``train_curve`` / ``eval_curve`` hold one value per iteration (NaN: none that iteration);
    ``shown`` the latest (training, evaluation) returns for the progress bar.
    """

    buf: jaxbuf.PrioritizedVectorReplayBuffer
    params: Any
    target: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    iteration: jax.Array
    train_curve: jax.Array
    eval_curve: jax.Array
    shown: jax.Array
    best_params: Any
    best_eval: jax.Array


class Agent(NamedTuple):
    """The compiled pieces: ``init(key) -> Carry``, ``run(carry, num) -> Carry`` (``num``
    iterations, static) and ``evaluate(params, key, episodes) -> mean return``."""

    init: Any
    run: Any
    evaluate: Any


def make_agent(cfg: Config, env: VecEnv, progress: Progress | None, save: Any) -> Agent:
    """Builds the jitted functions; ``save(carry)`` is the host-side checkpoint writer."""
    net = QNetwork(env.num_actions, cfg.hidden)
    schedule = optax.linear_schedule(cfg.lr, cfg.lr_end, cfg.iterations * cfg.updates_per_iteration)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    example = {
        "obs": jnp.zeros(env.obs_shape, jnp.float32),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
        "obs_next": jnp.zeros(env.obs_shape, jnp.float32),
    }

    def greedy(params):
        return lambda obs: jnp.argmax(net.apply(params, obs), axis=-1)

    def init(key: chex.PRNGKey) -> Carry:
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        params = net.init(k_net, obs)
        buf = jaxbuf.PrioritizedVectorReplayBuffer.create(
            example, cfg.buffer_size, cfg.num_envs, alpha=cfg.alpha, beta=cfg.beta0
        )
        curve = jnp.full((cfg.iterations,), jnp.nan, jnp.float32)
        return Carry(
            buf,
            params,
            params,
            tx.init(params),
            env_state,
            obs,
            jax.random.key_data(key),
            jnp.int32(0),
            curve,
            curve,
            jnp.full((2,), jnp.nan, jnp.float32),
            params,
            jnp.float32(-jnp.inf),
        )

    def loss_fn(params, target, batch, partial, discount, obs_boot):
        """Importance-weighted Huber loss of double-DQN n-step targets; aux: TD errors."""
        q = jnp.take_along_axis(net.apply(params, batch["obs"]), batch["act"][:, None], -1)
        a_star = jnp.argmax(net.apply(params, obs_boot), -1)
        q_boot = jnp.take_along_axis(net.apply(target, obs_boot), a_star[:, None], -1)
        y = jax.lax.stop_gradient(partial + discount * q_boot[:, 0])
        td = q[:, 0] - y
        return jnp.mean(batch["weight"] * optax.huber_loss(td)), td

    def update(c: Carry, key: chex.PRNGKey) -> Carry:
        batch, idx = c.buf.sample(key, cfg.batch_size)
        boot, partial, discount = jaxbuf.nstep_targets(c.buf, idx, cfg.gamma, cfg.n_step)
        obs_boot = c.buf.get(boot, "obs_next")
        grads, td = jax.grad(loss_fn, has_aux=True)(
            c.params, c.target, batch, partial, discount, obs_boot
        )
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        return c._replace(
            params=optax.apply_updates(c.params, updates),
            opt_state=opt_state,
            buf=c.buf.update_weight(idx, jnp.abs(td)),
        )

    def learn(c: Carry, key: chex.PRNGKey) -> Carry:
        keys = jax.random.split(key, cfg.updates_per_iteration)
        return jax.lax.scan(lambda c, k: (update(c, k), None), c, keys)[0]

    def act(c: Carry, key: chex.PRNGKey) -> jax.Array:
        k_eps, k_rand = jax.random.split(key)
        frac = jnp.clip(c.iteration / (cfg.eps_fraction * cfg.iterations), 0.0, 1.0)
        eps = cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)
        explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < eps
        rand = jax.random.randint(k_rand, (cfg.num_envs,), 0, env.num_actions)
        return jnp.where(explore, rand, greedy(c.params)(c.obs))

    def iteration(c: Carry, _) -> tuple[Carry, None]:
        it = c.iteration
        key, k_act, k_env, k_learn, k_eval = jax.random.split(jax.random.wrap_key_data(c.key), 5)
        action = act(c, k_act)
        s = env.step(k_env, c.env_state, action)
        buf, res = c.buf.add(
            {
                "obs": c.obs,
                "act": action,
                "rew": s.rew,
                "terminated": s.terminated,
                "truncated": s.truncated,
                "obs_next": s.obs_next,
            }
        )
        ended = s.terminated | s.truncated
        n_ended = jnp.sum(ended)
        train_ret = jnp.where(
            n_ended > 0, jnp.sum(res.episode_return * ended) / jnp.maximum(n_ended, 1), jnp.nan
        )
        beta = cfg.beta0 + (1.0 - cfg.beta0) * it / cfg.iterations
        c = c._replace(
            buf=buf.set_beta(beta), env_state=s.state, obs=s.obs, key=jax.random.key_data(key)
        )
        c = jax.lax.cond(it >= cfg.learning_starts, learn, lambda c, _: c, c, k_learn)
        sync = it % cfg.target_every == 0
        c = c._replace(target=jax.tree.map(lambda t, p: jnp.where(sync, p, t), c.target, c.params))

        do_eval = (it + 1) % cfg.eval_every == 0
        eval_ret = jax.lax.cond(
            do_eval,
            lambda: env.evaluate(greedy(c.params), k_eval, cfg.eval_episodes),
            lambda: jnp.float32(jnp.nan),
        )
        better = do_eval & (eval_ret >= c.best_eval)
        shown = jnp.stack(
            [
                jnp.where(jnp.isnan(train_ret), c.shown[0], train_ret),
                jnp.where(do_eval, eval_ret, c.shown[1]),
            ]
        )
        c = c._replace(
            iteration=it + 1,
            train_curve=c.train_curve.at[it].set(train_ret),
            eval_curve=c.eval_curve.at[it].set(eval_ret),
            shown=shown,
            best_params=jax.tree.map(lambda b, p: jnp.where(better, p, b), c.best_params, c.params),
            best_eval=jnp.where(better, eval_ret, c.best_eval),
        )
        if progress is not None:
            jax.debug.callback(
                progress.report, it, (it + 1) * cfg.env_steps_per_iteration, shown[0], shown[1]
            )
        jax.lax.cond(
            (it + 1) % cfg.ckpt_every == 0,
            lambda: io_callback(save, None, c, ordered=True),
            lambda: None,
        )
        return c, None

    def run(c: Carry, num: int) -> Carry:
        return jax.lax.scan(iteration, c, None, length=num)[0]

    def evaluate(params, key: chex.PRNGKey, episodes: int) -> jax.Array:
        return env.evaluate(greedy(params), key, episodes)

    return Agent(jax.jit(init), jax.jit(run, static_argnums=1), jax.jit(evaluate, static_argnums=2))


class RunCheckpoints:
    """The run's checkpoints in ``directory``: step ``s`` holds the state after ``s``
    iterations as two orbax items, ``buffer`` (the replay buffer) and ``state`` (the rest of
    :class:`Carry`), plus ``config.json`` beside them so a resume cannot mix configurations.
    """

    def __init__(self, directory: Path, cfg: Config, resume: bool):
        self.config = dataclasses.asdict(cfg)
        config_file = directory / "config.json"
        if resume:
            saved = json.loads(config_file.read_text()) if config_file.exists() else None
            if saved != self.config:
                raise SystemExit(
                    f"--resume: {directory} holds a run with config {saved}, this run has "
                    f"{self.config}; pass the same options (or start over without --resume)"
                )
        elif directory.exists():
            shutil.rmtree(directory)  # a run without --resume starts over
        directory.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(self.config, indent=1))
        self.manager = jaxbuf.checkpoint.checkpoint_manager(directory, max_to_keep=2)

    def save(self, carry: Carry) -> None:
        """Host side (called from ``io_callback`` with NumPy leaves, or eagerly)."""
        state = carry._asdict()
        self.manager.save(int(state["iteration"]), buffer=state.pop("buf"), state=state)

    def latest_step(self) -> int | None:
        self.manager.wait()
        return self.manager.latest_step()

    def restore(self, like: Carry) -> Carry:
        """The latest checkpoint, laid out like ``like`` (a freshly initialised carry)."""
        state = like._asdict()
        restored = self.manager.restore(like=state.pop("buf"), state=state)
        return Carry(buf=restored.buffer, **restored["state"])

    def close(self) -> None:
        self.manager.close()


def params_checksum(params: Any) -> float:
    """Sum of |w| over all parameters (float64): a fingerprint to compare runs."""
    return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(params)))


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "dqn_cartpole.png")
    parser.add_argument(
        "--ckpt-dir",
        type=Path,
        default=RESULTS_DIR / "dqn_ckpt",
        help="checkpoint directory (replaced unless --resume)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --ckpt-dir"
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop once N iterations are done (to demonstrate --resume)",
    )
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    env = VecEnv("CartPole-v1", cfg.num_envs)
    ckpt = RunCheckpoints(args.ckpt_dir, cfg, args.resume)
    key = jax.random.key(args.seed)

    clock = Stopwatch()
    progress = Progress(cfg.iterations, "DQN CartPole-v1")
    agent = make_agent(cfg, env, progress, ckpt.save)
    print("compiling the initial state (networks, buffer, environments)...", flush=True)
    carry = agent.init(key)
    if args.resume:
        carry = ckpt.restore(carry)
    done = int(carry.iteration)
    progress.skip_to(done)
    stop = cfg.iterations if args.stop_after is None else min(args.stop_after, cfg.iterations)
    if stop > done:
        with clock.phase("compile"):
            print(
                f"compiling the training loop ({stop - done:,} iterations in one lax.scan; "
                "about 10-20 s on a CPU)...",
                flush=True,
            )
            compiled = agent.run.lower(carry, stop - done).compile()
        print(f"compiled in {clock.times['compile_wall_s']} s; training...", flush=True)
        with clock.phase("train"):
            carry = jax.block_until_ready(compiled(carry))
    progress.close()
    if ckpt.latest_step() != int(carry.iteration):
        ckpt.save(jax.device_get(carry))
    ckpt.close()

    k_eval = jax.random.fold_in(key, 1)
    print(f"final greedy evaluation ({cfg.final_eval_episodes} episodes, compiling)...", flush=True)
    final = float(agent.evaluate(carry.params, k_eval, cfg.final_eval_episodes))
    best = float(agent.evaluate(carry.best_params, k_eval, cfg.final_eval_episodes))
    n = int(carry.iteration)
    summary = report(
        Path(__file__).name,
        "DQN",
        "DQN on CartPole-v1 (jaxbuf prioritized n-step replay)",
        args.out,
        cfg,
        np.asarray(carry.train_curve)[:n],
        np.asarray(carry.eval_curve)[:n],
        final,
        clock.times,
        argv,
        extra={
            "iterations_done": n,
            "resumed_from_iteration": done if args.resume else None,
            "best_snapshot_eval_return": best,
            "best_snapshot_selected_eval": float(carry.best_eval),
            "buffer_size": int(carry.buf.size),
            "params_checksum": params_checksum(carry.params),
            "checkpoints": ckpt_steps(args.ckpt_dir),
        },
    )
    print(f"best evaluated snapshot: {best:.1f} over {cfg.final_eval_episodes} fresh episodes")
    return summary


def ckpt_steps(directory: Path) -> list[int]:
    """The committed checkpoint steps in ``directory`` (for the summary)."""
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


if __name__ == "__main__":
    main()
