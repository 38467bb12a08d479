"""The spiking network a phenotype describes, as a Flax linen module.

A phenotype is split in two (:func:`split`):

* a static, hashable :class:`Signature`: layer types, integer genes, padding,
  bias flags, surrogate, reset, which β/θ are trainable, and the optimizer's
  kind and booleans; everything that shapes the compiled program;
* a pytree of float32 **genes** (:func:`genes`): per-LIF β and θ (initial
  values), per-dropout rates and the optimizer's float hyperparameters.

Programs are compiled per signature only; β/θ enter the parameters (see
:func:`trainable_mask` for which of them may change), dropout rates and
optimizer hyperparameters are traced inputs. Offspring that differ only in
float genes therefore share one compiled program and can be ``vmap``-ed.

Conventions: images and feature maps are NHWC; spike trains are time-major
``[T, B, ...]``; a network maps input spikes ``[T, B, H, W, C]`` to the spikes
of its last layer ``[T, B, classes]``. Layers follow the phenotype module's
shape rules (explicit ``same`` padding pairs, pooling with stride = kernel and
floor, flatten in H, W, C order before the first dense layer); ``no-op`` layers
are skipped.

Three execution orders over time give the same outputs (they draw the same
dropout masks; see :func:`dropout_keep`), at different speeds:

* ``"stepwise"``: the whole network per time step, the time loop unrolled in
  Python; compile time grows with ``T``.
* ``"scan"``: the same step inside a rolled ``lax.scan``: the smallest
  program, and on CPU (with :func:`conv_nhwc`) the fastest; see
  :data:`DEFAULT_MODES`.
* ``"layerwise"``: every stateless layer (conv, pool, dropout, dense) applied
  once to all ``T * B`` inputs, only the LIF recurrences scanned over ``T``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax import optim
from spenser_jax.phenotype import (LIF, Conv, Dense, Dropout, NoOp,
                                   Optimizer, Phenotype, Pool, next_shape, same_padding)
from spenser_jax.snn.lif import lif_sequence, lif_step
from spenser_jax.snn.surrogate import SURROGATES

MODES = ("stepwise", "scan", "layerwise")

DEFAULT_MODES = {"cpu": "scan"}
"""Default execution order per backend (others get ``"layerwise"``).

