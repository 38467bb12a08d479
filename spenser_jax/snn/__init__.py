"""Spiking primitives: surrogate spikes, LIF neurons, encoding, loss.

All arrays are time-major, ``[T, ...]``.
"""

from spenser_jax.snn.encoding import rate
from spenser_jax.snn.lif import RESETS, lif_sequence, lif_step
from spenser_jax.snn.loss import (
    LOSSES,
    MEMBRANE_LOSSES,
    ce_count_loss,
    ce_max_membrane_loss,
    ce_rate_loss,
    correct_count,
    count_targets,
    mse_count_loss,
    mse_count_loss_targets,
    mse_membrane_loss,
    spike_count_accuracy,
    spike_count_predictions,
)
from spenser_jax.snn.surrogate import SURROGATES, SpikeFn, atan, fast_sigmoid

__all__ = [
    "LOSSES",
    "MEMBRANE_LOSSES",
    "RESETS",
    "SURROGATES",
    "SpikeFn",
    "atan",
    "ce_count_loss",
    "ce_max_membrane_loss",
    "ce_rate_loss",
    "correct_count",
    "count_targets",
    "fast_sigmoid",
    "lif_sequence",
    "lif_step",
    "mse_count_loss",
    "mse_count_loss_targets",
    "mse_membrane_loss",
    "rate",
    "spike_count_accuracy",
    "spike_count_predictions",
]
