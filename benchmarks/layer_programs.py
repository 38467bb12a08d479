"""Compile cost of new architectures: programs per block of layers against a program per network.

Issue 18. ``runtime.compile_unit=layer`` (:mod:`spenser_jax.training.blocks`)
trains and scores a network as a loop over small programs keyed by block of
layers and shape, cached across architectures; the default compiles one program per
network (:func:`spenser_jax.training.train_and_score`). This script walks a
search's lineage (Grammar 2, λ offspring per generation, as
``compile_cost.py`` walks it) and evaluates each new architecture both ways
in the same process, alternating which goes first, with the layer programs'
caches kept from one architecture to the next as a search keeps them. Per
path and architecture it records the seconds JAX spent tracing, lowering and
compiling (its own monitoring events), the programs compiled, the wall time
of a second, warm run (``epoch_seconds``: one epoch of ``--train-samples``
and the scoring), and the largest difference of any weight, loss, accuracy
or activity sum between the two paths.

    python benchmarks/layer_programs.py                      # 50 architectures, ~15 min on one core
    python benchmarks/layer_programs.py --emitters loop      # both paths with search=fast's XLA option
    python benchmarks/layer_programs.py --quick              # 4 small ones, a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import compile_cost  # noqa: E402

from spenser_jax import scheduler, training  # noqa: E402
from spenser_jax.genome.space import SearchSpace  # noqa: E402
from spenser_jax.grammar import load_grammar, locate  # noqa: E402
from spenser_jax.snn import architecture
from spenser_jax.training import blocks
from spenser_jax.training.protocol import Protocol  # noqa: E402

# --------------------------------------------------------------------------
# Measurement


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling (the events ``runtime.compile_unit=layer`` reads),
    and the programs it compiled."""

    def __init__(self):
        self.seconds = 0.0
        self.programs = 0
        jax.monitoring.register_event_duration_secs_listener(self._heard)

    def _heard(self, event, duration, **_):
        if event in blocks.COMPILE_EVENTS:
            self.seconds += duration
            self.programs += event == blocks.COMPILE_EVENTS[-1]

    def read(self) -> tuple[float, int]:
        return self.seconds, self.programs


def measure(path: str, phenotype, protocol: Protocol, data: tuple, clock: CompileClock, options: dict) -> dict:
    sig, hyper = architecture.split(phenotype, protocol.time_steps)
    args = (jax.random.key(1), hyper, *data, jax.random.key(2))
    if path == "network":
        jitted = jax.jit(functools.partial(training.train_and_score, sig, protocol=protocol))
        compiled = {}

        def fn(*args):
            if "program" not in compiled:
                compiled["program"] = jitted.lower(*args).compile(compiler_options=options or None)
            return compiled["program"](*args)
    else:
        fn = functools.partial(blocks.train_and_score, sig, protocol=protocol, options=tuple(sorted(options.items())))
    runs = []
    for _ in range(2):  # cold (compiles what is new), then warm (only runs)
        c0, p0 = clock.read()
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        t1 = time.perf_counter()
        c1, p1 = clock.read()
        runs.append((t1 - t0, c1 - c0, p1 - p0))
    params, metrics = out
    return {
        "compile_seconds": runs[0][1],
        "programs_compiled": runs[0][2],
        "cold_seconds": runs[0][0],
        "epoch_seconds": runs[1][0],
        "outputs": jax.tree.map(np.asarray, (params, metrics)),
    }


PATHS = ("network", "layer")


def summarise(rows: list[dict], path: str) -> dict:
    done = [r[path] for r in rows]
    if not done:
        return {}
    compile_s = [d["compile_seconds"] for d in done]
    later = compile_s[1:]  # the first architecture fills the layer caches
    return {
        "architectures": len(done),
        "median_compile_seconds": statistics.median(compile_s),
        "p90_compile_seconds": float(np.percentile(compile_s, 90)),
        "median_compile_seconds_after_the_first": statistics.median(later) if later else None,
        "p90_compile_seconds_after_the_first": float(np.percentile(later, 90)) if later else None,
        "median_programs_compiled": statistics.median(d["programs_compiled"] for d in done),
        "epoch_seconds": statistics.median(d["epoch_seconds"] for d in done),
    }


