"""search=fast's rules of 2026-12-08 against the search=fast before them, as a new user meets them.

Issue 29's table (``preset=quick dataset=fmnist``, two seeds never used
before, each best retrained from scratch for 3 epochs and tested on the
official test split) for three arms:

* ``old``: ``search=fast`` without today's rules (``search.redraw_stopped=0
  search.verify_best=0 search.fresh_on_learning_change=false``);
* ``new``: ``search=fast`` as it is now (stopped candidates drawn again, the
  best verified from scratch, fresh weights after an optimizer mutation);
* ``random``: 20 random networks with ``search=fast``'s per-candidate
  protocol (``evolution.generations=1 evolution.offspring=20``), as the
  issue's random column.

Every run goes through the command lines (``python -m spenser_jax.evolve``,
``python -m spenser_jax.retrain --from-scratch --epochs 3``); a run directory
already finished is only read, so the script resumes. Reported per run:
candidates and how many ended at chance (fitness <= 0.12), the stopped ones
drawn again, the end's check from scratch, best fitness, test accuracy and
the compute (``train_samples_total``, at the quick preset's T = 4). At this
size an epoch is 22 steps, under search.min_steps, so every candidate trains
the whole epoch and the early check comes at step 20 of 22: a stopped
candidate costs almost a whole one, and the arms do *not* spend equal
compute; the ratio is printed. The issue's comparison at scale is
``benchmarks/search_quality.py``.

    python benchmarks/fast_rules_quick.py --work /tmp/fast_rules     # ~30 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "old": ["search=fast", "search.redraw_stopped=0", "search.verify_best=0", "search.fresh_on_learning_change=false"],
    "new": ["search=fast"],
    "random": ["search=fast", "evolution.generations=1", "evolution.offspring=20"],
}
CHANCE = 0.12


def run(arm: str, seed: int, work: Path) -> Path:
    d = work / arm / f"seed{seed}"
    if not (d / "test.json").exists():
        args = ["preset=quick", "dataset=fmnist", f"seed={seed}", *ARMS[arm], "runtime.progress=false"]
        subprocess.run([sys.executable, "-m", "spenser_jax.evolve", *args, f"hydra.run.dir={d}"], cwd=ROOT, check=True)
        subprocess.run(
            [sys.executable, "-m", "spenser_jax.retrain", str(d), "--from-scratch", "--epochs", "3"],
            cwd=ROOT,
            check=True,
        )
    return d


def summary(arm: str, seed: int, d: Path) -> dict:
    records = [json.loads(line) for line in (d / "generations.jsonl").read_text().splitlines()]
    individuals = [i for r in records for i in r["individuals"]]
    redrawn = [x for r in records for x in r.get("redrawn", [])]
    verified = [x for r in records for x in r.get("verified", [])]
    best = json.loads((d / "best.json").read_text())
    return {
        "arm": arm,
        "seed": seed,
        "candidates": len(individuals),
        "at_chance": sum(i["fitness"] <= CHANCE for i in individuals),
        "redrawn": len(redrawn),
        "redrawn_at_chance": sum(x["fitness"] <= CHANCE for x in redrawn),
        "verified": [{"from_scratch_fitness": v["from_scratch_fitness"], "learns": v["learns"]} for v in verified],
        "best_fitness": best["fitness"],
        "best_learns_from_scratch": best.get("learns_from_scratch"),
        "test_accuracy": json.loads((d / "test.json").read_text())["accuracy"],
        "train_samples_total": records[-1]["train_samples_total"],
        "wall_seconds": sum(r["wall_seconds"] for r in records),
    }


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "fast_rules_quick")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load_before = common.load_average()
    rows = [summary(arm, seed, run(arm, seed, args.work)) for seed in args.seeds for arm in ARMS]
    for r in rows:
        print(
            f"{r['arm']:7s} seed {r['seed']}: {r['at_chance']:2d} of {r['candidates']} at chance, "
            f"{r['redrawn']:2d} redrawn, best fitness {r['best_fitness']:.3f}, test {r['test_accuracy']:.3f}, "
            f"compute {r['train_samples_total']}"
        )
    per_arm = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        per_arm[arm] = {
            "test_accuracy": mean_sd([r["test_accuracy"] for r in mine]),
            "at_chance_share": sum(r["at_chance"] for r in mine) / sum(r["candidates"] for r in mine),
            "compute_over_old": statistics.mean(
                r["train_samples_total"] / o["train_samples_total"]
                for r in mine
                for o in rows
                if o["arm"] == "old" and o["seed"] == r["seed"]
            ),
        }
        test = per_arm[arm]["test_accuracy"]
        print(
            f"{arm:7s}: test {test['mean']:.3f} ± {test['stdev']:.3f}, "
            f"{per_arm[arm]['at_chance_share']:.0%} at chance, compute {per_arm[arm]['compute_over_old']:.2f}x old's"
        )
    payload = {**common.header("fast_rules_quick", load_before), "arms": ARMS, "per_arm": per_arm, "runs": rows}
    print(f"wrote {common.write_result('fast_rules_quick', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
