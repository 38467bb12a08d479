"""Reusable parts of the training-throughput benchmarks (no measurement runs here).

* The reference CSNN (:data:`REFERENCE_PHENOTYPE`) and its snntorch twin
  (:func:`torch_network`).
* Runners, each timing whole epochs after a warm-up: :class:`JaxTrainer` (our
  jitted epoch, ``training.make_train_epoch`` or a given jitted function),
  :class:`JaxStepLoop` (our jitted step from a host loop), :class:`TorchTrainer`
  (a typical snntorch loop, on the CPU or a CUDA device).
* :func:`measure_throughput`: warm-up, then timed rounds in rotated order;
  :func:`add_ratios`: ours over snntorch per ``T``.
* Profiling: :func:`profile_jax`, :func:`profile_torch`,
  :func:`xla_op_breakdown`, :func:`unfused_convolutions`.
* Reporting: :func:`print_table`, :func:`summarise_loop_gap`,
  :func:`summarise_profile`.

Used by ``train_throughput.py`` and ``conv_layout_experiment.py``.
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time
import types
from typing import Any

import common
import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax import training
from spenser_jax.snn import architecture, encoding, loss, network
from spenser_jax.training.protocol import Protocol

BATCH = 64
INPUT_SHAPE = (28, 28, 1)
LR = 5e-4
BETA, THRESHOLD = 0.9, 1.0

_LIF = (
    f"layer:act beta:{BETA} beta-trainable:False threshold:{THRESHOLD} "
    "threshold-trainable:False surr-grad:atan reset:subtract"
)
REFERENCE_PHENOTYPE = " ".join(
    [
        "layer:conv num-filters:32 filter-shape:5 stride:1 padding:valid bias:True",
        "layer:pool-max kernel-size:2",
        _LIF,
        "layer:conv num-filters:64 filter-shape:5 stride:1 padding:valid bias:True",
        "layer:pool-max kernel-size:2",
        _LIF,
        "layer:fc num-units:128 bias:True",
        _LIF,
        "layer:fc num-units:10 bias:True",
        _LIF,
        f"learning:adam lr:{LR} beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False",
    ]
)

# Names of the reference network's parameter scopes in the Flax module.
LAYER_NAMES = {"conv_0": "conv1", "conv_3": "conv2", "dense_6": "fc1", "dense_8": "fc2"}


def reference_network() -> tuple[architecture.Signature, architecture.Hyper]:
    """``(signature, hyper)`` of the reference CSNN."""
    from spenser_jax.genome import phenotype

    return architecture.split(phenotype.parse(REFERENCE_PHENOTYPE))


class TorchUnavailable(RuntimeError):
    """torch or snntorch cannot be imported."""


# --------------------------------------------------------------------------
# Our side


def unfused_convolutions(hlo_text: str) -> int:
    """Convolution ops outside fusions in compiled HLO text.

    On XLA:CPU, convolutions in XLA's canonical layout become YNNPACK fusions;
    an unfused ``convolution`` op is one it could not canonicalise, which runs
    as a slow generic thunk (jax-ml/jax#12868: backward convolutions inside a
    loop body).
    """
    count, fused = 0, False
    for line in hlo_text.splitlines():
        if line and not line.startswith(" "):
            fused = line.lstrip("%").startswith("fused_")
        elif not fused and re.search(r"\bconvolution\(", line):
            count += 1
    return count


class JaxTrainer:
    """One execution order of ours: compile once, then time whole epochs."""

    framework = "spenser_jax"

    def __init__(
        self,
        key: jax.Array,
        sig: architecture.Signature,
        hyper: Any,
        time_steps: int,
        mode: str,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        epoch_fn=None,
        label: str | None = None,
    ):
        self.mode = mode
        self.label = label or mode
        self.time_steps = time_steps
        self.samples = images.shape[0]
        self.hyper = hyper
        key_init, self.key = jax.random.split(key)
        self.state = training.create_train_state(key_init, sig, hyper, INPUT_SHAPE)
        self.images = jax.device_put(images)
        self.labels = jax.device_put(labels)
        # The product's cached builder unless a caller (an experiment) brings its own.
        self.fn = epoch_fn or training.make_train_epoch(
            sig, Protocol(time_steps=time_steps, batch_size=BATCH, mode=mode)
        )
        self.compiled = None
        self.calls = 0

    def _args(self):
        self.calls += 1
        return (self.state, self.hyper, self.images, self.labels, jax.random.fold_in(self.key, self.calls))

    def warmup(self, run_epoch: bool = True) -> dict[str, float]:
        """Trace, lower and compile, then (``run_epoch``) run one epoch."""
        start = time.perf_counter()
        lowered = self.fn.lower(*self._args())
        traced = time.perf_counter()
        self.compiled = lowered.compile()
        compiled = time.perf_counter()
        self.extra = {"unfused_convolutions": unfused_convolutions(self.compiled.as_text())}
        times = {"trace_lower_s": traced - start, "compile_s": compiled - start}
        if run_epoch:
            times["first_epoch_s"] = self.epoch()
            times["first_call_s"] = time.perf_counter() - start
        return times

    def epoch(self) -> float:
        """Seconds for one epoch of ``self.samples`` samples (blocking)."""
        start = time.perf_counter()
        # The state is donated: keep only the one that comes back.
        self.state, metrics = self.compiled(*self._args())
        jax.block_until_ready((self.state, metrics))
        seconds = time.perf_counter() - start
        if bool(metrics["nonfinite"]):
            raise FloatingPointError(f"{self.mode}: non-finite loss or update")
        return seconds


class JaxStepLoop(JaxTrainer):
    """Reference: our jitted train step called once per batch from Python.

    The same work as one iteration of the epoch's ``lax.scan`` (rate coding
    inside, :func:`training.train_step`), but outside any XLA loop: it shows
    what the step costs on its own, with one dispatch per batch.
    """

    def __init__(
        self,
        key: jax.Array,
        sig: architecture.Signature,
        hyper: Any,
        time_steps: int,
        mode: str,
        images: np.ndarray,
        labels: np.ndarray,
    ):
        super().__init__(
            key,
            sig,
            hyper,
            time_steps,
            mode,
            images[:BATCH],
            labels[:BATCH],
            epoch_fn=self._step_fn(sig, time_steps, mode),
            label=f"{mode} step, host loop",
        )
        self.samples = images.shape[0] // BATCH * BATCH
        self.batches = [
            (jax.device_put(images[i : i + BATCH]), jax.device_put(labels[i : i + BATCH]))
            for i in range(0, self.samples, BATCH)
        ]

    @staticmethod
    def _step_fn(sig, time_steps, mode):
        def step(state, hyper, images, labels, key):
            spikes = encoding.rate(key, images, time_steps)
            state, value, finite = training.train_step(
                sig, Protocol(time_steps, mode=mode), state, hyper, spikes, labels
            )
            return state, {"loss": value, "nonfinite": ~finite}

        return jax.jit(step, donate_argnums=(0,))

    def epoch(self) -> float:
        start = time.perf_counter()
        failed = jnp.bool_(False)
        for images, labels in self.batches:
            self.calls += 1
            self.state, metrics = self.compiled(
                self.state, self.hyper, images, labels, jax.random.fold_in(self.key, self.calls)
            )
            failed = failed | metrics["nonfinite"]
        jax.block_until_ready((self.state, failed))
        seconds = time.perf_counter() - start
        if bool(failed):
            raise FloatingPointError(f"{self.label}: non-finite loss or update")
        return seconds


# --------------------------------------------------------------------------
# snntorch side


def import_torch(device: str = "cpu") -> types.SimpleNamespace:
    """torch + snntorch; on the CPU, threads set to the machine's cores.

    Args:
      device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (CUDA when torch sees a
        GPU).

    Raises:
      TorchUnavailable: either cannot be imported, or CUDA was asked for and
        torch has none.
    """
    try:
        import snntorch
        import snntorch.functional as SF
        import torch
        from snntorch import spikegen, surrogate
    except ImportError as err:
        raise TorchUnavailable(
            f"skipped: torch/snntorch not installed ({err}). It is a dev-only tool: "
            "`pip install torch==2.13.0 snntorch==1.0.0`, or pass --skip-torch."
        ) from err
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TorchUnavailable(f"torch {torch.__version__} sees no CUDA device")
    # torch's default may be fewer threads than cores (and XLA uses them all).
    torch.set_num_threads(os.cpu_count() or 1)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return types.SimpleNamespace(
        torch=torch, snntorch=snntorch, SF=SF, spikegen=spikegen, surrogate=surrogate, device=device, device_name=name
    )


def torch_network(tm: types.SimpleNamespace):
    """The reference CSNN as a typical snntorch model (time loop in forward)."""
    torch, snn = tm.torch, tm.snntorch
    F = torch.nn.functional

    class CSNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            spike_grad = tm.surrogate.atan()

            def leaky():
                return snn.Leaky(beta=BETA, threshold=THRESHOLD, spike_grad=spike_grad, reset_mechanism="subtract")

            self.conv1, self.lif1 = torch.nn.Conv2d(1, 32, 5), leaky()
            self.conv2, self.lif2 = torch.nn.Conv2d(32, 64, 5), leaky()
            self.fc1, self.lif3 = torch.nn.Linear(64 * 4 * 4, 128), leaky()
            self.fc2, self.lif4 = torch.nn.Linear(128, 10), leaky()

        def forward(self, x):  # x: [T, B, 1, 28, 28]
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            mem3, mem4 = self.lif3.init_leaky(), self.lif4.init_leaky()
            spk_rec = []
            for step in range(x.shape[0]):
                spk1, mem1 = self.lif1(F.max_pool2d(self.conv1(x[step]), 2), mem1)
                spk2, mem2 = self.lif2(F.max_pool2d(self.conv2(spk1), 2), mem2)
                spk3, mem3 = self.lif3(self.fc1(spk2.flatten(1)), mem3)
                spk4, mem4 = self.lif4(self.fc2(spk3), mem4)
                spk_rec.append(spk4)
            return torch.stack(spk_rec)

    return CSNN()


class TorchTrainer:
    """The snntorch training loop over ``steps`` batches of 64.

    On CUDA the data sit on the device (as ours do) and every epoch ends with
    ``torch.cuda.synchronize()``; on the CPU ``threads`` intra-op threads are
    set before each epoch (the setting is per process).
    """

    framework = "snntorch"
    mode = None

    def __init__(
        self,
        tm: types.SimpleNamespace,
        seed: int,
        time_steps: int,
        images: np.ndarray,
        labels: np.ndarray,
        threads: int | None = None,
    ):
        torch = tm.torch
        torch.manual_seed(seed)
        self.tm = tm
        self.device = tm.device
        self.threads = threads or tm.torch.get_num_threads()
        if self.device == "cuda":
            self.label = f"snntorch, cuda ({tm.device_name})"
        else:
            self.label = f"snntorch, {self.threads} thread" + ("s" if self.threads > 1 else "")
        self.time_steps = time_steps
        self.samples = images.shape[0]
        # NCHW uint8, as a DataLoader would hold it before ToTensor.
        self.images = torch.from_numpy(np.array(images.transpose(0, 3, 1, 2), order="C")).to(self.device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        self.net = torch_network(tm).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.0)
        self.loss_fn = tm.SF.mse_count_loss(correct_rate=1.0, incorrect_rate=0.0)

    def sync(self) -> None:
        if self.device == "cuda":
            self.tm.torch.cuda.synchronize()

    def step(self, x_uint8, y):
        """One training step on a uint8 batch: rate coding, BPTT, Adam."""
        spikes = self.tm.spikegen.rate(x_uint8.float() / 255, num_steps=self.time_steps)
        return self.step_on_spikes(spikes, y)

    def step_on_spikes(self, spikes, y):
        loss_value = self.loss_fn(self.net(spikes), y)
        self.opt.zero_grad()
        loss_value.backward()
        self.opt.step()
        return loss_value

    def warmup(self, run_epoch: bool = True) -> dict[str, float]:
        self.tm.torch.set_num_threads(self.threads)
        start = time.perf_counter()
        if not run_epoch:
            self.step(self.images[:BATCH], self.labels[:BATCH])
            self.sync()
            return {"first_call_s": time.perf_counter() - start}
        seconds = self.epoch()
        return {"first_epoch_s": seconds, "first_call_s": time.perf_counter() - start}

    def epoch(self) -> float:
        self.tm.torch.set_num_threads(self.threads)
        start = time.perf_counter()
        order = self.tm.torch.randperm(self.samples, device=self.device)  # DataLoader(shuffle=True)
        for b in range(self.samples // BATCH):
            idx = order[b * BATCH : (b + 1) * BATCH]
            value = self.step(self.images[idx], self.labels[idx])
        self.sync()
        seconds = time.perf_counter() - start
        if not np.isfinite(value.item()):
            raise FloatingPointError("snntorch: non-finite loss")
        return seconds


# --------------------------------------------------------------------------
# Throughput


def measure_throughput(
    runners: list, repeats: int, budget_s: float, log, *, warmup_epoch: bool = True, long_epoch_s: float = 20.0
) -> list[dict]:
    """Warms up every runner, then times rotated rounds of one epoch each.

    Warm-up: compilation for ours, then one untimed epoch of every runner
    (``warmup_epoch=False``, for smoke runs: compilation and a single torch
    step only). A runner whose warm-up epoch took ``long_epoch_s`` or more
    keeps that epoch as its one sample and sits out the rounds: a cold start
    costs well under a second, little beside such an epoch, and the
    benchmark stays within minutes. Rounds stop after ``repeats``, or
    earlier when the next round would end past ``budget_s`` seconds of timed
    rounds (at least one round runs).
    """
    rows, timed = [], []
    for runner in runners:
        log(f"  warm-up {runner.label} (T={runner.time_steps}, {runner.samples} samples) ...")
        warm = runner.warmup(warmup_epoch)
        log("    " + ", ".join(f"{k} {v:.1f}" for k, v in warm.items()))
        row = {
            "framework": runner.framework,
            "label": runner.label,
            "mode": runner.mode,
            "time_steps": runner.time_steps,
            "samples_per_epoch": runner.samples,
            **{k: round(v, 3) for k, v in warm.items()},
            **getattr(runner, "extra", {}),
            "epoch_times_s": [],
        }
        if warm.get("first_epoch_s", 0.0) >= long_epoch_s:
            row["epoch_times_s"].append(round(warm["first_epoch_s"], 4))
            row["sample"] = "warm-up epoch (long: no rounds)"
            log(f"    epoch >= {long_epoch_s:g}s: its warm-up epoch is its sample")
        else:
            timed.append((runner, row))
        rows.append(row)
    started = time.perf_counter()
    for r in range(repeats if timed else 0):
        round_start = time.perf_counter()
        shift = r % len(timed)
        for runner, row in timed[shift:] + timed[:shift]:
            row["epoch_times_s"].append(round(runner.epoch(), 4))
        now = time.perf_counter()
        log(
            f"  round {r + 1}/{repeats}: "
            + ", ".join(f"{row['label']} {row['epoch_times_s'][-1]:.2f}s" for _, row in timed)
        )
        if r + 1 < repeats and now - started + (now - round_start) > budget_s:
            log(f"  stopping after {r + 1} round(s): --budget-s {budget_s:g} reached")
            break
    for row in rows:
        row["median_epoch_s"] = statistics.median(row["epoch_times_s"])
        row["samples_per_s"] = round(row["samples_per_epoch"] / row["median_epoch_s"], 2)
        # The fastest round is the least disturbed by other jobs on the machine.
        row["best_samples_per_s"] = round(row["samples_per_epoch"] / min(row["epoch_times_s"]), 2)
        row["step_ms"] = round(1000 * row["median_epoch_s"] * BATCH / row["samples_per_epoch"], 1)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours over snntorch, per ``T``, in place (and returned).

    The first snntorch row of a ``T`` (threads = cores, or the CUDA runner)
    is the reference (``ratio_vs_snntorch``); the fastest one
    (``ratio_vs_fastest_snntorch``) shows how much of a gap shared cores
    explain.
    """
    for t in {r["time_steps"] for r in rows}:
        same_t = [r for r in rows if r["time_steps"] == t]
        torch_rows = [r for r in same_t if r["framework"] == "snntorch"]
        if not torch_rows:
            continue
        fastest = max(torch_rows, key=lambda x: x["samples_per_s"])
        for row in same_t:
            if row["framework"] != "snntorch":
                row["ratio_vs_snntorch"] = round(row["samples_per_s"] / torch_rows[0]["samples_per_s"], 3)
                row["ratio_vs_fastest_snntorch"] = round(row["samples_per_s"] / fastest["samples_per_s"], 3)
    return rows


