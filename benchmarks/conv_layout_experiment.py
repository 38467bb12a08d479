"""Experiment: autodiff's convolution gradients vs ``network.conv_nhwc`` inside the epoch loop.

Finding (jax 0.10.2, XLA:CPU): a convolution inside a loop body (``lax.scan``
or ``while``) that is not in XLA's canonical NHWC/HWIO layout does not get
the transposes XLA adds elsewhere: it runs as a plain, very slow convolution
thunk instead of a YNNPACK one (jax-ml/jax#12868, open). A forward NHWC/HWIO
convolution is canonical, but the two convolutions autodiff derives for its
backward pass are not (dW: ``f01b_i01o->01bf``; dX: kernel ``01oi``).
``training.make_train_epoch`` scans over batches, so every training step runs
them inside a loop.

The product's answer is :func:`spenser_jax.snn.network.conv_nhwc`: a
``jax.custom_vjp`` convolution whose backward pass computes both gradients as
NHWC/HWIO convolutions; ``network.Conv2d`` uses it on the CPU backend. This
script compares, on the product's own training epoch:

* ``conv_nhwc``: the product as it is (``training.make_train_epoch``);
* ``autodiff``: the same epoch traced while ``network.Conv2d``'s convolution
  is plain ``jax.lax.conv_general_dilated`` (autodiff's gradients): the
  module's ``conv_nhwc`` name is swapped for the plain convolution during
  tracing (:func:`autodiff_conv`), and the traced program is checked to hold
  no custom-VJP convolution.

It (1) checks ``conv_nhwc``'s output and gradients against autodiff (kernels
2-5, strides 1-3, valid/same), (2) times both epochs of every time-loop order,
interleaved with the snntorch loop and our host-loop reference as
``train_throughput.py`` does, and (3) counts unfused convolution ops in each
compiled epoch. CPU only: on other backends ``network.Conv2d`` does not use
``conv_nhwc``. Results go to ``<out>/conv_layout_experiment_cpu_<date>.json``.

Usage (from the repository root)::

    python benchmarks/conv_layout_experiment.py                  # T = 10 and 25, ~10 min
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

import common  # benchmarks/common.py (the script's folder is on sys.path)
import harness
import jax
import jax.numpy as jnp

from spenser_jax import training
from spenser_jax.genome.phenotype import same_padding
from spenser_jax.snn import layers, network
from spenser_jax.training.protocol import Protocol

_DN = ("NHWC", "HWIO", "NHWC")


def plain_conv(x, kernel, strides, padding):
    """The convolution with autodiff's gradients (what ``conv_nhwc`` replaces)."""
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DN)


@contextlib.contextmanager
def autodiff_conv():
    """While tracing inside this block, ``network.Conv2d`` convolves with :func:`plain_conv`."""
    product = layers.conv_nhwc  # Conv2d reads it from its own module (spenser_jax.snn.layers)
    layers.conv_nhwc = plain_conv
    try:
        yield
    finally:
        layers.conv_nhwc = product


def custom_vjp_calls(sig, hyper) -> int:
    """Custom-VJP calls (``conv_nhwc``, and the LIF surrogates) in the forward pass of ``sig``."""
    params = network.init_params(jax.random.key(0), sig, hyper, harness.INPUT_SHAPE)
    model = network.SpikingNetwork(sig)
    spikes = jnp.zeros((2, 2, *harness.INPUT_SHAPE))
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, spikes, hyper))(params)
    return str(jaxpr).count("custom_vjp_call")


# --------------------------------------------------------------------------
# (1) Same gradients


def check_gradients(key: jax.Array) -> list[dict]:
    """Outputs and both gradients of ``network.conv_nhwc`` vs autodiff of lax's conv."""
    cases = [(k, s, p) for k in (2, 3, 4, 5) for s in (1, 2, 3) for p in ("valid", "same")]
    rows = []
    for i, (k, s, padding) in enumerate(cases):
        key_x, key_w, key_g = jax.random.split(jax.random.fold_in(key, i), 3)
        x = jax.random.normal(key_x, (3, 13, 11, 4))
        w = jax.random.normal(key_w, (k, k, 4, 5))
        pads = tuple(same_padding(n, k, s) for n in x.shape[1:3]) if padding == "same" else ((0, 0), (0, 0))

        @jax.jit
        def both(x, w, key_g, s=s, pads=pads):
            # One program per case (op by op, every case would compile dozens).
            y0, vjp0 = jax.vjp(lambda x, w: plain_conv(x, w, (s, s), pads), x, w)
            y1, vjp1 = jax.vjp(lambda x, w: network.conv_nhwc(x, w, (s, s), pads), x, w)
            g = jax.random.normal(key_g, y0.shape)
            return (y0, *vjp0(g)), (y1, *vjp1(g))

        errors = [float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30)) for a, b in zip(*both(x, w, key_g))]
        rows.append(
            {"kernel": k, "stride": s, "padding": padding, "rel_err_y_dx_dw": [float(f"{e:.2e}") for e in errors]}
        )
        if max(errors) > 1e-5:
            raise AssertionError(f"conv_nhwc differs from autodiff: {rows[-1]}")
    return rows


# --------------------------------------------------------------------------
# (2) Epoch throughput, (3) unfused convolutions


