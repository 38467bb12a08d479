"""What a cheap search may cut: optimizer steps, time steps, and how learning rates are drawn.

Two phases, each writing its part of one JSON result
(``results/budget_study_<date>.json``) and a plot (same name, ``.png``).

``steps`` (chooses ``search.min_steps`` and whether ``search=fast`` draws
wide-range genes log-uniformly): ``--archs`` generation-0 architectures of
the paper's grammar, each drawn twice from the same generator state, once
with the paper's uniform draw and once with ``mutation.log_uniform`` (the
same layers and integer genes, only the float genes differ), train one epoch
of ``--subset`` MNIST samples at batch 64 and T = ``--time-steps``; their
fitness (on ``--fitness-subset`` Fitness samples) is read after 10, 20, 50
and 100 steps and at the end of the epoch. Reported per step count: the
share of networks still at chance, the Spearman rank agreement with the
end-of-epoch fitness, and how many networks the early-stop rule (output
silent and loss flat) would stop after 20 steps that end the epoch above
chance (false stops).

``time`` (chooses ``search.time_steps``): ``--t-archs`` architectures
(log-uniform draw, so that fewer sit at chance) train one epoch of
``--t-subset`` Fashion-MNIST samples at batch 64 at each T of ``--t-values``
and at the data set's T (25), and are scored at the same T. Reported: the
Spearman agreement of each T's fitness with the fitness at T = 25, the share
at chance at each T, and the training seconds per T.

    python benchmarks/budget_study.py                      # both phases, about an hour on 2 cores
    python benchmarks/budget_study.py --phases steps
    python benchmarks/budget_study.py --quick              # a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from search_efficiency import spearman  # noqa: E402

from spenser_jax import data, training  # noqa: E402
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace  # noqa: E402
from spenser_jax.grammar import load_grammar, locate  # noqa: E402
from spenser_jax.snn import (
    architecture,
    encoding,  # noqa: E402
)
from spenser_jax.training.protocol import Protocol  # noqa: E402

STEPS = (10, 20, 50, 100)
STOP_AT = 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Probe:
    """One architecture trained batch by batch as ``training.train_epoch`` trains it, scored along the way."""

    def __init__(self, phenotype, splits, time_steps: int, batch_size: int, fitness_key):
        self.sig, self.hyper = architecture.split(phenotype, time_steps)
        self.time_steps, self.batch_size = time_steps, batch_size
        self.images = jnp.asarray(splits.evo_train.images)
        self.labels = jnp.asarray(splits.evo_train.labels, jnp.int32)
        self.fit_images = jnp.asarray(splits.fitness.images)
        self.fit_labels = jnp.asarray(splits.fitness.labels, jnp.int32)
        self.fitness_key = fitness_key
        self.step = jax.jit(self._step)
        self.score = training.make_score(
            self.sig, Protocol(time_steps=time_steps), batch_size=min(1000, len(self.fit_labels))
        )

    def _step(self, state, hyper, idx, mask, key):
        key_encode, key_dropout = jax.random.split(key)
        spikes = encoding.rate(key_encode, self.images[idx], self.time_steps)
        return training.train_step(
            self.sig,
            Protocol(time_steps=self.time_steps),
            state,
            hyper,
            spikes,
            self.labels[idx],
            mask,
            key_dropout,
            output_spikes=True,
        )

    def run(self, hyper, key, reads: dict[str, int]) -> dict:
        """Fitness after each named step count; silence and loss spread over the first STOP_AT steps."""
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, self.sig, hyper, self.images.shape[1:])
        key_order, key_steps = jax.random.split(jax.random.fold_in(key_epochs, 0))
        order, masks = training.batches(key_order, self.images.shape[0], self.batch_size)
        wanted: dict[int, list[str]] = {}
        for name, steps in reads.items():
            wanted.setdefault(min(steps, order.shape[0]), []).append(name)
        out = {"fitness": {}, "heard": 0.0, "losses": [], "seconds": 0.0}
        for i in range(max(wanted)):
            t0 = time.perf_counter()
            new, value, finite, count = self.step(state, hyper, order[i], masks[i], jax.random.fold_in(key_steps, i))
            if not bool(finite):
                out["nonfinite_at"] = i + 1
                return out
            state = new
            out["seconds"] += time.perf_counter() - t0
            if i < STOP_AT:
                out["heard"] += float(count)
                out["losses"].append(float(value))
            if i + 1 in wanted:
                acc = float(
                    self.score(state.params, hyper, self.fit_images, self.fit_labels, self.fitness_key)["accuracy"]
                )
                for name in wanted[i + 1]:
                    out["fitness"][name] = acc
        return out


def draw_pairs(space: SearchSpace, n: int, seed: int):
    """``n`` (uniform, log-uniform) pairs of generation-0 genotypes: same layers, other float genes."""
    log_space = SearchSpace(
        space.grammar,
        space.macro,
        space.input_shape,
        space.num_classes,
        log_uniform_ratio=mutation.MutationConfig().log_ratio,
    )
    config = mutation.MutationConfig()
    pairs = []
    for k in range(n):
        a = mutation.sample(np.random.default_rng([seed, k]), space, config)
        b = mutation.sample(np.random.default_rng([seed, k]), log_space, config)
        pairs.append((a, b))
    return pairs


def _splits(name: str, subset: int, fitness_subset: int):
    ds = data.load(name, None)
    return data.split(ds, seed=0, subset=subset, fitness_subset=fitness_subset), name


def _chance(splits) -> float:
    labels = np.asarray(splits.fitness.labels)
    return float(np.bincount(labels).max() / len(labels))


def phase_steps(args, space: SearchSpace) -> dict:
    splits, source = _splits("mnist", args.subset, args.fitness_subset)
    batches = -(-len(splits.evo_train.labels) // 64)
    reads = {str(k): k for k in STEPS if k < batches} | {"epoch": batches}
    fitness_key = jax.random.fold_in(jax.random.key(0), 0x0F17)
    chance = _chance(splits)
    rows = []
    for k, pair in enumerate(draw_pairs(space, args.archs, 2026)):
        for draw, genome in zip(("uniform", "log_uniform"), pair):
            t0 = time.perf_counter()
            ph = space.phenotype(genome)
            lr = re.search(r"\blr:([0-9.e+-]+)", ph.text)
            row = {"arch": k, "draw": draw, "phenotype": ph.text, "lr": float(lr.group(1)) if lr else None}
            try:
                probe = Probe(ph, splits, args.time_steps, 64, fitness_key)
                result = probe.run(probe.hyper, jax.random.fold_in(jax.random.key(7), k), reads)
                row.update({f"fitness_{n}": v for n, v in result["fitness"].items()})
                losses = result["losses"]
                row["silent_at_20"] = result["heard"] == 0.0
                row["loss_flat_at_20"] = bool(losses) and (max(losses) - min(losses)) <= (
                    training.LOSS_FLAT * max(abs(min(losses)), 1e-12)
                )
                row["train_seconds"] = result["seconds"]
                if "nonfinite_at" in result:
                    row["nonfinite_at"] = result["nonfinite_at"]
            except Exception as err:  # noqa: BLE001 - recorded, the study goes on
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            log(
                f"steps {k + 1}/{args.archs} {draw}: "
                + " ".join(f"{n}={row.get(f'fitness_{n}', float('nan')):.3f}" for n in reads)
                + f" silent20={row.get('silent_at_20')} flat20={row.get('loss_flat_at_20')} ({row['seconds']:.0f} s)"
            )
    summary = {"chance": chance, "batches_per_epoch": batches, "reads": reads}
    for draw in ("uniform", "log_uniform"):
        ok = [r for r in rows if r["draw"] == draw and r.get("fitness_epoch") is not None]
        final = [r["fitness_epoch"] for r in ok]
        s = {
            "architectures": len(ok),
            "failed": sum(r["draw"] == draw for r in rows) - len(ok),
            "at_chance": {n: sum(r[f"fitness_{n}"] <= chance + 0.02 for r in ok) for n in reads},
            "spearman_with_epoch": {n: spearman([r[f"fitness_{n}"] for r in ok], final) for n in reads if n != "epoch"},
            "mean_fitness": {n: float(np.mean([r[f"fitness_{n}"] for r in ok])) if ok else None for n in reads},
        }
        stop = [r for r in ok if r["silent_at_20"] and r["loss_flat_at_20"]]
        s["stopped_at_20"] = len(stop)
        s["false_stops_at_20"] = sum(r["fitness_epoch"] > chance + 0.02 for r in stop)
        silent_only = [r for r in ok if r["silent_at_20"]]
        s["silent_at_20"] = len(silent_only)
        s["silent_at_20_then_above_chance"] = sum(r["fitness_epoch"] > chance + 0.02 for r in silent_only)
        summary[draw] = s
    return {
        "data": source,
        "subset": args.subset,
        "fitness_subset": args.fitness_subset,
        "time_steps": args.time_steps,
        "batch_size": 64,
        "rows": rows,
        "summary": summary,
    }


def summarise_time(rows: list[dict], t_values, reference: int, chance: float, batches: int) -> dict:
    """Rank agreement and chance shares of the time phase's rows (also over rows of several runs)."""
    ref = f"fitness_T{reference}"
    ok = [r for r in rows if all(r.get(f"fitness_T{t}") is not None for t in t_values)]
    summary = {
        "chance": chance,
        "batches_per_epoch": batches,
        "reference_T": reference,
        "architectures": len(ok),
        "spearman_with_reference": {
            f"T{t}": spearman([r[f"fitness_T{t}"] for r in ok], [r[ref] for r in ok])
            for t in t_values
            if t != reference
        },
        "at_chance": {f"T{t}": sum(r[f"fitness_T{t}"] <= chance + 0.02 for r in ok) for t in t_values},
        "mean_fitness": {f"T{t}": float(np.mean([r[f"fitness_T{t}"] for r in ok])) if ok else None for t in t_values},
        "train_seconds": {f"T{t}": float(np.sum([r[f"train_seconds_T{t}"] for r in ok])) for t in t_values},
    }
    # Does the best at a low T stay near the top at the reference T? (what (1+λ) selection needs)
    if ok:
        summary["reference_fitness_of_best_at"] = {
            f"T{t}": max(ok, key=lambda r: r[f"fitness_T{t}"])[ref] for t in t_values
        }
        summary["best_reference_fitness"] = max(r[ref] for r in ok)
    return summary