# --------------------------------------------------------------------------
# Profile


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def profile_jax(key: jax.Array, sig, hyper, time_steps: int, mode: str, images, labels, repeats: int) -> dict[str, Any]:
    """Where one train step of ours spends its time (ms, medians)."""
    key_init, key_spikes, key_conv, key_x, key_g = jax.random.split(key, 5)
    model = network.SpikingNetwork(sig, mode=mode)
    state = training.create_train_state(key_init, sig, hyper, INPUT_SHAPE)
    x, y = jnp.asarray(images[:BATCH]), jnp.asarray(labels[:BATCH])
    rate = jax.jit(encoding.rate, static_argnames="time_steps")
    spikes = rate(key_spikes, x, time_steps=time_steps)

    def forward(params, s):
        return model.apply({"params": params}, s, hyper, None)

    def loss_fn(params, s):
        return loss.mse_count_loss(forward(params, s), y)

    fwd, fwd_bwd = jax.jit(forward), jax.jit(jax.value_and_grad(loss_fn))
    step = jax.jit(functools.partial(training.train_step, sig, Protocol(time_steps, mode=mode)))
    whole = {
        "rate_encoding": lambda: rate(key_spikes, x, time_steps=time_steps),
        "forward": lambda: fwd(state.params, spikes),
        "forward_backward": lambda: fwd_bwd(state.params, spikes),
        "train_step": lambda: step(state, hyper, spikes, y),
    }
    # Layers alone at the reference shapes, one time step of a batch; the
    # gradients are those the network needs (conv1's input is data: no dX).
    conv1 = network.Conv2d(32, 5, 1, "valid", True)
    conv2 = network.Conv2d(64, 5, 1, "valid", True)
    x1 = spikes[0]
    x2 = (jax.random.uniform(key_x, (BATCH, 12, 12, 32)) < 0.2).astype(jnp.float32)
    p1, p2 = conv1.init(key_conv, x1), conv2.init(key_conv, x2)
    g1 = jax.random.normal(key_g, (BATCH, 24, 24, 32))
    g2 = jax.random.normal(key_g, (BATCH, 8, 8, 64))
    h1 = jax.random.normal(key_x, (BATCH, 24, 24, 32))
    h2 = jax.random.normal(key_x, (BATCH, 8, 8, 64))
    gp1, gp2 = g1[:, :12, :12], g2[:, :4, :4]  # pool output cotangents

    def grad_of(f, argnums):
        # The cotangent is an argument: as a closed-over constant it would be
        # baked into the program.
        def run(cotangent, *inputs):
            return jax.grad(lambda *a: jnp.vdot(f(*a), cotangent), argnums)(*inputs)

        return jax.jit(run)

    conv1_fwd, conv2_fwd = jax.jit(conv1.apply), jax.jit(conv2.apply)
    conv1_grad, conv2_grad = grad_of(conv1.apply, 0), grad_of(conv2.apply, (0, 1))
    pool_grad = grad_of(lambda h: network.pool2d(h, "max", 2), 0)
    layers = {
        "conv1_fwd": lambda: conv1_fwd(p1, x1),
        "conv1_fwd_dW": lambda: conv1_grad(g1, p1, x1),
        "conv2_fwd": lambda: conv2_fwd(p2, x2),
        "conv2_fwd_dX_dW": lambda: conv2_grad(g2, p2, x2),
        "maxpool1_fwd_bwd": lambda: pool_grad(gp1, h1),
        "maxpool2_fwd_bwd": lambda: pool_grad(gp2, h2),
    }
    out = {
        "per_batch_ms": {k: _ms(common.timeit(f, repeats)["median_s"]) for k, f in whole.items()},
        "per_time_step_ms": {k: _ms(common.timeit(f, repeats + 2)["median_s"]) for k, f in layers.items()},
    }
    out["step_fn"] = (step, (state, hyper, spikes, y))
    return out


