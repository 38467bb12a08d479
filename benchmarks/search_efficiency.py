"""Search efficiency: the paper's protocol against search=fast, on a common yardstick.

Three phases, each writing its part of one JSON result
(``results/search_efficiency_<date>.json``) and a plot
(``results/search_efficiency_<date>.png``):

``rank``: why a protocol works or not. ``--archs`` architectures (half
random generation-0 individuals, half offspring of random parents) of the
paper's grammar train on EvoTrain with the paper's budget (one epoch), and
their fitness is read at several points of that same epoch (a partial epoch
is the prefix of the whole one's shuffle, so these are exactly the fitness
values ``training.epochs = f`` gives). For the offspring, also the fitness
after inheriting their parent's one-epoch weights and training a quarter
epoch (what ``search=fast`` does each generation). Reported: Spearman rank
agreement of each cheap fitness with the paper's, how often an output is
still silent at the early check and whether those networks end at chance
anyway (false stops), and the training-free SNASNet score (Kim et al. 2022:
log|det K| of the Hamming kernels of each LIF layer's spike codes, summed
over layers and steps, on one batch of the untrained network).

``search``: both protocols (``search=paper`` and ``search=fast``) run the
same reduced search (``--subset`` MNIST samples, T = ``--time-steps``,
λ = ``--offspring``, ``--generations``) for ``--seeds`` seeds each, through
``spenser_jax.evolve.run``. Recorded per run: best fitness against the
cumulative ``train_samples_total``, wall time, compile and train seconds.

``retrain``: fitness values of two protocols are not comparable (inherited
weights, shorter training), so each run's final best phenotype is retrained
from scratch with one fixed budget (``--retrain-epochs`` over the run's
train split) and tested on the official MNIST test split, which no search
saw. "As good" means equal test accuracy within the spread across seeds.

Run from the repository root (about an hour on 2 shared CPU cores):

    python benchmarks/search_efficiency.py
    python benchmarks/search_efficiency.py --phases rank --archs 32
    python benchmarks/search_efficiency.py --quick        # minutes, a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from spenser_jax import evolve, retrain, training  # noqa: E402
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace  # noqa: E402
from spenser_jax.grammar import load_grammar, locate  # noqa: E402
from spenser_jax.run import files
from spenser_jax.snn import (
    architecture,
    encoding,  # noqa: E402
    network,
)
from spenser_jax.training import inheritance
from spenser_jax.training.protocol import Protocol  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5)  # of an epoch: the cheap fitness read along the paper's epoch


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # average ties
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# --------------------------------------------------------------------------
# Phase 1: rank agreement along one epoch


class EpochProbe:
    """Trains one architecture batch by batch exactly as train_epoch does, scoring along the way."""

    def __init__(self, phenotype, splits, settings: Protocol, fitness_key):
        self.phenotype = phenotype
        self.sig, self.hyper = architecture.split(phenotype)
        self.settings = settings
        self.images = jnp.asarray(splits.evo_train.images)
        self.labels = jnp.asarray(splits.evo_train.labels, jnp.int32)
        self.fit_images = jnp.asarray(splits.fitness.images)
        self.fit_labels = jnp.asarray(splits.fitness.labels, jnp.int32)
        self.fitness_key = fitness_key
        s = settings
        step = jax.jit(lambda state, idx, mask, key: self._step(state, idx, mask, key))
        self.step = step
        self.score_fn = training.make_score(self.sig, s, batch_size=min(s.eval_batch_size, len(self.fit_labels)))

    def _step(self, state, idx, mask, key):
        s = self.settings
        key_encode, key_dropout = jax.random.split(key)
        spikes = encoding.rate(key_encode, self.images[idx], s.time_steps)
        new, value, finite, count = training.train_step(
            self.sig, s, state, self.hyper, spikes, self.labels[idx], mask, key_dropout, output_spikes=True
        )
        return new, value, finite, count

    def run(self, key, checkpoints: dict[str, int], start=None, stop_after: int | None = None):
        """Fitness at each named step count; the output spikes heard before ``stop_after`` steps."""
        s = self.settings
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, self.sig, self.hyper, self.images.shape[1:])
        if start is not None:
            state = state.replace(params=training.inherit_params(state.params, start))
        key_order, key_steps = jax.random.split(jax.random.fold_in(key_epochs, 0))
        order, masks = training.batches(key_order, self.images.shape[0], s.batch_size)
        out, heard, seconds = {}, 0.0, 0.0
        last = max(checkpoints.values())
        wanted: dict[int, list[str]] = {}
        for name, steps in checkpoints.items():
            wanted.setdefault(steps, []).append(name)
        for i in range(last):
            t0 = time.perf_counter()
            new, _, finite, count = self.step(state, order[i], masks[i], jax.random.fold_in(key_steps, i))
            if not bool(finite):
                return {k: None for k in checkpoints}, heard, seconds
            state = new
            seconds += time.perf_counter() - t0
            if stop_after is not None and i < stop_after:
                heard += float(count)
            if i + 1 in wanted:
                acc = self.score_fn(state.params, self.hyper, self.fit_images, self.fit_labels, self.fitness_key)
                for name in wanted[i + 1]:
                    out[name] = float(acc["accuracy"])
        return out, heard, seconds

    def params_after(self, key, steps):
        """Parameters after ``steps`` steps (as the parent's trained weights)."""
        s = self.settings
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, self.sig, self.hyper, self.images.shape[1:])
        key_order, key_steps = jax.random.split(jax.random.fold_in(key_epochs, 0))
        order, masks = training.batches(key_order, self.images.shape[0], s.batch_size)
        for i in range(steps):
            new, _, finite, _ = self.step(state, order[i], masks[i], jax.random.fold_in(key_steps, i))
            if not bool(finite):
                return None
            state = new
        return jax.device_get(state.params)