Measured on XLA:CPU (2 shared cores, jax 0.10.2), the reference CSNN of
``benchmarks/train_throughput.py`` (conv32-5 / max-pool / LIF / conv64-5 /
max-pool / LIF / fc128 / LIF / fc10 / LIF, B = 64) trained inside the epoch's
``lax.scan``, with :func:`conv_nhwc`: ms per step stepwise 389 / scan 363 /
layerwise 559 at T = 10, 1353 / 892 / 1861 at T = 25, and scan compiles
2-4x faster (4.8 s vs 9.2 s at T = 10). Before :func:`conv_nhwc` every order
ran 20-30x slower inside the epoch loop. On GPU, ``"layerwise"`` (large
batched convolutions, a short elementwise scan) is the default by reasoning
only: it has not been measured.
"""

INIT_SCHEMES = ("torch", "lecun")

Genes = dict[str, Any]


# --------------------------------------------------------------------------
# Signature and genes


@dataclasses.dataclass(frozen=True, slots=True)
class DropoutSlot:
    """A dropout layer in a signature; its rate is a gene."""


@dataclasses.dataclass(frozen=True, slots=True)
class LIFSlot:
    """A LIF layer in a signature; its β and θ are genes."""

    beta_trainable: bool
    threshold_trainable: bool
    surrogate: str
    reset: str


SignatureLayer = Union[Conv, Pool, Dense, DropoutSlot, LIFSlot]


@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    """Everything of a phenotype but its float genes; hashable, static.

    Attributes:
      layers: the network's layers, ``no-op`` removed; conv, pool and dense
        layers as in the phenotype (they have no float genes), dropout and LIF
        as slots.
      optimizer: the learning unit with its float genes zeroed (placeholders:
        the real values are always passed as traced hyperparameters).
    """

    layers: tuple[SignatureLayer, ...]
    optimizer: Optimizer

    @property
    def num_lif(self) -> int:
        return sum(isinstance(x, LIFSlot) for x in self.layers)

    @property
    def num_dropout(self) -> int:
        return sum(isinstance(x, DropoutSlot) for x in self.layers)


def signature(phenotype: Phenotype) -> Signature:
    """The static part of a phenotype (see :class:`Signature`)."""
    layers = []
    for layer in phenotype.layers:
        if isinstance(layer, NoOp):
            continue
        if isinstance(layer, Dropout):
            layers.append(DropoutSlot())
        elif isinstance(layer, LIF):
            layers.append(LIFSlot(layer.beta_trainable, layer.threshold_trainable,
                                  layer.surrogate, layer.reset))
        elif isinstance(layer, (Conv, Pool, Dense)):
            layers.append(layer)
        else:
            raise TypeError(f"unknown layer {layer!r}")
    placeholders = {name: 0.0 for name in optim.float_hparams(phenotype.learning)}
    return Signature(tuple(layers), dataclasses.replace(phenotype.learning, **placeholders))


def genes(phenotype: Phenotype) -> Genes:
    """The float genes of a phenotype, as a pytree of float32 arrays.

    Returns:
      ``{"beta": [L], "threshold": [L], "dropout": [D], "optimizer": {name: []}}``
      with ``L`` LIF and ``D`` dropout layers in network order. Equal
      signatures give equal tree structures and shapes, so genes of several
      offspring stack along a new leading axis for ``vmap``.
    """
    lifs = [x for x in phenotype.layers if isinstance(x, LIF)]
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return {
        "beta": f32([x.beta for x in lifs]).reshape(len(lifs)),
        "threshold": f32([x.threshold for x in lifs]).reshape(len(lifs)),
        "dropout": f32([x.rate for x in phenotype.layers if isinstance(x, Dropout)]).reshape(-1),
        "optimizer": {k: f32(v) for k, v in optim.float_hparams(phenotype.learning).items()},
    }


def split(phenotype: Phenotype) -> tuple[Signature, Genes]:
    """``(signature(phenotype), genes(phenotype))``."""
    return signature(phenotype), genes(phenotype)


def default_mode(backend: str | None = None) -> str:
    """The execution order for ``backend`` (default: JAX's default backend)."""
    return DEFAULT_MODES.get(backend or jax.default_backend(), "layerwise")


def layer_shapes(sig: Signature, input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """Per-sample output shape of every layer of ``sig`` for ``(H, W, C)`` input.

    Mirrors :func:`spenser_jax.phenotype.infer_shapes`.

    Raises:
      InvalidPhenotype: a conv or pool layer after a dense one, or a size
        that reaches zero.
    """
    shape: tuple[int, ...] = tuple(input_shape)
    shapes = []
    for i, layer in enumerate(sig.layers):
        shape = next_shape(shape, layer, i)
        shapes.append(shape)
    return shapes


# --------------------------------------------------------------------------
# Initialisers


def _torch_uniform(fan_in: int):
    # PyTorch's default for Conv2d/Linear: kaiming_uniform(a=sqrt(5)) for the
    # weights and U(±1/sqrt(fan_in)) for the bias; both bounds are
    # 1/sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _initializers(scheme: str, fan_in: int):
    if scheme == "torch":
        return _torch_uniform(fan_in), _torch_uniform(fan_in)
    if scheme == "lecun":
        return nn.initializers.lecun_normal(), nn.initializers.zeros_init()
    raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")


# --------------------------------------------------------------------------
# Layers


_DN = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """``lax.conv_general_dilated`` in NHWC/HWIO whose gradients stay NHWC/HWIO.

    The forward pass is XLA's convolution. The backward pass computes dX and
    dW as NHWC/HWIO convolutions too (explicit transposes) instead of the
    layouts autodiff derives. Inside a loop body (the epoch's ``lax.scan``
    over batches, a rolled time loop) XLA:CPU runs only that standard layout
    on its fast path (jax-ml/jax#12868): measured 20-30x faster training
    epochs on CPU (``benchmarks/conv_layout_experiment.py``). The results
    equal autodiff's exactly (tested). Used on CPU only; other backends keep
    autodiff's convolutions.
    """
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DN)


def _conv_fwd(x, kernel, strides, padding):
    return conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    in_size, out_size, k = x.shape[1:3], g.shape[1:3], kernel.shape[:2]
    # dX: the cotangent, dilated by the stride, correlated with the flipped
    # kernel whose in/out channels are swapped (HWIO again after the swap).
    pads_x = []
    for d in range(2):
        before = k[d] - 1 - padding[d][0]
        after = in_size[d] + k[d] - 1 - ((out_size[d] - 1) * strides[d] + 1) - before
        pads_x.append((before, after))
    kernel_t = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = jax.lax.conv_general_dilated(g, kernel_t, (1, 1), pads_x, lhs_dilation=strides,
                                      dimension_numbers=_DN)
    # dW: channels as the batch, the batch as features, the cotangent as the
    # (stride-dilated) kernel: [C_in, kh, kw, C_out].
    pads_w = [(padding[d][0], k[d] + (out_size[d] - 1) * strides[d] - in_size[d] - padding[d][0])
              for d in range(2)]
    dw = jax.lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads_w,
                                      rhs_dilation=strides, dimension_numbers=_DN)
    return dx, dw.transpose(1, 2, 0, 3)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


