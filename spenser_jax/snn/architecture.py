"""A phenotype as a compiled program sees it: a static signature and traced floats.

:func:`split` gives a static, hashable :class:`Signature` (everything that
shapes the compiled program: layer types, integer genes, padding, bias,
surrogate, reset, which β/θ train, the optimizer's
:class:`~spenser_jax.OptimizerKey`) and its :data:`Hyper` floats (β/θ
initial values, dropout rates, optimizer hyperparameters). Programs are
compiled per signature only, so offspring that differ only in float genes
share one program and can be ``vmap``-ed.

Also here: parameter names (:func:`param_name`), what training may change
(:func:`trainable_mask`), and a signature's sizes (shapes, parameters,
multiply-accumulates, training memory) to place work and compare energy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from spenser_jax.genome.phenotype import Phenotype, count_parameters, layer_inputs, walk_shapes
from spenser_jax.genome.units import (
    LIF,
    CEMaxMembrane,
    Conv,
    Dense,
    Dropout,
    MSECount,
    MSEMembrane,
    NoOp,
    OptimizerKey,
    Pool,
    float_hparams,
    static_key,
)

Hyper = dict[str, Any]
"""``{"beta": [L], "threshold": [L], "dropout": [D], "optimizer": {name: []}}``, float32."""


@dataclasses.dataclass(frozen=True, slots=True)
class DropoutSlot:
    """A dropout layer in a signature; its rate is a traced float."""


@dataclasses.dataclass(frozen=True, slots=True)
class LIFSlot:
    """A LIF layer in a signature; its β and θ are traced floats."""

    beta_trainable: bool
    threshold_trainable: bool
    surrogate: str
    reset: str


SignatureLayer = Conv | Pool | Dense | DropoutSlot | LIFSlot


@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    """Everything of a phenotype but its float genes; hashable, static.

    ``layers``: ``no-op`` removed, dropout and LIF as slots; ``optimizer``: the
    learning unit's kind and boolean genes; ``inputs``: per layer, the layers
    it reads when not just the one before it (-1 the network input; None
    without skip connections); ``loss``: the loss unit's tag, None for the
    configuration's loss.
    """

    layers: tuple[SignatureLayer, ...]
    optimizer: OptimizerKey
    inputs: tuple[tuple[int, ...] | None, ...] | None = None
    loss: str | None = None

    @property
    def reads_membrane(self) -> bool:
        """The loss reads the output layer's membrane, not only its spikes."""
        return self.loss in (MSEMembrane.tag, CEMaxMembrane.tag)

    @property
    def num_lif(self) -> int:
        return sum(isinstance(x, LIFSlot) for x in self.layers)

    @property
    def num_dropout(self) -> int:
        return sum(isinstance(x, DropoutSlot) for x in self.layers)


def signature(phenotype: Phenotype) -> Signature:
    """The static part of a phenotype (see :class:`Signature`)."""
    layers = []
    # Phenotype layer index -> signature index of the layer whose output it
    # is (a no-op passes on its input's).
    index_of, last = {-1: -1}, -1
    for i, layer in enumerate(phenotype.layers):
        if not isinstance(layer, NoOp):
            last += 1
        index_of[i] = last
    for layer in phenotype.layers:
        if isinstance(layer, NoOp):
            continue
        if isinstance(layer, Dropout):
            layers.append(DropoutSlot())
        elif isinstance(layer, LIF):
            layers.append(LIFSlot(layer.beta_trainable, layer.threshold_trainable, layer.surrogate, layer.reset))
        elif isinstance(layer, (Conv, Pool, Dense)):
            layers.append(layer)
        else:
            raise TypeError(f"unknown layer {layer!r}")
    inputs = None
    if phenotype.inputs is not None:
        inputs = tuple(
            None if src is None else tuple(sorted({index_of[j] for j in src}))
            for layer, src in zip(phenotype.layers, phenotype.inputs)
            if not isinstance(layer, NoOp)
        )
    loss = phenotype.loss.tag if phenotype.loss is not None else None
    if loss in (MSEMembrane.tag, CEMaxMembrane.tag) and not (layers and isinstance(layers[-1], LIFSlot)):
        raise TypeError(f"the {loss} loss reads the output membrane: the network must end in a LIF layer")
    return Signature(tuple(layers), static_key(phenotype.learning), inputs, loss)


def hyper(phenotype: Phenotype, time_steps: int | None = None) -> Hyper:
    """The float genes of a phenotype, as a pytree of float32 arrays.

    ``{"beta": [L], "threshold": [L], "dropout": [D], "optimizer": {name: []}}``
    (L LIF and D dropout layers in network order), plus ``"loss"``
    (``{"on": [], "off": []}``) for a loss unit with genes. Equal signatures
    give equal trees, so the floats of several offspring stack for ``vmap``.
    ``time_steps`` is needed for ``mse-count``, whose target counts
    ``int(T * rate)`` are computed here, on the host in float64 as snntorch
    does (float32 on a device truncates differently for some rates).
    """
    lifs = [x for x in phenotype.layers if isinstance(x, LIF)]
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    out = {
        "beta": f32([x.beta for x in lifs]).reshape(len(lifs)),
        "threshold": f32([x.threshold for x in lifs]).reshape(len(lifs)),
        "dropout": f32([x.rate for x in phenotype.layers if isinstance(x, Dropout)]).reshape(-1),
        "optimizer": {k: f32(v) for k, v in float_hparams(phenotype.learning).items()},
    }
    unit = phenotype.loss
    if isinstance(unit, MSECount):
        if time_steps is None:
            raise ValueError("an mse-count loss unit needs time_steps for its target counts")
        on, off = int(time_steps * unit.correct_rate), int(time_steps * unit.incorrect_rate)
        out["loss"] = {"on": f32(on), "off": f32(off)}
    elif isinstance(unit, MSEMembrane):
        out["loss"] = {"on": f32(unit.on_target), "off": f32(unit.off_target)}
    return out


