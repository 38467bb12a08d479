"""Plots and tables over finished (or running) evolutionary runs.

``python -m spenser_jax.report RUN_DIR [RUN_DIR ...] [--out DIR]`` writes,
per data set found among the runs, the paper's fitness figures (Figures 2–3:
``fitness_<dataset>.png``, ``best_fitness_<dataset>.png``), accuracy against
SynOps with each run's Pareto front (``energy_<dataset>.png``), the front and
its hypervolume per generation of a population search
(``front_<dataset>.png``), and ``report.md``: the best individuals'
characteristics in percent (Table 3), each run's best fitness, test
accuracy, energy against the same network as an ANN, and whether it exports
to NIR exactly.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from spenser_jax.errors import SpenserError, command, output_folder
from spenser_jax.genome.phenotype import LIF, Conv, Dense, Dropout, Pool, parse
from spenser_jax.run import RUN, Run, load_run, pareto_archive
from spenser_jax.run.files import CHECKPOINT, GENERATIONS, TEST, generations_torn


class ReportError(SpenserError, RuntimeError):
    """The runs asked for cannot be reported (none found, an unusable --out)."""


def characteristics(phenotype_texts: list[str]) -> dict[str, dict[str, float]]:
    """Table 3: percentages over the given best individuals."""
    layers, resets, surrogates, optimizers = Counter(), Counter(), Counter(), Counter()
    for text in phenotype_texts:
        p = parse(text)
        for layer in p.layers:
            if isinstance(layer, Conv):
                layers["Convolutional"] += 1
            elif isinstance(layer, Pool):
                layers["Average Pooling" if layer.kind == "avg" else "Max Pooling"] += 1
            elif isinstance(layer, Dropout):
                layers["Dropout"] += 1
            elif isinstance(layer, Dense):
                layers["Fully-Connected"] += 1
            elif isinstance(layer, LIF):
                resets[layer.reset.capitalize()] += 1
                surrogates["ATan" if layer.surrogate == "atan" else "Fast-Sigmoid"] += 1
        optimizers[{"adam": "Adam", "gradient-descent": "SGD", "rmsprop": "RMSProp"}[p.learning.tag]] += 1

    def pct(counter, names):
        total = sum(counter.values()) or 1
        return {n: 100.0 * counter[n] / total for n in names}

    return {
        "Layer types": pct(layers, ["Convolutional", "Average Pooling", "Max Pooling", "Dropout", "Fully-Connected"]),
        "Reset mechanism": pct(resets, ["Subtract", "Zero"]),
        "Optimizers": pct(optimizers, ["Adam", "SGD", "RMSProp"]),
        "Surrogate gradients": pct(surrogates, ["ATan", "Fast-Sigmoid"]),
    }


def _curves(runs, key):
    length = min(len(r.records) for r in runs)
    values = np.array([[rec[key] for rec in r.records[:length]] for r in runs], dtype=float)
    return values.mean(0), values.std(0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _generations(ax) -> None:
    """An axis of generations: whole numbers only (no generation 0.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def fitness_figure(runs: list[Run], dataset: str):
    """Best and mean fitness per generation over the runs (a matplotlib Figure; None without records)."""
    with_records = [r for r in runs if r.records]
    if not with_records:
        return None
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in zip(axes, ("best_fitness", "mean_fitness"), ("Best fitness", "Average fitness")):
        mean, std = _curves(with_records, key)
        x = np.arange(len(mean))
        ax.plot(x, mean, color="C0")
        ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25, linewidth=0)
        ax.set(title=f"{title} ({dataset}, {len(with_records)} runs)", xlabel="generation", ylabel="fitness (accuracy)")
        _generations(ax)
        ax.grid(alpha=0.3)
    return fig


