"""Random draws that compile cheaply: the same bits as ``jax.random.uniform``."""

import jax
import jax.numpy as jnp
import pytest

from spenser_jax.genome import draws

SHAPES = [(), (7,), (3, 5), (2, 3, 4, 5), (2, 3, 4, 5, 2)]


@pytest.mark.parametrize("partitionable", [True, False])
def test_flat_draws_are_jax_random_uniform(partitionable):
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        for i, shape in enumerate(SHAPES):
            key = jax.random.fold_in(jax.random.key(3), i)
            got = jax.jit(lambda k, s=shape: draws.uniform(k, s, jnp.float32, -0.3, 0.7))(key)
            want = jax.jit(lambda k, s=shape: jax.random.uniform(k, s, jnp.float32, -0.3, 0.7))(key)
            assert got.shape == shape and bool(jnp.array_equal(got, want)), shape
    finally:
        jax.config.update("jax_threefry_partitionable", previous)


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_shared_loops_give_each_request_its_own_draw(make_key, monkeypatch):
    monkeypatch.setattr(draws, "SHARED_MAX", 64)  # so that one request below is drawn alone
    shapes = [(4, 3), (5,), (2, 2, 2, 2), (9, 9), ()]
    requests = [(jax.random.fold_in(make_key(1), i), s, -0.1 * (i + 1), 0.2 * (i + 1)) for i, s in enumerate(shapes)]
    got = jax.jit(lambda: draws.uniform_many(requests))()
    for (key, shape, lo, hi), value in zip(requests, got, strict=True):
        assert bool(jnp.array_equal(value, jax.random.uniform(key, shape, jnp.float32, lo, hi))), shape
    assert draws.uniform_many([]) == []
    one = draws.uniform_many(requests[:1])[0]
    assert bool(jnp.array_equal(one, jax.random.uniform(requests[0][0], (4, 3), jnp.float32, -0.1, 0.2)))
