"""Random draws that XLA compiles cheaply, bit for bit those of ``jax.random``.

XLA:CPU compiles a threefry draw of a 4-D or 5-D shape several times slower
than one of the same size in one dimension (measured: the ten weight draws
of a 14-layer network, 7.3 s against 1.8 s; a network's initialisation was
60 % of its whole training program's compile). Element ``i`` of a threefry
draw depends only on the key and ``i``, the position in row-major order,
whether ``jax_threefry_partitionable`` is on (a counter per position) or off
(the flat draw reshaped), so drawing flat and reshaping gives the same bits
(tested for both settings). A scalar is the exception: its draw is not the
first of a flat one, so it is drawn as it is.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat."""
    shape = tuple(shape)
    if not shape:  # a scalar's draw is not the first of a flat one
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    flat = jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval)
    return flat.reshape(shape)


SHARED_MAX = 1 << 17
"""Draws of at most this many values share one program loop (padded to the largest of them)."""


def uniform_many(requests: list[tuple[jax.Array, tuple[int, ...], float, float]]) -> list[jax.Array]:
    """float32 ``uniform(key, shape, minval, maxval)`` for each request, bit for bit, in fewer loops.

    Each threefry draw compiles to a loop of its own; a network's weights
    are a dozen draws. Element ``i`` depends on the key and ``i`` only, so
    the draws of up to :data:`SHARED_MAX` values are made as rows of one
    draw vmapped over their keys (and bounds), padded to the longest, and
    each keeps the head of its row; larger ones are drawn alone (the padding
    would cost more than the loop).
    """
    out: list[jax.Array | None] = [None] * len(requests)
    shared = [i for i, (_, shape, _, _) in enumerate(requests) if shape and math.prod(shape) <= SHARED_MAX]
    if len(shared) < 2:  # one draw has nothing to share a loop with
        shared = []
    alone = set(range(len(requests))) - set(shared)
    for i, (key, shape, lo, hi) in enumerate(requests):
        if i in alone:
            out[i] = uniform(key, shape, jnp.float32, lo, hi)
    if shared:
        width = max(math.prod(requests[i][1]) for i in shared)
        keys = jnp.stack([requests[i][0] for i in shared])
        lows = jnp.asarray([requests[i][2] for i in shared], jnp.float32)
        highs = jnp.asarray([requests[i][3] for i in shared], jnp.float32)
        rows = jax.vmap(lambda k, lo, hi: jax.random.uniform(k, (width,), jnp.float32, lo, hi))(keys, lows, highs)
        for row, i in zip(rows, shared, strict=True):
            shape = requests[i][1]
            out[i] = row[: math.prod(shape)].reshape(shape)
    return out
