"""The full-scale demonstration: a search=fast run on all of Fashion-MNIST, its best retrained and tested.

The run itself is two commands (on the project's 2-core machine: 90 minutes
of search, then 30 of retraining):

    timeout 5400 python -m spenser_jax.evolve dataset=fmnist search=fast \\
        experiment=fullscale hydra.run.dir=RUN
    python -m spenser_jax.retrain RUN --from-scratch --epochs 50 --minutes 30 --curve

A search stopped by ``timeout`` keeps every generation it finished (the
checkpoint is written after each). This script then summarises ``RUN``: the
compute the search and the retraining spent against the paper's protocol
(200 generations of λ = 10 candidates, each one epoch of the 42,000 EvoTrain
images at T = 25; the best retrained 50 epochs of 60,000), the best fitness
along the search, the learning curve on the official test split, and copies
the run's records (not its weights) beside its JSON:
``results/full_scale_<date>.{json,png}`` and ``results/full_scale_<date>/``.

    python benchmarks/full_scale.py RUN
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from spenser_jax.run import runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PAPER = {"generations": 200, "offspring": 10, "evo_train": 42000, "time_steps": 25, "retrain_epochs": 50}
PAPER_TEST_ACCURACY = 0.9165  # SPENSER, Fashion-MNIST, the best network retrained 50 epochs (paper Table 4)
RECORDS = ("generations.jsonl", "run.json", "best.json", "pareto.json", "test.json", ".hydra/config.yaml")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="full_scale")
    args = parser.parse_args(argv)
    run = runs.load_run(args.run_dir)
    records, identity, test = run.records, run.identity, run.test
    search_t = min(identity.get("search", {}).get("time_steps") or identity["time_steps"], identity["time_steps"])
    individuals = [i for r in records for i in r["individuals"]]
    search_compute = records[-1]["train_samples_total"] * search_t
    paper_search = PAPER["generations"] * PAPER["offspring"] * PAPER["evo_train"] * PAPER["time_steps"]
    wall = [r["wall_seconds"] for r in records]
    compile_s = sum(i["compile_seconds"] for i in individuals)
    result = {
        "run": str(args.run_dir),
        "dataset": identity["dataset"],
        "generations": len(records),
        "candidates": len(individuals),
        "search_wall_seconds": sum(wall),
        "search_compile_share": compile_s / sum(wall),
        "search_compute_sample_steps": search_compute,
        "paper_search_compute_sample_steps": paper_search,
        "search_compute_fraction_of_papers": search_compute / paper_search,
        "train_steps_min": min(i["train_steps"] for i in individuals if i["status"] in ("ok", "stopped")),
        "stopped": sum(i["status"] == "stopped" for i in individuals),
        "failed": sum(i["status"] not in ("ok", "stopped") for i in individuals),
        "best_fitness_per_generation": [r["best_fitness"] for r in records],
        "best_phenotype": run.best["phenotype"] if run.best else None,
        "paper_test_accuracy": PAPER_TEST_ACCURACY,
    }
    if test is not None:
        retrain_compute = test["epochs"] * test["train_samples"] * test["time_steps"]
        paper_retrain = PAPER["retrain_epochs"] * test["train_samples"] * PAPER["time_steps"]
        result.update(
            {
                "test_accuracy": test["accuracy"],
                "retrain_epochs": test["epochs"],
                "retrain_seconds": test["seconds"],
                "retrain_from_scratch": test["from_scratch"],
                "retrain_compute_sample_steps": retrain_compute,
                "paper_retrain_compute_sample_steps": paper_retrain,
                "total_compute_fraction_of_papers": (search_compute + retrain_compute) / (paper_search + paper_retrain),
                "curve": test.get("curve"),
            }
        )
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "best_fitness_per_generation")}, indent=1))
    path = common.write_result(args.name, {**common.header("full_scale"), **result}, args.out)
    copies = path.with_suffix("")
    for name in RECORDS:
        source = args.run_dir / name
        if source.exists():
            (copies / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copies / name)
    plot(result, wall, path.with_suffix(".png"))
    print(f"wrote {path}, {path.with_suffix('.png')} and the records in {copies}/")
    return 0


def plot(result: dict, wall: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    minutes = [sum(wall[: g + 1]) / 60 for g in range(len(wall))]
    axes[0].plot(minutes, result["best_fitness_per_generation"], marker="o", ms=3)
    axes[0].set(xlabel="search wall time (minutes)", ylabel="best fitness", title="search=fast on Fashion-MNIST")
    curve = result.get("curve") or []
    if curve:
        axes[1].plot([p["epoch"] for p in curve], [p["accuracy"] for p in curve], marker="o", label="retrained")
    axes[1].axhline(result["paper_test_accuracy"], color="k", ls="--", lw=1, label="paper (50 epochs)")
    axes[1].set(xlabel="retraining epoch (from scratch, T = 25)", ylabel="test accuracy", title="Official test split")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