def profile_torch(tm, seed: int, time_steps: int, images, labels, repeats: int, threads: int) -> dict:
    """The same components for the snntorch loop (ms, medians)."""
    torch, F = tm.torch, tm.torch.nn.functional
    torch.set_num_threads(threads)
    trainer = TorchTrainer(tm, seed, time_steps, images[:BATCH], labels[:BATCH], threads)
    net = trainer.net
    x, y = trainer.images, trainer.labels
    spikes = tm.spikegen.rate(x.float() / 255, num_steps=time_steps)

    def forward():
        with torch.no_grad():
            return net(spikes)

    def forward_backward():
        net.zero_grad(set_to_none=True)
        trainer.loss_fn(net(spikes), y).backward()

    whole = {
        "rate_encoding": lambda: tm.spikegen.rate(x.float() / 255, num_steps=time_steps),
        "forward": forward,
        "forward_backward": forward_backward,
        "train_step": lambda: trainer.step_on_spikes(spikes, y),
    }
    g = torch.Generator().manual_seed(seed)
    dev = trainer.device
    conv1, conv2 = torch.nn.Conv2d(1, 32, 5).to(dev), torch.nn.Conv2d(32, 64, 5).to(dev)
    x1 = spikes[0]
    x2 = (torch.rand(BATCH, 32, 12, 12, generator=g) < 0.2).float().to(dev)
    g1 = torch.randn(BATCH, 32, 24, 24, generator=g).to(dev)
    g2 = torch.randn(BATCH, 64, 8, 8, generator=g).to(dev)
    h1 = torch.randn(BATCH, 32, 24, 24, generator=g).to(dev)
    h2 = torch.randn(BATCH, 64, 8, 8, generator=g).to(dev)

    def no_grad(f):
        def run():
            with torch.no_grad():
                return f()

        return run

    def grads(f, inputs, cotangent):
        def run():
            return torch.autograd.grad(f(), inputs, cotangent)

        return run

    x2g = x2.clone().requires_grad_()
    h1g, h2g = h1.clone().requires_grad_(), h2.clone().requires_grad_()
    layers = {
        "conv1_fwd": no_grad(lambda: conv1(x1)),
        "conv1_fwd_dW": grads(lambda: conv1(x1), list(conv1.parameters()), g1),
        "conv2_fwd": no_grad(lambda: conv2(x2)),
        "conv2_fwd_dX_dW": grads(lambda: conv2(x2g), [x2g, *conv2.parameters()], g2),
        "maxpool1_fwd_bwd": grads(lambda: F.max_pool2d(h1g, 2), [h1g], g1[:, :, :12, :12]),
        "maxpool2_fwd_bwd": grads(lambda: F.max_pool2d(h2g, 2), [h2g], g2[:, :, :4, :4]),
    }

    def synced(f):
        # CUDA ops are asynchronous: time them to their end.
        def run():
            out = f()
            trainer.sync()
            return out

        return run

    return {
        "device": dev,
        "per_batch_ms": {k: _ms(common.timeit(synced(f), repeats)["median_s"]) for k, f in whole.items()},
        "per_time_step_ms": {k: _ms(common.timeit(synced(f), repeats + 2)["median_s"]) for k, f in layers.items()},
    }