def ratios(rows: list[dict], key: str, skip_first: bool = False) -> dict:
    return common.spread([r["layer"][key] / r["network"][key] for r in rows[1 if skip_first else 0 :]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    compile_cost.add_lineage_arguments(parser)
    parser.add_argument(
        "--emitters", choices=("default", "loop"), default="default", help="loop: search=fast's XLA:CPU option"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="start no new architecture after this long")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--name", default="layer_programs")
    parser.add_argument("--quick", action="store_true", help="4 architectures at T = 2 (a smoke test)")
    args = parser.parse_args(argv)
    kept = common.keep_host_memory_as_the_cli(["runtime.compile_unit=layer"])  # as a layer run keeps it
    if args.quick:
        args.archs, args.time_steps, args.train_samples, args.fitness_samples = 4, 2, 128, 64
        args.name += "_quick"
    if args.emitters == "loop":
        args.name += "_loop_emitters"
    jax.config.update("jax_enable_compilation_cache", False)
    load_before = common.load_average()
    started = time.perf_counter()
    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    phenotypes = compile_cost.lineage(space, args.seed, args.offspring, args.archs)
    platform = jax.devices()[0].platform
    options = scheduler.compiler_options(platform, cpu_fusion_emitters=args.emitters == "default")
    images, labels, source = common.load_train_images("mnist", args.train_samples + args.fitness_samples)
    k = args.train_samples
    data_args = tuple(jnp.asarray(x) for x in (images[:k], labels[:k], images[k:], labels[k:]))
    protocol = Protocol(
        time_steps=args.time_steps, epochs=1, batch_size=args.batch_size, eval_batch_size=args.fitness_samples
    )
    clock = CompileClock()
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3)))  # backend start-up
    compile_cost.log(
        f"{len(phenotypes)} architectures, T = {args.time_steps}, {platform}, data {source}, options {options}"
    )
    rows: list[dict] = []

    def payload(complete: bool) -> dict:
        network, layer = summarise(rows, "network"), summarise(rows, "layer")
        return {
            **common.header("layer_programs", load_before),
            "settings": {
                **vars(args),
                "data": source,
                "compiler_options": options,
                "protocol": "train_and_score, one epoch, activity on",
                "keep_host_memory": kept,
            },
            "complete": complete,
            "baseline": network,
            "new": layer,
            "compile_ratio": ratios(rows, "compile_seconds"),
            "compile_ratio_after_the_first": ratios(rows, "compile_seconds", skip_first=True),
            "epoch_ratio": ratios(rows, "epoch_seconds"),
            "max_abs_difference": max((r["max_abs_difference"] for r in rows), default=None),
            "bit_identical": sum(r["max_abs_difference"] == 0.0 for r in rows),
            "activity_max_relative_difference": max(
                (r["activity_max_relative_difference"] for r in rows), default=None
            ),
            "accuracy_equal": sum(r["accuracy"][0] == r["accuracy"][1] for r in rows),
            "rows": rows,
            "total_wall_seconds": round(time.perf_counter() - started, 1),
        }

    for i, ph in enumerate(phenotypes):
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            break
        row = {"index": i, "signature": repr(architecture.signature(ph))}
        for path in PATHS if i % 2 == 0 else PATHS[::-1]:
            row[path] = measure(path, ph, protocol, data_args, clock, options)
        a, b = row["network"].pop("outputs"), row["layer"].pop("outputs")
        # Weights and losses; spike counts (activity) differ by whole spikes where rounding flips one.
        row["max_abs_difference"] = compile_cost.max_abs_difference(
            (a[0], a[1]["losses"], a[1]["accuracy"]), (b[0], b[1]["losses"], b[1]["accuracy"])
        )
        row["activity_max_relative_difference"] = max(
            float(abs(x - y) / max(abs(x), 1.0))
            for x, y in zip(jax.tree.leaves(a[1]["activity"]), jax.tree.leaves(b[1]["activity"]), strict=True)
            for x, y in zip(np.ravel(x), np.ravel(y), strict=True)
        )
        row["accuracy"] = [float(a[1]["accuracy"]), float(b[1]["accuracy"])]
        rows.append(row)
        compile_cost.log(
            f"{i}: compile {row['network']['compile_seconds']:.2f} s -> {row['layer']['compile_seconds']:.2f} s "
            f"({row['layer']['programs_compiled']} programs); run {row['network']['epoch_seconds']:.2f} s -> "
            f"{row['layer']['epoch_seconds']:.2f} s; difference {row['max_abs_difference']:.1e}; "
            f"accuracy {row['accuracy']}"
        )
        common.write_result(args.name, payload(complete=False), args.out)
    result = payload(complete=True)
    out = common.write_result(args.name, result, args.out)
    keys = ("baseline", "new", "compile_ratio", "compile_ratio_after_the_first", "epoch_ratio", "max_abs_difference")
    keys += ("bit_identical", "activity_max_relative_difference", "accuracy_equal")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
