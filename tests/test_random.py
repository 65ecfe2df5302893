"""The unrolled Threefry uniform draws equal JAX's own, bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbuf._core.random import uniform


@pytest.mark.parametrize("n", [1, 7, 256, 1000])
def test_unrolled_uniform_equals_jax_random_uniform(n):
    for seed in range(3):
        for key in (jax.random.key(seed), jax.random.PRNGKey(seed)):
            got = jax.jit(lambda k: uniform(k, n, jnp.float32))(key)  # noqa: B023
            np.testing.assert_array_equal(got, jax.random.uniform(key, (n,)))
    # other dtypes defer to jax.random.uniform
    assert uniform(jax.random.key(0), 3, jnp.float16).dtype == jnp.float16


def test_other_key_implementations_defer_to_jax():
    key = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(uniform(key, 8, jnp.float32), jax.random.uniform(key, (8,)))