def _hlo_op_names(hlo_text: str) -> dict[str, str | None]:
    """Instruction name -> its ``op_name`` metadata (or that of what it calls)."""
    own, calls, by_computation = {}, {}, collections.defaultdict(list)
    computation = None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            computation = head.group(1)
            continue
        inst = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = ", line)
        if not inst:
            continue
        op = re.search(r'op_name="([^"]+)"', line)
        own[inst.group(1)] = op.group(1) if op else None
        if op:
            by_computation[computation].append(op.group(1))
        called = re.search(r"calls=%([\w.\-]+)", line)
        if called:
            calls[inst.group(1)] = called.group(1)
    for name, op in own.items():
        if op is None and by_computation.get(calls.get(name)):
            own[name] = by_computation[calls[name]][0]
    return own


def _op_category(op_name: str | None) -> str:
    if not op_name:
        return "other"
    direction = "bwd" if "transpose(" in op_name else "fwd"
    layer = re.search(r"/(conv_\d+|dense_\d+)/", op_name)
    if layer:
        return f"{LAYER_NAMES.get(layer.group(1), layer.group(1))} {direction}"
    if "_stateless" in op_name:
        return f"max-pool {direction}"
    if "SpikingNetwork" in op_name:
        return f"LIF {direction}"
    return "loss, Adam, other"


