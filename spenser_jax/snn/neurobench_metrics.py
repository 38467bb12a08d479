"""NeuroBench's metrics (neurobench 2.3.0) of one of our networks, under NeuroBench's names and definitions.

NeuroBench measures a torch model; ours reaches it through NIR: ``export
--for snntorch`` and snntorch's ``import_from_nir`` (LIF layers become
``snn.Leaky(reset_mechanism="zero", reset_delay=False)``, every ``nir.Conv2d``
a ``torch.nn.Conv2d`` with a bias). These are NeuroBench's figures of that
model, computed from what we measure, and checked against NeuroBench itself
by benchmarks/neurobench_check.py (docs/energy.md states each definition):

* ``Footprint``: bytes of the model's parameters and buffers: float32
  weights and biases, and per LIF layer snntorch's buffers: one membrane per
  neuron and four scalars (β, θ, graded-spike factor, reset value).
* ``ParameterCount``: weights and biases; a conv with ``bias:False`` has a
  zero bias there (NIR's Conv2d always has one); β and θ are buffers.
* ``ConnectionSparsity``: zero weights over all weights (biases excluded),
  rounded to 4 decimals as NeuroBench does.
* ``ActivationSparsity`` (and ``ActivationSparsityByLayer``, by graph node):
  silent neuron-steps over all neuron-steps of the LIF layers.
* ``SynapticOperations``: per sample, ``Effective_ACs`` the synaptic events
  into layers whose input is spikes (our SynOps), ``Effective_MACs`` those
  into layers whose input is not (a directly encoded image: NeuroBench
  counts only its non-zero elements, we count every one, so ours is an upper
  bound there), ``Dense`` every connection at every step. NeuroBench skips
  connections whose weight is exactly zero; ours count them (equal unless
  weights were pruned to zero).
* ``MembraneUpdates``: per sample, every neuron at the first step plus, at
  each later step, the neurons whose post-step membrane (after the reset, as
  ``reset_delay=False`` leaves it) changed.
* ``NeuronOperations``: ``{"Effective Neuron Ops": 4 · MembraneUpdates,
  "Neuron Dense Ops": 4 · neurons · T}`` (4: NeuroBench's cost of a Leaky update).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spenser_jax.genome.units import Conv, Dense
from spenser_jax.snn import architecture
from spenser_jax.snn.activity import _weighted_inputs, conv_fanout
from spenser_jax.snn.architecture import LIFSlot, Signature

NEUROBENCH_VERSION = "2.3.0"
"""The NeuroBench release whose definitions these are (and that benchmarks/neurobench_check.py ran)."""
LEAKY_OPS = 4
"""NeuroBench's operations per update of a ``snn.Leaky`` membrane (either reset)."""
LEAKY_SCALARS = 4
"""snntorch ``Leaky``'s scalar buffers: beta, threshold, graded_spikes_factor, reset_mechanism_val."""


def node_names(sig: Signature, prefix: str) -> list[str]:
    """The NIR node names (``to_nir``'s) of the layers of ``sig`` that are ``prefix`` (``lif``, ...)."""
    kind = {"lif": LIFSlot, "conv": Conv, "dense": Dense}[prefix]
    return [f"{prefix}_{j}" for j, layer in enumerate(sig.layers) if isinstance(layer, kind)]


def static(sig: Signature, input_shape: tuple[int, int, int], params: Mapping[str, Any]) -> dict:
    """``Footprint``, ``ParameterCount`` and ``ConnectionSparsity`` (see the module doc)."""
    params = params["params"] if set(params) == {"params"} else params
    shapes = architecture.layer_shapes(sig, input_shape)
    weights = zeros = biases = 0
    for j, layer in enumerate(sig.layers):
        if isinstance(layer, (Conv, Dense)):
            p = params[architecture.param_name(j, layer)]
            kernel = np.asarray(p["kernel"])
            weights += kernel.size
            zeros += int((kernel == 0).sum())
            if isinstance(layer, Conv):
                biases += layer.filters
            elif layer.bias:
                biases += layer.units
    neurons = sum(math.prod(s) for layer, s in zip(sig.layers, shapes) if isinstance(layer, LIFSlot))
    lif_layers = sum(isinstance(layer, LIFSlot) for layer in sig.layers)
    count = weights + biases
    return {
        "Footprint": 4 * (count + neurons + LEAKY_SCALARS * lif_layers),
        "ParameterCount": count,
        "ConnectionSparsity": round(zeros / weights, 4) if weights else 0.0,
    }