class AutodiffTrainer(harness.JaxTrainer):
    """Our jitted epoch, traced with autodiff's convolution gradients."""

    def __init__(self, key, sig, hyper, time_steps, mode, images, labels):
        # A fresh jit (not make_train_epoch's cached one), traced under the patch.
        fn = jax.jit(
            functools.partial(training.train_epoch, sig, Protocol(time_steps, batch_size=harness.BATCH, mode=mode)),
            donate_argnums=(0,),
        )
        super().__init__(key, sig, hyper, time_steps, mode, images, labels, epoch_fn=fn, label=f"{mode}, autodiff conv")

    def warmup(self, run_epoch: bool = True) -> dict[str, float]:
        with autodiff_conv():
            return super().warmup(run_epoch)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--modes", nargs="+", choices=network.MODES, default=list(network.MODES))
    parser.add_argument(
        "--epoch-steps", type=int, default=4, help="steps per epoch of the conv_nhwc (product) runners (default 4)"
    )
    parser.add_argument(
        "--autodiff-steps", type=int, default=2, help="steps per epoch of the (slow) autodiff runners (default 2)"
    )
    parser.add_argument(
        "--autodiff-time-steps",
        type=int,
        nargs="*",
        default=[10],
        help="T at which the autodiff epochs run too (default 10)",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="steps per epoch of snntorch and the host loop (default 10)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=90.0)
    parser.add_argument("--long-epoch-s", type=float, default=20.0)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if min(args.epoch_steps, args.autodiff_steps) < 2:
        parser.error("epochs need >= 2 steps (XLA removes a loop of one iteration)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    if jax.default_backend() != "cpu":
        print(
            f"conv_layout_experiment: backend {jax.default_backend()}: network.Conv2d uses "
            "autodiff's convolution there (conv_nhwc is for XLA:CPU); nothing to compare",
            file=sys.stderr,
        )
        return 2
    load_before = common.load_average()
    log(f"load {load_before}; checking network.conv_nhwc's gradients against autodiff ...")
    key = jax.random.key(args.seed)
    checks = check_gradients(key)
    worst = max(max(r["rel_err_y_dx_dw"]) for r in checks)
    log(f"  {len(checks)} cases (kernel 2-5, stride 1-3, valid/same): max relative error {worst:.1e}")

    sig, hyper = harness.reference_network()
    with autodiff_conv():
        patched = custom_vjp_calls(sig, hyper)
    if patched >= custom_vjp_calls(sig, hyper):
        raise RuntimeError(
            "network.Conv2d no longer calls network.conv_nhwc by that name on CPU: "
            "the autodiff side cannot be built; update autodiff_conv()"
        )
    n = max(args.steps, args.epoch_steps, args.autodiff_steps) * harness.BATCH
    images, labels, source = common.load_train_images("mnist", n, args.seed)
    tm, note = None, "skipped (--skip-torch)"
    if not args.skip_torch:
        try:
            tm = harness.import_torch("cpu")
            note = f"torch {tm.torch.__version__}, snntorch {tm.snntorch.__version__}"
        except harness.TorchUnavailable as err:
            note = str(err)
            print(err, file=sys.stderr)

    def subset(steps):
        return images[: steps * harness.BATCH], labels[: steps * harness.BATCH]

    rows, hlo_counts = [], {}
    for time_steps in args.time_steps:
        log(f"T = {time_steps}")
        key_t = jax.random.fold_in(key, time_steps)
        runners = []
        for mode in args.modes:
            if time_steps in args.autodiff_time_steps:
                runners.append(AutodiffTrainer(key_t, sig, hyper, time_steps, mode, *subset(args.autodiff_steps)))
            runners.append(
                harness.JaxTrainer(
                    key_t, sig, hyper, time_steps, mode, *subset(args.epoch_steps), label=f"{mode}, conv_nhwc"
                )
            )
        runners.append(harness.JaxStepLoop(key_t, sig, hyper, time_steps, network.default_mode(), *subset(args.steps)))
        if tm is not None:
            runners += [
                harness.TorchTrainer(tm, args.seed, time_steps, *subset(args.steps), threads)
                for threads in dict.fromkeys([os.cpu_count() or 1, 1])
            ]
        rows += harness.measure_throughput(runners, args.repeats, args.budget_s, log, long_epoch_s=args.long_epoch_s)
        for r in runners:
            if isinstance(r, harness.JaxTrainer) and not isinstance(r, harness.JaxStepLoop):
                hlo_counts[f"T{time_steps} {r.label}"] = harness.unfused_convolutions(r.compiled.as_text())
        del runners
    harness.add_ratios(rows)
    speedups = {}
    for t in args.time_steps:
        for mode in args.modes:
            pair = {r["label"]: r for r in rows if r["time_steps"] == t and r["mode"] == mode}
            a, b = pair.get(f"{mode}, autodiff conv"), pair.get(f"{mode}, conv_nhwc")
            if a and b:
                speedups[f"T{t} {mode}"] = round(b["samples_per_s"] / a["samples_per_s"], 2)

    print()
    table = harness.print_table(rows, network.default_mode())
    print("unfused convolution ops in each compiled epoch:", ", ".join(f"{k}: {v}" for k, v in hlo_counts.items()))
    print("conv_nhwc over autodiff (samples/s):", ", ".join(f"{k}: {v}x" for k, v in speedups.items()), flush=True)
    payload = {
        **common.header("conv_layout_experiment", load_before),
        "settings": {"phenotype": harness.REFERENCE_PHENOTYPE, "data": source, "snntorch": note, **vars(args)},
        "gradient_check": {"cases": checks, "max_relative_error": worst},
        "results": rows,
        "conv_nhwc_speedup_over_autodiff": speedups,
        "unfused_convolutions": hlo_counts,
        "table": table,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    if not args.no_write:
        log(f"wrote {common.write_result('conv_layout_experiment_cpu', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
