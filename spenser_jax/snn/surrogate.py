"""Heaviside spike functions with snntorch's surrogate gradients.

Each factory returns ``spike(x)``: the forward pass is the strict step
``x > 0`` (cast to ``x.dtype``), the backward pass is a smooth surrogate,
written with the same operation order as snntorch 1.0.0's
``snntorch.surrogate`` so that gradients agree to rounding.

The factories are memoised: equal parameters give the *same* function object,
so a spike function can be passed as a static argument of ``jax.jit`` and a
second call with ``atan()`` (or ``atan(2.0)``, ``atan(alpha=2)``) hits the
compilation cache instead of retracing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

SpikeFn = Callable[[jax.Array], jax.Array]


def _heaviside(x: jax.Array) -> jax.Array:
    # Strict inequality: a membrane exactly at threshold does not spike.
    return (x > 0).astype(x.dtype)


def _make_spike(name: str, surrogate_grad: Callable) -> SpikeFn:
    """Wraps ``surrogate_grad(x, g) -> dL/dx`` into a custom-VJP Heaviside."""

    @jax.custom_vjp
    def spike(x):
        return _heaviside(x)

    def fwd(x):
        return _heaviside(x), x

    def bwd(x, g):
        return (surrogate_grad(x, g),)

    spike.defvjp(fwd, bwd)
    spike.__name__ = spike.__qualname__ = name
    return spike


@functools.cache
def _atan(alpha: float) -> SpikeFn:
    def grad(x, g):
        # snntorch: alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2) * grad
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2) * g

    return _make_spike(f"atan(alpha={alpha!r})", grad)


@functools.cache
def _fast_sigmoid(slope: float) -> SpikeFn:
    def grad(x, g):
        # snntorch: grad / (slope * |x| + 1.0) ** 2
        return g / (slope * jnp.abs(x) + 1.0) ** 2

    return _make_spike(f"fast_sigmoid(slope={slope!r})", grad)


def atan(alpha: float = 2.0) -> SpikeFn:
    """Heaviside spike with the arctangent surrogate gradient.

    Backward: ``dS/dx = (alpha / 2) / (1 + (pi * alpha * x / 2) ** 2)``.

    References:
        snntorch.surrogate.atan; Fang et al. (2021), ICCV.
    """
    return _atan(float(alpha))


def fast_sigmoid(slope: float = 25.0) -> SpikeFn:
    """Heaviside spike with the fast-sigmoid (SuperSpike) surrogate gradient.

    Backward: ``dS/dx = 1 / (slope * |x| + 1) ** 2``.

    References:
        snntorch.surrogate.fast_sigmoid; Zenke & Ganguli (2018), Neural Comput.
    """
    return _fast_sigmoid(float(slope))


# Keyed by the grammar's `surr-grad` values; each entry is a factory.
SURROGATES: dict[str, Callable[..., SpikeFn]] = {
    "atan": atan,
    "fast-sigmoid": fast_sigmoid,
}