class Conv2d(nn.Module):
    """2-D convolution, NHWC input, HWIO kernel, explicit padding pairs."""

    filters: int
    kernel: int
    stride: int
    padding: str  # "same" | "valid"
    bias: bool
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        w_init, b_init = _initializers(self.init_scheme, self.kernel * self.kernel * in_ch)
        kernel = self.param("kernel", w_init, (self.kernel, self.kernel, in_ch, self.filters))
        if self.padding == "same":
            pads = [same_padding(n, self.kernel, self.stride) for n in x.shape[1:3]]
        else:
            pads = [(0, 0), (0, 0)]
        strides = (self.stride, self.stride)
        pads = tuple(tuple(p) for p in pads)
        if jax.default_backend() == "cpu":
            y = conv_nhwc(x, kernel, strides, pads)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN)
        if self.bias:
            y = y + self.param("bias", b_init, (self.filters,))
        return y


class Linear(nn.Module):
    """Dense layer ``x @ W + b`` on ``[N, features]``."""

    units: int
    bias: bool
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w_init, b_init = _initializers(self.init_scheme, x.shape[-1])
        y = x @ self.param("kernel", w_init, (x.shape[-1], self.units))
        if self.bias:
            y = y + self.param("bias", b_init, (self.units,))
        return y


class LIFParams(nn.Module):
    """Holds one LIF layer's β and θ (scalars), initialised from its genes."""

    @nn.compact
    def __call__(self, beta0: jax.Array, threshold0: jax.Array) -> tuple[jax.Array, jax.Array]:
        beta = self.param("beta", lambda _: jnp.asarray(beta0, jnp.float32))
        threshold = self.param("threshold", lambda _: jnp.asarray(threshold0, jnp.float32))
        return beta, threshold


def pool2d(x: jax.Array, kind: str, k: int) -> jax.Array:
    """Pooling with stride = kernel, no padding, floor (NHWC).

    Crops to a multiple of ``k`` and reduces a reshaped window axis: on
    XLA:CPU this trains about 2-4x faster than ``lax.reduce_window``. Max
    pooling selects the first maximum of each window (row-major) through a
    one-hot mask, so on ties the whole gradient goes to that element, as in
    PyTorch's ``max_pool2d`` (``jnp.max`` would split it between the tied
    elements); it is also the fastest variant measured.
    """
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    windows = x[:, :ho * k, :wo * k, :].reshape(n, ho, k, wo, k, c)
    if kind == "avg":
        return windows.mean(axis=(2, 4))
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, k * k)
    first = jax.nn.one_hot(jnp.argmax(windows, axis=-1), k * k, dtype=x.dtype)
    return jnp.sum(windows * first, axis=-1)


