"""Projected wall time of the paper's runs (200 generations, λ = 10) from measured costs.

Reads the latest ``generation_throughput_*.json`` and ``compile_time_*.json``
(and, for a cross-check, ``train_throughput_*.json``) of one backend in a
results folder, and projects, per evaluation variant (``none``, ``map:N``,
``vmap``...), the hours of a 200-generation run on full MNIST (T = 10) and
Fashion-MNIST (T = 25): 42,000 EvoTrain + 18,000 Fitness samples, one epoch.
Imports no JAX; takes a second.

Model, per generation, for a variant measured on one generation of λ
offspring with ``S`` train samples at ``T_run``:

* training ``R(T) = run_s × (60000 / S) × (T / T_run)``: the variant's
  measured device time (sum of ``train_seconds``) scaled per sample and time
  step;
* compiling ``C(T) = λ × (1 − seen) × c(T)``: ``c(T)`` is the compile time
  of one new signature at ``T`` (``compile_time.py``; the ``fused`` program
  for the batched variants, the ``separate`` init/epoch/scoring programs for
  ``none``), ``seen`` the measured share of offspring whose signature an
  earlier generation already compiled (program caches);
* overlap: without compile threads (``none``, ``map:0``) compile and
  training add up, ``C + R``; with ``k`` threads the first program compiles
  alone and the rest overlap training, ``c + max(R, (C − c) / k)``;
* host overhead ``H``: the variant's measured wall time minus this model at
  the measured sizes (at least 0), added as it is.

Hours = 200 × (model + H) / 3600. Where a ``c(T)`` was not measured the
nearest measured ``T`` is scaled linearly by ``T`` for ``stepwise`` (unrolled)
and kept as it is otherwise, and the JSON says so.

Usage::

    python benchmarks/paper_projection.py --results benchmarks/results --backend gpu

Results: ``<out>/paper_projection_<backend>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PAPER = {"mnist": 10, "fmnist": 25}
FULL_SAMPLES = 60_000
GENERATIONS = 200
OFFSPRING = 10


def latest(folder: Path, stem: str) -> Path | None:
    """The newest ``<stem>_<YYYY-MM-DD>.json`` in ``folder`` (None: there is none)."""
    pattern = re.compile(re.escape(stem) + r"_\d{4}-\d{2}-\d{2}\.json")
    files = [f for f in folder.glob(f"{stem}_*.json") if pattern.fullmatch(f.name)]
    return max(files, key=lambda f: (f.name, f.stat().st_mtime), default=None)


def compile_per_signature(
    compile_result: dict | None, path: str, t: int, default_mode: str | None
) -> tuple[float | None, str]:
    """``c(T)`` for ``path`` from a compile_time result, and where it came from."""
    by_t = ((compile_result or {}).get("per_signature_s") or {}).get(path) or {}
    if str(t) in by_t:
        return by_t[str(t)]["mean_s"], f"measured at T={t}"
    if not by_t:
        return None, "not measured"
    nearest = min(by_t, key=lambda x: abs(int(x) - t))
    value = by_t[nearest]["mean_s"]
    if default_mode == "stepwise":
        return value * t / int(nearest), f"T={nearest} scaled by T (stepwise unrolls)"
    return value, f"T={nearest} (rolled time loop: compile barely depends on T)"


def pipeline(compile_total: float, per_program: float, run: float, threads: int) -> float:
    """Wall time of one generation: compile and training, overlapped by ``threads``."""
    if threads <= 0 or compile_total <= 0:
        return compile_total + run
    first = min(per_program, compile_total)
    return first + max(run, (compile_total - first) / threads)


def project(generation: dict, compile_result: dict | None) -> dict:
    """Per variant and data set: hours of the paper's run (see the module docstring)."""
    settings = generation["settings"]
    subset, t_run = settings["subset"], settings["time_steps"]
    lam = settings["offspring"]
    seen = generation["signature_sharing"]["exact"]["seen_before_share"]
    default_mode = (compile_result or {}).get("settings", {}).get("default_mode")
    out = {}
    for name, v in generation["variants"].items():
        if "error" in v:
            out[name] = {"error": v["error"]}
            continue
        batching = v.get("batching") or name.split(":")[0].split("@")[0].split("/")[0]
        threads = 0 if batching == "none" else int(v.get("compile_threads") or 0)
        programs = max(1, int(v.get("programs_compiled") or lam))
        measured_c = v["compile_s"] / programs  # per program at T_run, as measured
        host = max(0.0, v["wall_s"] - pipeline(v["compile_s"], measured_c, v["run_s"], threads))
        path = "separate" if batching == "none" else "fused"
        c_run, _ = compile_per_signature(compile_result, path, t_run, default_mode)
        rows = {}
        for dataset, t in PAPER.items():
            c_t, source = compile_per_signature(compile_result, path, t, default_mode)
            if c_t is None:  # no compile_time result: the generation's own figure
                c_t, source = (v["compile_s"] / lam, "the generation's own compile time (T_run)")
            run = v["run_s"] * FULL_SAMPLES / subset * t / t_run
            compile_total = OFFSPRING * (1 - seen) * c_t
            per_gen = pipeline(compile_total, c_t, run, threads) + host
            rows[dataset] = {
                "time_steps": t,
                "train_s_per_generation": run,
                "compile_s_per_new_signature": c_t,
                "compile_source": source,
                "compile_s_per_generation": compile_total,
                "host_overhead_s_per_generation": host,
                "seconds_per_generation": per_gen,
                "hours_200_generations": GENERATIONS * per_gen / 3600,
                "hours_training_only": GENERATIONS * run / 3600,
                "train_us_per_sample_and_step": 1e6 * v["run_s"] / (lam * subset * t_run),
            }
        out[name] = {
            "batching": batching,
            "compile_threads": threads,
            "measured": {
                "wall_s": v["wall_s"],
                "run_s": v["run_s"],
                "compile_s": v["compile_s"],
                "programs": programs,
                "compile_s_at_T_run_per_signature": c_run,
            },
            **rows,
        }
    return out


