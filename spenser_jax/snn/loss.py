"""snntorch's rate-coded losses, and the spike-count readout.

Outputs are time-major ``[T, B, C]``: spikes for the spike losses, membrane
potentials for those in ``MEMBRANE_LOSSES``. Each loss follows the snntorch
1.0.0 ``snntorch.functional`` class of the same name with its defaults
(``reduction='mean'``, no class weights, no population code), operation
order included, so that values and gradients agree with it to float32
rounding (tests/test_losses.py checks this against golden values).

Every function takes an optional ``mask`` ``[B]`` of 0/1 sample weights: a
fixed-size batch padded at the end of an epoch (so that ``jax.lax.scan``
sees one shape) passes ``mask = 0`` on its padding, and the result is then
the one of the real samples alone.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _check(outputs, labels, mask, name="spikes"):
    if jnp.ndim(outputs) != 3:
        raise ValueError(f"{name} must be time-major [T, B, C], got shape {jnp.shape(outputs)}")
    _, batch, _ = jnp.shape(outputs)
    if jnp.shape(labels) != (batch,):
        raise ValueError(f"labels must have shape [B] = ({batch},), got {jnp.shape(labels)}")
    if mask is not None and jnp.shape(mask) != (batch,):
        raise ValueError(f"mask must have shape [B] = ({batch},), got {jnp.shape(mask)}")


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over the last axis (the batch, [..., B]) of the samples ``mask``
    keeps (0 if none)."""
    if mask is None:
        return jnp.mean(values, axis=-1)
    mask = jnp.asarray(mask, values.dtype)
    total = jnp.sum(mask)
    # A safe denominator rather than a where on the quotient, whose unused
    # branch would still put NaN into the gradient of an all-padding batch.
    return jnp.sum(values * mask, axis=-1) / jnp.where(total > 0, total, 1)


def _sum_over_time(per_step: jax.Array) -> jax.Array:
    """Sum of ``per_step`` [T] in time order.

    snntorch accumulates ``loss += step_loss`` in a Python loop; a chain of
    adds (XLA does not reassociate float adds) keeps its rounding, where a
    reduction may sum in a tree. ``T`` is static and small.
    """
    total = per_step[0]
    for t in range(1, per_step.shape[0]):
        total = total + per_step[t]
    return total


def _targets(labels, num_classes, on, off):
    """snntorch's ``spikegen.targets_convert(labels, C, on_target=on,
    off_target=off)`` as its losses call it (rate code with its default
    rates 1 and 0, hence no time axis), ``[B, C]``.

    snntorch builds ``clamp(one_hot * on, min=off)`` when ``on > off``, so a
    negative ``off`` puts ``max(0, off) = 0``, not ``off``, on the other
    classes; kept for parity (targets of the valid genes are never negative).
    """
    is_label = jnp.arange(num_classes) == jnp.asarray(labels)[:, None]
    other = jnp.where(on > off, jnp.maximum(off, 0), off)
    return jnp.where(is_label, on, other)


def _label_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log_softmax(logits)[..., label]``: torch's ``NLLLoss(LogSoftmax)``
    before its mean, ``[..., B, C] -> [..., B]``."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    is_label = jnp.arange(jnp.shape(logits)[-1]) == jnp.asarray(labels)[:, None]
    # A sum of one term and zeros is exact; a select (unlike a gather, whose
    # gradient is a scatter) compiles fast on CPU.
    return -jnp.sum(jnp.where(is_label, log_p, 0), axis=-1)


def count_targets(num_steps: int, correct_rate: float = 1.0, incorrect_rate: float = 0.0) -> tuple[int, int]:
    """Target spike counts of ``mse_count_loss``, computed as snntorch does.

    ``int(T * rate)`` in Python float64 with truncation. Call this on the
    host, with the rate as the Python float snntorch would get: the same
    product in float32 on a device can land on the other side of an integer
    (T=50, rate 0.58: float64 gives 28.999999999999996 -> 28, float32 gives
    29.0 -> 29), and so can a rate that went through float32 (T=10: 0.7
    gives 7, ``float(np.float32(0.7))`` gives 6.9999998807907104 -> 6).
    """
    return int(num_steps * float(correct_rate)), int(num_steps * float(incorrect_rate))


def mse_count_loss_targets(
    spikes: jax.Array,
    labels: jax.Array,
    on: jax.Array | float,
    off: jax.Array | float,
    mask: jax.Array | None = None,
) -> jax.Array:
    """``mse_count_loss`` with the target counts given, possibly traced.

    For a traced rate gene: compute ``count_targets`` on the host and pass
    its counts here as arrays, so one compiled step serves every rate.
    """
    _check(spikes, labels, mask)
    num_steps, _, num_classes = jnp.shape(spikes)
    counts = jnp.sum(spikes, axis=0)  # [B, C]
    targets = _targets(labels, num_classes, on, off).astype(counts.dtype)
    squared = (counts - targets) ** 2
    if mask is None:
        # One mean over B*C, as torch's MSELoss, for exact parity.
        return jnp.mean(squared) / num_steps
    return _masked_mean(jnp.mean(squared, axis=-1), mask) / num_steps


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
    """
    _check(spikes, labels, mask)
    on, off = count_targets(jnp.shape(spikes)[0], correct_rate, incorrect_rate)
    return mse_count_loss_targets(spikes, labels, on, off, mask)


def ce_count_loss(spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Cross entropy of the spike counts.

    Matches snntorch's ``functional.ce_count_loss``: the raw counts
    ``sum over T`` (not rates) are the logits of a softmax, and the loss is
    the mean over B of ``-log_softmax(counts)[label]``.
    """
    _check(spikes, labels, mask)
    return _masked_mean(_label_nll(jnp.sum(spikes, axis=0), labels), mask)


