"""The genotype's learning unit as an optax optimizer with PyTorch's semantics.

The original SPENSER code hands the learning unit to ``torch.optim``:
``SGD`` (dampening 0), ``Adam`` (eps 1e-8, ``amsgrad``) and ``RMSprop``
(``alpha=rho``, eps 1e-8 outside the square root, no momentum, not
centred). ``decay`` is PyTorch's ``weight_decay``: L2 added to the gradient
(``g += decay * p``) before anything else, on every parameter (trainable β
and θ included).

Only the optimizer kind and its booleans shape the program
(:class:`OptimizerKey`, :func:`static_key`); the float genes
(:func:`float_hparams`) may be traced, so offspring that differ only in
float genes share one compiled, vmappable update. Deliberate deviation:
RMSProp's ρ is clamped to at most :data:`RHO_MAX` (:func:`make_optimizer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spenser_jax.genome.phenotype import SGD, Adam, Optimizer, RMSProp
from spenser_jax.genome.units import OptimizerKey, float_hparams, static_key

EPS = 1e-8
"""PyTorch's default ``eps`` for Adam and RMSprop (the original code keeps it)."""

RHO_MAX = 0.999
"""Largest effective RMSProp ρ. The grammar allows ρ up to 1.0, where the
second moment never accumulates and every step is ``lr * g / eps``."""

Hparams = Mapping[str, jax.typing.ArrayLike]


def make_optimizer(
    spec: Optimizer | OptimizerKey, hparams: Hparams | None = None, *, rho_max: float = RHO_MAX
) -> optax.GradientTransformation:
    """Build the optax transformation for a learning unit (or its :class:`OptimizerKey`).

    ``hparams`` are the float genes by name (:func:`float_hparams`), possibly
    traced; with a learning unit, missing names default to its values, which
    are then compile-time constants (to share one program across learning
    units, pass all of them); with a key, all are required. The ``update``
    needs ``params`` (weight decay reads them).

    RMSProp's ρ is clamped to ``rho_max``: at ρ = 1 torch never accumulates
    the second moment and steps are ``lr * g / eps`` (about 1e6·lr·g); the
    clamp bounds every step by ``lr / sqrt(1 - rho_max)`` per element (about
    31.6·lr by default). This deviates from the original code for ρ in
    (rho_max, 1] on purpose, and cannot be switched off.

    Raises:
      TypeError: ``spec`` is not a known learning unit or key.
      ValueError: unknown, missing or non-scalar ``hparams``; ``rho_max`` not
        in (0, 1).
    """
    if isinstance(spec, OptimizerKey):
        key, hp = spec, {}
    else:
        key, hp = static_key(spec), dict(float_hparams(spec))
    if not isinstance(rho_max, float) or not 0.0 < rho_max < 1.0:
        raise ValueError(f"rho_max must be a Python float in (0, 1), got {rho_max!r}")
    names = key.float_names
    for name, value in (hparams or {}).items():
        if name not in names:
            raise ValueError(f"unknown hyperparameter {name!r} for {key.kind} (known: {sorted(names)})")
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"hyperparameter {name!r} must be a scalar, got shape "
                f"{jnp.shape(value)} (vmap over offspring instead of batching)"
            )
        hp[name] = value
    missing = [n for n in names if n not in hp]
    if missing:
        raise ValueError(f"{key.kind}: hyperparameters {missing} missing")
    return _BUILDERS[key.kind](dict(key.flags), hp, rho_max)


# Builders, one per learning unit: (boolean genes, float genes, rho_max)


def _sgd(flags: dict[str, bool], hp: dict[str, Any], rho_max: float) -> optax.GradientTransformation:
    del rho_max
    # optax.trace matches torch exactly: its buffer starts at 0, so the first
    # step gives buf = g (torch's clone), then buf = m·buf + g; Nesterov uses
    # g + m·buf as torch does.
    return optax.chain(
        optax.add_decayed_weights(hp["decay"]),
        optax.trace(decay=hp["momentum"], nesterov=flags["nesterov"]),
        optax.scale_by_learning_rate(hp["lr"]),
    )


def _adam(flags: dict[str, bool], hp: dict[str, Any], rho_max: float) -> optax.GradientTransformation:
    del rho_max
    if flags["amsgrad"]:
        scaling = scale_by_torch_amsgrad(hp["beta1"], hp["beta2"], EPS)
    else:
        # m̂ / (sqrt(v̂) + eps), as torch's lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps).
        scaling = optax.scale_by_adam(b1=hp["beta1"], b2=hp["beta2"], eps=EPS, eps_root=0.0)
    return optax.chain(
        optax.add_decayed_weights(hp["decay"]),
        scaling,
        optax.scale_by_learning_rate(hp["lr"]),
    )


def _rmsprop(flags: dict[str, bool], hp: dict[str, Any], rho_max: float) -> optax.GradientTransformation:
    del flags
    rho = jnp.minimum(hp["rho"], rho_max)
    # torch: square_avg starts at 0 (optax's old default was 1), eps is added
    # after the square root, no bias correction.
    return optax.chain(
        optax.add_decayed_weights(hp["decay"]),
        optax.scale_by_rms(decay=rho, eps=EPS, initial_scale=0.0, eps_in_sqrt=False, bias_correction=False),
        optax.scale_by_learning_rate(hp["lr"]),
    )


_BUILDERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    SGD.tag: _sgd,
    Adam.tag: _adam,
    RMSProp.tag: _rmsprop,
}


def scale_by_torch_amsgrad(
    b1: jax.typing.ArrayLike, b2: jax.typing.ArrayLike, eps: jax.typing.ArrayLike = EPS
) -> optax.GradientTransformation:
    """AMSGrad scaling exactly as ``torch.optim.Adam(amsgrad=True)``.

    torch keeps the running maximum of the *raw* second moment and divides it
    by the *current* bias correction: ``m̂ / (sqrt(max_t v_t) / sqrt(1 - b2^t)
    + eps)``. ``optax.scale_by_amsgrad`` takes the maximum of the
    bias-corrected moment (``bias_correction_nu=True``) or skips the
    correction altogether (``False``); neither matches, and eps cannot be
    rescaled to make them match, hence this transformation.
    """

    def init_fn(params):
        return optax.ScaleByAmsgradState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            nu_max=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        sqrt_bc2 = jnp.sqrt(1 - b2**count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) / sqrt_bc2.astype(v.dtype) + eps), mu_hat, nu_max)
        return updates, optax.ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)
