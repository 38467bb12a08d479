"""Spike-count loss and readout for classification.

Spikes are time-major ``[T, B, C]``. Every function takes an optional
``mask`` ``[B]`` of 0/1 sample weights: a fixed-size batch padded at the end
of an epoch (so that ``jax.lax.scan`` sees one shape) passes ``mask = 0`` on
its padding, and the result is then the one of the real samples alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(spikes, labels, mask):
    if jnp.ndim(spikes) != 3:
        raise ValueError(
            f"spikes must be time-major [T, B, C], got shape {jnp.shape(spikes)}"
        )
    _, batch, _ = jnp.shape(spikes)
    if jnp.shape(labels) != (batch,):
        raise ValueError(
            f"labels must have shape [B] = ({batch},), got {jnp.shape(labels)}"
        )
    if mask is not None and jnp.shape(mask) != (batch,):
        raise ValueError(
            f"mask must have shape [B] = ({batch},), got {jnp.shape(mask)}"
        )


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of ``values`` [B] over the samples ``mask`` keeps (0 if none)."""
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask, values.dtype)
    total = jnp.sum(mask)
    # A safe denominator rather than a where on the quotient, whose unused
    # branch would still put NaN into the gradient of an all-padding batch.
    return jnp.sum(values * mask) / jnp.where(total > 0, total, 1)


def mse_count_loss(
    spikes: jax.Array,
    labels: jax.Array,
    correct_rate: float = 1.0,
    incorrect_rate: float = 0.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean squared error between spike counts and target counts.

    Matches snntorch's ``functional.mse_count_loss``: with
    ``on = int(T * correct_rate)`` and ``off = int(T * incorrect_rate)``
    (Python truncation; ``T`` is static), the target count is ``on`` for a
    sample's label and ``off`` for every other class, and the loss is
    ``mean over B and C of (count - target) ** 2``, divided by ``T``.

    Args:
        spikes: Output spikes, ``[T, B, C]``.
        labels: Integer class labels, ``[B]``.
        correct_rate: Target firing rate of the labelled class.
        incorrect_rate: Target firing rate of the other classes.
        mask: Optional ``[B]`` 0/1 weights; samples with weight 0 (padding)
            do not count, and the mean is over the kept samples only (0 when
            none is kept).

    Returns:
        The scalar loss.
    """
    _check(spikes, labels, mask)
    num_steps, _, num_classes = jnp.shape(spikes)
    on = int(num_steps * correct_rate)
    off = int(num_steps * incorrect_rate)
    counts = jnp.sum(spikes, axis=0)  # [B, C]
    is_label = jnp.arange(num_classes) == jnp.asarray(labels)[:, None]
    targets = jnp.where(is_label, on, off).astype(counts.dtype)
    squared = (counts - targets) ** 2
    if mask is None:
        # One mean over B*C, as torch's MSELoss, for exact parity.
        return jnp.mean(squared) / num_steps
    return _masked_mean(jnp.mean(squared, axis=-1), mask) / num_steps


def spike_count_predictions(spikes: jax.Array) -> jax.Array:
    """Predicted classes: argmax of the spike counts over time.

    Ties go to the first (lowest) class, so a silent network predicts 0.

    Args:
        spikes: Output spikes, ``[T, B, C]``.

    Returns:
        Integer predictions, ``[B]``.
    """
    return jnp.argmax(jnp.sum(spikes, axis=0), axis=-1)


def _correct(spikes, labels, mask):
    _check(spikes, labels, mask)
    return spike_count_predictions(spikes) == jnp.asarray(labels)


def correct_count(
    spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Number of correctly classified samples (those ``mask`` keeps).

    Args:
        spikes: Output spikes, ``[T, B, C]``.
        labels: Integer class labels, ``[B]``.
        mask: Optional ``[B]`` 0/1 weights; padding has weight 0.

    Returns:
        An ``int32`` scalar.
    """
    correct = _correct(spikes, labels, mask).astype(jnp.int32)
    if mask is not None:
        correct = correct * jnp.asarray(mask).astype(jnp.int32)
    return jnp.sum(correct)


def spike_count_accuracy(
    spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Fraction of correctly classified samples (those ``mask`` keeps).

    Args:
        spikes: Output spikes, ``[T, B, C]``.
        labels: Integer class labels, ``[B]``.
        mask: Optional ``[B]`` 0/1 weights; padding has weight 0.

    Returns:
        A ``float32`` scalar in [0, 1] (0 when the mask keeps nothing).
    """
    correct = _correct(spikes, labels, mask).astype(jnp.float32)
    return _masked_mean(correct, mask)
