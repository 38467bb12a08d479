"""Exact export of evolved networks to NIR (the Neuromorphic Intermediate Representation).

:func:`to_nir` turns a phenotype and its (trained) parameters into a
``nir.NIRGraph`` whose discrete-time simulation gives the same spikes as
:class:`spenser_jax.snn.network.SpikingNetwork` at inference (dropout off);
:func:`exportable` tells beforehand why a phenotype cannot be exported (it
needs no ``nir`` package). docs/export.md lists the layer mapping; the
subtleties:

* ``padding:same`` pads ``total // 2`` before and the rest after
  (XLA/TensorFlow); NIR's padding is symmetric, so ``same`` exports only
  where ``total`` is even on both axes (always with stride 1 and an odd
  kernel).
* NIR's Conv2d always has a bias (zeros when ``bias:False``).
* NIR types carry no batch axis, so the flatten before the first ``fc`` is
  ``nir.Flatten(start_dim=0, end_dim=-1)``; we flatten NHWC maps in H, W, C
  order and NIR's maps are C, H, W, so that layer's input columns are
  permuted. The Input node is ``(C, H, W)``.
* Refused: ``pool-max`` (NIR has no max pooling) and ``reset:subtract``
  (NIR's neurons reset *to* ``v_reset``).

The LIF mapping
---------------
Ours (snntorch ``Leaky``, ``reset_mechanism="zero"``), per neuron, ``U[-1] = 0``::

    R[t] = H(U[t-1] - θ)
    U[t] = β·(1 - R[t])·U[t-1] + I[t]          β := clamp(β, 0, 1)
    S[t] = H(U[t] - θ)                          H(x) = 1 iff x > 0

NIR's LIF is the ODE ``tau·dv/dt = (v_leak - v) + r·I`` with spike
``z = v > v_threshold`` and ``v <- v_reset`` where ``z``; the discrete-time
importers integrate it with forward Euler at a step ``dt`` (snntorch and
norse reset in the step of the spike)::

    v'[t] = v[t-1] + dt/tau·(v_leak - v[t-1]) + dt/tau·r·I[t]
    z[t]  = v'[t] > v_threshold
    v[t]  = v_reset if z[t] else v'[t]

With ``v_leak = 0`` this is ``v'[t] = (1 - dt/tau)·v[t-1] + (r·dt/tau)·I[t]``,
so ours is matched by::

    tau = dt / (1 - β),   r = tau / dt = 1 / (1 - β),   v_leak = 0,
    v_threshold = θ,      v_reset = 0                    (0 <= β < 1)

(``1 - dt/tau = β`` and ``r·dt/tau = 1``). The reset moment differs (ours
zeroes the previous membrane at the step after the spike, NIR at the spike
step) but not the spikes: by induction ``v'[t] = U[t]``. Both start at 0; if
``v'[t-1] = U[t-1]`` then ``v[t-1] = (1 - H(U[t-1] - θ))·U[t-1] =
(1 - R[t])·U[t-1]``, so ``v'[t] = β·v[t-1] + I[t] = U[t]`` and
``z[t] = S[t]``, for any θ. (Only because ``v_reset = 0``: a subtractive
reset has no NIR form.)

β = 0 gives ``tau = dt``, ``r = 1``. β = 1 would need ``tau = r = inf``
(and ``inf·0`` in the update), so a layer with clamped β = 1 is written as
``nir.IF`` with ``r = 1/dt``, ``v_threshold = θ``, ``v_reset = 0``: its
Euler step ``v' = v + dt·r·I`` is ``U[t] = (1 - R[t])·U[t-1] + I[t]``. The
LIF parameters are float64 (holding our float32 β and θ exactly).

``dt`` is stored in the graph's metadata. The default ``DT = 1e-4`` is the
step snntorch 1.0.0 hard-codes in ``import_from_nir`` (metadata ignored), so
snntorch reads our LIF nodes back as ``Leaky(beta=β, threshold=θ,
reset_mechanism="zero", reset_delay=False)``: the same spikes (tested with a
stored fixture). Its ``nir.IF`` import asserts ``r == 1``, so β = 1 layers
do not import into snntorch; nirtorch's ``Flatten(0, -1)`` flattens a batch
axis too, so run imported graphs one unbatched sample at a time. norse
(``lif_box``) ignores ``r`` and lacks an avg-pool mapping;
:mod:`spenser_jax.snn.nir_readers` rewrites the graph for it (and refuses
readers whose neurons reset by subtraction).

Input coding is outside the graph: its input is spikes ``[T, C, H, W]``;
the metadata holds ``dt``, ``time_steps``, ``input_coding``,
``input_shape`` (C, H, W), ``note``, ``phenotype`` (text) and ``source``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spenser_jax.errors import SpenserError
from spenser_jax.genome.phenotype import Phenotype, infer_shapes, same_padding
from spenser_jax.genome.units import LIF, Conv, Dense, Dropout, NoOp, Pool, tag_of

DT = 1e-4
"""Default time step written to the graph (snntorch's fixed import step)."""

INPUT_CODINGS = ("rate",)

_NOTE = (
    "Input coding is not part of the graph: feed spikes [T, C, H, W]. "
    "input_coding 'rate' means Bernoulli(pixel / 255) drawn independently at "
    "each of time_steps steps. LIF/IF nodes follow forward Euler at dt "
    "(metadata) with reset to v_reset in the spike step; r = tau / dt "
    "(LIF) or 1 / dt (IF) makes the input enter unscaled."
)


class NotExportable(SpenserError, ValueError):
    """The phenotype has layers that NIR cannot express exactly.

    Attributes:
      reasons: one ``"layer I (TYPE): why"`` string per offending layer.
    """

    def __init__(self, reasons: list[str], target: str = "NIR"):
        self.reasons = list(reasons)
        self.target = target
        super().__init__(f"not exportable to {target}: " + "; ".join(self.reasons))


class MissingDependency(SpenserError, ImportError):
    """An optional package the export needs is not installed."""


def require_nir():
    """The ``nir`` package, or :class:`MissingDependency` saying how to install it."""
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("NIR export needs the `nir` package: pip install 'spenser_jax[nir]'") from exc
    return nir


def _label(index: int, layer: Any) -> str:
    return f"layer {index} ({tag_of(layer)})"


def _conv_padding(layer: Conv, in_shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    if layer.padding == "valid":
        return ((0, 0), (0, 0))
    return tuple(same_padding(n, layer.kernel, layer.stride) for n in in_shape[:2])


def _layer_problem(layer: Any, in_shape: tuple[int, ...]) -> str | None:
    if isinstance(layer, Pool):
        if layer.kind != "avg":
            return f"NIR has no max pooling (only AvgPool2d and SumPool2d), so pool-{layer.kind} cannot be expressed"
        return None
    if isinstance(layer, LIF):
        if layer.reset != "zero":
            return (
                f"reset:{layer.reset} has no NIR form: NIR's LIF resets the "
                "membrane to v_reset (only reset:zero exports)"
            )
        return None
    if isinstance(layer, Conv):
        pads = _conv_padding(layer, in_shape)
        if any(before != after for before, after in pads):
            return (
                f"padding:same with kernel {layer.kernel} and stride {layer.stride} "
                f"on a {in_shape[0]}x{in_shape[1]} input pads (before, after) = "
                f"{pads[0]} rows and {pads[1]} columns (XLA/TensorFlow split); "
                "NIR's Conv2d padding is symmetric"
            )
        return None
    if isinstance(layer, (Dense, Dropout, NoOp)):
        return None
    return f"{type(layer).__name__} has no NIR export"


def exportable(phenotype: Phenotype, input_shape: tuple[int, int, int]) -> list[str]:
    """Why ``phenotype`` cannot be exported exactly (an empty list: it can).

    Raises:
      InvalidPhenotype: the phenotype is not a network for ``input_shape``.
    """
    shapes = infer_shapes(phenotype, input_shape)
    reasons = []
    in_shape = tuple(input_shape)
    for i, (layer, out_shape) in enumerate(zip(phenotype.layers, shapes)):
        if phenotype.inputs is not None and phenotype.inputs[i] is not None:
            # NIR graphs could hold the edges, but our merge (max-pool to the
            # smallest map, concatenate channels) has no NIR node.
            reasons.append(
                f"{_label(i, layer)}: reads layers {list(phenotype.inputs[i])} through a skip "
                f"connection, whose merge (max-pool and concatenate) NIR cannot express"
            )
            in_shape = out_shape
            continue
        problem = _layer_problem(layer, in_shape)
        if problem is not None:
            reasons.append(f"{_label(i, layer)}: {problem}")
        in_shape = out_shape
    return reasons


def node_labels(phenotype: Phenotype) -> dict[str, str]:
    """``{graph node: "layer I (TYPE)"}``: which layer of ``phenotype`` each node of :func:`to_nir` comes from."""
    labels, j = {}, -1
    for i, layer in enumerate(phenotype.layers):
        if isinstance(layer, NoOp):
            continue
        j += 1
        label = _label(i, layer)
        for prefix in ("conv", "pool", "dense", "flatten", "lif"):
            labels[f"{prefix}_{j}"] = label
    return labels


def chw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Our per-sample shape (H, W, C) or (N,) in NIR's order (C, H, W) or (N,)."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


def lif_node(beta: float, threshold: float, shape: tuple[int, ...], dt: float = DT):
    """The NIR neuron node of one of our zero-reset LIF layers (see the module doc)."""
    nir = require_nir()
    if not (math.isfinite(beta) and math.isfinite(threshold)):
        raise ValueError(f"beta and threshold must be finite, got {beta!r}, {threshold!r}")
    beta = float(np.clip(np.float32(beta), 0, 1))  # our clamp is in float32
    shape = tuple(int(n) for n in shape)

    def full(value):
        return np.full(shape, value, np.float64)

    if beta == 1.0:
        return nir.IF(r=full(1.0 / dt), v_threshold=full(float(threshold)), v_reset=full(0.0))
    tau = dt / (1.0 - beta)
    return nir.LIF(
        tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(float(threshold)), v_reset=full(0.0)
    )


def _unwrap(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if set(params) == {"params"}:
        return params["params"]
    return params


def to_nir(
    phenotype: Phenotype,
    params: Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int],
    time_steps: int,
    input_coding: str = "rate",
    dt: float = DT,
):
    """The network of ``phenotype`` with ``params`` as a ``nir.NIRGraph``.

    Node names follow the parameter names (``conv_0``, ``lif_1``,
    ``dense_8``, ...; pools ``pool_J``, the flatten ``flatten_J`` for the
    dense layer ``J``), plus ``input`` and ``output``.

    Raises:
      NotExportable: a layer has no exact NIR form (all such layers named).
      InvalidPhenotype: the phenotype is not a network for ``input_shape``.
      ImportError: the ``nir`` package is missing.
      ValueError: bad ``time_steps``, ``input_coding`` or ``dt``.
    """
    reasons = exportable(phenotype, input_shape)
    if reasons:
        raise NotExportable(reasons)
    if input_coding not in INPUT_CODINGS:
        raise ValueError(f"input_coding must be one of {INPUT_CODINGS}, got {input_coding!r}")
    if int(time_steps) != time_steps or time_steps < 1:
        raise ValueError(f"time_steps must be a positive integer, got {time_steps!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    nir = require_nir()
    params = _unwrap(params)

    shapes = infer_shapes(phenotype, input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(chw(tuple(input_shape))))}
    chain = ["input"]
    in_shape = tuple(input_shape)
    j = -1  # index in the signature (no-op layers removed) = parameter index
    for layer, out_shape in zip(phenotype.layers, shapes):
        if not isinstance(layer, NoOp):
            j += 1
        if isinstance(layer, Conv):
            p = params[f"conv_{j}"]
            kernel = np.asarray(p["kernel"], np.float32)  # [kh, kw, in, out]
            bias = np.asarray(p["bias"], np.float32) if layer.bias else np.zeros(layer.filters, np.float32)
            pads = _conv_padding(layer, in_shape)
            nodes[f"conv_{j}"] = nir.Conv2d(
                input_shape=(int(in_shape[0]), int(in_shape[1])),
                weight=np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)),
                stride=(layer.stride, layer.stride),
                padding=(pads[0][0], pads[1][0]),
                dilation=(1, 1),
                groups=1,
                bias=bias,
            )
            chain.append(f"conv_{j}")
        elif isinstance(layer, Pool):  # avg (exportable() refused max)
            k = layer.kernel
            nodes[f"pool_{j}"] = nir.AvgPool2d(
                kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0])
            )
            chain.append(f"pool_{j}")
        elif isinstance(layer, Dense):
            p = params[f"dense_{j}"]
            kernel = np.asarray(p["kernel"], np.float32)  # [in, out], in in H, W, C order
            if len(in_shape) == 3:
                h, w, c = in_shape
                # Columns from (h, w, c) to (c, h, w) order, then [out, in].
                weight = kernel.reshape(h, w, c, layer.units).transpose(3, 2, 0, 1)
                weight = weight.reshape(layer.units, h * w * c)
                nodes[f"flatten_{j}"] = nir.Flatten(
                    input_type={"input": np.array(chw(in_shape))}, start_dim=0, end_dim=-1
                )
                chain.append(f"flatten_{j}")
            else:
                weight = kernel.T
            weight = np.ascontiguousarray(weight)
            if layer.bias:
                nodes[f"dense_{j}"] = nir.Affine(weight=weight, bias=np.asarray(p["bias"], np.float32))
            else:
                nodes[f"dense_{j}"] = nir.Linear(weight=weight)
            chain.append(f"dense_{j}")
        elif isinstance(layer, LIF):
            p = params[f"lif_{j}"]
            nodes[f"lif_{j}"] = lif_node(
                float(np.asarray(p["beta"])), float(np.asarray(p["threshold"])), chw(out_shape), dt
            )
            chain.append(f"lif_{j}")
        # Dropout and NoOp: the identity at inference.
        in_shape = out_shape
    nodes["output"] = nir.Output(output_type=np.array(chw(shapes[-1])))
    chain.append("output")
    metadata = {
        "dt": float(dt),
        "time_steps": int(time_steps),
        "input_coding": input_coding,
        "input_shape": np.array(chw(tuple(input_shape)), np.int64),
        "note": _NOTE,
        "phenotype": phenotype.text,
        "source": "spenser_jax",
    }
    edges = list(itertools.pairwise(chain))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
