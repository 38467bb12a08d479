"""Activity and energy of a spiking network: spikes, synaptic operations, picojoules.

docs/energy.md defines the figures (spikes and firing rates, SynOps, MACs,
neuron updates, the energy estimate and its Horowitz 45 nm constants). They
are measured while an individual is scored on the Fitness split, in the
same forward pass (:func:`spenser_jax.snn.activity_sums.activity_sums`),
and turned here into per-sample figures. A convolution's fan-out depends on
the position (borders, stride, padding) and is counted exactly
(:func:`conv_fanout`); after an average pool a pooled value counts as the
spikes under its window (value · k²: the pool is a sum pool folded into the
next layer's weights).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spenser_jax.genome.phenotype import layer_inputs, same_padding
from spenser_jax.genome.units import Conv, Dense, Pool
from spenser_jax.snn import architecture
from spenser_jax.snn.architecture import LIFSlot, Signature


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (Horowitz 2014, 45 nm, 32-bit float).

    With ``memory`` the estimate also counts memory traffic, as the
    analytical model of Lemaire et al. (2022) argues one must (operations
    alone flatter sparse networks): every SynOp reads its weight, every
    neuron update reads and writes its membrane, every spike is written for
    the next layer; an ANN's MAC reads a weight and an input, and every
    activation is written once. ``e_read_pj`` and ``e_write_pj`` default to a
    32-bit access of an 8 KB SRAM (Horowitz 2014: 10 pJ per 64 bits).
    """

    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    e_neuron_pj: float = 4.6
    memory: bool = False
    e_read_pj: float = 5.0
    e_write_pj: float = 5.0