def snasnet_score(phenotype, images, time_steps: int, key) -> float:
    """SNASNet's training-free score of an untrained network on one batch.

    For each LIF layer and step, the binary spike codes of the B samples give
    K = N - Hamming(c_i, c_j) (N the layer's neurons); the score is the sum
    of log|det K| over layers and steps. Identical codes make K singular:
    such a term counts as log(1e-300).
    """
    sig, hyper = architecture.split(phenotype)
    params = network.init_params(key, sig, hyper, images.shape[1:])
    spikes = encoding.rate(jax.random.fold_in(key, 1), images, time_steps)
    _, trains = network.SpikingNetwork(sig).apply(
        {"params": params}, spikes, hyper, method=network.SpikingNetwork.recording, what="trace"
    )
    total = 0.0
    for train in trains:
        codes = np.asarray(train).reshape(train.shape[0], train.shape[1], -1)  # [T, B, N]
        n = codes.shape[-1]
        for c in codes:
            k = c @ c.T + (1 - c) @ (1 - c).T  # N - Hamming distance
            sign, logdet = np.linalg.slogdet(k.astype(np.float64))
            total += logdet if sign != 0 and np.isfinite(logdet) else math.log(1e-300)
        del n
    return float(total)


def phase_rank(args, space: SearchSpace) -> dict:
    splits, source = common.load_splits("mnist", seed=0, subset=args.subset)
    time_steps = args.time_steps or 4
    settings = Protocol(time_steps=time_steps, eval_batch_size=1000)
    fitness_key = jax.random.fold_in(jax.random.key(0), 0x0F17)
    batches = -(-len(splits.evo_train.labels) // settings.batch_size)
    checkpoints = {f"{f:g}": max(1, math.ceil(f * batches)) for f in FRACTIONS} | {"1": batches}
    fast_steps = max(1, math.ceil(0.25 * batches))
    stop_after = max(1, math.ceil(args.early_stop * batches))
    rng = np.random.default_rng(2024)
    config = mutation.MutationConfig()
    archs = []
    for k in range(args.archs):
        if k % 2 == 0:
            archs.append((mutation.sample(rng, space, config), None))
        else:
            parent = mutation.sample(rng, space, config)
            archs.append((mutation.offspring(rng, parent, space, config)[0], parent))
    chance = float(np.bincount(np.asarray(splits.fitness.labels)).max() / len(splits.fitness.labels))
    rows = []
    batch_images = jnp.asarray(splits.evo_train.images[:64])
    for k, (genome, parent) in enumerate(archs):
        t0 = time.perf_counter()
        ph = space.phenotype(genome)
        key = jax.random.fold_in(jax.random.key(7), k)
        row = {"phenotype": ph.text, "kind": "offspring" if parent is not None else "random"}
        try:
            probe = EpochProbe(ph, splits, settings, fitness_key)
            fit, heard, seconds = probe.run(key, checkpoints, stop_after=stop_after)
            row.update({f"fitness_{name}": value for name, value in fit.items()})
            row["silent_at_check"] = heard == 0.0
            row["train_seconds_epoch"] = seconds
            row["snasnet"] = snasnet_score(ph, batch_images, time_steps, key)
            if parent is not None:
                parent_ph = space.phenotype(parent)
                parent_params = EpochProbe(parent_ph, splits, settings, fitness_key).params_after(
                    jax.random.fold_in(key, 99), batches
                )
                if parent_params is not None:
                    values, mask, share = inheritance.inherit(
                        parent_ph, space.origins(parent), parent_params, ph, space.origins(genome), space.input_shape
                    )
                    inh, _, _ = probe.run(key, {"q": fast_steps}, start=(values, mask))
                    row["fitness_inherit_0.25"] = inh["q"]
                    row["inherited_share"] = share
        except Exception as err:  # noqa: BLE001 - a failing architecture is recorded, the study goes on
            row["error"] = f"{type(err).__name__}: {err}"[:300]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        log(
            f"rank {k + 1}/{len(archs)}: paper {row.get('fitness_1')} cheap(.25) {row.get('fitness_0.25')} "
            f"inherit {row.get('fitness_inherit_0.25')} silent {row.get('silent_at_check')} "
            f"({row['seconds']:.0f} s)"
        )
    ok = [r for r in rows if r.get("fitness_1") is not None]
    paper = [r["fitness_1"] for r in ok]
    summary = {
        f"spearman_{name}": spearman([r[f"fitness_{name}"] for r in ok], paper) for name in checkpoints if name != "1"
    }
    inh = [r for r in ok if r.get("fitness_inherit_0.25") is not None]
    summary["spearman_inherit_0.25"] = spearman([r["fitness_inherit_0.25"] for r in inh], [r["fitness_1"] for r in inh])
    summary["spearman_snasnet"] = spearman([r["snasnet"] for r in ok], paper)
    silent = [r for r in ok if r["silent_at_check"]]
    summary["silent_at_check"] = len(silent)
    summary["silent_and_at_chance_after_epoch"] = sum(r["fitness_1"] <= chance + 0.02 for r in silent)
    summary["at_chance_after_epoch"] = sum(r["fitness_1"] <= chance + 0.02 for r in ok)
    summary["chance"] = chance
    summary["architectures"] = len(ok)
    summary["early_stop_fraction"] = args.early_stop
    summary["early_stop_saves_samples_fraction"] = len(silent) * (1 - stop_after / batches) / max(len(ok), 1)
    return {"data": source, "rows": rows, "summary": summary}


# --------------------------------------------------------------------------
# Phase 2 and 3: searches and the common yardstick


def search_overrides(args, protocol: str, seed: int, out: Path) -> list[str]:
    if args.preset:  # the preset sets subset, T, generations and offspring, as a user runs it
        sizes = [f"preset={args.preset}", f"dataset={args.dataset}"]
    else:
        sizes = [
            f"dataset={args.dataset}",
            f"dataset.subset={args.subset}",
            f"evolution.generations={args.generations}",
            f"evolution.offspring={args.offspring}",
            *([f"dataset.time_steps={args.time_steps}"] if args.time_steps else []),
        ]
    return [
        f"seed={seed}",
        f"search={protocol}",
        *sizes,
        "runtime.progress=false",
        f"runtime.compile_cache={out / 'xla-cache'}",
        f"experiment=bench-{protocol}",
        *args.override,
        *(args.fast_override if protocol == "fast" else []),
    ]


def plateau(records: list[dict]) -> int:
    """The longest run of generations in which no new architecture took the parent's place."""
    longest = current = 0
    for r in records[1:]:
        current = 0 if r["parent_replaced"] else current + 1
        longest = max(longest, current)
    return longest


def run_search(args, protocol: str, seed: int, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from spenser_jax import scheduler

    overrides = search_overrides(args, protocol, seed, out)
    with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = out / args.dataset / (args.preset or "reduced") / protocol / f"seed{seed}"
    scheduler.enable_compile_cache(str(out / "xla-cache"))
    evolve.run(cfg, run_dir)
    records = files.read_generations(run_dir)
    # Summed from the generation records, not timed here: a run resumed from
    # its checkpoint reports the time it spent in total, not since the resume.
    wall = sum(r["wall_seconds"] for r in records)
    individuals = [i for r in records for i in r["individuals"]]
    identity = json.loads((run_dir / files.RUN).read_text())
    search_t = min(identity.get("search", {}).get("time_steps") or identity["time_steps"], identity["time_steps"])
    chance = 0.12  # 10 balanced classes: at most chance + 0.02
    return {
        "protocol": protocol,
        "seed": seed,
        "run_dir": str(run_dir),
        "overrides": overrides,
        "dataset": identity["dataset"],
        "subset": identity["subset"],
        "search_time_steps": search_t,
        "data_time_steps": identity["time_steps"],
        "train_steps_total": sum(i.get("train_steps", 0) for i in individuals),
        "train_steps_min": min(
            (i.get("train_steps", 0) for i in individuals if i["status"] in ("ok", "stopped")), default=0
        ),
        # Compute in sample-time-steps: T now differs between protocols.
        "compute_sample_steps": records[-1]["train_samples_total"] * search_t,
        "at_chance": sum(i["status"] in ("ok", "stopped") and i["fitness"] <= chance for i in individuals),
        "plateau_generations": plateau(records),
        "architecture_changes": sum(r["parent_replaced"] for r in records[1:]),
        "wall_seconds": wall,
        "compile_seconds": sum(i["compile_seconds"] for i in individuals),
        "train_seconds": sum(i["train_seconds"] for i in individuals),
        "evaluations": len(individuals),
        "stopped": sum(i["status"] == "stopped" for i in individuals),
        "failed": sum(i["status"] in ("error", "nonfinite_loss") for i in individuals),
        "curve": [[r["train_samples_total"] * search_t, r["best_fitness"]] for r in records],
        "wall_curve": np.cumsum([r["wall_seconds"] for r in records]).tolist(),
        "train_samples_total": records[-1]["train_samples_total"],
        "best_fitness": records[-1]["best_fitness"],
        "best_phenotype": json.loads((run_dir / files.BEST).read_text())["phenotype"],
    }


def retrain_best(args, run: dict) -> dict:
    t0 = time.perf_counter()
    result = retrain.retrain(Path(run["run_dir"]), epochs=args.retrain_epochs, from_scratch=True, progress=False)
    return {"test_accuracy": result["accuracy"], "retrain_seconds": time.perf_counter() - t0}


def summarise_searches(runs: list[dict]) -> dict:
    out = {}
    for protocol in sorted({r["protocol"] for r in runs}):
        mine = [r for r in runs if r["protocol"] == protocol]
        acc = [r["test_accuracy"] for r in mine if r.get("test_accuracy") is not None]
        out[protocol] = {
            "runs": len(mine),
            "train_samples_total_mean": float(np.mean([r["train_samples_total"] for r in mine])),
            "compute_sample_steps_mean": float(np.mean([r.get("compute_sample_steps", 0) for r in mine])),
            "compile_share_mean": float(np.mean([r["compile_seconds"] / max(r["wall_seconds"], 1e-9) for r in mine])),
            "wall_seconds_sd": float(np.std([r["wall_seconds"] for r in mine], ddof=1)) if len(mine) > 1 else None,
            "train_steps_min": min(r.get("train_steps_min", 0) for r in mine),
            "at_chance_share": float(
                np.sum([r.get("at_chance", 0) for r in mine]) / max(np.sum([r["evaluations"] for r in mine]), 1)
            ),
            "plateau_generations_mean": float(np.mean([r.get("plateau_generations", 0) for r in mine])),
            "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in mine])),
            "compile_seconds_mean": float(np.mean([r["compile_seconds"] for r in mine])),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in mine])),
            "best_fitness_mean": float(np.mean([r["best_fitness"] for r in mine])),
            "test_accuracy_mean": float(np.mean(acc)) if acc else None,
            "test_accuracy_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
            "test_accuracies": acc,
        }
    if "paper" in out and "fast" in out:
        p, f = out["paper"], out["fast"]
        out["compute_ratio_paper_over_fast"] = p["train_samples_total_mean"] / max(f["train_samples_total_mean"], 1)
        out["compute_ratio_sample_steps"] = p["compute_sample_steps_mean"] / max(f["compute_sample_steps_mean"], 1)
        out["wall_ratio_paper_over_fast"] = p["wall_seconds_mean"] / max(f["wall_seconds_mean"], 1e-9)
        if p["test_accuracy_mean"] is not None and f["test_accuracy_mean"] is not None:
            spread = max(p["test_accuracy_sd"] or 0.0, f["test_accuracy_sd"] or 0.0)
            out["test_accuracy_difference"] = f["test_accuracy_mean"] - p["test_accuracy_mean"]
            out["as_good"] = abs(out["test_accuracy_difference"]) <= spread
            out["spread_used"] = spread
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result.get("search", {}).get("runs", [])
    rank = result.get("rank", {}).get("rows", [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"paper": "C0", "fast": "C3"}
    for r in runs:
        curve = np.asarray(r["curve"], float)
        axes[0].step(
            curve[:, 0] / 1e3,
            curve[:, 1],
            where="post",
            color=colors.get(r["protocol"], "k"),
            alpha=0.8,
            label=f"{r['protocol']} seed {r['seed']}",
        )
    axes[0].set(
        xlabel="training compute (samples × T, thousands)", ylabel="best fitness", title="Best fitness against compute"
    )
    axes[0].grid(alpha=0.3)
    if runs:
        axes[0].legend(fontsize=7)
    for i, protocol in enumerate(("paper", "fast")):
        acc = [r["test_accuracy"] for r in runs if r["protocol"] == protocol and r.get("test_accuracy")]
        axes[1].scatter([i] * len(acc), acc, color=colors[protocol], zorder=3)
        if acc:
            axes[1].errorbar(
                i + 0.15, np.mean(acc), yerr=np.std(acc, ddof=1) if len(acc) > 1 else 0, fmt="o", color="k", capsize=4
            )
    axes[1].set(
        xticks=[0, 1],
        xticklabels=["paper", "fast"],
        ylabel="test accuracy (retrained from scratch)",
        title="The common yardstick",
        xlim=(-0.5, 1.5),
    )
    axes[1].grid(alpha=0.3)
    ok = [r for r in rank if r.get("fitness_1") is not None]
    if ok:
        paper = [r["fitness_1"] for r in ok]
        axes[2].scatter(paper, [r["fitness_0.25"] for r in ok], s=14, label="fresh, 1/4 epoch")
        inh = [r for r in ok if r.get("fitness_inherit_0.25") is not None]
        axes[2].scatter(
            [r["fitness_1"] for r in inh],
            [r["fitness_inherit_0.25"] for r in inh],
            s=14,
            marker="^",
            label="inherited + 1/4 epoch",
        )
        axes[2].plot([0, 1], [0, 1], color="0.6", lw=0.8)
        axes[2].set(
            xlabel="paper fitness (1 epoch, from scratch)",
            ylabel="cheap fitness",
            title="Cheap fitness against the paper's",
        )
        axes[2].legend(fontsize=8)
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_protocols(paths: list[Path], out: Path) -> dict:
    """One figure and table over several protocols' results (``--combine``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for path in paths:
        summary = json.loads(Path(path).read_text()).get("search", {}).get("summary", {})
        if "paper" in summary and "fast" in summary:
            rows[Path(path).stem] = summary
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(rows)
    for i, name in enumerate(names):
        r = rows[name]
        for j, protocol in enumerate(("paper", "fast")):
            acc = r[protocol]["test_accuracies"]
            x = i + (j - 0.5) * 0.3
            axes[0].scatter([x] * len(acc), acc, color=("C0", "C3")[j], s=16, label=protocol if i == 0 else None)
            if acc:
                sd = r[protocol]["test_accuracy_sd"] or 0.0
                axes[0].errorbar(x + 0.08, np.mean(acc), yerr=sd, fmt="o", color="k", capsize=3, ms=3)
        axes[1].bar(i, r["compute_ratio_sample_steps"], color="C2")
        axes[2].bar(i, r["wall_ratio_paper_over_fast"], color="C1")
    labels = [n.replace("search_efficiency_", "").rsplit("_", 1)[0] for n in names]
    axes[0].set(ylabel="test accuracy, retrained from scratch", title="Test accuracy (official test split)")
    axes[1].set(ylabel="paper / fast", title="Training compute saved (samples × T)")
    axes[2].set(ylabel="paper / fast", title="Wall time saved (loaded machine)")
    for ax in axes:
        ax.set_xticks(range(len(names)), labels)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--combine", nargs="+", default=None, help="only plot these result JSON files side by side (--out: the PNG)"
    )
    parser.add_argument("--phases", default="rank,search,retrain")
    parser.add_argument("--archs", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--offspring", type=int, default=4)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument(
        "--time-steps", type=int, default=None, help="dataset.time_steps for both protocols (default: the data set's T)"
    )
    parser.add_argument("--dataset", default="mnist", help="search phase: mnist | fmnist | cifar10")
    parser.add_argument("--preset", default=None, help="search phase: run the preset (quick) as a user would")
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument(
        "--early-stop", type=float, default=0.05, help="rank phase: the check, as a fraction of the epoch"
    )
    parser.add_argument("--protocols", default="paper,fast", help="search phase: which protocols to run")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra override for both protocols (repeatable), e.g. training.batch_size=16",
    )
    parser.add_argument(
        "--fast-override",
        action="append",
        default=[],
        help="extra override for the fast protocol (repeatable), e.g. training.epochs=0.1",
    )
    parser.add_argument("--work", default="/tmp/spenser-search-efficiency", help="run directories")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default="search_efficiency")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the claim")
    args = parser.parse_args(argv)
    # search=fast sets runtime.compile_unit=auto, which keeps host memory on a CPU; one process holds one
    # allocator setting, so a run of both protocols keeps it only if an override asks.
    only_fast = args.phases != "rank" and set(args.protocols.split(",")) == {"fast"}
    kept = common.keep_host_memory_as_the_cli((["runtime.compile_unit=auto"] if only_fast else []) + args.override)
    if args.combine:
        out = Path(args.out or common.RESULTS_DIR / f"search_efficiency_protocols_{common.today()}.png")
        rows = plot_protocols([Path(p) for p in args.combine], out)
        print(
            json.dumps(
                {
                    k: {
                        p: v.get(p)
                        for p in (
                            "compute_ratio_sample_steps",
                            "wall_ratio_paper_over_fast",
                            "test_accuracy_difference",
                            "as_good",
                        )
                    }
                    for k, v in rows.items()
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
        return 0
    if args.quick:
        args.archs, args.seeds, args.generations, args.offspring = 4, 1, 2, 2
        args.subset, args.time_steps, args.retrain_epochs = 300, 2, 1
        args.name += "_quick"
    phases = set(args.phases.split(","))
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    load_before = common.load_average()
    previous = Path(args.out or common.RESULTS_DIR) / f"{args.name}_{common.today()}.json"
    result = json.loads(previous.read_text()) if previous.exists() else {}
    result.update(common.header("search_efficiency", load_before))
    result["settings"] = {k: v for k, v in vars(args).items()} | {"keep_host_memory": kept}
    t0 = time.perf_counter()
    if "rank" in phases:
        log(f"rank agreement over {args.archs} architectures")
        result["rank"] = phase_rank(args, space)
        log(f"rank summary: {json.dumps(result['rank']['summary'])}")
        common.write_result(args.name, result, args.out)
    if "search" in phases:
        runs = []
        for seed in range(args.seeds):
            for protocol in args.protocols.split(","):
                log(f"search {protocol} seed {seed}")
                runs.append(run_search(args, protocol, seed, out))
                log(
                    f"  {runs[-1]['train_samples_total']} samples, best {runs[-1]['best_fitness']:.4f}, "
                    f"{runs[-1]['wall_seconds']:.0f} s"
                )
                result["search"] = {"runs": runs}
                common.write_result(args.name, result, args.out)
    if "retrain" in phases:
        for run in result.get("search", {}).get("runs", []):
            log(f"retrain {run['protocol']} seed {run['seed']} from scratch, {args.retrain_epochs} epochs")
            run.update(retrain_best(args, run))
            log(f"  test accuracy {run['test_accuracy']:.4f}")
            common.write_result(args.name, result, args.out)
    if "search" in result:
        result["search"]["summary"] = summarise_searches(result["search"]["runs"])
    result["seconds"] = time.perf_counter() - t0
    result["load_average"]["after"] = common.load_average()
    path = common.write_result(args.name, result, args.out)
    png = path.with_suffix(".png")
    plot(result, png)
    print(json.dumps({k: result[k].get("summary") for k in ("rank", "search") if k in result}, indent=1))
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
