"""Experiment: convolution gradients in canonical layouts, for XLA:CPU loops.

Finding (jax 0.10.2, XLA:CPU): a convolution inside a loop body (``lax.scan``
or ``while``) that is not in XLA's canonical NHWC/HWIO layout does not get
the transposes XLA adds elsewhere: it runs as a plain, very slow convolution
thunk instead of a YNNPACK one (jax-ml/jax#12868, open). The forward conv of
``network.Conv2d`` is canonical, but the two convolutions autodiff derives
for its backward pass are not (dW: ``f01b_i01o->01bf``; dX: kernel
``01oi``). ``training.make_train_epoch`` scans over batches, so every
training step of the product runs them inside a loop: ~1-2 s per backward
convolution call instead of ~5 ms, and an epoch step is ~10-40x slower than
the same step outside a loop (the ``"scan"`` order's time loop has the same
problem).

Proposed change (in ``network.Conv2d``; nothing else changes): compute the
convolution with a ``jax.custom_vjp`` whose backward pass builds both
gradients as canonical NHWC/HWIO convolutions, with explicit transposes in
JAX (:func:`conv_nhwc` below, ~40 lines). Gradients are the same
computations in another layout: this script checks them against autodiff
for strides 1-3, valid/same padding and kernels 2-5.

This script (1) runs that check, (2) times our jitted epochs with the
product's conv and with the proposed one, interleaved with the snntorch loop
and our host-loop reference, as ``train_throughput.py`` does, and (3) counts
unfused convolution ops in each compiled epoch. Results go to
``benchmarks/results/conv_layout_experiment_<backend>_<date>.json``.

Usage (from the repository root)::

    python benchmarks/conv_layout_experiment.py                  # T = 10 and 25, ~8 min
    python benchmarks/conv_layout_experiment.py --time-steps 10 --modes stepwise
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Sequence

import common
import jax
import jax.numpy as jnp
import train_throughput as tt

from spenser_jax import network, phenotype, training

_DN = ("NHWC", "HWIO", "NHWC")
_lax_conv = jax.lax.conv_general_dilated


# --------------------------------------------------------------------------
# The proposed convolution


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, strides, padding)`` in NHWC/HWIO.

    Same forward; the backward pass computes dX and dW as NHWC/HWIO
    convolutions (explicit transposes), the layout XLA:CPU runs fast inside
    loop bodies too.
    """
    return _lax_conv(x, kernel, strides, padding, dimension_numbers=_DN)


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
    dx = _lax_conv(g, kernel_t, (1, 1), pads_x, lhs_dilation=strides, dimension_numbers=_DN)
    # dW: channels as the batch and the batch as features, the cotangent as
    # the (stride-dilated) kernel: [C_in, kh, kw, C_out].
    pads_w = []
    for d in range(2):
        before = padding[d][0]
        pads_w.append((before, k[d] + (out_size[d] - 1) * strides[d] - in_size[d] - before))
    dw = _lax_conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads_w,
                   rhs_dilation=strides, dimension_numbers=_DN)
    return dx, dw.transpose(1, 2, 0, 3)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


def _conv_dispatch(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, **kwargs):
    # network.Conv2d's call: NHWC/HWIO, explicit padding pairs, no dilation.
    if (dimension_numbers == _DN and lhs_dilation is None and rhs_dilation is None
            and not kwargs and not isinstance(padding, str)):
        return conv_nhwc(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
    return _lax_conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                     rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, **kwargs)


@contextlib.contextmanager
def proposed_conv():
    """While tracing inside this block, ``network.Conv2d`` uses :func:`conv_nhwc`."""
    jax.lax.conv_general_dilated = _conv_dispatch
    try:
        yield
    finally:
        jax.lax.conv_general_dilated = _lax_conv


# --------------------------------------------------------------------------
# (1) Same gradients


def check_gradients(key: jax.Array) -> list[dict]:
    """Outputs and both gradients of :func:`conv_nhwc` vs autodiff of lax's conv."""
    cases = []
    for kernel in (2, 3, 4, 5):
        for stride in (1, 2, 3):
            for padding in ("valid", "same"):
                cases.append((kernel, stride, padding))
    rows = []
    for i, (k, s, padding) in enumerate(cases):
        key_x, key_w, key_g = jax.random.split(jax.random.fold_in(key, i), 3)
        x = jax.random.normal(key_x, (3, 13, 11, 4))
        w = jax.random.normal(key_w, (k, k, 4, 5))
        if padding == "same":
            pads = tuple(network.same_padding(n, k, s) for n in x.shape[1:3])
        else:
            pads = ((0, 0), (0, 0))

        def reference(x, w, s=s, pads=pads):
            return _lax_conv(x, w, (s, s), pads, dimension_numbers=_DN)

        def proposed(x, w, s=s, pads=pads):
            return conv_nhwc(x, w, (s, s), pads)

        y0, vjp0 = jax.vjp(reference, x, w)
        y1, vjp1 = jax.vjp(proposed, x, w)
        g = jax.random.normal(key_g, y0.shape)
        errors = [float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
                  for a, b in zip((y0, *vjp0(g)), (y1, *vjp1(g)))]
        rows.append({"kernel": k, "stride": s, "padding": padding,
                     "rel_err_y_dx_dw": [float(f"{e:.2e}") for e in errors]})
        if max(errors) > 1e-5:
            raise AssertionError(f"conv_nhwc differs from autodiff: {rows[-1]}")
    return rows


