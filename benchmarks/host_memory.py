"""Training speed with the C allocator keeping freed memory (``runtime.keep_host_memory``) against glibc's default.

XLA:CPU allocates a program's buffers at every call; by default glibc gives
large blocks mappings of their own and unmaps them when freed, so each call
faults its pages in again and the kernel zeroes them (system time).
:func:`spenser_jax.scheduler.keep_host_memory` makes glibc keep and reuse
them. The setting is per process and must come before the backend starts,
so each setting runs in processes of its own, alternating
(``--repeats`` of each). A process evaluates the same architectures (a
lineage of Grammar 2, as ``compile_cost.py`` walks it) through both compile
units, one program per network and programs per block
(``runtime.compile_unit=layer``), and records per architecture the best of
three warm runs of one epoch plus the scoring, with the minor page faults,
user and system seconds of the best run, and the process's peak memory.

    python benchmarks/host_memory.py                 # 6 architectures at T = 4 (preset=quick's shapes), ~10 min
    python benchmarks/host_memory.py --quick         # 2 small ones at T = 2, a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spenser_jax.training import blocks

SETTINGS = ("system", "keep")
CHILD_ARGS = ("archs", "seed", "time_steps", "batch_size", "train_samples", "fitness_samples")  # passed to each child


def child(args) -> dict:
    """One process: every architecture through both paths, under one allocator setting."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from spenser_jax import scheduler

    if args.child == "keep" and not scheduler.keep_host_memory():
        raise SystemExit("this C library has no mallopt (not glibc): nothing to compare")
    import common
    import compile_cost
    import jax

    from spenser_jax import training
    from spenser_jax.genome.space import SearchSpace
    from spenser_jax.grammar import load_grammar, locate
    from spenser_jax.snn import architecture
    from spenser_jax.training.protocol import Protocol

    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    phenotypes = compile_cost.lineage(space, args.seed, 10, args.archs)
    options = scheduler.compiler_options(jax.devices()[0].platform)
    images, labels, _ = common.load_train_images("mnist", args.train_samples + args.fitness_samples)
    k, device = args.train_samples, jax.devices()[0]
    data = tuple(jax.device_put(x, device) for x in (images[:k], labels[:k], images[k:], labels[k:]))
    protocol = Protocol(
        time_steps=args.time_steps, epochs=1, batch_size=args.batch_size, eval_batch_size=args.fitness_samples
    )
    rows = []
    for ph in phenotypes:
        sig, hyper = architecture.split(ph, args.time_steps)
        call = (jax.random.key(1), hyper, *data, jax.random.key(2))
        whole = jax.jit(functools.partial(training.train_and_score, sig, protocol=protocol))
        program = whole.lower(*call).compile(compiler_options=options or None)
        runs = {
            "network": functools.partial(program, *call),
            "layer": functools.partial(
                blocks.train_and_score,
                sig,
                *call,
                protocol=protocol,
                options=tuple(sorted(options.items())),
            ),
        }
        row = {}
        for path, run in runs.items():
            jax.block_until_ready(run())  # compiles
            best = None
            for _ in range(3):
                before = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                jax.block_until_ready(run())
                seconds = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_SELF)
                if best is None or seconds < best["seconds"]:
                    best = {
                        "seconds": seconds,
                        "minor_faults": after.ru_minflt - before.ru_minflt,
                        "system_seconds": after.ru_stime - before.ru_stime,
                        "user_seconds": after.ru_utime - before.ru_utime,
                    }
            row[path] = best
        rows.append(row)
    return {"rows": rows, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, default=1400, help="preset=quick's EvoTrain split")
    parser.add_argument("--fitness-samples", type=int, default=600, help="preset=quick's Fitness split")
    parser.add_argument("--repeats", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--name", default="host_memory")
    parser.add_argument("--quick", action="store_true", help="2 architectures at T = 2, one process each")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.time_steps, args.train_samples, args.fitness_samples, args.repeats = 2, 2, 256, 128, 1
        args.name += "_quick"
    if args.child:
        print(json.dumps(child(args)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    load_before = common.load_average()
    started = time.perf_counter()
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in CHILD_ARGS]
    processes: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(args.repeats):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            proc = subprocess.run(
                [sys.executable, __file__, f"--child={setting}", *forwarded],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                return proc.returncode
            processes[setting].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{setting} process {r + 1} of {args.repeats} done", flush=True)

    def best(setting: str, i: int, path: str) -> dict:  # the fastest process's run of architecture i
        return min((p["rows"][i][path] for p in processes[setting]), key=lambda run: run["seconds"])

    paths = ("network", "layer")
    n = len(processes["keep"][0]["rows"])
    runs = {s: {path: [best(s, i, path) for i in range(n)] for path in paths} for s in SETTINGS}
    summary = {
        s: {
            path: {
                "median_seconds": statistics.median(r["seconds"] for r in runs[s][path]),
                "median_minor_faults": statistics.median(r["minor_faults"] for r in runs[s][path]),
                "system_share": sum(r["system_seconds"] for r in runs[s][path])
                / sum(r["system_seconds"] + r["user_seconds"] for r in runs[s][path]),
            }
            for path in paths
        }
        | {"max_rss_mib": max(p["max_rss_mib"] for p in processes[s])}
        for s in SETTINGS
    }
    result = {
        **common.header("host_memory", load_before),
        "settings": vars(args) | {"protocol": "train_and_score, one epoch and the scoring, activity on"},
        "summary": summary,
        "keep_over_system": {
            path: common.spread([k["seconds"] / s["seconds"] for k, s in zip(runs["keep"][path], runs["system"][path])])
            for path in paths
        },
        "layer_over_network": {
            s: common.spread(
                [lay["seconds"] / net["seconds"] for lay, net in zip(runs[s]["layer"], runs[s]["network"])]
            )
            for s in SETTINGS
        },
        "processes": processes,
        "total_wall_seconds": round(time.perf_counter() - started, 1),
    }
    out = common.write_result(args.name, result, args.out)
    print(json.dumps({k: result[k] for k in ("summary", "keep_over_system", "layer_over_network")}, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
