"""A generation of ours against a generation of the original's engine (a torch + snntorch twin).

The same generation (λ = ``--offspring`` individuals drawn from Grammar 2 with
a fixed seed, as a run draws generation 0) is evaluated with the paper's
protocol (1 epoch, batch 64, accuracy on the Fitness split; MNIST at T = 10,
Fashion-MNIST at T = 25) by

* ``twin``: the original's evaluator re-created in torch + snntorch
  (:mod:`twin_torch`, layers from :mod:`twin_layers`): candidates one after
  another in one process, torch's threads as torch sets them (the original
  never sets them), nothing to compile. The original also starts a process
  per individual; the twin does not, which only favours it;
* ours, with ``--variants``: ``default`` (``python -m spenser_jax.evolve``'s
  runtime defaults) and the levers of :data:`VARIANTS` (the time-loop order,
  compile threads, per-block programs, Ray workers side by side).

Each engine runs in a fresh process per generation (ours with the persistent
compile cache off, so it pays every compile a new generation pays), and the
repeats rotate the order of the engines so that a change in the shared
machine's load hits them alike; the JSON keeps every round and reports the
per-round ratio twin seconds / ours (``speedup``) with its spread. A
generation's seconds run from the first candidate's build to the last score
(process start, imports and data loading excluded for both).

``--check`` first checks the twin (:mod:`original_engine_check`): for each of
the generation's architectures, ours and the twin from equal weights on equal
input spikes give the same output spikes (or at most 0.5 % flipped at a
threshold); for the ``--check-networks`` cheapest, the accuracies after one
epoch over ``--check-seeds`` seeds each agree within the seeds' spread. It
needs jax and torch in one environment.

``--twin-memory-gib`` caps the twin's address space, so that a candidate that
needs more fails alone (scored -1, as the original scores an out-of-memory)
instead of the kernel killing the generation. Each engine's peak resident
memory is recorded (ours: the driver process; Ray workers are not counted).

Usage (torch + snntorch in a venv of their own, e.g. /work/venvs/torch)::

    V=/work/venvs/torch/bin/python
    python benchmarks/original_engine.py --twin-python $V                # the paper's 60,000 images: hours
    python benchmarks/original_engine.py --twin-python $V --datasets mnist --subset 500 --variants default,ray2
    python benchmarks/original_engine.py --twin-python $V --quick        # 4 candidates, 1,000 images: minutes
    $V benchmarks/original_engine.py --check                             # ~20 min here

Results: ``<out>/<--name or original_engine[_quick]>_<date>.json``
(``original_engine_check[_quick]`` for ``--check``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path)
import numpy as np

MARK = "RESULT-JSON:"
PAPER_T = {"mnist": 10, "fmnist": 25}
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
VARIANTS = {
    "default": {},
    "stepwise": {"mode": "stepwise"},
    "layerwise": {"mode": "layerwise"},
    "no_overlap": {"runtime": {"compile_threads": 0}},
    "compile2": {"runtime": {"compile_threads": 2}},
    "layer": {"runtime": {"compile_unit": "layer"}},
    "ray2": {"runtime": {"executor": "ray", "ray_workers": 2, "ray_cpus": 1}},
    "ray2_layer": {"runtime": {"executor": "ray", "ray_workers": 2, "ray_cpus": 1, "compile_unit": "layer"}},
    "ray2_1t": {"runtime": {"executor": "ray", "ray_workers": 2, "ray_cpus": 1}, "env": {"XLA_FLAGS": ONE_THREAD}},
    "devices2": {"env": {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}},
}
"""Our settings measured: ``mode`` is the time-loop order (``Protocol.mode``), ``runtime`` the ``runtime.*`` keys,
``env`` the environment of the process (XLA's flags: two host devices, one thread per process)."""


def draw_generation(seed: int, offspring: int):
    """Generation 0 of a run with ``seed`` on Grammar 2: ``offspring`` phenotypes."""
    import spenser_jax
    from spenser_jax.genome import mutation
    from spenser_jax.genome.space import SearchSpace
    from spenser_jax.search import one_plus_lambda

    space = SearchSpace(spenser_jax.load_grammar("grammars/csnn.grammar"))
    state = one_plus_lambda.init(seed)
    drawn = one_plus_lambda.ask(
        one_plus_lambda.generation_rng(seed, 0), state, space, mutation.MutationConfig(), offspring
    )
    return [space.phenotype(c.genotype) for c in drawn]


def protocol(spec: dict, mode: str | None = None):
    from spenser_jax.training.protocol import Protocol

    return Protocol(time_steps=spec["time_steps"], epochs=1, batch_size=64, eval_batch_size=1000, mode=mode)


# --------------------------------------------------------------------------
# Workers, one generation each in a fresh process


def ours_worker(spec: dict) -> dict:
    import jax

    from spenser_jax import scheduler
    from spenser_jax.run import runtime as runtime_mod

    variant = VARIANTS[spec["variant"]]
    rt = {"progress": False, **variant.get("runtime", {})}
    common.keep_host_memory_as_the_cli([f"runtime.{k}={v}" for k, v in rt.items()])
    jax.config.update("jax_enable_compilation_cache", False)
    phenotypes = draw_generation(spec["seed"], spec["offspring"])
    splits, _ = common.load_splits(spec["dataset"], spec["seed"], spec["subset"])
    options, executor = runtime_mod.runtime_options(rt), runtime_mod.executor_options(rt)
    args = dict(seed=spec["seed"], input_shape=(28, 28, 1), protocol=protocol(spec, variant.get("mode")))
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3)))  # backend start-up
    if executor["name"] == "ray":
        from spenser_jax.scheduler.ray_executor import RayEvaluator

        options.pop("devices")
        evaluator = RayEvaluator(
            splits,
            **args,
            cpus=executor["cpus"],
            workers=executor["workers"],
            evaluator_options=options,
            keep_host_memory=executor["keep_host_memory"],
        )
        # Workers started before the clock: a run's cost, not a generation's.
        evaluator.ray.get([a.pid.remote() for a in evaluator.actors])
    else:
        evaluator = scheduler.Evaluator(splits, **args, **options)
    with evaluator:
        start = time.perf_counter()
        results = evaluator.evaluate(phenotypes, generation=0)
        wall = time.perf_counter() - start
    return {
        "engine": f"ours:{spec['variant']}",
        "generation_seconds": wall,
        "compile_seconds": sum(e.compile_seconds for e in results),
        "train_seconds": sum(e.train_seconds for e in results),
        "accuracies": [e.fitness for e in results],
        "statuses": [e.status for e in results],
        "compile_unit": options.get("compile_unit"),
        "peak_rss_gib": peak_rss_gib(),
        "executor": executor["name"],
    }


def peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def twin_worker(spec: dict) -> dict:
    if spec.get("memory_gib"):
        # A candidate that needs more fails alone (scored -1, as the original's out-of-memory case) instead of
        # the kernel killing the generation on a shared host.
        import resource

        limit = int(spec["memory_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch
    import twin_torch

    device = spec.get("torch_device") or ("cuda" if torch.cuda.is_available() else "cpu")
    phenotypes = draw_generation(spec["seed"], spec["offspring"])
    splits, _ = common.load_splits(spec["dataset"], spec["seed"], spec["subset"])
    train = twin_torch.to_tensors(splits.evo_train.images, splits.evo_train.labels, device)
    fitness = twin_torch.to_tensors(splits.fitness.images, splits.fitness.labels, device)
    start = time.perf_counter()
    rows = [
        twin_torch.evaluate(
            p, train, fitness, time_steps=spec["time_steps"], seed=spec["seed"] * 1000 + i, device=device
        )
        for i, p in enumerate(phenotypes)
    ]
    wall = time.perf_counter() - start
    return {
        "engine": "twin",
        "generation_seconds": wall,
        "compile_seconds": 0.0,
        "train_seconds": sum(r["train_seconds"] for r in rows),
        "candidate_seconds": [r["seconds"] for r in rows],
        "accuracies": [r["fitness"] for r in rows],
        "statuses": [r["status"] for r in rows],
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "peak_rss_gib": peak_rss_gib(),
        "memory_limit_gib": spec.get("memory_gib"),
        "versions": {"torch": torch.__version__, "snntorch": twin_torch.snn.__version__},
    }


def twin_missing(python: str) -> str | None:
    """Why ``python`` cannot run the twin (None: it can)."""
    proc = subprocess.run(
        [python, "-c", "import torch, snntorch, numpy"], capture_output=True, text=True, check=False, timeout=300
    )
    return None if proc.returncode == 0 else f"{python}: {proc.stderr.strip().splitlines()[-1][:200]}"


def run_worker(python: str, kind: str, spec: dict, timeout: float | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.ROOT), os.environ.get("PYTHONPATH", "")])}
    for key, value in VARIANTS.get(spec.get("variant"), {}).get("env", {}).items():
        env[key] = f"{env.get(key, '')} {value}".strip()
    try:
        proc = subprocess.run(
            [python, __file__, f"--{kind}-worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            cwd=common.ROOT,
            env=env,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"engine": kind, "error": f"stopped after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return {"engine": kind, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}


# --------------------------------------------------------------------------
# The comparison


def ratio_spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
        "count": len(values),
    }


def summarise(rounds: list[dict], engines: list[str], samples: int) -> dict:
    """Per engine: median generation seconds, compile share, samples/s, accuracies; speedups per round."""
    out = {}
    for name in engines:
        rows = [r[name] for r in rounds if "error" not in r.get(name, {"error": 1})]
        if not rows:
            out[name] = {"error": next((r[name].get("error") for r in rounds if name in r), "not run")}
            continue
        secs = [r["generation_seconds"] for r in rows]
        median = statistics.median(secs)
        compile_s = statistics.median([r["compile_seconds"] for r in rows])
        accs = rows[0]["accuracies"]
        out[name] = {
            "generation_seconds": median,
            "generation_seconds_rounds": secs,
            "compile_seconds": compile_s,
            "compile_share": compile_s / median,
            "samples_per_second": samples / median,
            "accuracies": accs,
            "mean_accuracy": float(np.mean([a for a in accs if a >= 0])) if any(a >= 0 for a in accs) else None,
            "failed": sum(s != "ok" for s in rows[0]["statuses"]),
        }
    for name in engines:
        if name != "twin" and "generation_seconds" in out.get(name, {}) and "generation_seconds" in out.get("twin", {}):
            ratios = [
                r["twin"]["generation_seconds"] / r[name]["generation_seconds"]
                for r in rounds
                if "error" not in r.get("twin", {"error": 1}) and "error" not in r.get(name, {"error": 1})
            ]
            out[name]["speedup"] = ratio_spread(ratios)
    return out


def compare(args, dataset: str, rounds_out: list, payload: dict, path_name: str) -> dict:
    t = args.time_steps or PAPER_T[dataset]
    spec = {"dataset": dataset, "seed": args.seed, "subset": args.subset, "offspring": args.offspring, "time_steps": t}
    spec["torch_device"] = None if args.torch_device == "auto" else args.torch_device
    spec["memory_gib"] = args.twin_memory_gib
    engines = ["twin", *args.variants]
    missing = twin_missing(args.twin_python)
    if missing:  # ours alone, once: no ratio to give
        print(f"twin skipped: {missing}", flush=True)
        engines, repeats = engines[1:], 1
        payload["twin_skipped"] = missing
    else:
        repeats = args.repeats
    for r in range(repeats):
        shift = r % len(engines)
        order = engines[shift:] + engines[:shift]
        row = {"round": r, "order": order}
        for name in order:
            if name == "twin":
                row[name] = run_worker(args.twin_python, "twin", spec, args.timeout_s)
            else:
                row[name] = run_worker(sys.executable, "ours", {**spec, "variant": name}, args.timeout_s)
            row[name]["load_average"] = common.load_average()
            seconds = row[name].get("generation_seconds", row[name].get("error"))
            print(f"{dataset} round {r} {name}:", seconds, flush=True)
        rounds_out.append(row)
        common.write_result(path_name, payload, args.out)
    samples = args.offspring * (args.subset or 60_000)
    summary = summarise(rounds_out, engines, samples)
    twin_rows = [r["twin"] for r in rounds_out if "versions" in r.get("twin", {})]
    if twin_rows:
        payload["versions"] |= twin_rows[0]["versions"]
        payload["twin_device"] = twin_rows[0]["device"]
        payload["twin_torch_threads"] = twin_rows[0]["torch_threads"]
    twin = summary.get("twin", {"skipped": missing})
    best = min(
        (v for v in args.variants if "speedup" in summary.get(v, {})),
        key=lambda v: summary[v]["generation_seconds"],
        default=None,
    )
    result = {"time_steps": t, "twin": twin, "ours": summary.get("default"), "variants": summary, "best": best}
    if best is not None:
        result["ours_best"] = summary[best]
        result["speedup"] = summary["default"]["speedup"]["median"] if "speedup" in summary.get("default", {}) else None
        result["speedup_best"] = summary[best]["speedup"]["median"]
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="A generation of ours against the original's engine (module docstring)")
    p.add_argument("--datasets", default="mnist,fmnist")
    p.add_argument("--subset", type=int, default=None, help="train images in use (70%% EvoTrain); default: all 60,000")
    p.add_argument("--offspring", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-steps", type=int, default=None, help="default: the paper's per data set")
    p.add_argument("--variants", default="default,layer,ray2,ray2_layer", help=f"of {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per engine and generation")
    p.add_argument("--twin-python", default=sys.executable, help="a python with torch + snntorch (and numpy)")
    p.add_argument(
        "--torch-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="the twin's (auto: CUDA if seen)",
    )
    p.add_argument(
        "--twin-memory-gib", type=float, default=None, help="cap the twin's address space: a candidate over it fails"
    )
    p.add_argument("--quick", action="store_true", help="4 offspring, 1,000 images, 1 round")
    p.add_argument("--check", action="store_true", help="check the twin against ours instead (module docstring)")
    p.add_argument("--check-networks", type=int, default=5)
    p.add_argument("--check-seeds", type=int, default=3)
    p.add_argument("--check-gain", type=float, default=4.0)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None, help="result file stem (default original_engine[_quick])")
    p.add_argument("--ours-worker")
    p.add_argument("--twin-worker")
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if args.quick:
        args.offspring, args.subset, args.repeats = min(args.offspring, 4), args.subset or 1000, 1
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    for kind, fn in (("ours", ours_worker), ("twin", twin_worker)):
        spec = getattr(args, f"{kind}_worker")
        if spec:
            print(MARK + json.dumps(fn(json.loads(spec)), default=float), flush=True)
            return
    if args.check:
        import original_engine_check

        original_engine_check.main(args)
        return
    name = args.name or "original_engine" + ("_quick" if args.quick else "")
    payload = common.header("original_engine", common.load_average())
    payload["settings"] = {k: v for k, v in vars(args).items() if not k.endswith("_worker")}
    payload["settings"]["data_size"] = (
        f"{args.subset or 60_000} train images: {round((args.subset or 60_000) * 0.7)} EvoTrain (trained one epoch), "
        f"{round((args.subset or 60_000) * 0.3)} Fitness (scored)"
    )
    payload["rounds"], payload["results"] = {}, {}
    for dataset in args.datasets.split(","):
        payload["rounds"][dataset] = []
        payload["results"][dataset] = compare(args, dataset, payload["rounds"][dataset], payload, name)
        payload["load_average"]["after"] = common.load_average()
        path = common.write_result(name, payload, args.out)
        r = payload["results"][dataset]
        print(json.dumps({k: r.get(k) for k in ("time_steps", "speedup", "best", "speedup_best")}), flush=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