def dropout_keep(key: jax.Array, layer: int, t: jax.Array | int, rate: jax.Array,
                 shape: tuple[int, ...]) -> jax.Array:
    """Inverted-dropout multiplier of one layer at one time step.

    ``keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)``, drawn from
    ``fold_in(fold_in(key, layer), t)``, so every execution order draws the
    same mask. ``rate = 0`` gives exactly 1 everywhere.
    """
    step_key = jax.random.fold_in(jax.random.fold_in(key, layer), t)
    keep = jax.random.uniform(step_key, shape) >= rate  # P = 1 - rate
    scale = jnp.where(rate < 1, 1 / (1 - rate), 0.0)
    return keep.astype(jnp.float32) * scale


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1) if x.ndim > 2 else x


# --------------------------------------------------------------------------
# Network


class SpikingNetwork(nn.Module):
    """A phenotype's network: input spikes ``[T, B, H, W, C]`` -> ``[T, B, K]``.

    Attributes:
      signature: the static architecture (see :func:`signature`).
      mode: ``"stepwise"``, ``"scan"`` or ``"layerwise"`` (see the module
        docstring); ``None`` picks :func:`default_mode`. All give the same
        result.
      init_scheme: ``"torch"`` (U(±1/sqrt(fan_in)) weights and biases, as
        PyTorch's defaults) or ``"lecun"`` (LeCun normal weights, zero bias).
    """

    signature: Signature
    mode: str | None = None
    init_scheme: str = "torch"

    def setup(self):
        layers = []
        for i, spec in enumerate(self.signature.layers):
            if isinstance(spec, Conv):
                layers.append(Conv2d(spec.filters, spec.kernel, spec.stride, spec.padding,
                                     spec.bias, self.init_scheme, name=f"conv_{i}"))
            elif isinstance(spec, Dense):
                layers.append(Linear(spec.units, spec.bias, self.init_scheme, name=f"dense_{i}"))
            elif isinstance(spec, LIFSlot):
                layers.append(LIFParams(name=f"lif_{i}"))
            else:
                layers.append(None)
        self.layers = layers

    def __call__(self, spikes: jax.Array, genes: Mapping[str, Any],
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """Runs the network over time.

        Args:
          spikes: input spikes, ``[T, B, H, W, C]`` (float).
          genes: the float genes (see :func:`genes`); only ``beta`` and
            ``threshold`` (read at initialisation) and ``dropout`` are used.
          dropout_key: PRNG key for the dropout masks; ``None`` disables
            dropout (evaluation).

        Returns:
          The last layer's output, ``[T, B, K]``: spikes if it is a LIF layer.
        """
        if spikes.ndim != 5:
            raise ValueError(f"spikes must be [T, B, H, W, C], got shape {spikes.shape}")
        mode = self.mode or default_mode()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if self.is_initializing():
            mode = "layerwise"  # parameters are created outside any transform
        run = {"stepwise": self._stepwise, "scan": self._scan, "layerwise": self._layerwise}[mode]
        return run(spikes, genes, dropout_key)

    # Helpers shared by the orders ------------------------------------------

    def _lif(self, i: int, genes) -> tuple[jax.Array, jax.Array, dict]:
        spec = self.signature.layers[i]
        j = sum(isinstance(x, LIFSlot) for x in self.signature.layers[:i])
        beta, threshold = self.layers[i](genes["beta"][j], genes["threshold"][j])
        options = dict(reset=spec.reset, spike_fn=SURROGATES[spec.surrogate](),
                       trainable_beta=spec.beta_trainable,
                       trainable_threshold=spec.threshold_trainable)
        return beta, threshold, options

    def _dropout_rate(self, i: int, genes) -> jax.Array:
        j = sum(isinstance(x, DropoutSlot) for x in self.signature.layers[:i])
        return genes["dropout"][j]

    def _stateless(self, i: int, x: jax.Array) -> jax.Array:
        """Conv, pool or dense layer ``i`` on a batch ``[N, ...]``."""
        spec = self.signature.layers[i]
        if isinstance(spec, Pool):
            return pool2d(x, spec.kind, spec.kernel)
        if isinstance(spec, Dense):
            x = _flatten(x)
        return self.layers[i](x)

    def _step(self, mems: tuple, x: jax.Array, t, genes, dropout_key) -> tuple[tuple, jax.Array]:
        """One time step of the whole network; ``mems`` has one entry per layer."""
        mems = list(mems)
        for i, spec in enumerate(self.signature.layers):
            if isinstance(spec, LIFSlot):
                beta, threshold, options = self._lif(i, genes)
                mem = jnp.zeros_like(x) if mems[i] is None else mems[i]
                mems[i], x = lif_step(mem, x, beta, threshold, **options)
            elif isinstance(spec, DropoutSlot):
                if dropout_key is not None:
                    x = x * dropout_keep(dropout_key, i, t, self._dropout_rate(i, genes), x.shape)
            else:
                x = self._stateless(i, x)
        return tuple(mems), x

    # Execution orders ------------------------------------------------------

    def _stepwise(self, spikes, genes, dropout_key):
        mems = (None,) * len(self.signature.layers)
        outputs = []
        for t in range(spikes.shape[0]):
            mems, y = self._step(mems, spikes[t], t, genes, dropout_key)
            outputs.append(y)
        return jnp.stack(outputs)

    def _scan(self, spikes, genes, dropout_key):
        shapes = layer_shapes(self.signature, spikes.shape[2:])
        mems = tuple(jnp.zeros((spikes.shape[1], *shapes[i]), jnp.float32)
                     if isinstance(spec, LIFSlot) else None
                     for i, spec in enumerate(self.signature.layers))

        def body(module, carry, inputs):
            x, t = inputs
            return module._step(carry, x, t, genes, dropout_key)

        # The lifted scan shares the parameters between steps (broadcast).
        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
        _, outputs = scan(self, mems, (spikes, jnp.arange(spikes.shape[0])))
        return outputs

    def _layerwise(self, spikes, genes, dropout_key):
        x = spikes
        steps, batch = spikes.shape[:2]
        for i, spec in enumerate(self.signature.layers):
            if isinstance(spec, LIFSlot):
                beta, threshold, options = self._lif(i, genes)
                if not self.is_initializing():  # init only needs the shapes
                    x, _ = lif_sequence(x, beta, threshold, **options)
            elif isinstance(spec, DropoutSlot):
                if dropout_key is not None:
                    rate = self._dropout_rate(i, genes)
                    keep = jax.vmap(lambda t: dropout_keep(dropout_key, i, t, rate, x.shape[1:]))
                    x = x * keep(jnp.arange(steps))
            else:
                y = self._stateless(i, x.reshape(steps * batch, *x.shape[2:]))
                x = y.reshape(steps, batch, *y.shape[1:])
        return x


def init_params(key: jax.Array, sig: Signature, genes: Mapping[str, Any],
                input_shape: tuple[int, int, int], *, init_scheme: str = "torch") -> dict:
    """Initial parameters (``{"conv_0": {...}, "lif_2": {...}, ...}``).

    Weights and biases are drawn from ``key``; β and θ are the genes' values.

    Raises:
      InvalidPhenotype: the network cannot process ``input_shape`` images.
    """
    layer_shapes(sig, input_shape)
    return _init_fn(sig, tuple(input_shape), init_scheme)(key, genes)


@functools.lru_cache(maxsize=256)
def _init_fn(sig: Signature, input_shape: tuple[int, ...], init_scheme: str):
    # Jitted and cached: op-by-op initialisation costs seconds per network.
    model = SpikingNetwork(sig, init_scheme=init_scheme)
    # NumPy, not jnp: a jnp array made during a caller's trace would be a
    # tracer, and this cached closure would leak it into later calls.
    dummy = np.zeros((1, 1, *input_shape), np.float32)
    return jax.jit(lambda key, genes: model.init(key, dummy, genes)["params"])


def trainable_mask(sig: Signature, params: Mapping[str, Any]) -> dict:
    """Pytree of bools like ``params``: False for fixed β/θ, True elsewhere.

    Fixed β/θ are buffers in PyTorch: no optimizer (not even weight decay)
    touches them. Training zeroes their final updates.
    """
    flags = {}
    for i, spec in enumerate(sig.layers):
        if isinstance(spec, LIFSlot):
            flags[f"lif_{i}"] = {"beta": spec.beta_trainable,
                                 "threshold": spec.threshold_trainable}

    def leaf(path, _):
        names = [p.key for p in path]
        return flags.get(names[0], {}).get(names[-1], True)

    return jax.tree_util.tree_map_with_path(leaf, dict(params))
