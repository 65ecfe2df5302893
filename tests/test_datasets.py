"""``jaxbuf.datasets.from_d4rl``: episode rules of the D4RL convention and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import jaxbuf
from jaxbuf.datasets import d4rl_transitions, from_d4rl
from jaxbuf.errors import InputError


def d4rl(n=7, next_obs=True):
    """Two episodes: rows 0-2 end by a terminal, rows 3-6 by a timeout; obs = [row, -row]."""
    def obs_of(row):
        return np.stack([row, -row], axis=1).astype(np.float32)

    obs = obs_of(np.arange(n))
    data = {
        "observations": obs,
        "actions": np.arange(n, dtype=np.float32)[:, None] * 0.5,
        "rewards": np.arange(n, dtype=np.float64),
        "terminals": np.asarray([0, 0, 1, 0, 0, 0, 0], bool)[:n],
        "timeouts": np.asarray([0, 0, 0, 0, 0, 0, 1], bool)[:n],
        "infos/qpos": np.zeros((n, 3)),
    }
    if next_obs:
        data["next_observations"] = obs_of(np.arange(1, n + 1))
    return data


def test_next_observations_and_silent_resets():
    data = d4rl()
    data["next_observations"][4] = 99.0  # row 5 does not follow row 4: a reset
    rows = d4rl_transitions(data)
    np.testing.assert_array_equal(rows["terminated"], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows["truncated"], [0, 0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(rows["obs_next"], data["next_observations"])
    assert rows["rew"].dtype == np.float32


def test_buffer_holds_the_episodes():
    buf = from_d4rl(d4rl())
    assert isinstance(buf, jaxbuf.ReplayBuffer) and len(buf) == 7 and buf.maxsize == 7
    np.testing.assert_array_equal(buf.next(np.arange(7)), [1, 2, 2, 4, 5, 6, 6])
    np.testing.assert_array_equal(buf[np.arange(7)]["obs_next"][:, 0], np.arange(1, 8))
    assert "infos/qpos" not in buf.fields()


def test_without_next_observations_timeout_rows_are_dropped():
    rows = d4rl_transitions(d4rl(next_obs=False))
    # Row 6 (timeout) has no known successor: dropped, and row 5 ends its episode.
    np.testing.assert_array_equal(rows["obs"][:, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(rows["obs_next"][:, 0], [1, 2, 2, 4, 5, 6])
    np.testing.assert_array_equal(rows["truncated"], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(rows["terminated"], [0, 0, 1, 0, 0, 0])


def test_buffer_options_pass_through():
    buf = from_d4rl(d4rl(), buffer_cls=jaxbuf.PrioritizedReplayBuffer, size=16, alpha=0.6, beta=0.4)
    assert isinstance(buf, jaxbuf.PrioritizedReplayBuffer) and buf.maxsize == 16
    vec = from_d4rl(d4rl(), size=16, buffer_num=2)
    np.testing.assert_array_equal(vec.lengths, [3, 4])  # episode 0 -> sub-buffer 0, 1 -> 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"rewards": np.zeros(6)}, r"field 'rewards' has 6 rows, 'observations' has 7"),
        ({"terminals": np.asarray([0, 0, 2, 0, 0, 0, 0])}, r"field 'terminals' must hold 0/1"),
        ({"actions": np.asarray(["a"] * 7)}, r"field 'actions' has dtype <U1"),
        ({"next_observations": np.zeros((7, 3))}, r"field 'next_observations' has shape"),
    ],
)
def test_bad_fields_are_named(change, match):
    with pytest.raises(InputError, match=match):
        from_d4rl(d4rl() | change)


def test_bad_values_name_the_episode():
    data = d4rl()
    data["rewards"][4] = np.nan
    with pytest.raises(InputError, match=r"'rewards' is not finite .* row 4 in episode 1 .*step 1"):
        from_d4rl(data)
    data = d4rl()
    data["timeouts"] = np.asarray([0, 0, 0, 0, 0, 3, 1])
    with pytest.raises(InputError, match=r"'timeouts' must hold 0/1.*row 5 in episode 1"):
        from_d4rl(data)
    with pytest.raises(InputError, match=r"missing field\(s\) \['terminals'\]"):
        from_d4rl({k: v for k, v in d4rl().items() if k != "terminals"})
