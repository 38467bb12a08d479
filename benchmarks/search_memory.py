"""Host memory of a search's first generation of random draws, under each way of keeping it.

Random draws from Grammar 2 include networks whose convolutions keep the
image's size (no pooling, ``same`` padding, up to 128 filters): programs per
block hand each block's whole time sequence to the next, so scoring such a
network on a batch of ``training.eval_batch_size`` images holds several GB.
With host memory kept (``runtime.keep_host_memory``, on for ``search=fast``
on a CPU) the one heap that glibc then uses is trimmed only from its top,
and a process that met a few of them stayed at its peak: the first cell of
``search_quality.py`` was OOM-killed at 17.8 GB. Each setting runs the same
command (``evolve`` with ``evolution.strategy=random search=fast``, one
generation) in a process of its own; its resident memory is sampled every
second:

* ``kept_unreleased``: memory kept, nothing handed back between candidates
  (the code before :func:`spenser_jax.scheduler.resources.release_host_memory`,
  restored in the child by replacing that function with a no-op);
* ``kept``: today's default, memory kept and released after each candidate;
* ``kept_eval250``: the same with ``training.eval_batch_size=250`` (fitness
  is a count of correct answers: it does not depend on the scoring batch).

Writes ``results/search_memory_<date>.json``: per setting the peak and the
median resident memory, the resident memory when the generation ended, wall
time and the generation's best fitness.

    python benchmarks/search_memory.py                  # MNIST subset 3,000, seed 11, λ = 8: ~25 min a setting here
    python benchmarks/search_memory.py --quick          # subset 300, λ = 2: a smoke test
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SETTINGS = {
    "kept_unreleased": [],
    "kept": [],
    "kept_eval250": ["training.eval_batch_size=250"],
}
# The child: the evolve command line, with release_host_memory a no-op where the setting says so.
CHILD = """
import sys
from spenser_jax.scheduler import dispatch
if sys.argv.pop(1) == "unreleased":
    dispatch.release_host_memory = lambda: None
from spenser_jax import evolve
sys.argv[0] = "spenser_jax.evolve"
evolve._hydra_main()
"""


def resident_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def run_setting(name: str, overrides: list[str], run_dir: Path) -> dict:
    mode = "unreleased" if name == "kept_unreleased" else "released"
    cmd = [sys.executable, "-c", CHILD, mode, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[float] = []

    def sample():
        while proc.poll() is None:
            samples.append(resident_gb(proc.pid))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: evolve exited {proc.returncode}:\n{err[-3000:]}")
    (record,) = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    result = {
        "overrides": overrides,
        "peak_resident_gb": round(max(samples), 2),
        "median_resident_gb": round(statistics.median(samples), 2),
        "last_resident_gb": round(samples[-1], 2),
        "wall_seconds": round(wall, 1),
        "candidates": len(record["individuals"]) + len(record.get("redrawn", [])),
        "best_fitness": record["best_fitness"],
    }
    print(
        f"{name:16s} peak {result['peak_resident_gb']:5.2f} GB  median {result['median_resident_gb']:5.2f} GB  "
        f"{wall:6.0f} s  best {record['best_fitness']:.4f}",
        flush=True,
    )
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--subset", type=int, default=3000)
    parser.add_argument("--offspring", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--jobs", type=int, default=1, help="settings run side by side (mind the memory)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.subset, args.offspring = 300, 2
    base = [
        "dataset=mnist",
        f"dataset.subset={args.subset}",
        "search=fast",
        "evolution.strategy=random",
        "evolution.generations=1",
        f"evolution.offspring={args.offspring}",
        f"seed={args.seed}",
        "runtime.progress=false",
        "runtime.keep_host_memory=true",
        "search.verify_best=0",
    ]
    load_before = common.load_average()
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {n: pool.submit(run_setting, n, base + SETTINGS[n], Path(tmp) / n) for n in args.settings}
        results = {n: f.result() for n, f in futures.items()}
    fitness = {r["best_fitness"] for r in results.values()}
    payload = {
        **common.header("search_memory", load_before),
        "command": base,
        "settings": results,
        "same_best_fitness": len(fitness) == 1,
        "jobs": args.jobs,
        "note": "resident memory sampled once a second; wall times from a loaded machine (other work on both cores)",
    }
    if not args.quick:
        print("wrote", common.write_result("search_memory", payload, args.out))


if __name__ == "__main__":
    main()
