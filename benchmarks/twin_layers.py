"""A phenotype as the layer list of the original's torch network, and our weights in torch's layouts.

Pure Python and NumPy (no torch, no JAX), so that a test checks the mapping
without the dev-only packages; ``benchmarks/original_engine.py`` turns these
specs into ``torch.nn`` modules.

The twin has the same layers as our network, with the same shapes: ``same``
padding is split as ours (``total // 2`` before, the rest after, which is
PyTorch's ``padding='same'`` at stride 1) and keeps the genotype's stride,
where the original code forces stride 1 (a PyTorch limitation; it computes a
larger feature map there, so this twin is never slower than the original on
those layers). The first ``fc`` flattens channels first (PyTorch's
``flatten``), ours height, width, channels: :func:`torch_weights` permutes
that layer's kernel so that equal weights give equal outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from spenser_jax.genome.phenotype import Conv, Dense, Dropout, Phenotype, Pool, next_shape, same_padding
from spenser_jax.genome.units import LIF, NoOp


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    name: str  # our parameter collection, e.g. "conv_0"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    pad: tuple[int, int, int, int]  # left, right, top, bottom: torch.nn.functional.pad's order
    bias: bool


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    kind: str  # "max" | "avg"
    kernel: int


@dataclasses.dataclass(frozen=True)
class DropoutSpec:
    rate: float


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    name: str  # e.g. "dense_7"
    in_features: int
    out_features: int
    bias: bool
    flatten_from: tuple[int, int, int] | None  # (H, W, C) of the map it flattens; None: its input is flat


@dataclasses.dataclass(frozen=True)
class LIFSpec:
    name: str  # e.g. "lif_2"
    beta: float
    threshold: float
    learn_beta: bool
    learn_threshold: bool
    surrogate: str  # "atan" | "fast-sigmoid"
    reset: str  # "subtract" | "zero"


Spec = ConvSpec | PoolSpec | DropoutSpec | LinearSpec | LIFSpec


def layer_specs(phenotype: Phenotype, input_shape: tuple[int, int, int]) -> tuple[Spec, ...]:
    """The twin's layers for ``phenotype`` on ``input_shape`` (H, W, C); ``no-op`` layers dropped.

    Raises:
      ValueError: skip connections (``input:``) or a loss unit: Grammar 2 has neither, nor does the original.
      InvalidPhenotype: the network cannot be built on ``input_shape`` (as ours rejects it).
    """
    if phenotype.inputs is not None or phenotype.loss is not None:
        raise ValueError("the original's evaluator has no skip connections and no loss genes")
    shape, out = tuple(input_shape), []
    for index, layer in enumerate(phenotype.network_layers):
        if isinstance(layer, Conv):
            pads = [same_padding(n, layer.kernel, layer.stride) for n in shape[:2]]
            if layer.padding == "valid":
                pads = [(0, 0), (0, 0)]
            (top, bottom), (left, right) = pads
            out.append(
                ConvSpec(
                    f"conv_{index}",
                    shape[2],
                    layer.filters,
                    layer.kernel,
                    layer.stride,
                    (left, right, top, bottom),
                    layer.bias,
                )
            )
        elif isinstance(layer, Pool):
            out.append(PoolSpec(layer.kind, layer.kernel))
        elif isinstance(layer, Dropout):
            out.append(DropoutSpec(layer.rate))
        elif isinstance(layer, Dense):
            flat = int(np.prod(shape))
            out.append(LinearSpec(f"dense_{index}", flat, layer.units, layer.bias, shape if len(shape) == 3 else None))
        elif isinstance(layer, LIF):
            out.append(
                LIFSpec(
                    f"lif_{index}",
                    layer.beta,
                    layer.threshold,
                    layer.beta_trainable,
                    layer.threshold_trainable,
                    layer.surrogate,
                    layer.reset,
                )
            )
        elif not isinstance(layer, NoOp):
            raise TypeError(f"unknown layer {layer!r}")
        shape = next_shape(shape, layer, index)
    return tuple(out)


def torch_weights(specs: tuple[Spec, ...], params: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Our parameters (``{"conv_0": {"kernel", "bias"}, "lif_2": {"beta", "threshold"}, ...}``) in torch's layouts.

    Keys are ``"<name>.weight"``, ``"<name>.bias"``, ``"<name>.beta"``, ``"<name>.threshold"``: conv kernels
    HWIO -> OIHW, dense kernels ``[in, out]`` -> ``[out, in]`` with a flattened map's inputs reordered from
    H, W, C to C, H, W.
    """
    out = {}
    for spec in specs:
        if isinstance(spec, (ConvSpec, LinearSpec)):
            p = params[spec.name]
            kernel = np.asarray(p["kernel"], np.float32)
            if isinstance(spec, ConvSpec):
                weight = kernel.transpose(3, 2, 0, 1)
            elif spec.flatten_from is not None:
                h, w, c = spec.flatten_from
                weight = kernel.reshape(h, w, c, spec.out_features).transpose(3, 2, 0, 1).reshape(spec.out_features, -1)
            else:
                weight = kernel.T
            out[f"{spec.name}.weight"] = np.ascontiguousarray(weight)
            if spec.bias:
                out[f"{spec.name}.bias"] = np.asarray(p["bias"], np.float32)
        elif isinstance(spec, LIFSpec):
            out[f"{spec.name}.beta"] = np.asarray(params[spec.name]["beta"], np.float32)
            out[f"{spec.name}.threshold"] = np.asarray(params[spec.name]["threshold"], np.float32)
    return out
