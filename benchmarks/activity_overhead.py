"""What measuring activity costs: scoring with and without it, on the same networks.

Every individual is scored on the Fitness split; with ``training.activity``
(on by default) the same forward pass also sums each LIF layer's spikes and
what enters each weighted layer (``spenser_jax.snn.network.activity_sums``). This
times ``training.make_score`` with ``activity`` off and on for a few
networks of the paper's grammar (random, seeded), on MNIST-shaped inputs, in
alternating rounds so that load from other processes hits both alike, and
reports the median ratio per network with its spread (min-max over rounds).
The target: at most 10% slower.

    python benchmarks/activity_overhead.py              # ~5 minutes on 2 shared cores
    python benchmarks/activity_overhead.py --networks 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from spenser_jax import training  # noqa: E402
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace  # noqa: E402
from spenser_jax.grammar import load_grammar, locate  # noqa: E402
from spenser_jax.snn import architecture, network
from spenser_jax.training.protocol import Protocol  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--time-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load_before = common.load_average()
    images, labels, source = common.load_train_images("mnist", args.samples)
    images, labels = jnp.asarray(images), jnp.asarray(labels, jnp.int32)
    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    rng = np.random.default_rng(0)
    rows = []
    for k in range(args.networks):
        ph = space.phenotype(mutation.sample(rng, space, mutation.MutationConfig()))
        sig, hyper = architecture.split(ph)
        params = network.init_params(jax.random.key(k), sig, hyper, (28, 28, 1))
        fns = {
            flag: training.make_score(
                sig, Protocol(time_steps=args.time_steps), batch_size=args.batch_size, activity=flag
            )
            for flag in (False, True)
        }
        key = jax.random.key(1)
        compile_s = {}
        for flag, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, hyper, images, labels, key))
            compile_s[flag] = time.perf_counter() - t0
        times = {False: [], True: []}
        for r in range(args.rounds):
            for flag in (False, True) if r % 2 == 0 else (True, False):
                t0 = time.perf_counter()
                jax.block_until_ready(fns[flag](params, hyper, images, labels, key))
                times[flag].append(time.perf_counter() - t0)
        ratios = [b / a for a, b in zip(times[False], times[True])]
        row = {
            "phenotype": ph.text,
            "macs": architecture.macs(sig, (28, 28, 1)),
            "plain_s": statistics.median(times[False]),
            "activity_s": statistics.median(times[True]),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "first_call_s": {"plain": compile_s[False], "activity": compile_s[True]},
            "times_s": {"plain": times[False], "activity": times[True]},
        }
        rows.append(row)
        print(
            f"network {k}: {row['plain_s']:.3f} s plain, {row['activity_s']:.3f} s with activity: "
            f"x{row['ratio_median']:.3f} (rounds {row['ratio_min']:.3f}-{row['ratio_max']:.3f})",
            flush=True,
        )
    overall = statistics.median(r["ratio_median"] for r in rows)
    payload = {
        **common.header("activity_overhead", load_before),
        "data": source,
        "settings": vars(args),
        "networks": rows,
        "ratio_median_over_networks": overall,
        "target": "activity / plain <= 1.10",
    }
    path = common.write_result("activity_overhead", payload, args.out)
    print(f"median over networks: x{overall:.3f} (target <= 1.10) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
