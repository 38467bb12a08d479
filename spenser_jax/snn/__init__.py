"""Spiking primitives: surrogate spikes, LIF neurons, encoding, loss.

All arrays are time-major, ``[T, ...]``.
"""

from spenser_jax.snn.encoding import rate
from spenser_jax.snn.lif import RESETS, lif_sequence, lif_step
from spenser_jax.snn.loss import (
    correct_count,
    mse_count_loss,
    spike_count_accuracy,
    spike_count_predictions,
)
from spenser_jax.snn.surrogate import SURROGATES, SpikeFn, atan, fast_sigmoid

__all__ = [
    "RESETS",
    "SURROGATES",
    "SpikeFn",
    "atan",
    "correct_count",
    "fast_sigmoid",
    "lif_sequence",
    "lif_step",
    "mse_count_loss",
    "rate",
    "spike_count_accuracy",
    "spike_count_predictions",
]