def phase_time(args, space: SearchSpace, partial=None) -> dict:
    """The T study; ``partial(rows)`` is called after every architecture (a kill keeps them)."""
    splits, source = _splits("fmnist", args.t_subset, args.fitness_subset)
    batches = -(-len(splits.evo_train.labels) // 64)
    fitness_key = jax.random.fold_in(jax.random.key(0), 0x0F17)
    chance = _chance(splits)
    t_values = sorted(set(args.t_values) | {args.t_reference})
    rows = []
    started = time.perf_counter()
    pairs = list(enumerate(draw_pairs(space, args.t_archs, 2027)))
    if args.t_only is not None:  # these architectures, in this order (cheapest first keeps partial results useful)
        by_index = dict(pairs)
        pairs = [(k, by_index[k]) for k in args.t_only]
    skipped = []
    for k, (_, genome) in pairs:
        if k < args.t_start:  # another process measured these (merge with --merge-time)
            continue
        cost = architecture.cost(architecture.signature(space.phenotype(genome)), space.input_shape)
        if args.t_max_cost and cost > args.t_max_cost:
            skipped.append({"arch": k, "cost": cost})
            log(f"time: architecture {k} skipped, cost {cost:.3g} > {args.t_max_cost:.3g}")
            continue
        if args.deadline and time.perf_counter() - started > args.deadline:
            log(f"time: deadline of {args.deadline:.0f} s reached after {k} architectures")
            break
        ph = space.phenotype(genome)
        row = {"arch": k, "phenotype": ph.text}
        t0 = time.perf_counter()
        for t in t_values:
            try:
                probe = Probe(ph, splits, t, 64, fitness_key)
                result = probe.run(probe.hyper, jax.random.fold_in(jax.random.key(11), k), {"epoch": batches})
                row[f"fitness_T{t}"] = result["fitness"].get("epoch")
                row[f"train_seconds_T{t}"] = result["seconds"]
            except Exception as err:  # noqa: BLE001
                row[f"error_T{t}"] = f"{type(err).__name__}: {err}"[:300]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if partial is not None:
            partial({"rows": rows, "skipped": skipped})
        log(
            f"time {k + 1}/{args.t_archs}: "
            + " ".join(
                f"T{t}={row.get(f'fitness_T{t}') if row.get(f'fitness_T{t}') is not None else float('nan'):.3f}"
                for t in t_values
            )
            + f" ({row['seconds']:.0f} s)"
        )
    summary = summarise_time(rows, t_values, args.t_reference, chance, batches)
    return {
        "data": source,
        "subset": args.t_subset,
        "fitness_subset": args.fitness_subset,
        "batch_size": 64,
        "rows": rows,
        "skipped_for_cost": skipped,
        "summary": summary,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    st = result.get("steps")
    if st:
        reads = st["summary"]["reads"]
        xs = list(reads.values())
        for draw, color in (("uniform", "C0"), ("log_uniform", "C3")):
            s = st["summary"][draw]
            n = max(s["architectures"], 1)
            axes[0].plot(xs, [s["at_chance"][k] / n for k in reads], "o-", color=color, label=draw)
            sp = [s["spearman_with_epoch"].get(k) for k in reads if k != "epoch"]
            axes[1].plot(xs[:-1], sp, "o-", color=color, label=draw)
        axes[0].set(
            xscale="log",
            xlabel="optimizer steps (batch 64)",
            ylabel="share at chance",
            title=f"MNIST, T = {st['time_steps']}: networks still at chance",
        )
        axes[1].set(
            xscale="log",
            xlabel="optimizer steps",
            ylabel="Spearman with end of epoch",
            title="Rank agreement with one epoch",
            ylim=(-0.2, 1),
        )
        for ax in axes[:2]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    tm = result.get("time")
    if tm:
        ref = tm["summary"]["reference_T"]
        for t in sorted({int(k[1:]) for k in tm["summary"]["spearman_with_reference"]}):
            ok = [r for r in tm["rows"] if r.get(f"fitness_T{t}") is not None and r.get(f"fitness_T{ref}") is not None]
            rho = tm["summary"]["spearman_with_reference"][f"T{t}"]
            axes[2].scatter(
                [r[f"fitness_T{ref}"] for r in ok],
                [r[f"fitness_T{t}"] for r in ok],
                s=14,
                label=f"T = {t} (ρ = {rho:.2f})",
            )
        axes[2].plot([0, 1], [0, 1], color="0.6", lw=0.8)
        axes[2].set(
            xlabel=f"fitness at T = {ref}", ylabel="fitness at a lower T", title="Fashion-MNIST: fitness at lower T"
        )
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", default="steps,time")
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--subset", type=int, default=20000, help="steps phase: MNIST samples (70%% train)")
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--fitness-subset", type=int, default=1000)
    parser.add_argument("--t-archs", type=int, default=30)
    parser.add_argument("--t-subset", type=int, default=6000, help="time phase: Fashion-MNIST samples")
    parser.add_argument("--t-values", type=int, nargs="+", default=[4, 6, 10])
    parser.add_argument("--t-reference", type=int, default=25)
    parser.add_argument(
        "--deadline", type=float, default=None, help="time phase: start no new architecture after this many seconds"
    )
    parser.add_argument("--t-start", type=int, default=0, help="time phase: skip the first architectures")
    parser.add_argument("--t-only", type=int, nargs="+", default=None, help="time phase: only these architectures")
    parser.add_argument(
        "--t-max-cost",
        type=float,
        default=None,
        help="time phase: skip architectures whose architecture.cost exceeds this (recorded as skipped)",
    )
    parser.add_argument(
        "--merge-time", nargs="+", default=None, help="merge the time phases of these result files into --name's"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default="budget_study")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.subset, args.time_steps, args.fitness_subset = 2, 1200, 2, 100
        args.t_archs, args.t_subset, args.t_values, args.t_reference = 2, 600, [2], 3
        args.name += "_quick"
    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    load_before = common.load_average()
    previous = Path(args.out or common.RESULTS_DIR) / f"{args.name}_{common.today()}.json"
    result = json.loads(previous.read_text()) if previous.exists() else {}
    result.update(common.header("budget_study", load_before))
    result["settings"] = vars(args)
    t0 = time.perf_counter()
    if args.merge_time:
        parts = [json.loads(Path(p).read_text())["time"] for p in args.merge_time]
        # One row per architecture (the parts may overlap).
        rows = sorted(
            {r["arch"]: r for part in reversed(parts) for r in part["rows"]}.values(), key=lambda r: r["arch"]
        )
        t_values = sorted({int(k[len("fitness_T") :]) for r in rows for k in r if k.startswith("fitness_T")})
        first = parts[0]["summary"]
        result["time"] = {**parts[0], "rows": rows, "merged_from": [str(p) for p in args.merge_time]}
        result["time"]["summary"] = summarise_time(
            rows, t_values, first["reference_T"], first["chance"], first["batches_per_epoch"]
        )
        log(json.dumps(result["time"]["summary"]))
        args.phases = ""
    phases = args.phases.split(",")
    if "steps" in phases:
        result["steps"] = phase_steps(args, space)
        log(json.dumps(result["steps"]["summary"]))
        common.write_result(args.name, result, args.out)
    if "time" in phases:

        def partial(part):
            result["time"] = {"data": "fmnist", "subset": args.t_subset, **part, "complete": False}
            common.write_result(args.name, result, args.out)

        result["time"] = phase_time(args, space, partial)
        log(json.dumps(result["time"]["summary"]))
        common.write_result(args.name, result, args.out)
    result["seconds"] = time.perf_counter() - t0
    result["load_average"]["after"] = common.load_average()
    path = common.write_result(args.name, result, args.out)
    plot(result, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