def workload(
    sig: Signature,
    input_shape: tuple[int, int, int],
    time_steps: int,
    summary: Mapping[str, Any],
    *,
    membrane_updates: float | None = None,
    spiking_input: bool = True,
) -> dict:
    """The workload metrics per sample from :func:`spenser_jax.snn.activity.summarise`'s ``summary``.

    ``membrane_updates``: :func:`membrane_updates`' count per sample, or
    ``None`` where it was not measured (``MembraneUpdates`` and the effective
    neuron operations are then ``None`` too).
    """
    shapes = architecture.layer_shapes(sig, input_shape)
    sizes = [math.prod(s) for layer, s in zip(sig.layers, shapes) if isinstance(layer, LIFSlot)]
    spikes = list(summary["spikes_per_sample"])
    by_layer = {
        name: 1.0 - s / (n * time_steps) for name, s, n in zip(node_names(sig, "lif"), spikes, sizes, strict=True)
    }
    total = sum(sizes) * time_steps
    dense = 0.0
    for _, layer, shape_in, _, _ in _weighted_inputs(sig, input_shape, spiking_input):
        if isinstance(layer, Conv):
            dense += float(conv_fanout(layer, shape_in).sum()) * shape_in[-1] * layer.filters
        else:
            dense += math.prod(shape_in) * layer.units
    return {
        "ActivationSparsity": 1.0 - sum(spikes) / total if total else 0.0,
        "ActivationSparsityByLayer": by_layer,
        "SynapticOperations": {
            "Effective_MACs": float(summary["macs_per_sample"]),
            "Effective_ACs": float(summary["synops_per_sample"]),
            "Dense": dense * time_steps,
        },
        "MembraneUpdates": membrane_updates,
        "NeuronOperations": {
            "Effective Neuron Ops": None if membrane_updates is None else LEAKY_OPS * membrane_updates,
            "Neuron Dense Ops": LEAKY_OPS * total,
        },
    }


def membrane_updates(sig: Signature, hyper, params, spikes) -> float:
    """``MembraneUpdates`` per sample of ``spikes`` (``[T, B, H, W, C]``, the network's input).

    Runs the network up to each LIF layer (one jitted program for all),
    recording its membranes ``U`` (before the reset) and spikes ``S``; the
    post-step membrane is ``U·(1 - S)`` (reset to zero) or ``U - θ·S``
    (subtract), and only the counts of its changes leave the program.
    """
    import jax
    import jax.numpy as jnp

    from spenser_jax.snn import network

    params = params["params"] if set(params) == {"params"} else params
    lifs = [i for i, layer in enumerate(sig.layers) if isinstance(layer, LIFSlot)]

    def changes(params, spikes, hyper):
        counts = []
        for i in lifs:
            inputs = None if sig.inputs is None else sig.inputs[: i + 1]
            sub = dataclasses.replace(sig, layers=sig.layers[: i + 1], inputs=inputs)
            names = {architecture.param_name(j, x) for j, x in enumerate(sub.layers)} - {None}
            s, u = network.SpikingNetwork(sub).apply(
                {"params": {n: params[n] for n in names}},
                spikes,
                hyper,
                method=network.SpikingNetwork.recording,
                what="membrane",
            )
            if sig.layers[i].reset == "zero":
                post = u * (1.0 - s)
            else:
                post = u - jnp.asarray(params[f"lif_{i}"]["threshold"], u.dtype) * s
            counts.append(jnp.sum(post[1:] != post[:-1]))
        return counts

    steps, batch = spikes.shape[:2]
    shapes = architecture.layer_shapes(sig, spikes.shape[2:])
    neurons = sum(math.prod(shapes[i]) for i in lifs)
    changed = sum(int(c) for c in jax.jit(changes)(params, spikes, hyper))
    return (changed + neurons * batch) / batch
