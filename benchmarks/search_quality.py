"""Search quality (issue 29): does the evolutionary search beat random sampling at equal compute?

Cells are (data set, arm, seed), each a run directory ``--work/<data set>/<arm>/seed<seed>``
that :func:`spenser_jax.evolve.run` runs or resumes. Every arm searches ``--generations`` of
``--offspring`` candidates with ``search=fast``'s per-candidate protocol (the same evaluations
per generation; the compute each cell used, train_samples x T from its records, is reported
against the ``fast`` cell of its seed):

* ``fast``: (1+λ), ``search=fast`` (the parent trains on in one of the λ places);
* ``random``: ``evolution.strategy=random``: λ fresh draws from the grammar a generation;
* ``nsga2``: ``evolution.strategy=nsga2`` with μ = λ (its first generation draws μ = λ too);
  its most accurate member is its best;
* ``paper``: (1+λ) with the paper's protocol (one epoch at the data set's T), off by default
  (``--arms``): the same candidates at several times the compute.

Phases (``--phases``, all but spearman by default; the script can be killed at any time and
run again to go on, a finished part is skipped):

``search``: the cells, ordered so that complete comparisons finish first (per data set, per
seed, every arm). ``retrain``: each cell's best retrained from scratch for ``--retrain-epochs``
on the run's train split at the data set's T (``spenser_jax.retrain.retrain``: ``test.json`` in
the run directory), tested on the official test split. ``report``: per data set, test accuracy
mean ± s.d. per arm and per seed, the share of candidates at chance (fitness <= 1/classes +
0.02), anytime curves (best fitness found against cumulative compute), wall time, NSGA-II's and
random search's hypervolume over (accuracy, SynOps) against nsga2's reference point, and a
verdict: does fast beat random by more than the seeds' spread? ``spearman``: the distinct
architectures of one finished ``fast`` cell (and ``random``'s, ``--spearman-arms``) retrained
from scratch with the same budget, the Spearman correlation of search fitness with test
accuracy, and the sizes of the top-fitness against the top-test networks.

Writes ``results/search_quality_<date>.{json,png}``.

    python benchmarks/search_quality.py --plan        # the cells, steps per candidate, estimated cost
    python benchmarks/search_quality.py               # hours: run it in the background, rerun to go on
    python benchmarks/search_quality.py --phases spearman
    python benchmarks/search_quality.py --report-only
    python benchmarks/search_quality.py --quick       # minutes: every phase, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from spenser_jax import evolve, report, retrain  # noqa: E402
from spenser_jax.genome.phenotype import parse  # noqa: E402
from spenser_jax.run import files, load_run  # noqa: E402
from spenser_jax.search import nsga2  # noqa: E402
from spenser_jax.training.protocol import budget_steps, epoch_plan  # noqa: E402

ARMS = {
    "fast": ["evolution.strategy=one_plus_lambda", "search=fast"],
    "random": ["evolution.strategy=random", "search=fast"],
    "nsga2": ["evolution.strategy=nsga2", "search=fast"],  # + evolution.population=λ
    "paper": ["evolution.strategy=one_plus_lambda", "search=paper"],
}
TRAIN_SIZES = {"mnist": 60_000, "fmnist": 60_000, "cifar10": 50_000, "cifar10_jpeg": 50_000}
# The plan's cost model, from benchmarks/results/full_scale_2026-12-05.json (this 2-core machine):
# search=fast on Fashion-MNIST, 220 candidates of 165 steps at T = 10 in 5208 s (compile and scoring
# included); its best (a two-layer perceptron, so a lower bound) retrained 50 epochs of 938 steps at
# T = 25 in 1368 s. CIFAR-10 (JPEG copy) against MNIST: the same two generation-0 draws (seed 3,
# subset 40,000, 110 and 22 steps) took 1.46x the wall time, 1.48x and 1.58x the training seconds
# (2026-12-08, both under a load average of 6-7). An unloaded machine's figures: a loaded one is slower
# (those two MNIST candidates took 58 s each at load 6); the ETA printed while the plan runs rescales
# the estimate by the cells finished.
SEARCH_S_PER_STEP_T10 = 5208 / (220 * 165)
RETRAIN_S_PER_STEP_T10 = 1368 / (50 * 938) / 2.5
SIZE_FACTOR = {"cifar10": 1.5, "cifar10_jpeg": 1.5}
DIVERGED = "search_quality_diverged.json"  # a cell whose best's retraining diverged (retrain writes no test.json)
PACKAGE_LOG = logging.getLogger("spenser_jax")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def overrides(args, dataset: str, arm: str, seed: int) -> list[str]:
    return [
        f"dataset={dataset}",
        *([f"dataset.subset={args.subset}"] if args.subset else []),
        *([f"dataset.time_steps={args.time_steps}"] if args.time_steps else []),
        f"seed={seed}",
        *ARMS[arm],
        *([f"evolution.population={args.offspring}"] if arm == "nsga2" else []),
        f"evolution.generations={args.generations}",
        f"evolution.offspring={args.offspring}",
        "experiment=search_quality",
        "runtime.progress=false",
        f"runtime.compile_cache={args.work / 'xla-cache'}",
        *args.override,
    ]


def cell_dir(args, dataset: str, arm: str, seed: int) -> Path:
    return args.work / dataset / arm / f"seed{seed}"


def cells(args) -> list[tuple[str, str, int]]:
    """Complete comparisons first: per data set, per seed, every arm."""
    return [(d, a, s) for d in args.datasets for s in args.seeds for a in args.arms]


def protocol_sizes(args, dataset: str, arm: str) -> dict:
    """Per-candidate steps and T of ``arm`` on ``dataset`` (from the composed config, before any data loads)."""
    cfg = compose(overrides(args, dataset, arm, args.seeds[0]))
    n = args.subset or TRAIN_SIZES.get(dataset, 60_000)
    evo_train = n - round(n * cfg.dataset.fitness_fraction)
    batch = int(cfg.training.batch_size)
    epochs = cfg.training.epochs
    search = cfg.get("search", {})
    min_steps = search.get("min_steps")
    steps = budget_steps(epoch_plan(epochs, evo_train, batch, min_steps), evo_train, batch)
    unfloored = budget_steps(epoch_plan(epochs, evo_train, batch, None), evo_train, batch)
    data_t = int(cfg.dataset.time_steps)
    return {
        "evo_train": evo_train,
        "train": n,
        "steps": steps,
        "steps_without_floor": unfloored,
        "floor_binds": min_steps is not None and unfloored < min_steps,
        "search_time_steps": min(search.get("time_steps") or data_t, data_t),
        "data_time_steps": data_t,
        "retrain_steps": args.retrain_epochs * -(-n // batch),
    }


def estimate(args, sizes: dict) -> dict:
    """Rough seconds on this machine per cell: its search and its best's retraining.

    A retraining costs between a perceptron's steps (``retrain_low``) and a search candidate's
    (``retrain``, compile and scoring included): the plan and its ETA count the higher.
    """
    out = {}
    for (dataset, arm), s in sizes.items():
        f = SIZE_FACTOR.get(dataset, 1.0)
        per_candidate = SEARCH_S_PER_STEP_T10 * s["steps"] * s["search_time_steps"] / 10 * f
        retrain_steps = s["retrain_steps"] * s["data_time_steps"] / 10 * f
        out[dataset, arm] = {
            "search": per_candidate * args.generations * args.offspring,
            "retrain": SEARCH_S_PER_STEP_T10 * retrain_steps,
            "retrain_low": RETRAIN_S_PER_STEP_T10 * retrain_steps,
        }
    return out


def print_plan(args, sizes: dict, cost: dict) -> float:
    log(f"plan: {len(cells(args))} cells, {args.generations} generations of {args.offspring} candidates each")
    total = low = 0.0
    for (dataset, arm), s in sizes.items():
        c = cost[dataset, arm]
        total += (c["search"] + c["retrain"]) * len(args.seeds)
        low += (c["search"] + c["retrain_low"]) * len(args.seeds)
        log(
            f"  {dataset:>12} {arm:>6}: EvoTrain {s['evo_train']}, {s['steps']} steps per candidate "
            f"({s['steps_without_floor']} without the floor{', FLOOR BINDS' if s['floor_binds'] else ''}) "
            f"at T {s['search_time_steps']}; retrain {s['retrain_steps']} steps at T {s['data_time_steps']}; "
            f"~{c['search'] / 60:.0f} min search + {c['retrain_low'] / 60:.1f}-{c['retrain'] / 60:.1f} min retrain "
            "per seed"
        )
    if "spearman" in args.phases:
        dataset = args.datasets[0]
        c = estimate(args, {(dataset, "fast"): protocol_sizes(args, dataset, "fast")})[dataset, "fast"]
        n = args.generations * args.offspring * len(args.spearman_arms)
        total, low = total + c["retrain"] * n, low + c["retrain_low"] * n
        log(
            f"  spearman: up to {n} architectures of {dataset}, "
            f"{c['retrain_low'] / 60:.1f}-{c['retrain'] / 60:.1f} min each"
        )
    log(
        f"estimated {low / 3600:.1f}-{total / 3600:.1f} h wall on this machine, unloaded "
        f"(2 cores: {2 * low / 3600:.0f}-{2 * total / 3600:.0f} core-hours)"
    )
    return total


# --------------------------------------------------------------------------
# Phases


def run_search(args, dataset: str, arm: str, seed: int) -> bool:
    """Runs or resumes one cell; False when it was already finished."""
    run_dir = cell_dir(args, dataset, arm, seed)
    if len(files.read_generations(run_dir)) >= args.generations:
        return False
    log(f"cell {dataset}/{arm}/seed{seed}: searching in {run_dir}")
    evolve.run(compose(overrides(args, dataset, arm, seed)), run_dir)
    return True


def run_retrain(args, run_dir: Path) -> bool:
    """Retrains a finished cell's best from scratch unless its test.json already holds this budget."""
    if len(files.read_generations(run_dir)) < args.generations:
        return False
    test = files.read_json(run_dir / files.TEST)
    best = files.read_json(run_dir / files.BEST)
    if test and test.get("from_scratch") and test["epochs"] == args.retrain_epochs:
        if best and test["phenotype"] == best["phenotype"]:
            return False
    diverged = files.read_json(run_dir / DIVERGED)
    if diverged and best and diverged == {"epochs": args.retrain_epochs, "phenotype": best["phenotype"]}:
        return False
    log(f"retraining {run_dir} from scratch, {args.retrain_epochs} epochs")
    try:
        result = retrain.retrain(run_dir, epochs=args.retrain_epochs, from_scratch=True, progress=False)
    except retrain.TrainingDiverged as err:  # a best that cannot learn alone is a result, not a crash
        files.atomic_write(
            run_dir / DIVERGED, json.dumps({"epochs": args.retrain_epochs, "phenotype": best["phenotype"]})
        )
        log(f"  {err}")
        return True
    log(f"  test accuracy {result['accuracy']:.4f} ({result['seconds']:.0f} s)")
    return True


