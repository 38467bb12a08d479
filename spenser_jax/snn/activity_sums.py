"""What a forward pass records of its activity, summed over time, per sample or per batch.

The network (:class:`spenser_jax.snn.network.SpikingNetwork` with ``activity=``)
reduces every LIF layer's spikes and what enters each weighted layer at
every step (:func:`sample_sums`, :func:`input_sums`) and hands the sums to
:func:`activity_sums`, which adds the input's and packs them; all inside the
traced program. :mod:`spenser_jax.snn.activity` turns the result into spikes,
SynOps and energy on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spenser_jax.snn.architecture import Signature


def sample_sums(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Per sample the sum over everything but the batch axis, ``[B, ...] -> [B]``;
    with ``weights`` their weighted sum over the batch (a scalar)."""
    per_sample = x.reshape(x.shape[0], -1).sum(-1)
    return per_sample if weights is None else jnp.dot(weights, per_sample)


def input_sums(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """What enters a weighted layer: ``[B, H, W]`` (channels summed) or ``[B]``; with
    ``weights`` summed over the batch (``[H, W]`` or a scalar)."""
    if x.ndim != 4:
        return sample_sums(x, weights)
    return x.sum(-1) if weights is None else jnp.tensordot(weights, x, axes=1).sum(-1)


def activity_sums(sig: Signature, spikes: jax.Array, lif_spikes, inputs, weights=None) -> dict:
    """A batch's activity per sample, summed over the time steps.

    ``{"input": [B], "lif": (one [B] per LIF layer), "inputs": (per conv/fc
    layer, what entered it: [B, H, W] summed over channels for a conv, [B] for
    an fc; after an avg-pool, the pooled value)}``; with ``weights`` (one per
    sample) each is instead the weighted sum over the batch.
    """
    # None in ``inputs``: a layer that reads the network input itself; its
    # sums come from the input spikes here, once, instead of at every step.
    summed = spikes.sum(0)
    inputs = tuple(input_sums(summed, weights) if x is None else x for x in inputs)
    return {"input": sample_sums(summed, weights), "lif": tuple(lif_spikes), "inputs": tuple(inputs)}