def ce_rate_loss(spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Cross entropy of the spikes at every time step, averaged over time.

    Matches snntorch's ``functional.ce_rate_loss``: the spikes of each step
    are the logits of their own softmax; each step's loss is the mean over B
    of ``-log_softmax(spikes[t])[label]``, and the loss is the sum of those
    over the steps, in time order, divided by ``T``.
    """
    _check(spikes, labels, mask)
    per_step = _masked_mean(_label_nll(spikes, labels), mask)  # [T]
    return _sum_over_time(per_step) / jnp.shape(spikes)[0]


def mse_membrane_loss(
    membranes: jax.Array,
    labels: jax.Array,
    on_target: float = 1.0,
    off_target: float = 0.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean squared error between membrane potentials and a fixed target.

    Matches snntorch's ``functional.mse_membrane_loss`` with
    ``time_var_targets=False``: the target is ``on_target`` for a sample's
    label and ``off_target`` for the other classes (but 0 for them when
    ``off_target < min(0, on_target)``: snntorch then clamps
    ``one_hot * on_target`` from below at ``off_target``), the same at every
    step. Each step's loss is the mean
    over B and C of ``(membrane[t] - target) ** 2``; the loss is their sum,
    in time order, divided by ``T``.
    """
    _check(membranes, labels, mask, name="membranes")
    num_steps, _, num_classes = jnp.shape(membranes)
    targets = _targets(labels, num_classes, on_target, off_target)
    squared = (membranes - targets.astype(membranes.dtype)) ** 2  # [T, B, C]
    if mask is None:
        # One mean over B*C per step, as torch's MSELoss.
        per_step = jnp.mean(squared, axis=(1, 2))
    else:
        per_step = _masked_mean(jnp.mean(squared, axis=-1), mask)
    return _sum_over_time(per_step) / num_steps


def ce_max_membrane_loss(membranes: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Cross entropy of each output's peak membrane potential over time.

    Matches snntorch's ``functional.ce_max_membrane_loss``: the maximum over
    T of each membrane is the logit of a softmax, and the loss is the mean
    over B of ``-log_softmax(max_mem)[label]``. Like ``torch.max(x, 0)``,
    the gradient goes to the first step that reaches the maximum only
    (``jnp.max`` would split it among tied steps).
    """
    _check(membranes, labels, mask, name="membranes")
    steps = jnp.arange(jnp.shape(membranes)[0])[:, None, None]
    is_first_peak = steps == jnp.argmax(membranes, axis=0)  # [T, B, C]
    # Exact (one term plus zeros), and the gradient reaches that step alone.
    peak = jnp.sum(jnp.where(is_first_peak, membranes, 0), axis=0)
    return _masked_mean(_label_nll(peak, labels), mask)


# The losses by phenotype name; each is ``f(outputs, labels, mask=mask)``
# plus its own keyword settings.
LOSSES: dict[str, Callable[..., jax.Array]] = {
    "mse-count": mse_count_loss,
    "ce-count": ce_count_loss,
    "ce-rate": ce_rate_loss,
    "mse-membrane": mse_membrane_loss,
    "ce-max-membrane": ce_max_membrane_loss,
}

# Names of the losses whose outputs are membrane potentials, not spikes.
MEMBRANE_LOSSES = frozenset({"mse-membrane", "ce-max-membrane"})


def spike_count_predictions(spikes: jax.Array) -> jax.Array:
    """Predicted classes: argmax of the spike counts over time.

    Ties go to the first (lowest) class, so a silent network predicts 0.
    """
    return jnp.argmax(jnp.sum(spikes, axis=0), axis=-1)


def _correct(spikes, labels, mask):
    _check(spikes, labels, mask)
    return spike_count_predictions(spikes) == jnp.asarray(labels)


def correct_count(spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Number of correctly classified samples (those ``mask`` keeps)."""
    correct = _correct(spikes, labels, mask).astype(jnp.int32)
    if mask is not None:
        correct = correct * jnp.asarray(mask).astype(jnp.int32)
    return jnp.sum(correct)


def spike_count_accuracy(spikes: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Fraction of correctly classified samples (those ``mask`` keeps; 0 if none)."""
    correct = _correct(spikes, labels, mask).astype(jnp.float32)
    return _masked_mean(correct, mask)
