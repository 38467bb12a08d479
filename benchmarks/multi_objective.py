"""Multi-objective search: nsga2 against (1+λ) scalarised at three weights and random search, at equal compute.

Every arm searches the same reduced protocol (``--subset`` MNIST images, T =
``--time-steps``, one epoch per candidate, the paper's protocol otherwise)
for ``--seeds`` seeds, and spends the same number of candidates (so the same
training compute, up to early failures):

* ``nsga2``: ``evolution.strategy=nsga2`` with μ = ``--population``, λ =
  ``--offspring``, ``--generations``: N = μ + λ (G - 1) candidates;
* ``scalarised``: three (1+λ) runs with ``fitness.objective=scalarised`` at
  ``--weights`` (accuracy · (SynOps / 10^6)^w), λ = ``--offspring`` / 2 and as
  many generations as make N together (the budget split between them);
* ``random``: one generation of N random individuals.

Per arm and seed: the non-dominated set of everything it scored above chance
(1/10 + 0.02) in (error, log10 SynOps) space, its hypervolume against the
reference point ``spenser_jax.search.nsga2`` uses (chance accuracy, 10^10
SynOps), its size, and the decades of SynOps it spans. The nsga2 runs' first fronts are then retrained from
scratch (``retrain --front``, ``--retrain-epochs`` over the run's train
split) and tested on the official test split. Writes
``results/multi_objective_<date>.{json,png}``.

    python benchmarks/multi_objective.py                 # about 40 minutes on one core
    python benchmarks/multi_objective.py --quick         # a smoke test of the script
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from spenser_jax import evolve, report, retrain  # noqa: E402
from spenser_jax.run import files
from spenser_jax.search import nsga2

CHANCE = nsga2.chance_level(10)  # MNIST: what a search counts as having learned nothing
REFERENCE = nsga2.reference_point(("accuracy", "synops"), CHANCE)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def search(overrides: list[str], run_dir: Path) -> list[dict]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    t0 = time.perf_counter()
    evolve.run(cfg, run_dir)
    log(f"  {run_dir.name}: {time.perf_counter() - t0:.0f} s")
    return files.read_generations(run_dir)


def front_of(records: list[dict]) -> dict:
    """The non-dominated (SynOps, accuracy) set of every individual above chance, and its measures."""
    scored = [
        i["fitness"]
        for r in records
        for i in r["individuals"]
        if i["status"] in ("ok", "stopped") and "synops_per_sample" in i and i["fitness"] > CHANCE
    ]
    front = report.front_of_records(records, "synops", CHANCE)
    synops = [max(s, 1.0) for s, _ in front]
    return {
        "front": [{"synops_per_sample": s, "accuracy": a} for s, a in front],
        "hypervolume": nsga2.hypervolume([(1.0 - a, nsga2.minimised("synops", s)) for s, a in front], REFERENCE),
        "front_size": len(front),
        "synops_decades": math.log10(max(synops) / min(synops)) if synops else 0.0,
        "candidates": sum(len(r["individuals"]) for r in records),
        "train_samples": sum(i["train_samples"] for r in records for i in r["individuals"]),
        "best_accuracy": max(scored, default=None),
        "above_chance": len(scored),
        "wall_seconds": sum(r["wall_seconds"] for r in records),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--offspring", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--weights", type=float, nargs=3, default=(-0.04, -0.08, -0.16))
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/multi_objective"))
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--name", default="multi_objective")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.subset, args.time_steps = 1, 200, 2
        args.population, args.offspring, args.generations = 2, 2, 2
    load_before = common.load_average()
    n = args.population + args.offspring * (args.generations - 1)
    lam = max(1, args.offspring // 2)
    scalar_generations = max(1, round(n / (3 * lam)))
    base = [
        "dataset=mnist",
        f"dataset.subset={args.subset}",
        f"dataset.time_steps={args.time_steps}",
        "runtime.progress=false",
        "runtime.xla_cpu_fusion_emitters=false",  # compile cost: every arm the same
    ]
    arms: dict[str, list[dict]] = {"nsga2": [], "scalarised": [], "random": []}
    for seed in range(args.seeds):
        root = args.work / f"seed{seed}"
        log(f"seed {seed}: nsga2 (mu {args.population}, lambda {args.offspring}, {args.generations} generations)")
        nsga2_dir = root / "nsga2"
        records = search(
            [
                *base,
                f"seed={seed}",
                "evolution.strategy=nsga2",
                f"evolution.population={args.population}",
                f"evolution.offspring={args.offspring}",
                f"evolution.generations={args.generations}",
            ],
            nsga2_dir,
        )
        result = {"seed": seed, **front_of(records), "hypervolume_per_generation": [r["hypervolume"] for r in records]}
        log(f"  retraining its front ({args.retrain_epochs} epochs each)")
        tested = retrain.retrain_front(nsga2_dir, epochs=args.retrain_epochs, progress=False)
        result["front_tested"] = [
            {k: m[k] for k in ("generation", "index", "search_fitness", "accuracy", "synops_per_sample")}
            for m in tested["members"]
        ]
        arms["nsga2"].append(result)
        log(f"seed {seed}: scalarised x3 (lambda {lam}, {scalar_generations} generations each)")
        scalar_records = []
        for w in args.weights:
            scalar_records += search(
                [
                    *base,
                    f"seed={seed}",
                    "fitness.objective=scalarised",
                    f"fitness.synops_weight={w}",
                    f"evolution.offspring={lam}",
                    f"evolution.generations={scalar_generations}",
                ],
                root / f"scalarised{w}",
            )
        arms["scalarised"].append({"seed": seed, **front_of(scalar_records)})
        log(f"seed {seed}: random search ({n} candidates)")
        random_records = search(
            [*base, f"seed={seed}", f"evolution.offspring={n}", "evolution.generations=1"], root / "random"
        )
        arms["random"].append({"seed": seed, **front_of(random_records)})

    def spread(arm, key):
        values = [r[key] for r in arms[arm]]
        return {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values,
        }

    summary = {
        arm: {k: spread(arm, k) for k in ("hypervolume", "front_size", "synops_decades", "candidates", "train_samples")}
        for arm in arms
    }
    for arm, s in summary.items():
        log(
            f"{arm:>10}: hypervolume {s['hypervolume']['mean']:.3f} ± {s['hypervolume']['sd']:.3f}, "
            f"front {s['front_size']['mean']:.1f} points over {s['synops_decades']['mean']:.2f} decades, "
            f"{s['train_samples']['mean']:.0f} training samples"
        )
    payload = {
        **common.header("multi_objective", load_before),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "candidates_per_arm": n,
            "scalarised_offspring": lam,
            "scalarised_generations": scalar_generations,
            "reference_point": list(REFERENCE),
            "objective_space": "(1 - accuracy, log10 SynOps per sample), both minimised",
        },
        "summary": summary,
        "runs": arms,
    }
    path = common.write_result(args.name, payload, args.out)
    plot(arms, summary, path.with_suffix(".png"))
    log(f"wrote {path}")
    return 0


def plot(arms: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (arm, runs) in enumerate(arms.items()):
        front = runs[0]["front"]
        axes[0].step(
            [max(p["synops_per_sample"], 1) for p in front],
            [p["accuracy"] for p in front],
            where="post",
            marker="o",
            ms=3,
            color=f"C{k}",
            label=f"{arm} (seed 0)",
        )
    tested = arms["nsga2"][0].get("front_tested", [])
    if tested:
        axes[0].scatter(
            [max(m["synops_per_sample"], 1) for m in tested],
            [m["accuracy"] for m in tested],
            marker="x",
            color="C0",
            label="nsga2 front retrained, on the test split",
        )
    axes[0].set(
        xscale="log", xlabel="SynOps per sample", ylabel="accuracy", title="Fronts of everything scored above chance"
    )
    axes[0].legend(fontsize=7)
    names = list(summary)
    axes[1].bar(
        names,
        [summary[a]["hypervolume"]["mean"] for a in names],
        yerr=[summary[a]["hypervolume"]["sd"] for a in names],
        color=[f"C{k}" for k in range(len(names))],
        capsize=4,
    )
    axes[1].set(ylabel="hypervolume (error x decades)", title="Hypervolume, mean ± s.d. over seeds")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