def spearman_cell(args, run_dir: Path, train: bool = True) -> dict:
    """Every distinct scored architecture of a cell retrained from scratch and tested; resumable per architecture."""
    import jax

    run = load_run(run_dir)
    path = run_dir / "search_quality_spearman.json"
    done = files.read_json(path) or {}
    if done.get("epochs") != args.retrain_epochs:
        done = {"epochs": args.retrain_epochs, "members": {}}
    seen: dict[str, dict] = {}
    for r in run.records:
        for i in r["individuals"]:
            if i["status"] in ("ok", "stopped") and not i.get("continued") and i["phenotype"] not in seen:
                seen[i["phenotype"]] = {"generation": r["generation"], **i}
    wanted = list(seen)[: args.spearman_archs] if args.spearman_archs else list(seen)
    todo = [t for t in wanted if t not in done["members"]] if train else []
    if todo:
        # The package's retraining path (retrain.retrain's protocol, data, keys), for any phenotype.
        trainer, train, test = retrain._retraining(run, None, None, args.retrain_epochs)
        root = jax.random.key(run.identity["seed"])
    for k, text in enumerate(todo):
        ph = parse(text)
        t0 = time.perf_counter()
        trained, info = trainer.train(ph, jax.random.fold_in(root, retrain._RETRAIN_STREAM), train)
        accuracy = None
        if not info["nonfinite"]:
            accuracy, _, _ = trainer.score(ph, trained.params, test, jax.random.fold_in(root, retrain._TEST_STREAM))
        i = seen[text]
        done["members"][text] = {
            "generation": i["generation"],
            "search_fitness": i["fitness"],
            "status": i["status"],
            "test_accuracy": accuracy,
            "parameters": i.get("parameters"),
            "layers": len(ph.layers),
            "conv_layers": sum(type(layer).__name__.lower().startswith("conv") for layer in ph.layers),
            "seconds": time.perf_counter() - t0,
        }
        files.atomic_write(path, json.dumps(done, indent=1))
        log(f"  spearman {run_dir.parent.name} {k + 1}/{len(todo)}: fitness {i['fitness']:.4f} test {accuracy}")
    return {t: done["members"][t] for t in wanted if t in done["members"]}


