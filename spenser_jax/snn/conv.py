"""A 2-D convolution (NHWC input, HWIO kernel) whose gradients keep that layout.

:func:`conv_nhwc` is XLA's convolution with a custom VJP: a job of its own,
apart from the network that calls it (``network.Conv2d`` on CPU), because it
is about XLA:CPU's fast path, not about spiking networks
(``benchmarks/conv_layout_experiment.py`` measures it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
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
    dx = jax.lax.conv_general_dilated(g, kernel_t, (1, 1), pads_x, lhs_dilation=strides, dimension_numbers=_DN)
    # dW: channels as the batch, the batch as features, the cotangent as the
    # (stride-dilated) kernel: [C_in, kh, kw, C_out].
    pads_w = [(padding[d][0], k[d] + (out_size[d] - 1) * strides[d] - in_size[d] - padding[d][0]) for d in range(2)]
    dw = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads_w, rhs_dilation=strides, dimension_numbers=_DN
    )
    return dx, dw.transpose(1, 2, 0, 3)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)
