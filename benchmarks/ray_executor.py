"""The Ray executor's overhead and scaling: one generation locally, on 1 Ray worker and on N.

The same generation-0 individuals (``--offspring`` of Grammar 2, MNIST subset
``--subset``, T = ``--time-steps``, the paper's protocol) are evaluated

* ``local``: the local executor (``runtime.executor=local``, batching ``map``);
* ``ray_1``: one Ray worker on a local Ray instance: the engine's overhead
  (data through the object store, a worker process, one individual per task);
* ``ray_N``: ``--workers`` Ray workers: the scaling on this host's cores.

Each in a fresh process with the persistent compile cache off, so every path
compiles what it runs. Reported: wall seconds of each, ``ray_1 / local``
(overhead) and ``ray_1 / ray_N`` (speed-up), whether every fitness equals the
local one, and the makespan N workers would reach with no overhead (the
individuals' measured train and compile seconds, longest first, onto the
least loaded worker), for comparison with the measured one and as the
projection to more workers than this host has. Writes
``results/ray_executor_<date>.json``.

    python benchmarks/ray_executor.py             # ~10 minutes on 2 cores
    python benchmarks/ray_executor.py --quick     # a smoke test of the script
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def makespan(durations: list[float], workers: int) -> float:
    """Longest-first onto the least loaded worker: a schedule's length with no overhead."""
    loads = [0.0] * workers  # a min-heap: the least loaded worker first
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


CHILD = r"""
import json, sys, time
from hydra import compose, initialize_config_dir
from spenser_jax import evolve
from spenser_jax.search import one_plus_lambda
from spenser_jax.genome import mutation
args = json.loads(sys.argv[1])
with initialize_config_dir(config_dir=str(evolve.CONFIG_DIR), version_base="1.3"):
    cfg = compose("config", overrides=args["overrides"])
s = evolve.setup(cfg)
rng = evolution.generation_rng(s.seed, 0)
phenotypes = [s.space.phenotype(mutation.sample(rng, s.space, s.mutation)) for _ in range(args["offspring"])]
if args["path"] == "local":
    from spenser_jax.scheduler import Evaluator
    evaluator = Evaluator(s.splits, seed=s.seed, input_shape=s.space.input_shape, protocol=s.protocol, **s.runtime)
else:
    import ray
    from spenser_jax.scheduler.ray_executor import RayEvaluator
    ray.init(num_cpus=args["workers"], include_dashboard=False, log_to_driver=False)
    options = {k: v for k, v in s.runtime.items() if k != "progress"}
    evaluator = RayEvaluator(s.splits, seed=s.seed, input_shape=s.space.input_shape, protocol=s.protocol,
                             workers=args["workers"], evaluator_options=options)
    evaluator.worker_pids()  # the workers are up: their start is a one-off, not per generation
t0 = time.perf_counter()
evaluations = evaluator.evaluate(phenotypes, generation=0)
wall = time.perf_counter() - t0
print(json.dumps({"wall_seconds": wall,
                  "fitness": [e.fitness for e in evaluations],
                  "busy_seconds": [e.train_seconds + e.compile_seconds for e in evaluations]}))
"""


def run(path: str, args, workers: int = 1) -> dict:
    overrides = [
        f"dataset.subset={args.subset}",
        f"dataset.time_steps={args.time_steps}",
        "runtime.progress=false",
        "runtime.compile_cache=null",
    ]
    payload = json.dumps({"overrides": overrides, "offspring": args.offspring, "path": path, "workers": workers})
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{path} ({workers} workers) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    print(f"  {path:>5} x{workers}: {result['wall_seconds']:.1f} s", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--offspring", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three paths, alternating")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="ray_executor")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.subset, args.time_steps, args.offspring, args.repeats = 200, 2, 3, 1
    load_before = common.load_average()
    rounds = []
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats}", flush=True)
        rounds.append(
            {
                "local": run("local", args),
                "ray_1": run("ray", args, 1),
                f"ray_{args.workers}": run("ray", args, args.workers),
            }
        )
    n = f"ray_{args.workers}"
    overhead = [x["ray_1"]["wall_seconds"] / x["local"]["wall_seconds"] for x in rounds]
    speedup = [x["ray_1"]["wall_seconds"] / x[n]["wall_seconds"] for x in rounds]
    ideal = [makespan(x["ray_1"]["busy_seconds"], args.workers) for x in rounds]
    identical = all(x["ray_1"]["fitness"] == x["local"]["fitness"] == x[n]["fitness"] for x in rounds)
    summary = {
        "overhead_ray_1_over_local": {"values": overhead, "min": min(overhead), "max": max(overhead)},
        f"speedup_ray_1_over_{n}": {"values": speedup, "min": min(speedup), "max": max(speedup)},
        f"ideal_makespan_{n}_seconds": ideal,
        f"measured_{n}_seconds": [x[n]["wall_seconds"] for x in rounds],
        "fitness_identical": identical,
    }
    print(json.dumps(summary, indent=1))
    path = common.write_result(
        args.name,
        {**common.header("ray_executor", load_before), "settings": vars(args), "summary": summary, "rounds": rounds},
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
