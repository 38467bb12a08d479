"""Where candidates at chance come from (issue 29): random draws of Grammar 2 under ``search=fast``.

A quarter to a half of all candidates end at chance accuracy (fitness <=
``--chance``, 0.12 on 10 classes): compute spent on networks that never learn.
Before the sampler changes, this measures why. Method:

* ``--n`` genotypes drawn as generation 0 draws them (``mutation.sample``
  with the run's generation-0 rng, ``search.strategy.generation_rng``), in
  the search space ``spenser_jax.run.config.setup`` builds for
  ``search=fast`` on MNIST (``dataset.subset``, default 3,000);
* each trained and scored alone by the run's own ``scheduler.Evaluator``
  under ``search=fast``'s per-candidate protocol (a quarter epoch, never under
  ``search.min_steps`` steps, T = 10, the early check), with the key that
  candidate ``i`` of generation 0 gets; nothing inherited (generation 0);
* before training, a forward pass of the *initial* weights (the same key,
  the same draws as training's) on a probe batch of ``--probe`` Fitness
  samples, through the per-block programs the evaluator trains with
  (``spenser_jax.training.blocks``' private ``_host_init_params``/``_Net``/
  ``_score``): did the output layer spike at all before any training? Its
  seconds (compile included) are set against the candidate's training.

Per candidate it records fitness, status, optimizer kind and lr, every LIF
layer's β and threshold, layer counts, spikes per sample of every LIF layer
after training (``Evaluation.activity``) and at initialisation, and steps
trained. An at-chance candidate is attributed to every cause whose rule
holds (a candidate may have several), and to one *primary* cause, the first
that holds in this order:

1. ``error``: the evaluation failed (status ``error``);
2. ``nonfinite_loss``: loss or update became non-finite;
3. ``stopped_early``: stopped by the early check (output silent, loss flat);
4. ``output_silent``: the output LIF layer never spiked on the Fitness split
   after training;
5. ``hidden_lif_silent``: a hidden LIF layer never spiked after training;
6. ``sgd_lr_below_1e-3``: gradient descent with lr < 1e-3;
7. ``lr_below_1e-3``: another optimizer with lr < 1e-3;
8. ``unexplained``: none of the above.

Also: the at-chance rate by optimizer kind and by lr decade, and how well
"output silent at initialisation" predicts "ends at chance" (a 2x2 table:
the cheap pre-training filter the issue proposes).

Spread: each rate is a share of ``--n`` independent draws; its binomial
standard error sqrt(p(1-p)/n) is printed beside it.

Usage (run on one core, as the README's figures were)::

    taskset -c 0 python benchmarks/chance_causes.py --budget 1200   # 36 of 60 draws in 29 min here
    taskset -c 0 python benchmarks/chance_causes.py --quick     # 4 draws, ~1 min

Results: ``<out>/chance_causes_<date>.json``.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path); checkout first

CAUSES = (
    "error",
    "nonfinite_loss",
    "stopped_early",
    "output_silent",
    "hidden_lif_silent",
    "sgd_lr_below_1e-3",
    "lr_below_1e-3",
    "unexplained",
)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spenser_jax import evolve

    with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def probe_at_init(sig, hyper, key, probe, score_key, protocol, input_shape, options) -> tuple[list[float], float]:
    """Spikes per sample of every LIF layer of the *initial* weights on ``probe``, and the seconds it took.

    The initial weights are those training starts from (the first half of
    the candidate's key, as ``blocks.train_and_score`` splits it).
    """
    import jax

    from spenser_jax.training import blocks

    t0 = time.perf_counter()
    key_init, _ = jax.random.split(key)
    params = blocks._host_init_params(key_init, sig, hyper, probe.images.shape[1:], options)
    net = blocks._Net(sig, hyper, probe.images.shape[1:], options, blocks._device_of(probe.images))
    result = blocks._score(net, net.pack(params), probe.images, probe.labels, score_key, protocol, options)
    result = jax.device_get(result)
    seconds = time.perf_counter() - t0
    summary = protocol.summarise(sig, input_shape, result["activity"], int(probe.labels.shape[0]))
    return [float(x) for x in summary["spikes_per_sample"]], seconds


def causes_of(c: dict) -> list[str]:
    """Every rule of the docstring that holds for candidate ``c`` (``unexplained`` when none)."""
    found = []
    if c["status"] == "error":
        found.append("error")
    if c["status"] == "nonfinite_loss":
        found.append("nonfinite_loss")
    if c["status"] == "stopped":
        found.append("stopped_early")
    spikes = c["spikes_after"]
    if spikes is not None and c["output_is_lif"] and spikes[-1] == 0:
        found.append("output_silent")
    hidden = spikes[:-1] if (spikes is not None and c["output_is_lif"]) else (spikes or [])
    if any(x == 0 for x in hidden):
        found.append("hidden_lif_silent")
    if c["lr"] < 1e-3:
        found.append("sgd_lr_below_1e-3" if c["optimizer"] == "gradient-descent" else "lr_below_1e-3")
    return found or ["unexplained"]


def stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def rate_table(candidates: list[dict], key) -> dict[str, dict]:
    groups = collections.defaultdict(list)
    for c in candidates:
        groups[key(c)].append(c["at_chance"])
    return {
        str(k): {"n": len(v), "at_chance": sum(v), "rate": sum(v) / len(v), "stderr": stderr(sum(v) / len(v), len(v))}
        for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }


def two_by_two(candidates: list[dict], flag) -> dict:
    """A rule applied before training (``flag(c)``: True, False or None for not applicable) against ending at chance.

    ``precision``: of the candidates it flags, the share at chance; ``recall``: of the at-chance
    candidates, the share it flags; ``flagged_share``: what a filter on it would redraw;
    ``at_chance_rate_unflagged``: the at-chance rate of the rest.
    """
    seen = [(flag(c), c["at_chance"]) for c in candidates]
    seen = [(f, a) for f, a in seen if f is not None]
    tp = sum(f and a for f, a in seen)
    fp = sum(f and not a for f, a in seen)
    fn = sum(a and not f for f, a in seen)
    tn = sum(not f and not a for f, a in seen)
    return {
        "flagged": {"at_chance": tp, "learns": fp},
        "not_flagged": {"at_chance": fn, "learns": tn},
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "flagged_share": (tp + fp) / len(seen) if seen else None,
        "at_chance_rate_unflagged": fn / (fn + tn) if fn + tn else None,
    }


def _hidden(spikes: list[float] | None, output_is_lif: bool) -> list[float] | None:
    return None if spikes is None else (spikes[:-1] if output_is_lif else spikes)


#: Rules a filter could apply before any training: the probe's (forward pass of the initial weights) and one
#: on the genotype alone (a prior change), each against ending at chance.
PREDICTORS = {
    "output_silent_at_init": lambda c: c["output_silent_at_init"],
    "hidden_lif_silent_at_init": lambda c: (
        None if c["spikes_at_init"] is None else any(x == 0 for x in _hidden(c["spikes_at_init"], c["output_is_lif"]))
    ),
    "any_lif_silent_at_init": lambda c: (
        None if c["spikes_at_init"] is None else any(x == 0 for x in c["spikes_at_init"])
    ),
    "lr_below_1e-3": lambda c: c["lr"] < 1e-3,
    "sgd_lr_below_1e-3": lambda c: c["optimizer"] == "gradient-descent" and c["lr"] < 1e-3,
    "sgd_any_lr": lambda c: c["optimizer"] == "gradient-descent",
}


def analyse(candidates: list[dict]) -> dict:
    """Every figure of the study from the per-candidate records (also on a saved result: ``--reanalyse``)."""
    n = len(candidates)
    chance = [c for c in candidates if c["at_chance"]]
    any_cause = collections.Counter(k for c in chance for k in c["causes"])
    primary = collections.Counter(c["primary_cause"] for c in chance)
    rate = len(chance) / n if n else float("nan")
    probe_s = [c["probe_seconds"] for c in candidates if not math.isnan(c["probe_seconds"])]
    eval_s = [c["evaluate_seconds"] for c in candidates]
    return {
        "candidates_evaluated": n,
        "at_chance": len(chance),
        "at_chance_rate": rate,
        "at_chance_stderr": stderr(rate, n),
        "fitness_of_the_rest": common.spread([c["fitness"] for c in candidates if not c["at_chance"]]),
        "statuses": dict(collections.Counter(c["status"] for c in candidates)),
        "causes": {
            k: {
                "any": any_cause[k],
                "any_share": any_cause[k] / len(chance) if chance else None,
                "primary": primary[k],
                "primary_share": primary[k] / len(chance) if chance else None,
            }
            for k in CAUSES
        },
        "by_optimizer": rate_table(candidates, lambda c: c["optimizer"]),
        "by_lr_decade": rate_table(candidates, lambda c: f"1e{math.floor(math.log10(c['lr']))}"),
        "by_lif_layers": rate_table(candidates, lambda c: c["lif_layers"]),
        "predictors": {name: two_by_two(candidates, rule) for name, rule in PREDICTORS.items()},
        "output_silent_at_init_share": (sum(bool(c["output_silent_at_init"]) for c in candidates) / n if n else None),
        "costs": {
            "probe_seconds": common.spread(probe_s),
            "evaluate_seconds": common.spread(eval_s),
            "probe_over_evaluate": common.spread(
                [c["probe_seconds"] / c["evaluate_seconds"] for c in candidates if not math.isnan(c["probe_seconds"])]
            ),
            "probe_total_s": sum(probe_s),
            "evaluate_total_s": sum(eval_s),
            "note": "probe: init + forward of the probe batch, compiling what it is the first to need; "
            "evaluate: the evaluator's train + score of one candidate, its compiling included",
        },
        "median_train_steps": statistics.median([c["train_steps"] for c in candidates]) if candidates else None,
    }


def report(a: dict, chance_level: float) -> None:
    """Prints :func:`analyse`'s figures."""

    def pct(x):
        return "-" if x is None else f"{x:.0%}"

    n, rate = a["candidates_evaluated"], a["at_chance_rate"]
    print()
    print(f"at chance (fitness <= {chance_level}): {a['at_chance']} of {n} = {rate:.1%} ± {a['at_chance_stderr']:.1%}")
    print(f"statuses: {a['statuses']}; median steps trained {a['median_train_steps']}")
    print(f"{'cause (of the at-chance)':<26}{'any':>6}{'share':>8}{'primary':>9}{'share':>8}")
    for k, v in a["causes"].items():
        print(f"{k:<26}{v['any']:>6}{pct(v['any_share']):>8}{v['primary']:>9}{pct(v['primary_share']):>8}")
    for title in ("by_optimizer", "by_lr_decade", "by_lif_layers"):
        print(title.replace("_", " ") + ":")
        for k, v in a[title].items():
            print(f"  {k:<18} {v['at_chance']:>3} of {v['n']:>3} = {v['rate']:.0%} ± {v['stderr']:.0%}")
    print("rules before training against ending at chance: flagged (at chance / learns), not flagged (...)")
    for name, t in a["predictors"].items():
        print(
            f"  {name:<26} flagged {t['flagged']['at_chance']:>3}/{t['flagged']['learns']:<3} "
            f"not {t['not_flagged']['at_chance']:>3}/{t['not_flagged']['learns']:<3} "
            f"precision {pct(t['precision'])} recall {pct(t['recall'])} redraws {pct(t['flagged_share'])} "
            f"at chance after {pct(t['at_chance_rate_unflagged'])}"
        )
    c = a["costs"]
    probe = c["probe_seconds"]
    print(
        f"probe: median {c['probe_seconds'].get('median', float('nan')):.2f} s a candidate "
        f"(p10 {probe.get('p10', float('nan')):.2f}, p90 {probe.get('p90', float('nan')):.2f}), "
        f"evaluation median {c['evaluate_seconds'].get('median', float('nan')):.1f} s; probe/evaluation median "
        f"{c['probe_over_evaluate'].get('median', float('nan')):.3f}; totals {c['probe_total_s']:.0f} s against "
        f"{c['evaluate_total_s']:.0f} s"
    )


def reanalyse(path: str, out) -> int:
    """Recomputes the figures of a saved result from its candidates (the rules changed, not the measurement)."""
    import json
    from pathlib import Path

    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    chance_level = saved["settings"]["chance"]
    for c in saved["candidates"]:
        c["causes"] = causes_of(c) if c["at_chance"] else []
        c["primary_cause"] = next((k for k in CAUSES if k in c["causes"]), None)
    analysis = analyse(saved["candidates"])
    report(analysis, chance_level)
    keep = {k: v for k, v in saved.items() if k not in analysis and k not in ("candidates", "date")}
    payload = {"date": saved["date"], **keep, **analysis, "candidates": saved["candidates"]}
    payload["reanalysed"] = common.today()
    target = common.write_result("chance_causes", payload, out or Path(path).parent)
    print(f"wrote {target}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60, help="random genotypes drawn and trained")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (draws, keys, splits)")
    parser.add_argument("--subset", type=int, default=3000, help="dataset.subset")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--probe", type=int, default=256, help="Fitness samples of the probe at initialisation")
    parser.add_argument("--chance", type=float, default=0.12, help="fitness at or below this is at chance")
    parser.add_argument("--budget", type=float, default=None, help="stop drawing after this many seconds")
    parser.add_argument("--quick", action="store_true", help="4 draws on a subset of 1,000")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a further override (search.early_stop=null)"
    )
    parser.add_argument("--tag", default="", help="appended to the result's name (chance_causes_<tag>_<date>.json)")
    parser.add_argument("--reanalyse", metavar="JSON", help="recompute the figures of a saved result, train nothing")
    args = parser.parse_args(argv)
    if args.reanalyse:
        return reanalyse(args.reanalyse, args.out)
    if args.quick:
        args.n, args.subset = 4, 1000
    load_before = common.load_average()
    overrides = [
        "search=fast",
        f"dataset={args.dataset}",
        f"dataset.subset={args.subset}",
        f"seed={args.seed}",
        "runtime.progress=false",
        *args.set,
    ]
    kept = common.keep_host_memory_as_the_cli([*overrides, "runtime.compile_unit=auto"])

    import jax

    from spenser_jax.data import Arrays
    from spenser_jax.genome import mutation
    from spenser_jax.run.config import setup
    from spenser_jax.scheduler import Evaluator
    from spenser_jax.search.strategy import generation_rng
    from spenser_jax.snn import architecture
    from spenser_jax.training import evaluation

    s = setup(compose(overrides))
    input_shape = tuple(s.space.input_shape)
    rng = generation_rng(s.seed, 0)
    genotypes = [mutation.sample(rng, s.space, s.mutation) for _ in range(args.n)]
    phenotypes = [s.space.phenotype(g) for g in genotypes]
    fitness = s.splits.fitness
    probe = evaluation.on_device(Arrays(fitness.images[: args.probe], fitness.labels[: args.probe]))
    score_key = evaluation.fitness_key(s.seed)
    options = tuple(sorted(s.runtime.get("compiler_options", {}).items()))
    print(
        f"{args.n} draws, {args.dataset} subset {args.subset} (EvoTrain {len(s.splits.evo_train.labels)}, "
        f"Fitness {len(fitness.labels)}), protocol {s.protocol.time_steps} steps T, epochs {s.protocol.epochs}, "
        f"min_steps {s.protocol.min_steps}, early_stop {s.protocol.early_stop}; runtime {s.runtime}",
        flush=True,
    )

    candidates = []
    start = time.perf_counter()
    with Evaluator(s.splits, seed=s.seed, input_shape=input_shape, protocol=s.protocol, **s.runtime) as evaluator:
        for i, p in enumerate(phenotypes):
            if args.budget is not None and time.perf_counter() - start > args.budget:
                print(f"budget of {args.budget:.0f} s spent: stopping after {i} draws", flush=True)
                break
            sig, hyper = architecture.split(p, s.protocol.time_steps)
            key = evaluation.individual_key(s.seed, 0, i)
            try:
                spikes_init, probe_s = probe_at_init(
                    sig, hyper, key, probe, score_key, s.protocol, input_shape, options
                )
            except Exception as err:  # noqa: BLE001 - the probe of an odd network must not stop the study
                spikes_init, probe_s = None, float("nan")
                print(f"  probe failed: {evaluation.reason(err)}", file=sys.stderr)
            t0 = time.perf_counter()
            (e,) = evaluator.evaluate([p], generation=0, indices=[i])
            eval_s = time.perf_counter() - t0
            lifs = [x for x in p.layers if type(x).__name__ == "LIF"]
            output_is_lif = isinstance(sig.layers[-1], architecture.LIFSlot)
            spikes_after = None if e.activity is None else [float(x) for x in e.activity["spikes_per_sample"]]
            c = {
                "index": i,
                "fitness": e.fitness,
                "status": e.status,
                "reason": e.reason,
                "optimizer": p.learning.tag,
                "lr": float(p.learning.lr),
                "beta": [float(x.beta) for x in lifs],
                "threshold": [float(x.threshold) for x in lifs],
                "layers": len(sig.layers),
                "lif_layers": len(lifs),
                "output_is_lif": output_is_lif,
                "spikes_after": spikes_after,
                "output_spiked": None if spikes_after is None or not output_is_lif else spikes_after[-1] > 0,
                "spikes_at_init": spikes_init,
                "output_silent_at_init": (None if spikes_init is None or not output_is_lif else spikes_init[-1] == 0),
                "train_steps": e.train_steps,
                "train_seconds": e.train_seconds,
                "compile_seconds": e.compile_seconds,
                "evaluate_seconds": eval_s,
                "probe_seconds": probe_s,
                "phenotype": p.text,
            }
            c["at_chance"] = c["fitness"] <= args.chance
            c["causes"] = causes_of(c) if c["at_chance"] else []
            c["primary_cause"] = next((k for k in CAUSES if k in c["causes"]), None)
            candidates.append(c)
            print(
                f"{i:3d} fit {e.fitness:6.3f} {e.status:14s} {c['optimizer']:16s} lr {c['lr']:.1e} "
                f"LIF {c['lif_layers']} steps {e.train_steps:4d} out@init "
                f"{'-' if spikes_init is None else f'{spikes_init[-1]:.2f}'} out "
                f"{'-' if spikes_after is None else f'{spikes_after[-1]:.2f}'} eval {eval_s:5.1f}s "
                f"probe {probe_s:4.1f}s {c['primary_cause'] or ''}",
                flush=True,
            )
    wall = time.perf_counter() - start

    analysis = analyse(candidates)
    report(analysis, args.chance)
    print(f"wall {wall:.0f} s")
    payload = {
        **common.header("chance_causes", load_before),
        "settings": {
            **vars(args),
            "overrides": overrides,
            "host_memory_kept": kept,
            "runtime": {k: str(v) for k, v in s.runtime.items()},
            "protocol": {
                "time_steps": s.protocol.time_steps,
                "epochs": s.protocol.epochs,
                "batch_size": s.protocol.batch_size,
                "min_steps": s.protocol.min_steps,
                "early_stop": s.protocol.early_stop,
                "stop_min_steps": s.protocol.stop_min_steps,
            },
            "evo_train": len(s.splits.evo_train.labels),
            "fitness_samples": len(fitness.labels),
            "jax_devices": str(jax.devices()),
            "cause_order": list(CAUSES),
        },
        **analysis,
        "wall_seconds": wall,
        "candidates": candidates,
    }
    path = common.write_result("chance_causes" + (f"_{args.tag}" if args.tag else ""), payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