# --------------------------------------------------------------------------
# (2) Epoch throughput, (3) unfused convolutions


class ProposedTrainer(tt.JaxTrainer):
    """Our jitted epoch, traced with :func:`conv_nhwc` in ``network.Conv2d``."""

    def __init__(self, key, sig, genes, time_steps, mode, images, labels):
        # A fresh jit (not make_train_epoch's cached one), traced under the patch.
        fn = jax.jit(functools.partial(training.train_epoch, sig, time_steps=time_steps,
                                       batch_size=tt.BATCH, mode=mode), donate_argnums=(0,))
        super().__init__(key, sig, genes, time_steps, mode, images, labels, epoch_fn=fn,
                         label=f"{mode} + conv_nhwc")

    def warmup(self, run_epoch: bool = True) -> dict[str, float]:
        with proposed_conv():
            return super().warmup(run_epoch)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--modes", nargs="+", choices=network.MODES,
                        default=["stepwise", "scan", "layerwise"])
    parser.add_argument("--epoch-steps", type=int, default=4,
                        help="steps per epoch of the proposed runners (default 4)")
    parser.add_argument("--baseline-steps", type=int, default=2,
                        help="steps per epoch of the product's (slow) runners (default 2)")
    parser.add_argument("--steps", type=int, default=10,
                        help="steps per epoch of snntorch and the host loop (default 10)")
    parser.add_argument("--baseline-time-steps", type=int, nargs="*", default=[10],
                        help="T at which the product's (slow) epochs run too (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=90.0)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if min(args.epoch_steps, args.baseline_steps) < 2:
        parser.error("epochs need >= 2 steps (XLA removes a loop of one iteration)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    load_before = common.load_average()
    log(f"load {load_before}; checking conv_nhwc's gradients against autodiff ...")
    key = jax.random.key(args.seed)
    checks = check_gradients(key)
    worst = max(max(r["rel_err_y_dx_dw"]) for r in checks)
    log(f"  {len(checks)} cases (kernel 2-5, stride 1-3, valid/same): max relative error "
        f"{worst:.1e}")

    sig, genes = network.split(phenotype.parse(tt.REFERENCE_PHENOTYPE))
    n = max(args.steps, args.epoch_steps, args.baseline_steps) * tt.BATCH
    images, labels, source = tt.load_images(n, "mnist", args.seed)
    tm = None
    if not args.skip_torch:
        try:
            tm = tt.import_torch()
        except tt.TorchUnavailable as err:
            print(err, file=sys.stderr)

    def subset(steps):
        return images[:steps * tt.BATCH], labels[:steps * tt.BATCH]

    rows, hlo_counts = [], {}
    for time_steps in args.time_steps:
        log(f"T = {time_steps}")
        key_t = jax.random.fold_in(key, time_steps)
        runners = []
        for mode in args.modes:
            if time_steps in args.baseline_time_steps:
                runners.append(tt.JaxTrainer(key_t, sig, genes, time_steps, mode,
                                             *subset(args.baseline_steps)))
            runners.append(ProposedTrainer(key_t, sig, genes, time_steps, mode,
                                           *subset(args.epoch_steps)))
        runners.append(tt.JaxStepLoop(key_t, sig, genes, time_steps, network.default_mode(),
                                      *subset(args.steps)))
        if tm is not None:
            runners += [tt.TorchTrainer(tm, args.seed, time_steps, *subset(args.steps), threads)
                        for threads in dict.fromkeys([os.cpu_count() or 1, 1])]
        rows += tt.measure_throughput(runners, args.repeats, args.budget_s, log)
        for r in runners:
            if isinstance(r, tt.JaxTrainer) and not isinstance(r, tt.JaxStepLoop):
                count = tt.unfused_convolutions(r.compiled.as_text())
                hlo_counts[f"T{time_steps} {r.label}"] = count
        del runners

    print()
    table = tt.print_table(rows, network.default_mode())
    print("unfused convolution ops in each compiled epoch:",
          ", ".join(f"{k}: {v}" for k, v in hlo_counts.items()))
    payload = {
        "benchmark": "conv_layout_experiment",
        "machine": common.machine_info(),
        "versions": common.versions(),
        "load_average": {"before": load_before, "after": common.load_average()},
        "settings": {"phenotype": tt.REFERENCE_PHENOTYPE, "data": source, **vars(args)},
        "gradient_check": {"cases": checks, "max_relative_error": worst},
        "results": rows,
        "unfused_convolutions": hlo_counts,
        "table": table,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    if not args.no_write:
        log(f"wrote {common.write_result(f'conv_layout_experiment_{jax.default_backend()}', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