def best_fitness_figure(runs: list[Run], dataset: str):
    """The distribution of the runs' best fitness (a matplotlib Figure; None before any best)."""
    bests = [r.best["fitness"] for r in runs if r.best]
    if not bests:
        return None
    fig, ax = _pyplot().subplots(figsize=(4, 3.8))
    if len(bests) > 1:
        ax.violinplot(bests, showmedians=True)
    ax.scatter(np.ones(len(bests)), bests, color="k", s=12, zorder=3)
    ax.set(title=f"Fitness of best individuals ({dataset})", ylabel="fitness (accuracy)", xticks=[])
    ax.grid(alpha=0.3)
    return fig


def best_per_generation(run: Run) -> list[dict | None]:
    """The record of each generation's parent (None before the first), as evaluated."""
    evaluated: dict[str, dict] = {}
    out, current = [], None
    for rec in run.records:
        for ind in rec["individuals"]:
            # A population's record (nsga2) has no parent_replaced: its best may be new in any generation.
            if (
                rec.get("parent_replaced", True)
                and ind["phenotype"] == rec.get("parent")
                and ind["fitness"] == rec["best_fitness"]
            ):
                evaluated[ind["phenotype"]] = ind
        current = evaluated.get(rec["parent"], current) if rec.get("parent") else None
        out.append(current)
    return out


def energy_figure(runs: list[Run], dataset: str):
    """Accuracy against SynOps, and the best's spikes and SynOps per generation (None without activity)."""
    points = [
        (r, i)
        for r in runs
        for rec in r.records
        for i in rec["individuals"]
        if "synops_per_sample" in i and i["status"] in ("ok", "stopped")
    ]
    if not points:
        return None
    fig, axes = _pyplot().subplots(1, 3, figsize=(15, 4.2))
    for k, r in enumerate(runs):
        mine = [i for rr, i in points if rr is r]
        if not mine:
            continue
        x = np.array([i["synops_per_sample"] for i in mine])
        y = np.array([i["fitness"] for i in mine])
        color = f"C{k % 10}"
        axes[0].scatter(np.maximum(x, 1), y, s=8, alpha=0.4, color=color)
        front = pareto_archive(r.records)["accuracy_synops"]  # what pareto.json holds, by SynOps
        axes[0].step(
            [max(p["synops_per_sample"], 1) for p in front],
            [p["accuracy"] for p in front],
            where="post",
            color=color,
            lw=1.5,
            label=Path(r.dir).name,
        )
        best = best_per_generation(r)
        gens = [g for g, b in enumerate(best) if b and "synops_per_sample" in b]
        axes[1].plot(gens, [sum(best[g]["spikes_per_sample"]) for g in gens], color=color)
        axes[2].plot(gens, [best[g]["synops_per_sample"] for g in gens], color=color)
    axes[0].set(
        xscale="log",
        xlabel="SynOps per sample",
        ylabel="fitness (accuracy)",
        title=f"Every evaluated individual and the fronts ({dataset})",
    )
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="generation", ylabel="spikes per sample", title="Best individual: spikes")
    axes[2].set(xlabel="generation", ylabel="SynOps per sample", yscale="log", title="Best individual: SynOps")
    for ax in axes:
        ax.grid(alpha=0.3)
    _generations(axes[1])
    _generations(axes[2])
    return fig


def front_of_records(records: list[dict], cost: str, chance: float = 0.0) -> list[tuple[float, float]]:
    """The non-dominated (cost, accuracy) points of every individual above ``chance`` in ``records``, by cost."""
    from spenser_jax.search import nsga2

    field = nsga2.OBJECTIVES[cost][0]
    seen = [
        (float(i[field]), float(i["fitness"]))
        for rec in records
        for i in rec["individuals"]
        if i["status"] in ("ok", "stopped") and field in i and i["fitness"] > chance
    ]
    kept = {(nsga2.minimised(cost, c), 1.0 - a): (c, a) for c, a in seen}
    return sorted(kept[p] for p in nsga2.nondominated(list(kept)))


