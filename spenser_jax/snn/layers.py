"""The network's building blocks: Flax layers, their initialisation, and the stateless primitives.

Conv (:class:`Conv2d`, NHWC input, HWIO kernel; on CPU through
:func:`spenser_jax.snn.conv.conv_nhwc`) and dense (:class:`Linear`) layers are
initialised as PyTorch's defaults (``"torch"``) or LeCun normal (``"lecun"``);
:class:`LIFParams` holds a LIF layer's β and θ. Pooling (:func:`pool2d`), the
dropout masks (:func:`dropout_keep`) and the merge of skip connections
(:func:`merge_inputs`) are plain functions on arrays, shared by every
execution order of :class:`spenser_jax.snn.network.SpikingNetwork`.
"""

from __future__ import annotations

import math
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp

from spenser_jax.genome import draws
from spenser_jax.genome.phenotype import same_padding
from spenser_jax.snn.architecture import LIFSlot
from spenser_jax.snn.conv import _DN, conv_nhwc
from spenser_jax.snn.surrogate import SURROGATES

INIT_SCHEMES = ("torch", "lecun")


_deferred = threading.local()
"""While ``spenser_jax.snn.network._init_fn``'s program is traced: the weight draws it still owes (see there)."""


def _torch_uniform(fan_in: int):
    # PyTorch's default for Conv2d/Linear: kaiming_uniform(a=sqrt(5)) for the
    # weights and U(±1/sqrt(fan_in)) for the bias; both bounds are
    # 1/sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        owed = getattr(_deferred, "draws", None)
        if owed is not None and dtype == jnp.float32:
            placeholder = jnp.zeros(shape, dtype)
            owed.append(((key, tuple(shape), -bound, bound), placeholder))
            return placeholder
        return draws.uniform(key, shape, dtype, -bound, bound)

    return init


def _initializers(scheme: str, fan_in: int):
    if scheme == "torch":
        return _torch_uniform(fan_in), _torch_uniform(fan_in)
    if scheme == "lecun":
        return nn.initializers.lecun_normal(), nn.initializers.zeros_init()
    raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")


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
    """Holds one LIF layer's β and θ (scalars), initialised from its float genes."""

    @nn.compact
    def __call__(self, beta0: jax.Array, threshold0: jax.Array) -> tuple[jax.Array, jax.Array]:
        beta = self.param("beta", lambda _: jnp.asarray(beta0, jnp.float32))
        threshold = self.param("threshold", lambda _: jnp.asarray(threshold0, jnp.float32))
        return beta, threshold


def lif_options(spec: LIFSlot) -> dict:
    """The keyword arguments of :func:`~spenser_jax.snn.lif.lif_step` / ``lif_sequence`` for a LIF slot."""
    return dict(
        reset=spec.reset,
        spike_fn=SURROGATES[spec.surrogate](),
        trainable_beta=spec.beta_trainable,
        trainable_threshold=spec.threshold_trainable,
    )


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
    windows = x[:, : ho * k, : wo * k, :].reshape(n, ho, k, wo, k, c)
    if kind == "avg":
        return windows.mean(axis=(2, 4))
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, k * k)
    first = jax.nn.one_hot(jnp.argmax(windows, axis=-1), k * k, dtype=x.dtype)
    return jnp.sum(windows * first, axis=-1)


def dropout_keep(key: jax.Array, layer: int, t: jax.Array | int, rate: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Inverted-dropout multiplier of one layer at one time step.

    ``keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)``, drawn from
    ``fold_in(fold_in(key, layer), t)``, so every execution order draws the
    same mask. ``rate = 0`` gives exactly 1 everywhere.
    """
    step_key = jax.random.fold_in(jax.random.fold_in(key, layer), t)
    keep = draws.uniform(step_key, shape) >= rate  # P = 1 - rate
    scale = jnp.where(rate < 1, 1 / (1 - rate), 0.0)
    return keep.astype(jnp.float32) * scale


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1) if x.ndim > 2 else x


def merge_inputs(xs: list[jax.Array]) -> jax.Array:
    """Several layers' outputs as one input (:func:`spenser_jax.genome.phenotype.merge_shape`).

    Feature maps ``[N, H, W, C]`` are max-pooled by the integer factor to
    the smallest height and width among them and cropped to it (spikes stay
    spikes), then concatenated along the channels; if any input is flat
    ``[N, F]``, all are flattened (H, W, C order) and concatenated.
    """
    if all(x.ndim == 4 for x in xs):
        h, w = min(x.shape[1] for x in xs), min(x.shape[2] for x in xs)
        parts = []
        for x in xs:
            fh, fw = x.shape[1] // h, x.shape[2] // w
            if fh > 1 or fw > 1:
                n, rows, cols, c = x.shape
                x = (
                    x[:, : rows // fh * fh, : cols // fw * fw]
                    .reshape(n, rows // fh, fh, cols // fw, fw, c)
                    .max(axis=(2, 4))
                )
            parts.append(x[:, :h, :w])
        return jnp.concatenate(parts, axis=-1)
    return jnp.concatenate([_flatten(x) for x in xs], axis=-1)