def conv_fanout(layer: Conv, in_shape: Sequence[int]) -> np.ndarray:
    """``[H, W]``: how many output positions read each input position of ``layer``.

    Counted by placing every output window on the (padded) input, so
    borders, strides and padding are exact; times ``layer.filters`` it is
    the synapses an input event there drives.
    """
    h, w = int(in_shape[0]), int(in_shape[1])
    counts = np.zeros((h, w), np.int64)
    pads = [same_padding(n, layer.kernel, layer.stride) if layer.padding == "same" else (0, 0) for n in (h, w)]
    out = [(n + p[0] + p[1] - layer.kernel) // layer.stride + 1 for n, p in zip((h, w), pads)]
    rows = np.zeros(h, np.int64)
    cols = np.zeros(w, np.int64)
    # The windows of a 2-D convolution are products of 1-D windows.
    for o in range(out[0]):
        start = o * layer.stride - pads[0][0]
        rows[max(start, 0) : min(start + layer.kernel, h)] += 1
    for o in range(out[1]):
        start = o * layer.stride - pads[1][0]
        cols[max(start, 0) : min(start + layer.kernel, w)] += 1
    counts[...] = np.outer(rows, cols)
    return counts


def _weighted_inputs(sig: Signature, input_shape, spiking_input: bool):
    """Per conv/fc layer, in order: (index, layer, input shape, spiking?, event scale).

    An input is spiking when it comes from a LIF layer (or the rate-coded
    input) through pooling or dropout only; merged skip connections are
    spiking when every source is (their max-pooling keeps spikes spikes).
    """
    ins = layer_inputs(sig.layers, input_shape, sig.inputs)
    state = []  # per layer: (its output is spikes, events per unit of its value)
    out = []
    for i, (layer, shape_in) in enumerate(zip(sig.layers, ins)):
        if sig.inputs is not None and sig.inputs[i] is not None:
            sources = [(spiking_input, 1.0) if j < 0 else state[j] for j in sig.inputs[i]]
            spiking, scale = all(s for s, _ in sources), 1.0
        else:
            spiking, scale = state[-1] if state else (spiking_input, 1.0)
        if isinstance(layer, (Conv, Dense)):
            out.append((i, layer, shape_in, spiking, scale))
            spiking, scale = False, 1.0
        elif isinstance(layer, LIFSlot):
            spiking, scale = True, 1.0
        elif isinstance(layer, Pool) and layer.kind == "avg":
            scale *= layer.kernel * layer.kernel
        state.append((spiking, scale))
    return out


def summarise(
    sig: Signature,
    input_shape: tuple[int, int, int],
    time_steps: int,
    totals: Mapping[str, Any],
    samples: int,
    *,
    energy: EnergyModel = EnergyModel(),
    spiking_input: bool = True,
) -> dict:
    """Per-sample activity and energy from sums over ``samples`` scored samples.

    ``totals`` are :func:`spenser_jax.training.score`'s activity sums;
    ``spiking_input=False`` for a directly encoded (analog) image. The keys:
    ``spikes_per_sample`` (per LIF layer), ``firing_rates``,
    ``input_spikes_per_sample``, ``synops_per_sample``, ``synops_per_layer``,
    ``macs_per_sample`` (analog inputs only), ``neuron_updates_per_sample``,
    ``energy_pj_per_sample``, ``ann_energy_pj_per_sample``,
    ``break_even_synops_per_sample`` (where the two estimates cross), ``parameters``.
    """
    n = max(int(samples), 1)
    shapes = architecture.layer_shapes(sig, input_shape)
    lif_neurons = [math.prod(s) for layer, s in zip(sig.layers, shapes) if isinstance(layer, LIFSlot)]
    spikes = [float(np.asarray(x)) / n for x in totals["lif"]]
    synops_layers, macs = [], 0.0
    for (_, layer, shape_in, spiking, scale), events in zip(
        _weighted_inputs(sig, input_shape, spiking_input), totals["inputs"]
    ):
        if not spiking:  # analog input: every input element times its fan-out, densely
            fan = (
                conv_fanout(layer, shape_in).sum() * shape_in[-1] * layer.filters
                if isinstance(layer, Conv)
                else math.prod(shape_in) * layer.units
            )
            macs += float(fan) * time_steps
            synops_layers.append(0.0)
            continue
        events = np.asarray(events, np.float64) * scale / n
        if isinstance(layer, Conv):
            synops_layers.append(float((events * conv_fanout(layer, shape_in)).sum() * layer.filters))
        else:
            synops_layers.append(float(events.sum() * layer.units))
    synops = float(sum(synops_layers))
    updates = float(sum(lif_neurons) * time_steps)
    e = energy
    ann_macs = float(architecture.macs(sig, input_shape))
    if e.memory:
        per_synop = e.e_ac_pj + e.e_read_pj  # the weight's read
        fixed = (
            macs * (e.e_mac_pj + 2 * e.e_read_pj)  # a weight and an input read
            + updates * (e.e_neuron_pj + e.e_read_pj + e.e_write_pj)  # the membrane read and written
            + sum(spikes) * e.e_write_pj  # each spike written for the next layer
        )
        ann = ann_macs * (e.e_mac_pj + 2 * e.e_read_pj) + sum(lif_neurons) * e.e_write_pj
        total = synops * per_synop + fixed
    else:
        per_synop, fixed = e.e_ac_pj, macs * e.e_mac_pj + updates * e.e_neuron_pj
        ann = ann_macs * e.e_mac_pj
        total = synops * e.e_ac_pj + macs * e.e_mac_pj + updates * e.e_neuron_pj  # as it always was, bit for bit
    return {
        "spikes_per_sample": spikes,
        "firing_rates": [s / (k * time_steps) for s, k in zip(spikes, lif_neurons)],
        "input_spikes_per_sample": float(np.asarray(totals["input"])) / n if spiking_input else 0.0,
        "synops_per_sample": synops,
        "synops_per_layer": synops_layers,
        "macs_per_sample": macs,
        "neuron_updates_per_sample": updates,
        "energy_pj_per_sample": total,
        "ann_energy_pj_per_sample": ann,
        # Where the estimate crosses the ANN's: the SynOps per sample at which
        # the spiking network stops being the cheaper (negative: never cheaper).
        "break_even_synops_per_sample": (ann - fixed) / per_synop if per_synop > 0 else math.inf,
        "parameters": architecture.parameter_count(sig, input_shape),
    }