def front_at(run: Run, generation: int, cost: str) -> list[tuple[float, float]]:
    """The non-dominated (cost, accuracy) points of everything a run scored above chance up to ``generation``."""
    chance = run.identity.get("strategy", {}).get("chance", 0.0)
    return front_of_records(run.records[: generation + 1], cost, chance)


def front_figure(runs: list[Run], dataset: str):
    """A population search's front at several generations, and its hypervolume per generation (None without one)."""
    searched = [r for r in runs if r.records and "hypervolume" in r.records[-1] and "strategy" in r.identity]
    if not searched:
        return None
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.2))
    for k, r in enumerate(searched):
        cost = r.identity["strategy"]["objectives"][1]
        last = len(r.records) - 1
        shown = sorted({round(last * f) for f in (0, 1 / 3, 2 / 3, 1)})
        for j, g in enumerate(shown):
            front = front_at(r, g, cost)
            axes[0].step(
                [max(c, 1) for c, _ in front],
                [a for _, a in front],
                where="post",
                color=f"C{k % 10}",
                alpha=0.3 + 0.7 * (j + 1) / len(shown),
                lw=1.5,
                marker="o",
                ms=3,
                label=f"{Path(r.dir).name}, generation {g}",
            )
        axes[1].plot([rec["hypervolume"] for rec in r.records], color=f"C{k % 10}", label=Path(r.dir).name)
    costs = sorted({r.identity["strategy"]["objectives"][1] for r in searched})
    axes[0].set(
        xscale="log",
        xlabel=" / ".join(f"{c} per sample" if c != "parameters" else c for c in costs),
        ylabel="fitness (accuracy)",
        title=f"Non-dominated set of everything above chance ({dataset})",
    )
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="generation", ylabel="hypervolume (error x decades)", title="Hypervolume of that set")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    _generations(axes[1])
    return fig


FIGURES = {
    "fitness": fitness_figure,
    "best_fitness": best_fitness_figure,
    "energy": energy_figure,
    "front": front_figure,
}


def plot(runs: list[Run], dataset: str, out: Path) -> list[Path]:
    """Every figure (:data:`FIGURES`) of one data set's runs that has something to show, saved in ``out``."""
    made = ((name, figure(runs, dataset)) for name, figure in FIGURES.items())
    return [_save(fig, out / f"{name}_{dataset}.png") for name, fig in made if fig is not None]


def _exportable(r: Run) -> str:
    if not r.best:
        return "-"
    try:
        from spenser_jax.export import exportable

        problems = exportable(parse(r.best["phenotype"]), tuple(r.identity.get("input_shape", (28, 28, 1))))
    except Exception as err:  # noqa: BLE001 - a report never fails on one column
        return f"? ({type(err).__name__})"
    return "yes" if not problems else "no"


def best_evaluated(r: Run) -> dict | None:
    """The record of the individual ``best.json`` names, as evaluated (its activity); None without one.

    The last generation's parent, unless the run named another best since (``search.verify_best``) or its
    records and ``best.json`` disagree: then that individual's own latest record, so that a row's figures
    all belong to its best."""
    if not r.best:
        return None
    text = r.best.get("phenotype")
    last = (best_per_generation(r) or [None])[-1]
    if last is not None and last["phenotype"] == text:
        return last
    scored = (i for rec in reversed(r.records) for i in rec["individuals"] if i["status"] in ("ok", "stopped"))
    return next((i for i in scored if i["phenotype"] == text), None)


def tested(r: Run) -> bool | None:
    """Whether ``test.json`` tested the best on the run's row: None without one; False when it names another
    individual (retrain ran for an earlier best, or the run searched on since) or none at all."""
    if not r.test or not isinstance(r.test.get("accuracy"), (int, float)):
        return None
    return bool(r.best) and r.test.get("phenotype") == r.best.get("phenotype")