def reference_check(train: dict | None) -> dict | None:
    """Hours if every offspring trained like the reference CSNN (training only, no scoring)."""
    if not train:
        return None
    default = train["settings"].get("default_mode")
    out = {}
    for dataset, t in PAPER.items():
        rows = [
            r
            for r in train["results"]
            if r["time_steps"] == t and r["framework"] == "spenser_jax" and r["label"] == default
        ]
        if rows:
            per_ind = 0.7 * FULL_SAMPLES / rows[0]["samples_per_s"]
            out[dataset] = {
                "samples_per_s": rows[0]["samples_per_s"],
                "mode": default,
                "hours_200_generations": GENERATIONS * OFFSPRING * per_ind / 3600,
            }
    return out or None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder to read (default benchmarks/results)")
    parser.add_argument(
        "--tag", default="cpu", help="read <benchmark>_<tag>_<date>.json, e.g. cpu, gpu, cpu_quick (default cpu)"
    )
    parser.add_argument("--generation", default=None, help="a generation_throughput JSON (default: latest)")
    parser.add_argument("--compile", default=None, help="a compile_time JSON (default: latest)")
    parser.add_argument("--train", default=None, help="a train_throughput JSON (default: latest)")
    parser.add_argument("--out", default=None, help="result folder (default: --results)")
    parser.add_argument("--name", default=None, help="result stem (default paper_projection_<tag>)")
    args = parser.parse_args(argv)
    folder = Path(args.results)

    def pick(given, stem):
        return Path(given) if given else latest(folder, f"{stem}_{args.tag}")

    gen_path = pick(args.generation, "generation_throughput")
    if gen_path is None:
        print(f"no generation_throughput_{args.tag}_<date>.json in {folder}", file=sys.stderr)
        return 1
    comp_path, train_path = pick(args.compile, "compile_time"), pick(args.train, "train_throughput")
    generation = json.loads(gen_path.read_text())
    if "variants" not in generation:
        print(f"{gen_path.name} holds no measurement: {generation.get('error', '?')}", file=sys.stderr)
        return 1
    compile_result = json.loads(comp_path.read_text()) if comp_path else None
    train = json.loads(train_path.read_text()) if train_path else None
    projection = project(generation, compile_result)
    for name, p in projection.items():
        if "error" in p:
            print(f"{name:>10}: no projection ({p['error'][:80]})")
            continue
        print(
            f"{name:>10}: "
            + ", ".join(
                f"{d} T={p[d]['time_steps']} {p[d]['hours_200_generations']:.1f} h "
                f"(training {p[d]['hours_training_only']:.1f} h)"
                for d in PAPER
            ),
            flush=True,
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common  # imports jax (no backend starts): only to write the result

    payload = {
        "benchmark": "paper_projection",
        # Where the inputs were measured (this script only computes).
        "machine": generation["machine"],
        "versions": generation["versions"],
        "load_average": generation.get("load_average"),
        "inputs": {
            "generation_throughput": str(gen_path),
            "compile_time": str(comp_path) if comp_path else None,
            "train_throughput": str(train_path) if train_path else None,
            "data": generation["settings"].get("data"),
            "measured_generation": {
                k: generation["settings"].get(k) for k in ("dataset", "subset", "time_steps", "offspring")
            },
            "seen_before_share": generation["signature_sharing"]["exact"]["seen_before_share"],
        },
        "paper": {
            "generations": GENERATIONS,
            "offspring": OFFSPRING,
            "samples": FULL_SAMPLES,
            "time_steps": PAPER,
            "epochs": 1,
        },
        "method": __doc__.split("Model, ", 1)[1].split("Usage::")[0].strip(),
        "projection": projection,
        "reference_network_training_only": reference_check(train),
    }
    print("wrote", common.write_result(args.name or f"paper_projection_{args.tag}", payload, args.out or folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
