"""Successive halving (``search.halving``) against today's ``search=fast``, at equal compute (issue 29).

Two arms per seed, run one after the other (seed by seed, the arms
alternating, so load drifts hit both): ``search=fast`` and ``search=fast
search.halving=true``, on a reduced MNIST (``--subset``, default 12,000:
8,400 EvoTrain samples, 132 batches, a quarter epoch lifted to the floor of
100 steps), ``--generations`` generations of ``--offspring``. Compute is
what the records count (``train_samples_total`` x the search's T); halving
never trains more than the plain arm (``spenser_jax.search.halving``), and the
ratio is printed. Each run's best is retrained from scratch for
``--retrain-epochs`` on the run's train split at the data set's T and tested
on the official test split (``spenser_jax.retrain``).

Per run: best fitness, test accuracy, compute, candidates at chance
(fitness <= 0.12), compile and train seconds (the records'), wall time.
Summary: per arm mean and sample s.d. over seeds, and per seed the paired
difference (halving minus plain). ``--minutes`` bounds the whole benchmark:
a seed whose two runs would not fit (by the slowest seed so far) is not
started.

Usage::

    python benchmarks/halving.py                      # seeds 3 4, 3 generations of 6
    python benchmarks/halving.py --quick              # subset 600, T 2, 2 generations of 4: a smoke test
    python benchmarks/halving.py --compile-cost --subset 3000 --time-steps 2   # compile seconds, one program a network

Results: ``benchmarks/results/halving_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import common  # benchmarks/common.py (the script's folder is on sys.path)

from spenser_jax import evolve, retrain  # noqa: E402
from spenser_jax.run import files  # noqa: E402

ARMS = {"fast": [], "fast+halving": ["search.halving=true"]}
CHANCE = 0.12  # 10 balanced classes: at most chance + 0.02


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_arm(args, arm: str, seed: int, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from spenser_jax import scheduler

    overrides = [
        f"seed={seed}",
        "search=fast",
        f"dataset.subset={args.subset}",
        f"evolution.generations={args.generations}",
        f"evolution.offspring={args.offspring}",
        "runtime.progress=false",
        f"runtime.compile_cache={out / 'xla-cache'}",
        *([f"dataset.time_steps={args.time_steps}", f"search.time_steps={args.time_steps}"] if args.time_steps else []),
        *ARMS[arm],
    ]
    with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = out / arm / f"seed{seed}"
    scheduler.enable_compile_cache(str(out / "xla-cache"))
    t0 = time.perf_counter()
    evolve.run(cfg, run_dir)
    records = files.read_generations(run_dir)
    identity = json.loads((run_dir / files.RUN).read_text())
    search_t = min(identity.get("search", {}).get("time_steps") or identity["time_steps"], identity["time_steps"])
    individuals = [i for r in records for i in r["individuals"]]
    result = {
        "arm": arm,
        "seed": seed,
        "overrides": overrides,
        "run_dir": str(run_dir),
        "search_time_steps": search_t,
        "train_samples_total": records[-1]["train_samples_total"],
        "compute_sample_steps": records[-1]["train_samples_total"] * search_t,
        "best_fitness": records[-1]["best_fitness"],
        "best_phenotype": json.loads((run_dir / files.BEST).read_text())["phenotype"],
        "evaluations": len(individuals),
        "at_chance": sum(i["status"] in ("ok", "stopped") and i["fitness"] <= CHANCE for i in individuals),
        "continued_in_round_2": sum(i.get("halving", {}).get("round") == 2 for i in individuals),
        "compile_seconds": sum(i["compile_seconds"] for i in individuals),
        "train_seconds": sum(i["train_seconds"] for i in individuals),
        "search_wall_seconds": time.perf_counter() - t0,
        "curve": [[r["train_samples_total"] * search_t, r["best_fitness"]] for r in records],
    }
    t0 = time.perf_counter()
    tested = retrain.retrain(run_dir, epochs=args.retrain_epochs, from_scratch=True, progress=False)
    result.update(test_accuracy=tested["accuracy"], retrain_seconds=time.perf_counter() - t0)
    return result


def compile_cost(args, out: Path) -> list[dict]:
    """Compile seconds of both arms with one program per network (``runtime.compile_unit=network``, a GPU's
    default), each in a fresh process with no persistent cache: round 1's half budget is a program of its own."""
    import subprocess

    costs = []
    for arm in ARMS:
        run_dir = out / "compile" / arm
        overrides = [
            "seed=3",
            "search=fast",
            f"dataset.subset={args.subset}",
            f"evolution.generations={args.generations}",
            f"evolution.offspring={args.offspring}",
            *(
                [f"dataset.time_steps={args.time_steps}", f"search.time_steps={args.time_steps}"]
                if args.time_steps
                else []
            ),
            "runtime.compile_unit=network",
            "runtime.compile_cache=null",
            "runtime.progress=false",
            f"hydra.run.dir={run_dir}",
            *ARMS[arm],
        ]
        subprocess.run([sys.executable, "-m", "spenser_jax.evolve", *overrides], check=True, capture_output=True)
        individuals = [i for r in files.read_generations(run_dir) for i in r["individuals"]]
        costs.append(
            {
                "arm": arm,
                "overrides": overrides,
                "compile_seconds": sum(i["compile_seconds"] for i in individuals),
                "train_seconds": sum(i["train_seconds"] for i in individuals),
                "evaluations": len(individuals),
            }
        )
        log(
            f"compile cost, {arm}: {costs[-1]['compile_seconds']:.1f} s compiling, "
            f"{costs[-1]['train_seconds']:.1f} s training"
        )
    return costs


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def summarise(runs: list[dict]) -> dict:
    by = {(r["seed"], r["arm"]): r for r in runs}
    seeds = sorted({s for s, _ in by if all((s, a) in by for a in ARMS)})
    fields = ("test_accuracy", "best_fitness", "compute_sample_steps", "at_chance", "compile_seconds", "train_seconds")
    summary = {
        "paired_seeds": seeds,
        "per_arm": {arm: {f: spread([by[s, arm][f] for s in seeds]) for f in fields} for arm in ARMS},
        "halving_minus_fast": {
            f: spread([by[s, "fast+halving"][f] - by[s, "fast"][f] for s in seeds])
            for f in ("test_accuracy", "best_fitness")
        },
        "compute_ratio_halving_to_fast": [
            by[s, "fast+halving"]["compute_sample_steps"] / by[s, "fast"]["compute_sample_steps"] for s in seeds
        ],
    }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--offspring", type=int, default=6)
    parser.add_argument(
        "--time-steps", type=int, default=None, help="T of the data set and the search (default: theirs)"
    )
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=20.0, help="no seed is started that would not fit")
    parser.add_argument("--out", type=Path, default=Path("/tmp/spenser_halving_bench"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--compile-cost", action="store_true", help="only: both arms' compile seconds with one program per network"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.subset, args.generations, args.offspring, args.time_steps, args.seeds = 600, 2, 4, 2, [3]
    if args.compile_cost:
        load_before = common.load_average()
        result = {
            **common.header("halving_compile_cost", load_before),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": compile_cost(args, args.out),
        }
        path = common.RESULTS_DIR / f"halving_compile_cost_{datetime.date.today().isoformat()}.json"
        path.write_text(json.dumps(result, indent=1))
        log(f"wrote {path}")
        return 0
    started, load_before = time.perf_counter(), common.load_average()
    runs, slowest = [], 0.0
    for seed in args.seeds:
        elapsed = time.perf_counter() - started
        if runs and elapsed + slowest > args.minutes * 60:
            log(f"seed {seed} not started: {elapsed / 60:.1f} min spent, a seed took up to {slowest / 60:.1f}")
            break
        t0 = time.perf_counter()
        for arm in ARMS if seed % 2 else reversed(list(ARMS)):  # the arms alternate which goes first
            log(f"seed {seed}, {arm}")
            r = run_arm(args, arm, seed, args.out)
            log(
                f"  best fitness {r['best_fitness']:.4f}, test {r['test_accuracy']:.4f}, compute "
                f"{r['compute_sample_steps']:,} sample-steps, at chance {r['at_chance']}/{r['evaluations']}, "
                f"compile {r['compile_seconds']:.0f} s, train {r['train_seconds']:.0f} s, "
                f"search {r['search_wall_seconds']:.0f} s"
            )
            runs.append(r)
        slowest = max(slowest, time.perf_counter() - t0)
    summary = summarise(runs)
    for arm, fields in summary["per_arm"].items() if summary["paired_seeds"] else ():
        acc, fit = fields["test_accuracy"], fields["best_fitness"]
        sd = f" +- {acc['sd']:.4f}" if acc["sd"] is not None else ""
        log(f"{arm}: test {acc['mean']:.4f}{sd} (seeds {summary['paired_seeds']}), best fitness {fit['mean']:.4f}")
    log(f"halving - fast, test accuracy per seed: {summary['halving_minus_fast']['test_accuracy']['values']}")
    log(f"compute ratio halving / fast per seed: {summary['compute_ratio_halving_to_fast']}")
    result = {
        **common.header("halving", load_before),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - started,
        "runs": runs,
        "summary": summary,
    }
    common.RESULTS_DIR.mkdir(exist_ok=True)
    path = common.RESULTS_DIR / f"halving_{datetime.date.today().isoformat()}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