def test_cell(r: Run) -> str:
    """The report's test accuracy: only a figure that belongs to the run's best individual."""
    verdict = tested(r)
    if verdict is None:
        return "-"
    return f"{r.test['accuracy']:.4f}" if verdict else "stale (retrain again)"


def warnings(r: Run) -> list[str]:
    """What a reader of the run's row should know: records cut short, a test of another individual."""
    out = []
    covered = getattr(r.state, "generation", None)
    if generations_torn(r.dir):
        out.append(
            f"{r.dir}: {GENERATIONS} ends in a line cut mid-write (a process stopped while writing it); "
            f"{len(r.records)} generation(s) read. Running the same evolve command again resumes and rewrites it"
        )
    if covered is not None and covered > len(r.records):
        out.append(f"{r.dir}: {CHECKPOINT} covers {covered} generations, {GENERATIONS} holds {len(r.records)}")
    if tested(r) is False:
        out.append(
            f"{r.dir}: {TEST} does not name the current best as the individual it tested (retrain ran for an "
            f"earlier best, or the search went on since); its accuracy is left out: run retrain again"
        )
    return out


def markdown(groups: dict[str, list[Run]]) -> str:
    lines = ["# spenser_jax report", ""]
    for dataset, runs in groups.items():
        lines += [
            f"## {dataset}",
            "",
            "| run | generations | best fitness | test accuracy | SynOps/sample | energy/sample | "
            "ANN energy/sample | ANN / SNN | exports to NIR |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            best = f"{r.best['fitness']:.4f}" if r.best else "-"
            test = test_cell(r)
            last = best_evaluated(r)
            if last and "synops_per_sample" in last:
                e, ann = last["energy_pj_per_sample"], last["ann_energy_pj_per_sample"]
                energy = (
                    f"{last['synops_per_sample']:,.0f} | {e / 1e3:,.1f} nJ | {ann / 1e3:,.1f} nJ | "
                    f"{ann / max(e, 1e-12):.1f}x"
                )
            else:
                energy = "- | - | - | -"
            lines.append(f"| {r.dir} | {len(r.records)} | {best} | {test} | {energy} | {_exportable(r)} |")
        lines.append("")
    texts = [r.best["phenotype"] for runs in groups.values() for r in runs if r.best]
    lines += [f"## Characteristics of the {len(texts)} best individuals (percent)", ""]
    if texts:
        for section, values in characteristics(texts).items():
            lines += [f"| {section} | % |", "|---|---|"]
            lines += [f"| {name} | {value:.0f}% |" for name, value in values.items()]
            lines.append("")
    return "\n".join(lines)


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spenser_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (or folders holding them)")
    parser.add_argument("--out", type=output_folder, default="report", help="output directory (default: ./report)")
    args = parser.parse_args(argv)
    dirs = {}  # each run once, however many of the arguments (a run, its parent folder, twice) reach it
    for d in map(Path, args.runs):
        found = sorted(p.parent for p in d.rglob(RUN)) if d.is_dir() else []
        if not found:
            raise ReportError(f"{d}: no spenser_jax run found (no {RUN} in it or below)")
        for run_dir in found:
            dirs.setdefault(run_dir.resolve(), run_dir)
    groups: dict[str, list[Run]] = defaultdict(list)
    for d in dirs.values():
        try:
            run = load_run(d)
        except SpenserError as err:  # one broken run does not stop the report of the others
            print(f"warning: skipping the run {d}: {err}", file=sys.stderr)
            continue
        groups[run.dataset].append(run)
    if not groups:
        raise ReportError(f"none of the {len(dirs)} runs found could be read (see the warnings)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    made = [p for dataset, runs in groups.items() for p in plot(runs, dataset, out)]
    for line in (line for runs in groups.values() for r in runs for line in warnings(r)):
        print(f"warning: {line}", file=sys.stderr)
    (out / "report.md").write_text(markdown(groups))
    made.append(out / "report.md")
    for p in made:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
