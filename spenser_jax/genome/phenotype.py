"""Typed phenotypes: what a derivation of the grammar means as a network.

A phenotype (layers and learning rule) has three equivalent forms: the
original SPENSER code's text, ``key:value`` tokens (logs); frozen, hashable
dataclasses, a :class:`Phenotype` of :mod:`spenser_jax.genome.units`
(networks); JSON (run files). ``parse(text)`` and ``Phenotype.text``
round-trip exactly: floats are written with ``repr``.

Shape inference (:func:`infer_shapes`) decides whether a phenotype is a
buildable network for an input shape: ``valid`` gives ``floor((n - k) / s)
+ 1`` (0 when ``k > n``); ``same`` gives ``ceil(n / s)``, padding split as
XLA/TensorFlow do (``total // 2`` before, the rest after; PyTorch's
``padding='same'`` at stride 1). The original code silently forces stride 1
with ``same`` (a PyTorch limitation); we honour the genotype's stride.
Pooling: stride = kernel, no padding, floor. The first dense layer flattens
its input in H, W, C order.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

# The units are offered here too: ``from spenser_jax.genome.phenotype import Conv`` (the
# old module) reads them from this one.
from spenser_jax.genome.units import (  # noqa: F401
    LIF,
    LOSS_TAGS,
    SGD,
    TAGS,
    Adam,
    CECount,
    CEMaxMembrane,
    CERate,
    Conv,
    Dense,
    Dropout,
    InvalidPhenotype,
    Layer,
    Loss,
    MSECount,
    MSEMembrane,
    NoOp,
    Optimizer,
    Pool,
    RMSProp,
    tag_of,
    unit_from_text,
    unit_text,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Phenotype:
    """A network and how it learns: ``layers`` in order, a ``learning`` unit and a ``loss`` unit.

    ``loss`` None: the configuration's loss (the paper's ``mse_count_loss``), as
    with Grammar 2. ``inputs``: per layer, the layers it reads when not just the
    one before it (``input:0,2`` in the text; -1 the network input); None
    altogether when no layer has other inputs.
    """

    layers: tuple[Layer, ...]
    learning: Optimizer
    loss: Loss | None = None
    inputs: tuple[tuple[int, ...] | None, ...] | None = None

    @property
    def text(self) -> str:
        """The original code's text form (plus ``input:`` and the loss unit where present)."""
        parts = []
        for i, layer in enumerate(self.layers):
            part = unit_text("layer", layer)
            if self.inputs is not None and self.inputs[i] is not None:
                part += " input:" + ",".join(str(j) for j in self.inputs[i])
            parts.append(part)
        parts.append(unit_text("learning", self.learning))
        if self.loss is not None:
            parts.append(unit_text("loss", self.loss))
        return " ".join(parts)

    def to_json(self) -> dict:
        def item(x, i=None):
            out = {"type": tag_of(x), **dataclasses.asdict(x)}
            if i is not None and self.inputs is not None and self.inputs[i] is not None:
                out["input"] = list(self.inputs[i])
            return out

        return {
            "text": self.text,
            "layers": [item(x, i) for i, x in enumerate(self.layers)],
            "learning": item(self.learning),
            **({"loss": item(self.loss)} if self.loss is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: dict) -> Phenotype:
        # The text is the canonical content; the typed fields are a
        # convenience for readers of the JSON, and must agree with it.
        pheno = parse(obj["text"])
        if pheno.to_json() != obj:
            raise InvalidPhenotype("phenotype JSON fields disagree with its text")
        return pheno

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    @property
    def network_layers(self) -> tuple[Layer, ...]:
        """Layers that do something (``no-op`` removed)."""
        return tuple(x for x in self.layers if not isinstance(x, NoOp))


def parse(text: str) -> Phenotype:
    """Parse the text form into a typed :class:`Phenotype`.

    Raises:
      InvalidPhenotype: unknown layer, optimizer or loss, missing or
        malformed keys, not exactly one learning rule, more than one loss
        unit, or an ``input:`` that reads a later layer.
    """
    groups: list[tuple[str, str, dict[str, str]]] = []
    for token in text.split():
        key, sep, value = token.partition(":")
        if not sep or not key or not value:
            raise InvalidPhenotype(f"token {token!r} is not key:value")
        if key in ("layer", "learning", "loss"):
            groups.append((key, value, {}))
        elif not groups:
            raise InvalidPhenotype(f"token {token!r} comes before any layer:/learning:")
        elif key in groups[-1][2]:
            raise InvalidPhenotype(f"key {key!r} repeated in {groups[-1][0]}:{groups[-1][1]}")
        else:
            groups[-1][2][key] = value
    layers, learning, losses, inputs = [], [], [], []
    for head, tag, fields in groups:
        if head == "layer":
            inputs.append(_parse_inputs(fields.pop("input", None), len(layers)))
            layers.append(unit_from_text(head, tag, fields))
        else:
            (learning if head == "learning" else losses).append(unit_from_text(head, tag, fields))
    if len(learning) != 1:
        raise InvalidPhenotype(f"expected exactly one learning rule, found {len(learning)}")
    if len(losses) > 1:
        raise InvalidPhenotype(f"expected at most one loss unit, found {len(losses)}")
    return Phenotype(
        tuple(layers),
        learning[0],
        losses[0] if losses else None,
        tuple(inputs) if any(x is not None for x in inputs) else None,
    )


def _parse_inputs(raw: str | None, index: int) -> tuple[int, ...] | None:
    if raw is None:
        return None
    try:
        sources = tuple(int(x) for x in raw.split(","))
    except ValueError:
        raise InvalidPhenotype(f"input:{raw} is not a list of layer indices") from None
    if not sources or len(set(sources)) != len(sources) or not all(-1 <= j < index for j in sources):
        raise InvalidPhenotype(
            f"layer {index}: input:{raw} must name distinct earlier layers (-1 is the network input)"
        )
    return sources


def conv_output(n: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-n // stride)
    return (n - kernel) // stride + 1 if n >= kernel else 0


def same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of ``padding:same`` along one axis."""
    total = max((conv_output(n, kernel, stride, "same") - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def next_shape(shape: tuple[int, ...], layer: Any, index: int) -> tuple[int, ...]:
    """Per-sample output shape of ``layer`` (the ``index``-th) for input ``shape``.

    Layers other than conv, pool and dense keep the shape, so this also
    serves the network's signature layers.

    Raises:
      InvalidPhenotype: a conv/pool after a dense layer, or a size reaching zero.
    """
    name = tag_of(layer)
    if isinstance(layer, (Conv, Pool)) and len(shape) != 3:
        raise InvalidPhenotype(f"layer {index} ({name}) follows a dense layer")
    if isinstance(layer, Conv):
        h, w = (conv_output(n, layer.kernel, layer.stride, layer.padding) for n in shape[:2])
        shape = (h, w, layer.filters)
    elif isinstance(layer, Pool):
        shape = (shape[0] // layer.kernel, shape[1] // layer.kernel, shape[2])
    elif isinstance(layer, Dense):
        shape = (layer.units,)
    if min(shape) <= 0:
        raise InvalidPhenotype(f"layer {index} ({name}) has output shape {shape}: spatial size reached zero")
    return shape


def merge_shape(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The shape several inputs of one layer merge into.

    Feature maps are brought to the smallest height and width among them
    (max-pooling by the integer factor, then cropping: spikes stay spikes)
    and concatenated along the channels; when any input is flat, all are
    flattened (H, W, C order) and concatenated.
    """
    if all(len(s) == 3 for s in shapes):
        return (min(s[0] for s in shapes), min(s[1] for s in shapes), sum(s[2] for s in shapes))
    return (sum(math.prod(s) for s in shapes),)


def walk_shapes(
    layers, input_shape: tuple[int, ...], inputs: tuple[tuple[int, ...] | None, ...] | None = None
) -> list[tuple[int, ...]]:
    """Per-sample output shape of each of ``layers`` for one ``input_shape`` input.

    The one shape walk: phenotypes and network signatures both use it.
    ``inputs`` (see :class:`Phenotype`) merges a layer's sources first
    (:func:`merge_shape`).
    """
    shape: tuple[int, ...] = tuple(input_shape)
    shapes: list[tuple[int, ...]] = []
    for i, layer in enumerate(layers):
        if inputs is not None and inputs[i] is not None:
            shape = merge_shape([tuple(input_shape) if j < 0 else shapes[j] for j in inputs[i]])
        shape = next_shape(shape, layer, i)
        shapes.append(shape)
    return shapes


def layer_inputs(
    layers, input_shape: tuple[int, ...], inputs: tuple[tuple[int, ...] | None, ...] | None = None
) -> list[tuple[int, ...]]:
    """The (merged) input shape of each layer."""
    shapes = walk_shapes(layers, input_shape, inputs)
    out = []
    for i in range(len(shapes)):
        if inputs is not None and inputs[i] is not None:
            out.append(merge_shape([tuple(input_shape) if j < 0 else shapes[j] for j in inputs[i]]))
        else:
            out.append(tuple(input_shape) if i == 0 else shapes[i - 1])
    return out


def infer_shapes(
    phenotype: Phenotype, input_shape: tuple[int, int, int], num_classes: int | None = None
) -> list[tuple[int, ...]]:
    """Output shape of every layer in ``phenotype.layers`` (per sample).

    Raises:
      InvalidPhenotype: a spatial size reaches zero, a conv/pool after a dense
        layer, no dense layer at the end, or the wrong number of outputs.
    """
    shapes = walk_shapes(phenotype.layers, input_shape, phenotype.inputs)
    if not shapes or len(shapes[-1]) != 1:
        raise InvalidPhenotype("the network must end in a dense (fc) layer")
    if num_classes is not None and shapes[-1][0] != num_classes:
        raise InvalidPhenotype(f"the output layer has {shapes[-1][0]} units, the data has {num_classes} classes")
    return shapes


def layer_parameters(layer: Any, in_shape: tuple[int, ...]) -> int:
    """Trainable numbers of one layer for input ``in_shape``, as PyTorch counts them.

    Weights and biases of conv and dense layers, trainable β/θ of LIF layers
    (anything with ``beta_trainable``/``threshold_trainable``, so network
    signature layers count too); 0 for the rest.
    """
    if isinstance(layer, Conv):
        return layer.kernel * layer.kernel * in_shape[-1] * layer.filters + layer.filters * layer.bias
    if isinstance(layer, Dense):
        return math.prod(in_shape) * layer.units + layer.units * layer.bias
    return int(getattr(layer, "beta_trainable", False)) + int(getattr(layer, "threshold_trainable", False))


def count_parameters(
    layers, input_shape: tuple[int, ...], inputs: tuple[tuple[int, ...] | None, ...] | None = None
) -> int:
    """Trainable numbers of a phenotype (or any layer sequence), as PyTorch counts them."""
    if isinstance(layers, Phenotype):
        layers, inputs = layers.layers, layers.inputs
    layers = tuple(layers)
    ins = layer_inputs(layers, input_shape, inputs)
    return sum(layer_parameters(layer, shape) for layer, shape in zip(layers, ins))
