"""Input encodings: from pixel intensities to spike trains."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from spenser_jax.genome import draws


def rate(key: jax.Array, images: jax.Array, time_steps: int) -> jax.Array:
    """Rate-codes intensities as independent Bernoulli spikes, drawn anew at every step (snntorch's ``spikegen.rate``).

    ``p`` is ``images / 255`` for ``uint8`` images, else ``images`` (assumed in
    [0, 1], not clipped). The draw is ``uniform(key, (T,) + images.shape) < p``:
    ``p = 0`` never spikes and ``p = 1`` always does, since the uniform samples
    lie in [0, 1). Under ``jax.jit`` mark ``time_steps`` static.

    Raises:
        TypeError: If ``time_steps`` is not a static integer.
        ValueError: If ``time_steps`` is negative.
    """
    time_steps = _time_steps(time_steps)
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        p = images.astype(jnp.float32) / 255
    else:
        p = images
    u = draws.uniform(key, (time_steps, *images.shape), jnp.float32)
    return (u < p).astype(jnp.float32)


def direct(images: jax.Array, time_steps: int) -> jax.Array:
    """Presents the intensities as a constant input current at every step (direct or "current" coding).

    The input is ``images / 255`` as ``float32`` for ``uint8`` images, else
    ``images`` itself, dtype included (assumed in [0, 1], not clipped): the
    same image gives :func:`rate`'s spike probabilities. Under ``jax.jit``
    mark ``time_steps`` static.

    Raises:
        TypeError: If ``time_steps`` is not a static integer, or the images
            are neither ``uint8`` nor floating point (other integers have no
            agreed scale: 0..255 taken as currents would be 255 times too
            strong).
        ValueError: If ``time_steps`` is negative.
    """
    time_steps = _time_steps(time_steps)
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        current = images.astype(jnp.float32) / 255
    elif jnp.issubdtype(images.dtype, jnp.floating):
        current = images
    else:
        raise TypeError(f"images must be uint8 (0..255) or floating point (0..1), got {images.dtype}")
    return jnp.broadcast_to(current, (time_steps, *images.shape))


def _time_steps(time_steps) -> int:
    try:
        time_steps = operator.index(time_steps)
    except TypeError:
        raise TypeError(
            f"time_steps must be a static Python int (mark it static under jax.jit), got {type(time_steps).__name__}"
        ) from None
    if time_steps < 0:
        raise ValueError(f"time_steps must be >= 0, got {time_steps}")
    return time_steps