def spearman_phase(args, train: bool) -> dict | None:
    """The spearman cells' results (training what is missing when ``train``); None when there are none."""
    spearman = {"dataset": args.datasets[0], "seed": args.seeds[0], "epochs": args.retrain_epochs, "cells": {}}
    for arm in args.spearman_arms:
        run_dir = cell_dir(args, args.datasets[0], arm, args.seeds[0])
        if len(files.read_generations(run_dir)) < args.generations:
            if train:
                log(f"spearman: {run_dir} is not finished; skipped")
            continue
        members = list(spearman_cell(args, run_dir, train).values())
        if members:
            spearman["cells"][arm] = {"members": members, "summary": spearman_summary(members)}
    if not spearman["cells"]:
        return None
    pooled = [m for c in spearman["cells"].values() for m in c["members"]]
    spearman["pooled"] = spearman_summary(pooled)
    if spearman["pooled"]["architectures"] < 30:
        log(f"spearman: only {spearman['pooled']['architectures']} architectures (the issue asks for >= 30)")
    named = {a: c["summary"] for a, c in spearman["cells"].items()} | {"pooled": spearman["pooled"]}
    for name, m in named.items():
        log(f"spearman {name}: {spearman_line(m)}")
    return spearman


def spearman_summary(members: list[dict]) -> dict:
    from search_efficiency import spearman  # the same rank correlation as the efficiency benchmark

    ok = [m for m in members if m["test_accuracy"] is not None]
    out = {
        "architectures": len(ok),
        "diverged": len(members) - len(ok),
        "spearman": spearman([m["search_fitness"] for m in ok], [m["test_accuracy"] for m in ok]) if ok else None,
    }
    if len(ok) >= 2:
        k = max(1, len(ok) // 5)
        for key in ("search_fitness", "test_accuracy"):
            top = sorted(ok, key=lambda m: -m[key])[:k]
            out[f"top_{key}"] = {
                "count": k,
                "median_parameters": statistics.median(m["parameters"] or 0 for m in top),
                "median_layers": statistics.median(m["layers"] for m in top),
                "mean_test_accuracy": statistics.fmean(m["test_accuracy"] for m in top),
                "mean_search_fitness": statistics.fmean(m["search_fitness"] for m in top),
            }
        out["all_median_parameters"] = statistics.median(m["parameters"] or 0 for m in ok)
    return out


def spearman_line(m: dict) -> str:
    rho = f"{m['spearman']:.3f}" if m["spearman"] is not None else "-"
    out = f"{m['architectures']} architectures ({m['diverged']} diverged), Spearman {rho}"
    for key in ("top_search_fitness", "top_test_accuracy"):
        if key in m:
            t = m[key]
            out += (
                f"; {key.replace('_', ' ')} ({t['count']}): median {t['median_parameters']:.3g} parameters, "
                f"{t['median_layers']:g} layers, test {t['mean_test_accuracy']:.4f}"
            )
    return out


# --------------------------------------------------------------------------
# Report


def summarise_cell(args, dataset: str, arm: str, seed: int) -> dict | None:
    run_dir = cell_dir(args, dataset, arm, seed)
    records = files.read_generations(run_dir)
    identity = files.read_json(run_dir / files.RUN)
    if not records or identity is None:
        return None
    search_t = min(identity.get("search", {}).get("time_steps") or identity["time_steps"], identity["time_steps"])
    chance = nsga2.chance_level(identity.get("num_classes", 10))
    individuals = [i for r in records for i in r["individuals"]]
    scored = [i for i in individuals if i["status"] in ("ok", "stopped")]
    curve, best, samples = [], -math.inf, 0
    for r in records:
        samples += sum(i["train_samples"] for i in r["individuals"])
        best = max([best, *(i["fitness"] for i in r["individuals"] if i["status"] in ("ok", "stopped"))])
        curve.append([samples * search_t, best])
    front = report.front_of_records(records, "synops", chance)
    reference = nsga2.reference_point(("accuracy", "synops"), chance)
    test = files.read_json(run_dir / files.TEST)
    tested = bool(test and test.get("from_scratch") and test["epochs"] == args.retrain_epochs)
    return {
        "dataset": dataset,
        "arm": arm,
        "seed": seed,
        "run_dir": str(run_dir),
        "complete": len(records) >= args.generations,
        "chance": chance,
        "generations": len(records),
        "candidates": len(individuals),
        "search_time_steps": search_t,
        "compute_sample_steps": samples * search_t,
        "train_steps_min": min((i["train_steps"] for i in scored), default=0),
        "at_chance": sum(i["fitness"] <= chance for i in scored),
        "at_chance_share": sum(i["fitness"] <= chance for i in scored) / max(len(individuals), 1),
        "stopped": sum(i["status"] == "stopped" for i in individuals),
        "failed": len(individuals) - len(scored),
        "best_fitness_found": curve[-1][1],
        "best_fitness_reported": records[-1]["best_fitness"],
        "hypervolume": nsga2.hypervolume([(1 - a, nsga2.minimised("synops", s)) for s, a in front], reference),
        "reference_point": list(reference),
        "curve": curve,
        "wall_seconds": sum(r["wall_seconds"] for r in records),
        "test_accuracy": test["accuracy"] if tested else None,
        "retrain_diverged": not tested
        and (files.read_json(run_dir / DIVERGED) or {}).get("epochs") == args.retrain_epochs,
        "retrain_seconds": test["seconds"] if tested else None,
        "best_phenotype": test["phenotype"] if tested else None,
    }


def describe(args, dataset: str, arm: str, seed: int) -> str:
    """A finished cell in one line: best found, candidates at chance, compute against fast's, test accuracy."""
    row = summarise_cell(args, dataset, arm, seed)
    if row is None:
        return "no generation recorded"
    fast = summarise_cell(args, dataset, "fast", seed)
    ratio = row["compute_sample_steps"] / fast["compute_sample_steps"] if fast and fast["complete"] else None
    return (
        f"best fitness found {row['best_fitness_found']:.4f}, {row['at_chance']} of {row['candidates']} at chance, "
        f"compute {row['compute_sample_steps']:.3g} sample-steps"
        + (f" ({ratio:.3f}x fast's)" if ratio is not None else "")
        + (f", test accuracy {row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "")
    )


def at_compute(curve: list, budget: float) -> float | None:
    """The best fitness found within ``budget`` sample-steps (None before the first generation ends)."""
    found = [f for c, f in curve if c <= budget * (1 + 1e-9)]
    return found[-1] if found else None


def mean_sd(values: list) -> dict:
    values = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def summarise(args, rows: list[dict]) -> dict:
    out = {}
    for dataset in args.datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        for seed in args.seeds:
            same = [r for r in mine if r["seed"] == seed and r["complete"]]
            fast = next((r for r in same if r["arm"] == "fast"), None)
            budget = min((r["compute_sample_steps"] for r in same), default=None)
            for r in same:
                r["compute_ratio_to_fast"] = r["compute_sample_steps"] / fast["compute_sample_steps"] if fast else None
                r["best_fitness_at_equal_compute"] = at_compute(r["curve"], budget)
        arms = {}
        for arm in args.arms:
            done = [r for r in mine if r["arm"] == arm and r["complete"]]
            candidates = sum(r["candidates"] for r in done)
            arms[arm] = {
                "cells": len(done),
                "test_accuracy": mean_sd([r["test_accuracy"] for r in done]),
                "test_accuracy_per_seed": {r["seed"]: r["test_accuracy"] for r in done},
                "at_chance_share": sum(r["at_chance"] for r in done) / candidates if candidates else None,
                "best_fitness_at_equal_compute": mean_sd([r["best_fitness_at_equal_compute"] for r in done]),
                "compute_ratio_to_fast": mean_sd([r["compute_ratio_to_fast"] for r in done]),
                "hypervolume": mean_sd([r["hypervolume"] for r in done]),
                "wall_seconds": mean_sd([r["wall_seconds"] for r in done]),
                "retrain_diverged": sum(r["retrain_diverged"] for r in done),
                "retrained_above_chance": sum(
                    r["test_accuracy"] is not None and r["test_accuracy"] > r["chance"] for r in done
                ),
            }
        entry = {"arms": arms}
        f, r = arms.get("fast", {}).get("test_accuracy", {}), arms.get("random", {}).get("test_accuracy", {})
        if f.get("mean") is not None and r.get("mean") is not None:
            spread = max(f["sd"] or 0.0, r["sd"] or 0.0)
            diff = f["mean"] - r["mean"]
            word = "beats" if diff > spread else "loses to" if diff < -spread else "is within the spread of"
            if min(len(f["values"]), len(r["values"])) < 2:
                word = "cannot be judged (one seed, no spread) against"
            entry["verdict"] = (
                f"{dataset}: fast {word} random ({f['mean']:.4f} vs {r['mean']:.4f}, difference {diff:+.4f}, "
                f"spread {spread:.4f}, {len(f['values'])} and {len(r['values'])} seeds)"
            )
            entry["fast_minus_random"], entry["spread"] = diff, spread
        pairs = [
            (a["hypervolume"], b["hypervolume"])
            for a in mine
            for b in mine
            if a["arm"] == "nsga2"
            and b["arm"] == "random"
            and a["seed"] == b["seed"]
            and a["complete"]
            and b["complete"]
        ]
        if pairs:
            wins, ties = sum(a > b for a, b in pairs), sum(a == b for a, b in pairs)
            entry["nsga2_hypervolume_wins_over_random"] = f"{wins} of {len(pairs)} seeds ({ties} tied)"
        out[dataset] = entry
    return out


def print_table(summary: dict) -> None:
    for dataset, entry in summary.items():
        print(f"\n{dataset}")
        print(
            f"  {'arm':>6} {'cells':>5} {'test mean ± sd':>17} {'per seed':>28} {'at chance':>9} "
            f"{'compute/fast':>12} {'fitness@equal':>13} {'hypervolume':>12} {'wall min':>8} {'above chance':>12}"
        )
        for arm, a in entry["arms"].items():
            t = a["test_accuracy"]
            seeds = " ".join(
                f"{s}:{v:.3f}" if v is not None else f"{s}:-" for s, v in a["test_accuracy_per_seed"].items()
            )
            num = lambda d, f="{:.3f}": f.format(d["mean"]) if d["mean"] is not None else "-"  # noqa: E731
            print(
                f"  {arm:>6} {a['cells']:>5} {num(t, '{:.4f}'):>8} ± {t['sd'] or 0:.4f} {seeds:>28} "
                f"{a['at_chance_share'] if a['at_chance_share'] is not None else float('nan'):>9.2f} "
                f"{num(a['compute_ratio_to_fast']):>12} {num(a['best_fitness_at_equal_compute'], '{:.4f}'):>13} "
                f"{num(a['hypervolume']):>12} {(a['wall_seconds']['mean'] or 0) / 60:>8.1f} "
                f"{a['retrained_above_chance']:>7} of {a['cells']}"
            )
        for key in ("verdict", "nsga2_hypervolume_wins_over_random"):
            if key in entry:
                print(f"  {key.replace('_', ' ')}: {entry[key]}")


def plot(args, rows: list[dict], summary: dict, spearman: dict | None, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.datasets)
    fig, axes = plt.subplots(n + (1 if spearman else 0), 2, figsize=(12, 4 * (n + bool(spearman))), squeeze=False)
    for k, dataset in enumerate(args.datasets):
        ax, bx = axes[k]
        for j, arm in enumerate(args.arms):
            curves = [r["curve"] for r in rows if r["dataset"] == dataset and r["arm"] == arm and r["complete"]]
            for c in curves:
                ax.step([p[0] / 1e6 for p in c], [p[1] for p in c], where="post", color=f"C{j}", lw=0.6, alpha=0.5)
            if curves:
                length = min(len(c) for c in curves)
                x = [statistics.fmean(c[g][0] for c in curves) / 1e6 for g in range(length)]
                y = [statistics.fmean(c[g][1] for c in curves) for g in range(length)]
                ax.plot(
                    x,
                    y,
                    drawstyle="steps-post",
                    marker="o",
                    ms=4,
                    color=f"C{j}",
                    lw=2,
                    label=f"{arm} (mean of {len(curves)})",
                )
            t = summary[dataset]["arms"][arm]["test_accuracy"]
            bx.scatter([j] * len(t["values"]), t["values"], color=f"C{j}", zorder=3)
            if t["mean"] is not None:
                bx.errorbar(j + 0.15, t["mean"], yerr=t["sd"] or 0, fmt="o", color="k", capsize=4)
        ax.set(xlabel="training compute (samples x T, millions)", ylabel="best fitness found", title=dataset)
        ax.legend(fontsize=7)
        bx.set(xticks=range(len(args.arms)), xticklabels=args.arms, ylabel="test accuracy, retrained from scratch")
        bx.set_title(summary[dataset].get("verdict", dataset), fontsize=7)
        for a in (ax, bx):
            a.grid(alpha=0.3)
    if spearman:
        ax, bx = axes[-1]
        for j, (arm, s) in enumerate(spearman["cells"].items()):
            ok = [m for m in s["members"] if m["test_accuracy"] is not None]
            ax.scatter(
                [m["search_fitness"] for m in ok],
                [m["test_accuracy"] for m in ok],
                s=14,
                color=f"C{j}",
                label=f"{arm}: Spearman {s['summary']['spearman']:.2f}",
            )
            bx.scatter(
                [max(m["parameters"] or 1, 1) for m in ok], [m["test_accuracy"] for m in ok], s=14, color=f"C{j}"
            )
        ax.set(
            xlabel="search fitness",
            ylabel="test accuracy (retrained)",
            title="Does cheap fitness pick networks that retrain well?",
        )
        ax.legend(fontsize=7)
        bx.set(xscale="log", xlabel="parameters", ylabel="test accuracy (retrained)")
        for a in (ax, bx):
            a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fmnist", "cifar10_jpeg"])
    parser.add_argument("--arms", nargs="+", default=["fast", "random", "nsga2"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 4, 5])
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["search", "retrain", "report"],
        choices=["search", "retrain", "report", "spearman"],
    )
    parser.add_argument("--subset", type=int, default=40_000, help="dataset.subset (0: the whole train split)")
    parser.add_argument("--time-steps", type=int, default=None, help="dataset.time_steps (default: the data set's)")
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--offspring", type=int, default=8, help="λ (and NSGA-II's μ)")
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--spearman-arms", nargs="+", default=["fast", "random"])
    parser.add_argument("--spearman-archs", type=int, default=0, help="at most this many per cell (0: all distinct)")
    parser.add_argument("--allow-floor", action="store_true", help="run where search.min_steps binds")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for every cell")
    parser.add_argument("--plan", action="store_true", help="print the plan and its estimated cost, run nothing")
    parser.add_argument("--report-only", action="store_true", help="the JSON and plot from --work, no training")
    parser.add_argument("--work", type=Path, default=None, help="run directories (default runs/search_quality)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="search_quality")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, every phase: checks the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.seeds, args.subset, args.time_steps = ["mnist"], [3], 1000, 4
        args.generations, args.offspring, args.allow_floor, args.spearman_archs = 2, 2, True, 3
        args.spearman_arms = ["fast"]
        args.phases = ["search", "retrain", "spearman", "report"]
        args.name += "_quick"
    if args.report_only:
        args.phases = ["report"]
    args.work = args.work or Path("runs/search_quality" + ("_quick" if args.quick else ""))
    args.subset = args.subset or None
    return parser, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    PACKAGE_LOG.setLevel(logging.INFO)  # the package's line per generation
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    sizes = {(d, a): protocol_sizes(args, d, a) for d in args.datasets for a in args.arms}
    cost = estimate(args, sizes)
    planned = print_plan(args, sizes, cost)
    binding = [f"{d}/{a}" for (d, a), s in sizes.items() if s["floor_binds"] and a != "paper"]
    if binding and not args.allow_floor and "search" in args.phases and not args.plan:
        parser.error(
            f"search.min_steps binds for {binding}: a quarter epoch of this subset is fewer steps than the "
            "floor, so the cheap protocol is not what a user gets at full scale; use a larger --subset or --allow-floor"
        )
    if args.plan:
        if binding:
            log(f"search.min_steps binds for {binding}: the search phase would refuse this size without --allow-floor")
        return 0
    kept = common.keep_host_memory_as_the_cli(["runtime.compile_unit=auto", *args.override])
    load_before = common.load_average()
    t0 = time.perf_counter()
    todo = cells(args)
    spent, spent_estimate, left = 0.0, 0.0, planned
    for k, (dataset, arm, seed) in enumerate(todo):
        started = time.perf_counter()
        ran = "search" in args.phases and run_search(args, dataset, arm, seed)
        ran = ("retrain" in args.phases and run_retrain(args, cell_dir(args, dataset, arm, seed))) or ran
        c = cost[dataset, arm]["search"] + cost[dataset, arm]["retrain"]
        left -= c
        if ran:
            took = time.perf_counter() - started
            spent, spent_estimate = spent + took, spent_estimate + c
            # What is left of the estimate, scaled by how the cells run in this process compared with theirs.
            eta = left * spent / spent_estimate
            log(
                f"cell {k + 1}/{len(todo)} {dataset}/{arm}/seed{seed} done in {evolve.duration(took)}: "
                f"{describe(args, dataset, arm, seed)}; ETA {evolve.duration(eta)}"
            )
    # Without the spearman phase, the report still reads what an earlier one left in the run directories.
    spearman = spearman_phase(args, train="spearman" in args.phases)
    if "report" not in args.phases and spearman is None:
        return 0
    rows = [r for d, a, s in todo if (r := summarise_cell(args, d, a, s)) is not None]
    summary = summarise(args, rows)
    print_table(summary)
    payload = {
        **common.header("search_quality", load_before),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"keep_host_memory": kept, "chance": "1/classes + 0.02 (spenser_jax.search.nsga2.chance_level)"},
        "sizes": {f"{d}/{a}": s for (d, a), s in sizes.items()},
        "estimate_seconds": planned,
        "seconds_this_session": time.perf_counter() - t0,
        "summary": summary,
        "cells": rows,
        **({"spearman": spearman} if spearman else {}),
    }
    path = common.write_result(args.name, payload, args.out)
    if plot(args, rows, summary, spearman, path.with_suffix(".png")):
        log(f"wrote {path} and {path.with_suffix('.png')}")
    else:
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