def split(phenotype: Phenotype, time_steps: int | None = None) -> tuple[Signature, Hyper]:
    """``(signature(phenotype), hyper(phenotype, time_steps))``."""
    return signature(phenotype), hyper(phenotype, time_steps)


def layer_shapes(sig: Signature, input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """Per-sample output shape of every layer of ``sig`` for ``(H, W, C)`` input.

    Raises:
      InvalidPhenotype: a conv or pool layer after a dense one, or a size
        that reaches zero.
    """
    return walk_shapes(sig.layers, input_shape, sig.inputs)


def param_name(index: int, layer: SignatureLayer) -> str | None:
    """The network's parameter collection of layer ``index`` (None: it has none)."""
    if isinstance(layer, Conv):
        return f"conv_{index}"
    if isinstance(layer, Dense):
        return f"dense_{index}"
    if isinstance(layer, LIFSlot):
        return f"lif_{index}"
    return None


def trainable_mask(sig: Signature, params: Mapping[str, Any]) -> dict:
    """Pytree of bools like ``params``: False for fixed β/θ, True elsewhere.

    Fixed β/θ are buffers in PyTorch: no optimizer (not even weight decay)
    touches them. Training zeroes their final updates.
    """
    flags = {}
    for i, spec in enumerate(sig.layers):
        if isinstance(spec, LIFSlot):
            flags[param_name(i, spec)] = {"beta": spec.beta_trainable, "threshold": spec.threshold_trainable}

    def leaf(path, _):
        names = [p.key for p in path]
        return flags.get(names[0], {}).get(names[-1], True)

    return jax.tree_util.tree_map_with_path(leaf, dict(params))


def param_shapes(sig: Signature, input_shape: tuple[int, int, int]) -> dict[str, dict[str, tuple]]:
    """The network's parameter tree as shapes, without initialising anything.

    ``{"conv_0": {"kernel": (k, k, C_in, F), "bias": (F,)}, "dense_4": {"kernel":
    (in, units), ...}, "lif_2": {"beta": (), "threshold": ()}, ...}`` (no
    ``bias`` where the gene says none), as :func:`spenser_jax.snn.network.init_params`
    creates it.
    """
    out = {}
    for i, (layer, shape_in, _) in enumerate(_with_inputs(sig, input_shape)):
        name = param_name(i, layer)
        if isinstance(layer, Conv):
            out[name] = {"kernel": (layer.kernel, layer.kernel, shape_in[-1], layer.filters)}
            if layer.bias:
                out[name]["bias"] = (layer.filters,)
        elif isinstance(layer, Dense):
            out[name] = {"kernel": (math.prod(shape_in), layer.units)}
            if layer.bias:
                out[name]["bias"] = (layer.units,)
        elif isinstance(layer, LIFSlot):
            out[name] = {"beta": (), "threshold": ()}
    return out


def parameter_count(sig: Signature, input_shape: tuple[int, int, int]) -> int:
    """Trainable numbers of the network, as PyTorch counts them."""
    return count_parameters(sig.layers, input_shape, sig.inputs)


def _with_inputs(sig: Signature, input_shape):
    """(layer, its merged input shape, its output shape) per layer."""
    return zip(sig.layers, layer_inputs(sig.layers, input_shape, sig.inputs), layer_shapes(sig, input_shape))


def macs(sig: Signature, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of the weighted layers per sample and time step.

    What the same network costs as a non-spiking ANN: each conv output
    element takes ``k * k * C_in`` MACs, each dense unit one per input.
    """
    total = 0
    for layer, shape_in, shape_out in _with_inputs(sig, input_shape):
        if isinstance(layer, Conv):
            total += math.prod(shape_out) * layer.kernel * layer.kernel * shape_in[-1]
        elif isinstance(layer, Dense):
            total += math.prod(shape_in) * layer.units
    return total


def cost(sig: Signature, input_shape: tuple[int, int, int]) -> float:
    """Relative compute per sample and time step: MACs plus elementwise work.

    Used to balance devices, not as a measurement.
    """
    return float(macs(sig, input_shape) + sum(math.prod(s) for s in layer_shapes(sig, input_shape)))


def training_bytes(sig: Signature, input_shape: tuple[int, int, int], *, time_steps: int, batch_size: int) -> int:
    """Rough device memory of training one network (to size vmapped groups).

    Activations kept for backpropagation through time (each layer's output,
    and membrane and surrogate inputs of LIF layers: ~3 floats per unit and
    step) plus parameters with gradients and two optimizer moments.
    """
    units = sum(math.prod(s) for s in layer_shapes(sig, input_shape)) + math.prod(input_shape)
    activations = 3 * 4 * units * time_steps * batch_size
    return activations + 4 * 4 * parameter_count(sig, input_shape)
