"""Realised mutation rates per offspring, against the nominal ones of the paper's Table 2.

The nominal rates apply per *round* of mutation (``mutation.mutation_round``), but an
offspring is what ``mutation.offspring`` returns: invalid children are thrown
away and the parent is mutated afresh, and with ``remutate_neutral`` (our
default) a child whose phenotype equals its parent's is mutated once more.
So the rates an offspring sees differ from the nominal ones: e.g. the
learning unit changes in ~35% of offspring, not 30%.

Method: ``--parents`` random parents of the paper's grammar
(``grammars/csnn.grammar``, the paper's macro structure, drawn by
``mutation.sample``), ``--offspring`` offspring each, drawn by the product's
``mutation.offspring`` under ``mutation.MutationConfig()`` (the defaults) and
again with ``remutate_neutral=False`` (same parents, same seeds). Each round
``mutation.offspring`` runs is observed by wrapping ``mutation.mutation_round`` (the
product's code runs unchanged); a round is *invalid* (the network cannot be
built), *neutral* (same phenotype as the parent) or the final one.

Per offspring (means over all offspring):

* whether its learning unit / output layer differs from the parent's
  (genotype);
* per feature / classification layer: DSGE events per layer (every round
  kept counts), and, in offspring whose module kept its layers (no add,
  reuse or remove there), the share of layers that differ from the parent's;
* add / reuse / remove / DSGE events per module;
* rounds, invalid rounds, and whether it needed a re-mutation (a neutral
  round), or (``remutate_neutral=False``) came out identical to its parent;
* DSGE events that changed nothing (a float step clipped at its bound, an
  integer resampled to the same value).

Pure NumPy, seeded; ~1 minute. Usage::

    python benchmarks/mutation_rates.py                    # 200 parents x 50 offspring
    python benchmarks/mutation_rates.py --parents 20 --offspring 10

Results: ``<out>/mutation_rates_<date>.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import statistics
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path); checkout first
import numpy as np

import spenser_jax
from spenser_jax.genome import mutation
from spenser_jax.genome.phenotype import InvalidPhenotype
from spenser_jax.genome.space import SearchSpace, SearchSpaceError

GRAMMAR = "grammars/csnn.grammar"
LAYER_MODULES = ("features", "classification")
OPS = ("add", "reuse", "remove", "dsge")


@contextlib.contextmanager
def observed_rounds():
    """Collects every ``(candidate, events)`` that ``mutation.mutation_round`` returns meanwhile."""
    rounds: list = []
    product = mutation.mutation_round

    def mutate(*args, **kwargs):
        out = product(*args, **kwargs)
        rounds.append(out)
        return out

    mutation.mutation_round = mutate
    try:
        yield rounds
    finally:
        mutation.mutation_round = product


def _noop(event: mutation.Event) -> bool:
    # "<nt>#k gene old->new": a value step that landed on the old value.
    if event.op != "dsge" or "->" not in event.detail or "production" in event.detail:
        return False
    old, new = event.detail.rsplit(" ", 1)[-1].split("->", 1)
    return old == new


def measure(space: SearchSpace, config: mutation.MutationConfig, parents: list, offspring: int, seed: int) -> dict:
    """Per-offspring statistics of ``config`` over ``parents`` x ``offspring``."""
    n = 0
    changed = collections.Counter()  # module -> offspring whose module differs
    events = collections.Counter()  # (module, op) -> events
    dsge_layers = collections.Counter()  # module -> layers at the end (for DSGE per layer)
    kept_layers = collections.Counter()  # module -> layers of offspring that kept the module's layers
    kept_changed = collections.Counter()  # ... of which differ from the parent's
    rounds_hist = collections.Counter()
    invalid_rounds = neutral_offspring = identical = noop_dsge = dsge_total = 0
    for p_index, parent in enumerate(parents):
        parent_text = space.text(parent)
        rng = np.random.default_rng([seed, p_index, 0x0FF5])
        for _ in range(offspring):
            with observed_rounds() as rounds:
                child, child_events = mutation.offspring(rng, parent, space, config)
            n += 1
            rounds_hist[len(rounds)] += 1
            neutral = False
            for candidate, _ in rounds[:-1]:
                try:
                    space.validate(candidate)
                except (SearchSpaceError, InvalidPhenotype):
                    invalid_rounds += 1
                    continue
                neutral = True  # valid but not returned: its phenotype was the parent's
            neutral_offspring += neutral
            identical += space.text(child) == parent_text
            ops_here = collections.Counter((e.module, e.op) for e in child_events)
            events.update(ops_here)
            dsge_total += sum(e.op == "dsge" for e in child_events)
            noop_dsge += sum(_noop(e) for e in child_events)
            for m in parent.modules:
                mine = child.module(m.name).layers
                changed[m.name] += mine != m.layers
                if m.name in LAYER_MODULES:
                    dsge_layers[m.name] += len(mine)
                    if not any(ops_here[(m.name, op)] for op in ("add", "reuse", "remove")):
                        kept_layers[m.name] += len(mine)
                        kept_changed[m.name] += sum(a != b for a, b in zip(mine, m.layers))
    modules = [m.name for m in parents[0].modules]
    rounds_all = [k for k, v in rounds_hist.items() for _ in range(v)]
    return {
        "offspring": n,
        "module_changed": {m: changed[m] / n for m in modules},
        "dsge_events_per_layer": {m: events[(m, "dsge")] / dsge_layers[m] for m in LAYER_MODULES},
        "layer_changed_when_module_kept": {
            m: kept_changed[m] / kept_layers[m] if kept_layers[m] else None for m in LAYER_MODULES
        },
        "events_per_offspring": {m: {op: events[(m, op)] / n for op in OPS} for m in modules},
        "rounds_per_offspring": {
            "mean": statistics.fmean(rounds_all),
            "max": max(rounds_all),
            "histogram": {str(k): v for k, v in sorted(rounds_hist.items())},
        },
        "invalid_rounds_per_offspring": invalid_rounds / n,
        "remutated_neutral_share": neutral_offspring / n,
        "identical_to_parent_share": identical / n,
        "dsge_noop_share": noop_dsge / dsge_total if dsge_total else 0.0,
    }


def table(results: dict[str, dict], config: mutation.MutationConfig) -> list[str]:
    """The per-offspring rates side by side, with the nominal per-round ones."""
    names = list(results)
    head = f"{'per offspring':<56}" + "".join(f"{n:>24}" for n in names) + f"{'nominal, per round':>20}"
    lines = [head, "-" * len(head)]

    def row(label, values, nominal="", fmt="{:.1%}"):
        cells = "".join(f"{(fmt.format(v) if v is not None else '-'):>24}" for v in values)
        lines.append(f"{label:<56}{cells}{nominal:>20}")

    r = [results[n] for n in names]
    row("learning unit changed", [x["module_changed"]["learning"] for x in r], f"{config.learning_dsge:.0%}")
    row("output layer changed", [x["module_changed"]["output"] for x in r], f"{config.layer_dsge:.0%}")
    for m in LAYER_MODULES:
        row(
            f"{m}: DSGE events per layer",
            [x["dsge_events_per_layer"][m] for x in r],
            f"{config.layer_dsge:.0%}",
            "{:.3f}",
        )
        row(
            f"{m}: layer changed (module kept its layers)",
            [x["layer_changed_when_module_kept"][m] for x in r],
            f"{config.layer_dsge:.0%}",
        )
        row(f"{m}: module changed", [x["module_changed"][m] for x in r])
    nominal_tries = (1 + config.max_tries) / 2
    for m in LAYER_MODULES:
        for op, p in (
            ("add", config.add_layer * (1 - config.reuse_layer)),
            ("reuse", config.add_layer * config.reuse_layer),
            ("remove", config.remove_layer),
        ):
            row(
                f"{m}: {op} events", [x["events_per_offspring"][m][op] for x in r], f"{p * nominal_tries:.3f}", "{:.3f}"
            )
    row("re-mutated (a neutral round)", [x["remutated_neutral_share"] for x in r])
    row("identical to the parent", [x["identical_to_parent_share"] for x in r])
    row("rounds (mean)", [x["rounds_per_offspring"]["mean"] for x in r], "1", "{:.3f}")
    row("rounds (max)", [x["rounds_per_offspring"]["max"] for x in r], "", "{:d}")
    row("invalid rounds", [x["invalid_rounds_per_offspring"] for x in r], "", "{:.3f}")
    row("DSGE events that changed nothing", [x["dsge_noop_share"] for x in r])
    lines.append(
        "Per offspring: what mutation.offspring returns, every round it took counted "
        "(invalid rounds are discarded, neutral ones kept and mutated again). Nominal: "
        "per round; add/reuse/remove: expected events of 1-2 tries while the module is "
        "within its size limits."
    )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--offspring", type=int, default=50, help="offspring per parent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    space = SearchSpace(spenser_jax.load_grammar(GRAMMAR))
    default = mutation.MutationConfig()
    configs = {
        "remutate_neutral=True": default,
        "remutate_neutral=False": dataclasses.replace(default, remutate_neutral=False),
    }
    rng = np.random.default_rng([args.seed, 0xA11])
    parents = [mutation.sample(rng, space, default) for _ in range(args.parents)]
    results = {}
    for name, config in configs.items():
        t0 = time.perf_counter()
        results[name] = measure(space, config, parents, args.offspring, args.seed)
        print(f"{name}: {results[name]['offspring']} offspring in {time.perf_counter() - t0:.1f} s", flush=True)
    lines = table(results, default)
    print("\n".join(lines), flush=True)
    if not args.no_write:
        payload = {
            "benchmark": "mutation_rates",
            "machine": common.host_info(),
            "versions": common.versions(),
            "settings": {
                "grammar": GRAMMAR,
                "macro": [dataclasses.astuple(m) for m in space.macro],
                "parents": args.parents,
                "offspring_per_parent": args.offspring,
                "seed": args.seed,
                "configs": {k: dataclasses.asdict(v) for k, v in configs.items()},
            },
            "results": results,
            "table": lines,
            "total_wall_s": round(time.perf_counter() - started, 1),
        }
        print("wrote", common.write_result("mutation_rates", payload, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