def xla_op_breakdown(fn, args, calls: int = 3) -> dict[str, float]:
    """Share (%) of XLA op time per layer in a compiled function.

    Runs ``fn(*args)`` under ``jax.profiler`` and attributes each executed
    XLA:CPU op (a thunk, named like its HLO instruction) to a layer through
    the instruction's ``op_name`` metadata. Ops may overlap on several
    threads, so these are shares of summed op time, not of wall time.
    """
    compiled = fn.lower(*args).compile()
    names = _hlo_op_names(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        try:
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        finally:
            jax.profiler.stop_trace()
        files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise RuntimeError("jax.profiler wrote no perfetto trace")
        with gzip.open(files[0], "rt", encoding="utf-8") as f:
            events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in names:
            totals[_op_category(names[event["name"]])] += event.get("dur", 0)
    total = sum(totals.values())
    if not total:
        raise RuntimeError("no XLA ops found in the trace")
    return {k: round(100 * v / total, 1) for k, v in totals.most_common()}


def summarise_loop_gap(rows: list[dict[str, Any]], default_mode: str) -> list[str]:
    """Our epoch's step against the same jitted step called from a host loop."""
    lines = []
    for t in sorted({r["time_steps"] for r in rows}):
        epoch = [r for r in rows if r["time_steps"] == t and r["label"] == default_mode]
        host = [r for r in rows if r["time_steps"] == t and r["label"].endswith("host loop")]
        if epoch and host:
            e, h = epoch[0], host[0]
            lines.append(
                f"T={t}: one step inside make_train_epoch ({default_mode}) {e['step_ms']:.0f} ms "
                f"vs the same jitted step from a host loop {h['step_ms']:.0f} ms "
                f"({e['step_ms'] / h['step_ms']:.1f}x); the compiled epoch has "
                f"{e.get('unfused_convolutions', '?')} unfused convolution ops (slow generic "
                f"thunks on XLA:CPU, see conv_layout_experiment.py)."
            )
    return lines


def summarise_profile(time_steps: int, mode: str, ours: dict, theirs: dict[str, dict]) -> list[str]:
    """A few plain-text lines on where the time goes."""
    lines = []

    def side(name, prof):
        b, layer = prof["per_batch_ms"], prof["per_time_step_ms"]
        convs = time_steps * (layer["conv1_fwd_dW"] + layer["conv2_fwd_dX_dW"])
        pools = time_steps * (layer["maxpool1_fwd_bwd"] + layer["maxpool2_fwd_bwd"])
        fb = b["forward_backward"]
        rest = b["train_step"] - fb
        lines.append(
            f"{name}, T={time_steps}, one batch of {BATCH}: train step {b['train_step']:.0f} ms "
            f"(forward {b['forward']:.0f}, forward+backward {fb:.0f}, so backward "
            f"~{fb - b['forward']:.0f} and optimizer/update "
            + (f"~{rest:.0f}" if rest > 0 else "within noise")
            + f"; rate coding {b['rate_encoding']:.1f})."
        )
        lines.append(
            f"  layers alone x T: conv1 fwd+dW {time_steps * layer['conv1_fwd_dW']:.0f} ms, "
            f"conv2 fwd+dX+dW {time_steps * layer['conv2_fwd_dX_dW']:.0f} ms, max-pools "
            f"fwd+bwd {pools:.0f} ms: convolutions ~{100 * convs / fb:.0f}% and pools "
            f"~{100 * pools / fb:.0f}% of forward+backward."
        )

    side(f"spenser_jax ({mode})", ours)
    if "xla_ops_percent" in ours:
        shares = ", ".join(f"{k} {v:.0f}%" for k, v in ours["xla_ops_percent"].items() if v >= 1)
        lines.append(f"  XLA op time in the compiled train step: {shares}.")
    for name, prof in theirs.items():
        side(f"snntorch ({name})", prof)
    if theirs:
        name, best = min(theirs.items(), key=lambda kv: kv[1]["per_batch_ms"]["train_step"])
        a, b = ours["per_time_step_ms"], best["per_time_step_ms"]
        lines.append(
            f"XLA / torch ({name}) time per layer call (batch 64, one time step): "
            + ", ".join(f"{k} {a[k]:.2f}/{b[k]:.2f} ms ({a[k] / b[k]:.1f}x)" for k in a)
        )
    return lines


def print_table(rows: list[dict[str, Any]], default_mode: str) -> list[str]:
    """Prints (and returns) the results as a plain-text table."""
    header = (
        f"{'T':>3}  {'runner':<33} {'samples':>7} {'compile s':>9} {'first s':>8} "
        f"{'epoch s':>8} {'ms/step':>8} {'samples/s':>9} {'ours/snn':>8} {'/fastest':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        name = ("spenser_jax " if r["framework"] == "spenser_jax" else "") + r["label"]
        name = name if len(name) <= 33 else name[:32] + "…"
        name += "*" if r["label"] == default_mode else ""
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        first_s = f"{r['first_call_s']:.1f}" if "first_call_s" in r else "-"
        ratio = f"{r['ratio_vs_snntorch']:.3f}" if "ratio_vs_snntorch" in r else "-"
        best = f"{r['ratio_vs_fastest_snntorch']:.3f}" if "ratio_vs_fastest_snntorch" in r else "-"
        epoch_s = f"{r['median_epoch_s']:.2f}" + ("+" if "sample" in r else "")
        lines.append(
            f"{r['time_steps']:>3}  {name:<33} {r['samples_per_epoch']:>7} "
            f"{compile_s:>9} {first_s:>8} {epoch_s:>8} "
            f"{r['step_ms']:>8.0f} {r['samples_per_s']:>9.1f} {ratio:>8} {best:>8}"
        )
    lines.append(
        "* the default order on this backend (network.DEFAULT_MODES). Our orders run "
        "through training.make_train_epoch; the host loop is our jitted step called per "
        "batch, for reference. ours/snn: median samples/s over those of the first "
        "snntorch row of the same T (threads = cores, or CUDA); /fastest: over the "
        "fastest snntorch row. +: a long warm-up epoch kept as the only sample "
        "(--long-epoch-s)."
    )
    print("\n".join(lines), flush=True)
    return lines
