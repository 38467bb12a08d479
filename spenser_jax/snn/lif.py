"""Leaky integrate-and-fire neurons with snntorch ``Leaky`` semantics.

One step, with membrane ``U`` (zero before the first step), input current
``I``, decay ``beta`` and threshold ``theta`` (snntorch 1.0.0, defaults
``reset_delay=True``, ``graded_spikes_factor=1``)::

    R[t] = H(U[t-1] - theta)                           # no gradient
    subtract: U[t] = clamp(beta, 0, 1) * U[t-1] + I[t] - R[t] * theta
    zero:     U[t] = clamp(beta, 0, 1) * ((1 - R[t]) * U[t-1]) + I[t]
    S[t] = spike_fn(U[t] - theta)

The reset is driven by the *previous* membrane, so a spike at ``t`` resets
the membrane at ``t + 1``. ``R`` is computed from the initial zero membrane
too, so a negative threshold resets at the very first step, as in snntorch.

``beta`` is clamped to ``[0, 1]`` in the forward pass only, with PyTorch's
clamp gradient: 1 where ``0 <= beta <= 1`` (bounds included), 0 outside.
(``jnp.clip`` gives 0.5 at the bounds, which would differ at ``beta == 1``.)

Gradients reach both ``beta`` and ``theta``; ``theta`` gets them through the
spike function and through ``-R * theta``. Pass ``trainable_beta=False`` or
``trainable_threshold=False`` (or wrap them in ``jax.lax.stop_gradient``) to
hold them fixed.

Arrays are time-major: ``currents`` is ``[T, ...]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spenser_jax.snn.surrogate import SpikeFn, atan

RESETS = ("subtract", "zero")

# snntorch's default spike gradient is atan(alpha=2).
_DEFAULT_SPIKE = atan()


def _check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS!r} (the grammar's `reset` values), got {reset!r}")


def _clamp01(beta: jax.Array) -> jax.Array:
    """``clamp(beta, 0, 1)`` with torch's gradient (1 on [0, 1], else 0)."""
    inside = (beta >= 0) & (beta <= 1)
    # jnp.where sends the gradient only to the branch it selects.
    return jnp.where(inside, beta, jax.lax.stop_gradient(jnp.clip(beta, 0, 1)))


def _params(beta, threshold, trainable_beta, trainable_threshold):
    beta = jnp.asarray(beta)
    threshold = jnp.asarray(threshold)
    if not trainable_beta:
        beta = jax.lax.stop_gradient(beta)
    if not trainable_threshold:
        threshold = jax.lax.stop_gradient(threshold)
    return beta, threshold


def _step(mem, current, beta, threshold, reset, spike_fn):
    # Same forward as spike_fn by definition of a spike function; detached
    # like snntorch's `mem_reset`.
    r = jax.lax.stop_gradient(spike_fn(mem - threshold))
    decay = _clamp01(beta)
    if reset == "subtract":
        new_mem = decay * mem + current - r * threshold
    else:
        new_mem = decay * ((1 - r) * mem) + current
    return new_mem, spike_fn(new_mem - threshold)


def lif_step(
    mem: jax.Array,
    current: jax.Array,
    beta: jax.typing.ArrayLike,
    threshold: jax.typing.ArrayLike,
    *,
    reset: str = "subtract",
    spike_fn: SpikeFn = _DEFAULT_SPIKE,
    trainable_beta: bool = True,
    trainable_threshold: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Advances a layer of LIF neurons by one time step.

    Raises:
        ValueError: If ``reset`` is not a known reset mechanism.
    """
    _check_reset(reset)
    beta, threshold = _params(beta, threshold, trainable_beta, trainable_threshold)
    return _step(mem, current, beta, threshold, reset, spike_fn)


def lif_sequence(
    currents: jax.Array,
    beta: jax.typing.ArrayLike,
    threshold: jax.typing.ArrayLike,
    *,
    reset: str = "subtract",
    spike_fn: SpikeFn = _DEFAULT_SPIKE,
    unroll: int | bool = 1,
    trainable_beta: bool = True,
    trainable_threshold: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Runs LIF neurons over a time-major input sequence from a zero membrane.

    Under ``jax.jit``, pass ``reset``, ``spike_fn``, ``unroll`` and the
    ``trainable_*`` flags as static arguments; the spike functions from
    :mod:`spenser_jax.snn.surrogate` are cached, so equal parameters hit the
    compilation cache.

    Raises:
        ValueError: If ``reset`` is unknown or ``currents`` has no time axis.
    """
    _check_reset(reset)
    if jnp.ndim(currents) < 1:
        raise ValueError(
            f"currents must be time-major [T, ...] with at least one axis, got shape {jnp.shape(currents)}"
        )
    beta, threshold = _params(beta, threshold, trainable_beta, trainable_threshold)
    # The carry's dtype must not change across steps, so start it in the
    # dtype the step produces (e.g. bfloat16 currents with a float32 beta).
    dtype = jnp.result_type(currents, beta, threshold)
    mem0 = jnp.zeros(jnp.shape(currents)[1:], dtype)

    def body(mem, current):
        new_mem, spike = _step(mem, current, beta, threshold, reset, spike_fn)
        return new_mem, (spike, new_mem)

    _, (spikes, membranes) = jax.lax.scan(body, mem0, currents, unroll=unroll)
    return spikes, membranes
