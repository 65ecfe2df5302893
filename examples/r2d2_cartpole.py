"""R2D2-style recurrent DQN on CartPole-v1 with the velocities hidden, from prioritized sequences.

The agent sees only the cart position and the pole angle (gymnax's observation without its
two velocity entries), so a memoryless policy cannot tell which way the pole is moving. An
LSTM Q-network can, by comparing successive observations. One compiled ``lax.scan`` runs
the whole run; an iteration

1. steps ``num_envs`` vmapped environments once, epsilon-greedy on the network's Q-values,
   carrying each env's LSTM state (reset to zeros when its episode ends), and adds the
   steps to a ``jaxbuf.PrioritizedVectorReplayBuffer`` (one sub-buffer per env). Besides
   the usual fields every step stores ``lstm``, the recurrent state the actor held *before*
   that step, ``f32[2, hidden]`` (the LSTM's ``c`` and ``h``);
2. makes ``updates_per_iteration`` updates, each on ``batch_size`` windows of ``length``
   steps drawn with ``buf.sample_sequences(key, B, length, burn_in=burn_in,
   priority=priority)``; windows never cross an episode end (they are cut there,
   ``seq.mask``). Online and target networks start from the stored state of each window's
   first step, unroll the ``burn_in`` steps without gradient (the state is refreshed, not
   learnt from), then the rest. Targets are double-Q ``n_step`` returns inside the window
   (``jaxbuf.returns.sequence_nstep``): ``terminated`` stops without bootstrap,
   ``truncated`` (the 500-step limit) or the window's end bootstraps from the value of the
   stored ``obs_next`` with the state carried so far. The Huber loss is weighted by the
   window's importance weight (``seq.weight``); the window's new priority is R2D2's
   ``eta * max + (1 - eta) * mean`` of its absolute TD errors after the burn-in
   (``buf.update_sequence_weight``). With ``priority="start"`` (default) it is written
   to the window's first slot, which gives R2D2's law (windows drawn in proportion to
   their own priority), and a window with no step after its burn-in gets priority 0; with
   ``--set priority=sum`` it is written to each of those steps and a window is drawn in
   proportion to the sum of its steps' priorities (a window cut short by its episode's
   end is drawn less);
3. copies the online parameters to the target network every ``target_every`` iterations
   and evaluates the greedy policy every ``eval_every`` iterations.

``--feedforward`` trains the same pipeline with the LSTM replaced by a dense layer (the state
is carried and stored but ignored): the memoryless baseline, same observations and budget.

Run ``python examples/r2d2_cartpole.py`` (recurrent), ``--feedforward``, ``--compare --seeds
0 1`` (both agents for each seed, one figure with both curves), ``--smoke`` (tiny, for tests).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (  # the examples/ folder
    Progress,
    Stopwatch,
    VecEnv,
    base_parser,
    report,
    with_overrides,
)

import jaxbuf
from jaxbuf.returns import sequence_nstep

VISIBLE = (0, 2)
"""CartPole observation entries the agent sees: cart position and pole angle."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters. One iteration = one step of every env + ``updates_per_iteration``
    updates; ``target_every`` and ``eval_every`` count iterations."""

    num_envs: int = 16
    hidden: int = 64
    iterations: int = 8000
    updates_per_iteration: int = 4
    buffer_size: int = 40_000
    batch_size: int = 32
    length: int = 20
    burn_in: int = 5
    n_step: int = 3
    gamma: float = 0.99
    lr: float = 1e-3
    lr_end: float = 1e-5
    alpha: float = 0.6
    beta0: float = 0.4
    eta: float = 0.9
    priority: str = "start"
    learning_starts: int = 50
    target_every: int = 25
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.3
    eval_every: int = 100
    eval_episodes: int = 16
    final_eval_episodes: int = 64
    hide_velocities: bool = True

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs


SMOKE = Config(
    num_envs=4,
    hidden=8,
    iterations=24,
    buffer_size=512,
    batch_size=4,
    length=8,
    burn_in=2,
    learning_starts=8,
    target_every=8,
    eval_every=12,
    eval_episodes=2,
    final_eval_episodes=2,
)


class QNetwork(nn.Module):
    """``(state, obs [..., 2]) -> (state, Q [..., A])`` with ``state`` f32[..., 2, hidden].

    Dense + ReLU, then an LSTM cell (``recurrent``) or a second Dense + ReLU (the state
    passes through unchanged), then a linear head.
    """

    num_actions: int
    hidden: int
    recurrent: bool

    @nn.compact
    def __call__(self, state: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Dense(self.hidden)(obs))
        if self.recurrent:
            (c, h), x = nn.OptimizedLSTMCell(self.hidden)((state[..., 0, :], state[..., 1, :]), x)
            state = jnp.stack([c, h], axis=-2)
        else:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return state, nn.Dense(self.num_actions)(x)


class Carry(NamedTuple):
    """The whole training state (a pytree). ``lstm`` is the actors' recurrent state
    ``[num_envs, 2, hidden]``; the curves hold one value per iteration (NaN: none)."""

    buf: Any
    params: Any
    target: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    lstm: jax.Array
    key: jax.Array
    iteration: jax.Array
    train_curve: jax.Array
    eval_curve: jax.Array
    shown: jax.Array


class Agent(NamedTuple):
    """``init(key) -> Carry``, ``run(carry) -> Carry`` (every iteration) and
    ``evaluate(params, key, episodes) -> mean return``, all jitted."""

    init: Any
    run: Any
    evaluate: Any


def visible(cfg: Config):
    """``obs [..., 4] -> [..., 2]``: position and angle (all four without ``hide_velocities``)."""
    if not cfg.hide_velocities:
        return lambda obs: obs
    return lambda obs: obs[..., jnp.array(VISIBLE)]


def update_priorities(buf, seq, train: jax.Array, td: jax.Array, eta: float, law: str):
    """R2D2's window priority ``P = eta * max|td| + (1 - eta) * mean|td|`` over ``train``
    (the steps after the burn-in), stored as the sampling law ``law`` reads it.

    ``law="sum"``: every step in ``train`` gets ``P`` (``on="steps"``). ``law="start"``: the
    window's first slot gets ``P`` (``on="start"``); a window that starts in the last
    ``burn_in`` steps of its episode has no step after the burn-in, and its start gets
    priority 0 (leaf ``eps ** alpha``) instead of keeping ``max_prio``, which would draw it
    again and again for nothing. Rows not found change nothing.
    """
    if law == "sum":
        return buf.update_sequence_weight(seq.indices, train, td, eta=eta, on="steps")
    idle = ~jnp.any(train, axis=1, keepdims=True)
    return buf.update_sequence_weight(
        seq.indices,
        jnp.where(idle, seq.mask, train),
        jnp.where(idle, 0.0, td),
        eta=eta,
        on="start",
    )


def make_agent(cfg: Config, env: VecEnv, recurrent: bool, progress: Any = None) -> Agent:
    """The jitted pieces; ``progress(it, env_steps, train, eval)`` is called every iteration."""
    net = QNetwork(env.num_actions, cfg.hidden, recurrent)
    schedule = optax.linear_schedule(cfg.lr, cfg.lr_end, cfg.iterations * cfg.updates_per_iteration)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    hide = visible(cfg)
    obs_dim = len(VISIBLE) if cfg.hide_velocities else env.obs_shape[0]
    example = {
        "obs": jnp.zeros(obs_dim, jnp.float32),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
        "obs_next": jnp.zeros(obs_dim, jnp.float32),
        "lstm": jnp.zeros((2, cfg.hidden), jnp.float32),  # the actor's state before the step
    }
    zero_state = lambda n: jnp.zeros((n, 2, cfg.hidden), jnp.float32)

    def init(key: chex.PRNGKey) -> Carry:
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        params = net.init(k_net, zero_state(cfg.num_envs), hide(obs))
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
            hide(obs),
            zero_state(cfg.num_envs),
            jax.random.key_data(key),
            jnp.int32(0),
            curve,
            curve,
            jnp.full((2,), jnp.nan, jnp.float32),
        )

    def unroll(params, state, obs, obs_next):
        """Q of each step and of its ``obs_next``, ``[B, L, A]`` each, from ``state`` [B, 2, H].

        The state entering step ``burn_in`` is cut from the gradient: the burn-in steps only
        refresh the stored state (R2D2).
        """

        def step(s, x):
            t, o, o_next = x
            s = jnp.where(t == cfg.burn_in, jax.lax.stop_gradient(s), s)
            s, q = net.apply(params, s, o)
            _, q_next = net.apply(params, s, o_next)
            return s, (q, q_next)

        xs = (jnp.arange(cfg.length), jnp.swapaxes(obs, 0, 1), jnp.swapaxes(obs_next, 0, 1))
        _, (q, q_next) = jax.lax.scan(step, state, xs)
        return jnp.swapaxes(q, 0, 1), jnp.swapaxes(q_next, 0, 1)

    def loss_fn(params, target, seq):
        b = seq.batch
        # online and target network in one unroll (a leading axis of 2 on the parameters)
        both = jax.tree.map(lambda p, t: jnp.stack([p, jax.lax.stop_gradient(t)]), params, target)
        q, q_next = jax.vmap(unroll, in_axes=(0, None, None, None))(
            both, b["lstm"][:, 0], b["obs"], b["obs_next"]
        )
        q, q_next, q_next_t = q[0], q_next[0], q_next[1]
        a_star = jnp.argmax(q_next, axis=-1)
        boot = jnp.take_along_axis(q_next_t, a_star[..., None], -1)[..., 0]
        y, _ = sequence_nstep(
            b["rew"], boot, b["terminated"], b["truncated"], seq.mask, cfg.gamma, cfg.n_step
        )
        q_sa = jnp.take_along_axis(q, b["act"][..., None], -1)[..., 0]
        td = q_sa - jax.lax.stop_gradient(y)
        train = seq.mask & ~seq.burn_in  # the steps the loss uses
        per_row = jnp.sum(optax.huber_loss(td) * train, axis=1)
        loss = jnp.sum(seq.weight * per_row) / jnp.maximum(jnp.sum(train), 1)
        return loss, (td, train)

    def update(c: Carry, key: chex.PRNGKey) -> Carry:
        seq = c.buf.sample_sequences(
            key, cfg.batch_size, cfg.length, burn_in=cfg.burn_in, priority=cfg.priority
        )
        grads, (td, train) = jax.grad(loss_fn, has_aux=True)(c.params, c.target, seq)
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        buf = update_priorities(c.buf, seq, train, td, cfg.eta, cfg.priority)
        return c._replace(
            params=optax.apply_updates(c.params, updates), opt_state=opt_state, buf=buf
        )

    def learn(c: Carry, key: chex.PRNGKey) -> Carry:
        keys = jax.random.split(key, cfg.updates_per_iteration)
        return jax.lax.scan(lambda c, k: (update(c, k), None), c, keys)[0]

    def iteration(c: Carry, _) -> tuple[Carry, None]:
        it = c.iteration
        key, k_eps, k_rand, k_env, k_learn, k_eval = jax.random.split(
            jax.random.wrap_key_data(c.key), 6
        )
        lstm_next, q = net.apply(c.params, c.lstm, c.obs)
        frac = jnp.clip(it / (cfg.eps_fraction * cfg.iterations), 0.0, 1.0)
        eps = cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)
        explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < eps
        rand = jax.random.randint(k_rand, (cfg.num_envs,), 0, env.num_actions)
        action = jnp.where(explore, rand, jnp.argmax(q, axis=-1))
        s = env.step(k_env, c.env_state, action)
        buf, res = c.buf.add(
            {
                "obs": c.obs,
                "act": action,
                "rew": s.rew,
                "terminated": s.terminated,
                "truncated": s.truncated,
                "obs_next": hide(s.obs_next),
                "lstm": c.lstm,
            }
        )
        ended = s.terminated | s.truncated
        n_ended = jnp.sum(ended)
        train_ret = jnp.where(
            n_ended > 0, jnp.sum(res.episode_return * ended) / jnp.maximum(n_ended, 1), jnp.nan
        )
        beta = cfg.beta0 + (1.0 - cfg.beta0) * it / cfg.iterations
        c = c._replace(
            buf=buf.set_beta(beta),
            env_state=s.state,
            obs=hide(s.obs),
            lstm=jnp.where(ended[:, None, None], 0.0, lstm_next),
            key=jax.random.key_data(key),
        )
        c = jax.lax.cond(it >= cfg.learning_starts, learn, lambda c, _: c, c, k_learn)
        sync = it % cfg.target_every == 0
        c = c._replace(target=jax.tree.map(lambda t, p: jnp.where(sync, p, t), c.target, c.params))
        do_eval = (it + 1) % cfg.eval_every == 0
        eval_ret = jax.lax.cond(
            do_eval,
            lambda: evaluate(c.params, k_eval, cfg.eval_episodes),
            lambda: jnp.float32(jnp.nan),
        )
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
        )
        if progress is not None:
            jax.debug.callback(progress, it, (it + 1) * cfg.num_envs, shown[0], shown[1])
        return c, None

    def evaluate(params, key: chex.PRNGKey, episodes: int) -> jax.Array:
        """Mean return of the greedy recurrent policy over ``episodes`` parallel episodes."""
        k_reset, k_steps = jax.random.split(key)
        obs, state = env.reset(k_reset, episodes)

        def body(carry, k):
            obs, state, lstm, ret, alive = carry
            lstm, q = net.apply(params, lstm, hide(obs))
            s = env.step(k, state, jnp.argmax(q, axis=-1))
            ret = ret + s.rew * alive
            alive = alive & ~(s.terminated | s.truncated)
            return (s.obs, s.state, lstm, ret, alive), None

        init = (obs, state, zero_state(episodes), jnp.zeros(episodes), jnp.ones(episodes, bool))
        keys = jax.random.split(k_steps, env.max_steps)
        (_, _, _, ret, _), _ = jax.lax.scan(body, init, keys)
        return ret.mean()

    def run(c: Carry) -> Carry:
        return jax.lax.scan(iteration, c, None, length=cfg.iterations)[0]

    return Agent(jax.jit(init), jax.jit(run), jax.jit(evaluate, static_argnums=2))


def train(cfg: Config, recurrent: bool, seeds: list[int]) -> list[dict]:
    """Compile once, run every seed; one record per seed (curves, final evaluation, times)."""
    env = VecEnv("CartPole-v1", cfg.num_envs)
    name = "R2D2 (LSTM)" if recurrent else "feed-forward"
    bar: list[Progress] = []  # the current seed's progress bar
    agent = make_agent(cfg, env, recurrent, lambda *a: bar[-1].report(*a))
    records = []
    for i, seed in enumerate(seeds):
        clock = Stopwatch()
        key = jax.random.key(seed)
        carry = agent.init(key)
        if i == 0:
            print(f"{name}: compiling the training loop ...", flush=True)
            with clock.phase("compile"):
                compiled = agent.run.lower(carry).compile()
            print(f"{name}: compiled in {clock.times['compile_wall_s']} s", flush=True)
        bar.append(Progress(cfg.iterations, f"{name} seed {seed}"))
        with clock.phase("train"):
            carry = jax.block_until_ready(compiled(carry))
        bar[-1].close()
        k_eval = jax.random.fold_in(key, 1)
        final = float(agent.evaluate(carry.params, k_eval, cfg.final_eval_episodes))
        records.append(
            {
                "agent": name,
                "recurrent": recurrent,
                "seed": seed,
                "final_eval_return": final,
                "train_curve": np.asarray(carry.train_curve),
                "eval_curve": np.asarray(carry.eval_curve),
                "times": clock.times,
            }
        )
        print(f"{name} seed {seed}: greedy evaluation {final:.1f} ({clock.times})", flush=True)
    return records


def plot_compare(out: Path, cfg: Config, records: list[dict], command: str) -> None:
    """Greedy-evaluation curves of every run in one figure (PNG) and the numbers (JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {True: "tab:blue", False: "tab:orange"}
    rows = []
    for r in records:
        has = ~np.isnan(r["eval_curve"])
        steps = (np.nonzero(has)[0] + 1) * cfg.env_steps_per_iteration
        style = ["-", "--", ":", "-."][r["seed"] % 4]
        ax.plot(
            steps,
            r["eval_curve"][has],
            style,
            color=colors[r["recurrent"]],
            label=f"{r['agent']}, seed {r['seed']}",
        )
        rows.append(
            {
                "agent": r["agent"],
                "seed": r["seed"],
                "final_eval_return": r["final_eval_return"],
                **r["times"],
                "eval_steps": steps.tolist(),
                "eval_return": r["eval_curve"][has].astype(float).tolist(),
            }
        )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return")
    ax.set_title("CartPole-v1 with velocities hidden: LSTM vs feed-forward")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    summary = {"command": command, "config": dataclasses.asdict(cfg), "runs": rows}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = base_parser(__doc__.splitlines()[0], "r2d2_cartpole.png")
    parser.add_argument(
        "--feedforward", action="store_true", help="the memoryless baseline (no LSTM)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="train both agents, one figure with both curves"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds to run (default: --seed)"
    )
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    args_given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "examples/r2d2_cartpole.py", *args_given])
    if args.compare:
        records = train(cfg, True, seeds) + train(cfg, False, seeds)
        plot_compare(args.out, cfg, records, command)
        print(f"curves: {args.out}", flush=True)
        return records
    records = train(cfg, not args.feedforward, seeds)
    r = records[-1]
    report(
        Path(__file__).name,
        r["agent"],
        f"{r['agent']} on CartPole-v1, velocities hidden (jaxbuf prioritized sequences)",
        args.out,
        cfg,
        r["train_curve"],
        r["eval_curve"],
        r["final_eval_return"],
        r["times"],
        argv,
        extra={"seed": r["seed"]},
    )
    return records


if __name__ == "__main__":
    main()
