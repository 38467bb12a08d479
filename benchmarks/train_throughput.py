"""Training throughput of the spiking core: spenser_jax against snntorch.

Trains the reference convolutional SNN (``harness.REFERENCE_PHENOTYPE``) with
this project (``training.make_train_epoch``: one jitted epoch, data on device,
rate coding inside; each of the three time-loop orders) and with a typical
snntorch loop (``spikegen.rate`` per batch, a Python loop over ``T`` with
``snn.Leaky`` layers, ``mse_count_loss``, backward, ``Adam.step``), on the same
machine in the same run, and prints train samples/s of each and their ratio
(ours / snntorch).

Reference network (MNIST-shaped 28x28x1 input, batch 64, Adam lr 5e-4, betas
0.9/0.999, no weight decay, LIF β 0.9 and θ 1.0 fixed, atan surrogate,
subtract reset)::

    conv 32@5x5 valid -> max-pool 2 -> LIF -> conv 64@5x5 valid -> max-pool 2
    -> LIF -> fc 128 -> LIF -> fc 10 -> LIF

Runners: our three execution orders through ``make_train_epoch``
(``--epoch-steps`` batches per epoch), our jitted step called per batch from
a host loop (a reference: the same step outside any XLA loop), and snntorch:
on the CPU with ``torch.set_num_threads(os.cpu_count())`` and with 1 thread
(``--torch-threads``; OpenMP on all cores degrades badly when other jobs
share them), or on a CUDA device (``--torch-device``; default: CUDA when JAX
runs on a GPU).

Method: every runner is warmed up first (for ours: trace, lower and compile,
recorded apart, then one epoch), then timed in rounds (``--repeats``, within
``--budget-s``); each round runs one epoch of every runner, in a rotated
order, so that a change in the machine's load hits all of them alike.
Figures are medians over rounds; a runner whose warm-up epoch takes
``--long-epoch-s`` or more keeps it as its only sample. With
``--isolate-torch`` (what ``gpu.sh`` uses) the snntorch runners run in a child
process after ours (two CUDA stacks and allocators never share a process);
their rounds are then not interleaved with ours.

A profile follows (``--profile``): forward alone, forward + backward and the
whole optimizer step of one batch, the conv and pool layers alone (forward and
the gradients the network needs) in XLA and in torch, and, for ours, the
share of each layer in the compiled train step, read from a
``jax.profiler`` trace.

Usage (from the repository root)::

    python benchmarks/train_throughput.py              # full run (~10 min today, 2 cores)
    python benchmarks/train_throughput.py --quick      # ~2-3 min smoke run
    python benchmarks/train_throughput.py --time-steps 10 --modes stepwise --skip-torch

Results: ``<out>/train_throughput_<backend>[_quick]_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path)
import harness
import jax

from spenser_jax.snn import network

MARK = "TORCH-ROWS-JSON:"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train samples/s of the spiking core vs snntorch (see module docstring)."
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps (batches of 64) per timed epoch of snntorch and of "
        "our host-loop reference (default 10; --quick: 2)",
    )
    parser.add_argument(
        "--epoch-steps",
        type=int,
        default=2,
        help="steps per timed epoch of our jitted epochs (default 2; >= 2, as XLA removes a loop of one iteration)",
    )
    parser.add_argument(
        "--time-steps", type=int, nargs="+", default=None, help="rate-coding steps T (default 10 25; --quick: 10)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=network.MODES,
        default=list(network.MODES),
        help="our execution orders to time (default: all three)",
    )
    parser.add_argument(
        "--no-host-loop", action="store_true", help="skip the reference runner: our jitted step in a Python loop"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds at most, median reported (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=150.0,
        help="per T, start no further round once timed rounds would exceed "
        "this many seconds (default 150; one round always runs)",
    )
    parser.add_argument(
        "--long-epoch-s",
        type=float,
        default=20.0,
        help="a runner whose warm-up epoch takes this long keeps it as its only "
        "sample and skips the rounds (default 20)",
    )
    parser.add_argument("--skip-torch", action="store_true", help="time ours only")
    parser.add_argument(
        "--torch-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="snntorch's device (default: cuda when JAX runs on a GPU, else cpu)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        nargs="+",
        default=None,
        help="CPU snntorch runners' intra-op threads; the first is the reference "
        "(default: the machine's cores, then 1)",
    )
    parser.add_argument(
        "--isolate-torch", action="store_true", help="run the snntorch side in a child process, after ours"
    )
    parser.add_argument("--only-torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        choices=("first", "all", "none"),
        default="first",
        help="profile at the first T (default), at every T, or not at all",
    )
    parser.add_argument(
        "--data",
        choices=("mnist", "random"),
        default="mnist",
        help="MNIST train images (default; random if not found) or random pixels",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: T=10, one round, no warm-up epoch, no trace profile"
    )
    parser.add_argument("--name", default=None, help="result file stem (default train_throughput_<backend>[_quick])")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 10)
    args.time_steps = args.time_steps or ([10] if args.quick else [10, 25])
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.torch_device == "auto" and not args.only_torch:
        args.torch_device = "cpu" if jax.default_backend() == "cpu" else "cuda"
    cores = os.cpu_count() or 1
    if args.torch_device == "cuda":
        args.torch_threads = [cores]
    args.torch_threads = list(dict.fromkeys(args.torch_threads or [cores, 1]))
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.epoch_steps < 2:
        parser.error("--epoch-steps must be >= 2")
    if min(args.time_steps) < 1:
        parser.error("--time-steps must be >= 1")
    return args


def torch_profiles(tm, args, time_steps: int, images, labels) -> dict:
    """The snntorch profile of every runner at ``time_steps``."""
    out = {}
    for threads in args.torch_threads:
        label = tm.device if tm.device == "cuda" else f"{threads} thread" + ("s" if threads > 1 else "")
        out[label] = harness.profile_torch(tm, args.seed, time_steps, images, labels, 3 if args.quick else 5, threads)
    return out


def torch_note(tm, args) -> str:
    return (
        f"torch {tm.torch.__version__}, snntorch {tm.snntorch.__version__} on {tm.device} "
        f"({tm.device_name}); runners with {args.torch_threads} intra-op threads"
        + (
            "; in a child process after ours"
            if args.isolate_torch or args.only_torch
            else "; in the same rounds as ours"
        )
    )


def torch_side(args, images, labels, log) -> tuple[list, dict, str]:
    """The snntorch runners alone at every T (rows, profiles by T, a note)."""
    try:
        tm = harness.import_torch(args.torch_device)
    except harness.TorchUnavailable as err:
        print(err, file=sys.stderr, flush=True)
        return [], {}, str(err)
    rows, profiles = [], {}
    n = args.steps * harness.BATCH
    for i, time_steps in enumerate(args.time_steps):
        log(f"snntorch, T = {time_steps}")
        runners = [
            harness.TorchTrainer(tm, args.seed, time_steps, images[:n], labels[:n], threads)
            for threads in args.torch_threads
        ]
        rows += harness.measure_throughput(
            runners, args.repeats, args.budget_s, log, warmup_epoch=not args.quick, long_epoch_s=args.long_epoch_s
        )
        if args.profile == "all" or (args.profile == "first" and i == 0):
            profiles[f"T{time_steps}"] = torch_profiles(tm, args, time_steps, images, labels)
    return rows, profiles, torch_note(tm, args)


def torch_side_isolated(argv: list[str], log) -> tuple[list, dict, str]:
    """:func:`torch_side` in a child process (``--only-torch``)."""
    log("snntorch side in a child process ...")
    # JAX stays on the CPU there: only torch touches the accelerator.
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--only-torch", "--no-write"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    sys.stderr.write(proc.stderr[-4000:])
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            out = json.loads(line[len(MARK) :])
            return out["rows"], out["profiles"], out["note"]
        print("  | " + line, flush=True)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return [], {}, f"error: snntorch child process exited {proc.returncode}: {tail}"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    load_before = common.load_average()
    n = max(args.steps, args.epoch_steps) * harness.BATCH
    images, labels, source = common.load_train_images(args.data, n, args.seed)
    if args.only_torch:
        rows, profiles, note = torch_side(args, images, labels, log)
        print(MARK + json.dumps({"rows": rows, "profiles": profiles, "note": note}), flush=True)
        return 0

    backend = jax.default_backend()
    default_mode = network.default_mode()
    sig, hyper = harness.reference_network()
    log(
        f"backend {backend} ({jax.devices()[0].device_kind}), {os.cpu_count()} cores, load {load_before}; data {source}"
    )

    tm, note = None, "skipped (--skip-torch)"
    if not (args.skip_torch or args.isolate_torch):
        try:
            tm = harness.import_torch(args.torch_device)
            note = torch_note(tm, args)
        except harness.TorchUnavailable as err:
            note = str(err)
            print(note, file=sys.stderr, flush=True)

    rows, profiles = [], {}
    name = args.name or f"train_throughput_{backend}" + ("_quick" if args.quick else "")

    def finish(done: list[int]) -> dict:
        """The result so far (every T in ``done``); printed and written when complete."""
        final = done == args.time_steps
        harness.add_ratios(rows)
        summary = []
        for t, prof in profiles.items():
            summary += harness.summarise_profile(int(t[1:]), prof["mode"], prof["spenser_jax"], prof["snntorch"])
        ordered = sorted(rows, key=lambda r: r["time_steps"])
        if final:
            print("\n".join(summary) + "\n", flush=True)
            table = harness.print_table(ordered, default_mode)
        else:
            table = []
        gap = harness.summarise_loop_gap(rows, default_mode)
        if final:
            print("\n".join(gap), flush=True)
        payload = {
            **common.header("train_throughput", load_before),
            "settings": {
                "phenotype": harness.REFERENCE_PHENOTYPE,
                "batch_size": harness.BATCH,
                "learning_rate": harness.LR,
                "time_steps": args.time_steps,
                "modes": args.modes,
                "steps": args.steps,
                "epoch_steps": args.epoch_steps,
                "host_loop": not args.no_host_loop,
                "repeats_max": args.repeats,
                "budget_s": args.budget_s,
                "long_epoch_s": args.long_epoch_s,
                "data": source,
                "seed": args.seed,
                "quick": args.quick,
                "default_mode": default_mode,
                "snntorch": note,
                "torch_device": None if args.skip_torch else args.torch_device,
                "torch_threads": None if args.skip_torch else args.torch_threads,
                "torch_isolated": args.isolate_torch,
                "method": (
                    "per runner: compile (ours), then one warm-up epoch; then rounds of one "
                    "epoch per runner in rotated order; median epoch time. A runner whose "
                    "warm-up epoch took >= long_epoch_s keeps it as its sample instead"
                    if not args.quick
                    else "smoke run: compile, then one timed epoch"
                )
                + ("; snntorch in a child process after ours, per T" if args.isolate_torch else ""),
            },
            "complete": final,
            "time_steps_done": done,
            "results": ordered,
            "profile": profiles,
            "profile_summary": summary + gap,
            "table": table,
            "total_wall_s": round(time.perf_counter() - started, 1),
        }
        if not args.no_write:
            path = common.write_result(name, payload, args.out)
            log(f"wrote {path}" + ("" if final else " (so far)"))
        return payload

    key = jax.random.key(args.seed)
    for t_index, time_steps in enumerate(args.time_steps):
        log(f"T = {time_steps}")
        key_t = jax.random.fold_in(key, time_steps)
        k = args.epoch_steps * harness.BATCH
        runners = [
            harness.JaxTrainer(key_t, sig, hyper, time_steps, mode, images[:k], labels[:k]) for mode in args.modes
        ]
        k = args.steps * harness.BATCH
        if not args.no_host_loop:
            runners.append(harness.JaxStepLoop(key_t, sig, hyper, time_steps, default_mode, images[:k], labels[:k]))
        if tm is not None:  # in-process snntorch runners share the rounds with ours
            runners += [
                harness.TorchTrainer(tm, args.seed, time_steps, images[:k], labels[:k], threads)
                for threads in args.torch_threads
            ]
        rows += harness.measure_throughput(
            runners, args.repeats, args.budget_s, log, warmup_epoch=not args.quick, long_epoch_s=args.long_epoch_s
        )
        del runners
        profiled = args.profile == "all" or (args.profile == "first" and t_index == 0)
        if profiled:
            log(f"profile at T = {time_steps} ({default_mode}) ...")
            ours = harness.profile_jax(
                jax.random.fold_in(key_t, 1),
                sig,
                hyper,
                time_steps,
                default_mode,
                images,
                labels,
                3 if args.quick else 5,
            )
            step_fn, step_args = ours.pop("step_fn")
            if not args.quick:
                try:
                    ours["xla_ops_percent"] = harness.xla_op_breakdown(step_fn, step_args)
                except Exception as err:  # noqa: BLE001  (a profiler detail must not sink the run)
                    ours["xla_ops_percent_error"] = f"{type(err).__name__}: {err}"
            theirs = torch_profiles(tm, args, time_steps, images, labels) if tm else {}
            profiles[f"T{time_steps}"] = {"mode": default_mode, "spenser_jax": ours, "snntorch": theirs}
        if args.isolate_torch and not args.skip_torch:
            # The snntorch side of this T in a child process (JAX is idle meanwhile).
            child = [a for a in strip_option(argv, "--time-steps") if a != "--isolate-torch"]
            child += [
                "--time-steps",
                str(time_steps),
                "--torch-device",
                args.torch_device,
                "--profile",
                "first" if profiled else "none",
            ]
            torch_rows, theirs, note = torch_side_isolated(child, log)
            rows += torch_rows
            for t, prof in theirs.items():
                if t in profiles:
                    profiles[t]["snntorch"] = prof
        finish(args.time_steps[: t_index + 1])
    return 0


def strip_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and the values that follow it."""
    out, skipping = [], False
    for a in argv:
        if a == option or a.startswith(option + "="):
            skipping = a == option
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
