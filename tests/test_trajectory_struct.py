"""Trajectory: validation, T+E trimming, flattening order, payload round trip."""

from __future__ import annotations

import numpy as np
import pytest
from trajectory_helpers import make_traj, row_codes

from jaxbuf.trajectory import Trajectory


def test_flatten_hand_worked_t_plus_e_trim_and_row_order():
    # T=4 steps, B=3 envs, E=2 epochs: dones rows are [reset, d0, d1, reset, d2, d3].
    T, B = 4, 3
    rewards = np.arange(T * B, dtype=np.float32).reshape(T, B, 1)
    dones = np.array([9, 0, 1, 9, 2, 3])[:, None, None].repeat(B, 1)  # value = step or 9
    traj = Trajectory(
        rewards=rewards, dones=dones.astype(np.int64), prev_values=dones.astype(np.float32)
    )
    flat = traj.flatten()
    assert list(flat) == ["rewards", "dones", "prev_values"]
    # flat row i <-> (t, b) = (i // B, i % B)
    np.testing.assert_array_equal(flat["rewards"][:, 0], np.arange(T * B))
    np.testing.assert_array_equal(flat["dones"][:, 0], np.repeat(np.arange(T), B))
    np.testing.assert_array_equal(flat["prev_values"][:, 0], np.repeat(np.arange(T), B))


def test_flatten_keeps_t_row_fields_and_drops_low_rank_and_empty_dicts():
    traj = Trajectory(
        rewards=np.ones((2, 2, 1)),
        dones=np.zeros((2, 2, 1), bool),
        versions=np.ones(3),
        curr_obs={"a": np.ones((2, 2)), "scalar": np.ones(2)},
        next_obs={},
    )
    flat = traj.flatten()
    assert list(flat) == ["rewards", "dones", "curr_obs"]
    assert flat["dones"].shape == (4, 1)
    assert list(flat["curr_obs"]) == ["a"] and flat["curr_obs"]["a"].shape == (4,)


def test_helper_trajectory_rows_identify_themselves():
    traj = make_traj(tag=7, T=6, B=2, E=3, prev_values=True)
    flat = traj.flatten()
    codes = row_codes(7, 6, 2).reshape(-1)
    np.testing.assert_array_equal(flat["rewards"][:, 0], codes)
    np.testing.assert_array_equal(flat["dones"][:, -1], codes % 3 == 0)
    np.testing.assert_array_equal(flat["prev_values"][:, 0], codes)


def test_validate_reports_geometry_and_counts_prev_logprobs():
    traj = Trajectory(rewards=np.zeros((5, 3, 2)), prev_logprobs=np.zeros((5, 3, 7)))
    shape = traj.validate()
    assert (shape.T, shape.B, shape.num_samples, shape.shape) == (5, 3, 15, (5, 3, 7))
    assert Trajectory(rewards=np.zeros((5, 3, 2))).validate().shape == (5, 3, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "rewards is required"),
        ({"rewards": np.zeros(4)}, "rewards must have shape"),
        ({"rewards": np.zeros((0, 2, 1))}, "T, B > 0"),
        ({"rewards": np.zeros((4, 2)), "actions": np.zeros((4, 3))}, "actions: expected shape"),
        ({"rewards": np.zeros((4, 2)), "actions": np.zeros((5, 2))}, "actions: expected T rows"),
        ({"rewards": np.zeros((4, 2)), "dones": np.zeros((7, 2))}, "T % E != 0"),
        ({"rewards": np.zeros((4, 2)), "dones": np.zeros((3, 2))}, "dones: expected T or T + E"),
        (
            {"rewards": np.zeros((4, 2)), "curr_obs": {"x": np.zeros((4, 3, 1))}},
            "curr_obs['x']: expected shape",
        ),
    ],
)
def test_validate_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("+", r"\+")):
        Trajectory(**kwargs).validate()


def test_constructor_type_errors():
    with pytest.raises(ValueError, match="model_weights_id 'a/b' contains '/'"):
        Trajectory(model_weights_id="a/b")
    with pytest.raises(TypeError, match="model_weights_id must be a str"):
        Trajectory(model_weights_id=3)
    with pytest.raises(TypeError, match="max_episode_length must be an int"):
        Trajectory(max_episode_length=1.5)
    with pytest.raises(TypeError, match="curr_obs must be a dict"):
        Trajectory(curr_obs=[1])
    with pytest.raises(TypeError, match=r"rewards: expected a numeric or bool array"):
        Trajectory(rewards=np.array([["a"]]))


def test_payload_round_trip_order_and_unknown_field_warning():
    traj = make_traj(3, mwid="")
    payload = traj.to_payload()
    assert list(payload) == [
        "max_episode_length",
        "model_weights_id",
        "actions",
        "rewards",
        "terminations",
        "truncations",
        "dones",
        "prev_logprobs",
        "forward_inputs",
        "curr_obs",
        "next_obs",
    ]
    again = Trajectory.from_payload(payload)
    for name, value in payload.items():
        got = getattr(again, name)
        if isinstance(value, dict):
            assert list(got) == list(value)
            for k in value:
                np.testing.assert_array_equal(got[k], value[k])
        else:
            np.testing.assert_array_equal(got, value)
    with pytest.warns(UserWarning, match="ignoring unknown trajectory fields"):
        Trajectory.from_payload({**payload, "future_field": 1}, where="f.pt")


def test_copy_is_deep():
    traj = make_traj(1)
    copy = traj.copy()
    traj.rewards[...] = -1
    traj.curr_obs["states"][...] = -1
    assert copy.rewards.min() >= 0 and copy.curr_obs["states"].min() >= 0


def test_accepts_jax_arrays():
    import jax.numpy as jnp

    traj = Trajectory(rewards=jnp.ones((2, 2, 1)), curr_obs={"x": jnp.zeros((2, 2, 3))})
    assert isinstance(traj.rewards, np.ndarray) and traj.rewards.shape == (2, 2, 1)
    assert isinstance(traj.curr_obs["x"], np.ndarray)


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    import ml_dtypes

    traj = Trajectory(
        rewards=torch.ones(2, 2, 1, requires_grad=True),
        actions=torch.full((2, 2, 4), 1.5, dtype=torch.bfloat16),
    )
    assert traj.rewards.dtype == np.float32
    assert traj.actions.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(traj.actions.astype(np.float32), 1.5)
