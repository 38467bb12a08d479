"""Throughput of one generation: one by one (the original's way) against batched.

One generation of the paper's search: a random valid parent drawn from the
paper's grammar with a fixed seed, and its λ offspring drawn as a real run
draws them (``one_plus_lambda.ask``, i.e. ``mutation.offspring`` with the paper's
rates), trained one epoch on a Fashion-MNIST subset's EvoTrain split and
scored on its Fitness split, by

* ``none``: :class:`spenser_jax.scheduler.Evaluator` with ``batching="none"``:
  one individual after the other, init / epoch / scoring as three programs,
  the host waiting for each (as the original code);
* ``map``: the default batched path (one fused program per signature group,
  compiled ahead in a thread pool while the device trains, dispatched
  asynchronously; bit-identical results), with the backend's default number
  of compile threads (``scheduler.default_compile_threads``); ``map:N`` sets
  N threads, ``vmap`` (``vmap:N``) vmaps signature groups, a suffix ``@L``
  sets the compiler option ``xla_backend_optimization_level=L`` (e.g.
  ``none@1``) and ``/tf0`` turns ``jax_threefry_partitionable`` off (``/tf1``
  on). Every variant uses ``--devices`` devices (default: all local ones).

The machine may be shared: the variants run ``--repeats`` rounds (default 2)
in rotated order, so that a change of load hits them alike, and the (lower)
median round is reported; every round's wall time is kept in the JSON.

Each variant runs in a fresh subprocess with the persistent compilation cache
off, so every variant pays its own compiles. Reported per variant: wall
seconds of the generation, individuals/hour, the sums of the individuals'
``compile_seconds`` and ``train_seconds`` (see the scheduler module for
their meaning in the batched path), and whether its fitnesses and trained
weights equal the one-by-one path's bit for bit. ``--budget-s`` bounds the
variants' rounds: a variant that would start past it is skipped (and says
so), one that runs past it is stopped and records the error. The JSON is
written after every variant (``"complete": false`` until the end).

Also reported:

* **Signature sharing** over many sampled generations (several seeds, a
  hash of the phenotype as stand-in fitness so parents change as in a run):
  the distribution of group sizes of offspring with equal signatures, the
  same if channel widths were rounded up (conv to 32, dense to 64) and/or
  the boolean genes were traced, and the share of offspring whose signature
  was already compiled in an earlier generation of the run (in-process
  program cache hits).
* **Compile time against T** of the parent's fused program (T of the run, 10
  and 25), the estimated training memory per offspring (``vmap`` sizing).
* **A projected paper run** (200 generations x λ = 10 on full MNIST, T = 10,
  and Fashion-MNIST, T = 25). Method: the generation's measured run time
  of the one-by-one variant (sum of ``train_seconds``: blocking, so not
  inflated by concurrent compiles; every variant runs the same computations)
  scales with samples x time steps to 42,000 EvoTrain + 18,000 Fitness
  samples (the subset keeps the same 70/30 split, so one factor serves
  both); the rest of each variant's wall time (compile not hidden behind
  training, host overhead) scales with the measured compile-time ratio for T
  and is discounted by the measured share of signatures already compiled in
  an earlier generation.
  Larger evaluation batches at full size make the projection slightly
  pessimistic; for the batched path more compile hides behind the longer
  training, so its projection is an upper bound.

Usage (from the repository root)::

    python benchmarks/generation_throughput.py            # ~7 min on 2 cores
    python benchmarks/generation_throughput.py --quick    # ~2 min smoke run
    python benchmarks/generation_throughput.py --variants none,map:0,map:1,map:2
    python benchmarks/generation_throughput.py --time-steps 25 --subset 3000   # closer to the paper

Results: ``<out>/generation_throughput_<backend>[_quick]_<date>.json``. The data
are the IDX files (``$SPENSER_DATA_DIR`` or ``../shared/data``), random images
of the same shape when they are missing (``settings.data`` says which).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import subprocess
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path); checkout first
import jax
import numpy as np

import spenser_jax
from spenser_jax.genome import mutation
from spenser_jax.genome.phenotype import Conv, Dense
from spenser_jax.genome.space import SearchSpace
from spenser_jax.search import one_plus_lambda
from spenser_jax.snn import architecture
from spenser_jax.training import evaluation as fitness_mod
from spenser_jax.training.protocol import Protocol

ROOT = common.ROOT
GRAMMAR = "grammars/csnn.grammar"  # found in the package wherever it runs
MARK = "RESULT-JSON:"
PAPER = {"mnist": 10, "fmnist": 25}
FULL_SAMPLES = 60_000  # 42,000 EvoTrain + 18,000 Fitness


def space() -> SearchSpace:
    return SearchSpace(spenser_jax.load_grammar(GRAMMAR))


def generation(seed: int, offspring: int, parent_pool: int = 1, shared: bool = False):
    """A random valid parent and its offspring, as generation 1 of a run draws them.

    The parent is the cheapest (``architecture.cost``) of ``parent_pool``
    individuals drawn as generation 0 is (1: the first one drawn). With
    ``shared``, the offspring are the first ``offspring`` of the largest
    signature group among ``20 * offspring`` drawn (they differ in float genes
    only): one program serves them all, as in a group that shares a signature.
    """
    s = space()
    config = mutation.MutationConfig()
    rng = np.random.default_rng([seed, 0xBE7C])
    pool = [mutation.sample(rng, s, config) for _ in range(parent_pool)]
    parent = min(pool, key=lambda g: architecture.cost(architecture.signature(s.phenotype(g)), s.input_shape))
    state = dataclasses.replace(one_plus_lambda.init(seed), generation=1, parent=parent)
    drawn = offspring * 20 if shared else offspring
    candidates = one_plus_lambda.ask(one_plus_lambda.generation_rng(seed, 1), state, s, config, drawn)
    children = [s.phenotype(c.genotype) for c in candidates]
    if shared:
        groups: dict = {}
        for child in children:
            groups.setdefault(architecture.signature(child), []).append(child)
        children = max(groups.values(), key=len)
        if len(children) < offspring:
            raise RuntimeError(f"no signature shared by {offspring} of {drawn} offspring")
    return s.phenotype(parent), children[:offspring]


def parse_variant(name: str) -> dict:
    """``BATCHING[:THREADS][@OPT_LEVEL][/tf0|/tf1]`` -> its parts (None: default)."""
    variant, _, threefry = name.partition("/tf")
    variant, _, opt_level = variant.partition("@")
    batching, _, threads = variant.partition(":")
    if batching not in ("none", "map", "vmap") or threefry not in ("", "0", "1"):
        raise ValueError(f"bad variant {name!r}: want BATCHING[:THREADS][@LEVEL][/tf0|/tf1]")
    return {
        "batching": batching,
        "compile_threads": int(threads) if threads else None,
        "opt_level": int(opt_level) if opt_level else None,
        "threefry": None if not threefry else threefry == "1",
    }


# --------------------------------------------------------------------------
# Worker: one variant in a fresh process


def worker(spec: dict) -> dict:
    from spenser_jax import scheduler

    jax.config.update("jax_enable_compilation_cache", False)
    v = parse_variant(spec["variant"])
    threefry = v["threefry"] if v["threefry"] is not None else spec.get("threefry_partitionable")
    if threefry is not None:
        jax.config.update("jax_threefry_partitionable", threefry)
    _, phenotypes = generation(spec["seed"], spec["offspring"], spec.get("parent_pool", 1), spec.get("shared", False))
    splits, _ = common.load_splits(spec["dataset"], spec["seed"], spec["subset"])
    settings = Protocol(
        time_steps=spec["time_steps"], epochs=spec["epochs"], batch_size=spec["batch_size"], eval_batch_size=1000
    )
    threads = v["compile_threads"]
    if threads is None:
        threads = scheduler.default_compile_threads() if v["batching"] != "none" else 0
    options = {"xla_backend_optimization_level": v["opt_level"]} if v["opt_level"] is not None else None
    devices = scheduler.select_devices(spec.get("devices"))
    evaluator = scheduler.Evaluator(
        splits,
        seed=spec["seed"],
        input_shape=(28, 28, 1),
        protocol=settings,
        batching=v["batching"],
        compile_threads=threads,
        devices=devices,
        compiler_options=options,
        progress=False,
    )
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3)))  # backend start-up
    with evaluator:
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = evaluator.evaluate(phenotypes, generation=1)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    digest = hashlib.sha256()
    for e in results:
        digest.update(repr((e.status, e.fitness)).encode())
        for leaf in jax.tree.leaves(e.weights):
            digest.update(np.ascontiguousarray(leaf).tobytes())
    return {
        "variant": spec["variant"],
        "backend": jax.default_backend(),
        "batching": v["batching"],
        "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "compile_threads": threads if v["batching"] != "none" else 0,
        "devices": [str(d) for d in devices],
        "programs_compiled": len(evaluator.programs),
        "wall_s": wall,
        "cpu_s": cpu,
        "individuals_per_hour": len(results) / wall * 3600,
        "compile_s": sum(e.compile_seconds for e in results),
        "run_s": sum(e.train_seconds for e in results),
        "failed": sum(not e.ok for e in results),
        "results_sha256": digest.hexdigest(),
        "individuals": [
            {
                "status": e.status,
                "fitness": e.fitness,
                "compile_s": e.compile_seconds,
                "run_s": e.train_seconds,
                "parameters": e.parameters,
                **({"reason": e.reason} if e.reason else {}),
            }
            for e in results
        ],
    }


def run_variant(spec: dict, timeout: float | None = None) -> dict:
    """One variant in a fresh process (its own compiles, no persistent cache)."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"variant {spec['variant']} stopped after {timeout:.0f} s (--budget-s)") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(f"variant {spec['variant']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------
# Signature sharing over sampled generations


def _relaxed(sig: architecture.Signature, widths: bool, flags: bool):
    layers = []
    for layer in sig.layers:
        if widths and isinstance(layer, Conv):
            layer = dataclasses.replace(layer, filters=-(-layer.filters // 32) * 32)
        if widths and isinstance(layer, Dense) and layer.units != 10:
            layer = dataclasses.replace(layer, units=-(-layer.units // 64) * 64)
        if flags and isinstance(layer, architecture.LIFSlot):
            layer = "lif"
        if flags and isinstance(layer, (Conv, Dense)):
            layer = dataclasses.replace(layer, bias=True)
        layers.append(layer)
    return tuple(layers), (type(sig.optimizer).__name__ if flags else sig.optimizer)


def signature_sharing(seeds: int, generations: int, offspring: int) -> dict:
    s = space()
    kinds = {
        "exact": (False, False),
        "widths_padded": (True, False),
        "flags_traced": (False, True),
        "widths_padded_and_flags_traced": (True, True),
    }
    sizes = {k: collections.Counter() for k in kinds}
    seen = {k: set() for k in kinds}
    hits = collections.Counter()
    later = 0
    for seed in range(seeds):
        state = one_plus_lambda.init(seed)
        for g in range(generations):
            candidates = one_plus_lambda.ask(
                one_plus_lambda.generation_rng(seed, g), state, s, mutation.MutationConfig(), offspring
            )
            phenotypes = [s.phenotype(c.genotype) for c in candidates]
            sigs = [architecture.signature(p) for p in phenotypes]
            for kind, (widths, flags) in kinds.items():
                keys = [_relaxed(x, widths, flags) for x in sigs]
                for size in collections.Counter(keys).values():
                    sizes[kind][size] += size
                if g:
                    hits[kind] += sum(k in seen[kind] for k in keys)
                seen[kind].update(keys)
            later += len(phenotypes) if g else 0
            fitness = [int.from_bytes(hashlib.sha256(p.text.encode()).digest()[:4], "big") / 2**32 for p in phenotypes]
            state, _ = one_plus_lambda.tell(state, candidates, [fitness_mod.Evaluation(f) for f in fitness])
    out = {
        "seeds": seeds,
        "generations_per_seed": generations,
        "offspring": offspring,
        "note": "offspring counted by the size of their group of equal (relaxed) signatures "
        "within a generation; seen_before: signature compiled in an earlier generation",
    }
    for kind in kinds:
        total = sum(sizes[kind].values())
        out[kind] = {
            "offspring_by_group_size": {str(k): v for k, v in sorted(sizes[kind].items())},
            "share_alone": sizes[kind][1] / total,
            "share_in_groups_of_2_or_more": 1 - sizes[kind][1] / total,
            "seen_before_share": hits[kind] / later if later else 0.0,
        }
    return out


# --------------------------------------------------------------------------
# Compile time against T, memory per offspring


def compile_scaling(seed: int, subset: int, time_steps: list[int], batch_size: int, parent_pool: int = 1) -> dict:
    import functools

    from spenser_jax import training

    jax.config.update("jax_enable_compilation_cache", False)
    parent, _ = generation(seed, 1, parent_pool)
    sig, hyper = architecture.split(parent)
    n_fit = round(subset * 0.3)
    shapes = [
        np.zeros((subset - n_fit, 28, 28, 1), np.uint8),
        np.zeros(subset - n_fit, np.int32),
        np.zeros((n_fit, 28, 28, 1), np.uint8),
        np.zeros(n_fit, np.int32),
    ]
    out = {}
    for t in time_steps:
        fn = jax.jit(
            functools.partial(
                training.train_and_score,
                sig,
                protocol=Protocol(time_steps=t, epochs=1, batch_size=batch_size, eval_batch_size=1000, activity=False),
            )
        )
        t0 = time.perf_counter()
        fn.lower(jax.random.key(0), hyper, shapes[0], shapes[1], shapes[2], shapes[3], jax.random.key(1)).compile()
        out[str(t)] = time.perf_counter() - t0
    return {"network": parent.text, "compile_s_by_time_steps": out}


def memory_per_offspring(phenotypes, batch_size: int) -> dict:
    out = {}
    for t in sorted(set(PAPER.values())):
        sizes = [
            architecture.training_bytes(architecture.signature(p), (28, 28, 1), time_steps=t, batch_size=batch_size)
            for p in phenotypes
        ]
        out[f"T{t}"] = {"median_MiB": float(np.median(sizes)) / 2**20, "max_MiB": max(sizes) / 2**20}
    return out


# --------------------------------------------------------------------------


def project(variant: dict, reference_run: float, args, compile_ratio: dict, seen_share: float) -> dict:
    """Hours for 200 generations at the paper's sizes (see the module docstring)."""
    exposed = max(0.0, variant["wall_s"] - reference_run)
    out = {}
    for name, t in PAPER.items():
        scale = FULL_SAMPLES / args.subset * t / args.time_steps
        per_gen = exposed * compile_ratio.get(t, 1.0) * (1 - seen_share) + reference_run * scale
        out[name] = {
            "time_steps": t,
            "run_scale": scale,
            "seconds_per_generation": per_gen,
            "hours_200_generations": per_gen * 200 / 3600,
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min)")
    parser.add_argument("--dataset", default="fmnist", help="mnist or fmnist (random images if missing)")
    parser.add_argument("--subset", type=int, default=None, help="train samples kept (default 300; quick 100)")
    parser.add_argument("--time-steps", type=int, default=None, help="T (default 2; quick 1); paper: 10 / 25")
    parser.add_argument("--offspring", type=int, default=None, help="λ (default 10; quick 4)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parent-pool",
        type=int,
        default=1,
        help="draw this many parents, keep the cheapest (default 1: the first drawn)",
    )
    parser.add_argument(
        "--shared-signature",
        action="store_true",
        help="offspring that share one signature (float genes differ): a group "
        "batched as one program (see generation())",
    )
    parser.add_argument("--devices", type=int, default=None, help="devices per variant (default: all local devices)")
    parser.add_argument(
        "--variants",
        default="none,map",
        help="comma list of BATCHING[:COMPILE_THREADS][@XLA_OPT_LEVEL][/tf0|/tf1], e.g. "
        "none,map,map:2,vmap,map@1,none/tf0 (/tf0: jax_threefry_partitionable off)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds over the variants, rotated; the (lower) median is reported (default 2; quick 1)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop starting variants after this many seconds; a running one is stopped at it (default: no limit)",
    )
    parser.add_argument(
        "--threefry-partitionable",
        choices=("default", "true", "false"),
        default="default",
        help="set jax_threefry_partitionable in the workers",
    )
    parser.add_argument(
        "--share-generations",
        type=int,
        default=None,
        help="sampled generations per seed for the sharing statistics (default 50; quick 10)",
    )
    parser.add_argument("--share-seeds", type=int, default=None, help="default 5; quick 2")
    parser.add_argument("--no-compile-scaling", action="store_true")
    parser.add_argument("--name", default=None, help="result file stem")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.worker:
        print(MARK + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    quick = args.quick
    args.subset = args.subset or (100 if quick else 300)
    args.time_steps = args.time_steps or (1 if quick else 2)
    args.offspring = args.offspring or (4 if quick else 10)
    args.share_generations = args.share_generations or (10 if quick else 50)
    args.share_seeds = args.share_seeds or (2 if quick else 5)
    args.repeats = args.repeats or (1 if quick else 2)
    names = args.variants.split(",")
    for name in names:
        try:
            parse_variant(name)
        except ValueError as err:
            parser.error(str(err))
    threefry = {"default": None, "true": True, "false": False}[args.threefry_partitionable]

    started = time.perf_counter()
    load_before = common.load_average()
    parent, phenotypes = generation(args.seed, args.offspring, args.parent_pool, args.shared_signature)
    sigs = [architecture.signature(p) for p in phenotypes]
    groups = sorted(collections.Counter(sigs).values(), reverse=True)
    _, source = common.load_splits(args.dataset, args.seed, args.subset)
    # No JAX backend in this process until the variants are done: on a GPU it
    # would hold most of the device's memory while the workers need it.
    print(
        f"generation: λ={args.offspring}, signature groups {groups}, "
        f"{args.dataset} ({source}) subset {args.subset}, T={args.time_steps}",
        flush=True,
    )

    settings = {
        "quick": quick,
        "dataset": args.dataset,
        "data": source,
        "subset": args.subset,
        "evo_train_samples": args.subset - round(args.subset * 0.3),
        "fitness_samples": round(args.subset * 0.3),
        "time_steps": args.time_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "offspring": args.offspring,
        "seed": args.seed,
        "parent_pool": args.parent_pool,
        "devices": args.devices,
        "shared_signature": args.shared_signature,
        "variants": names,
        "repeats": args.repeats,
        "budget_s": args.budget_s,
        "threefry_partitionable": jax.config.jax_threefry_partitionable if threefry is None else threefry,
    }
    runs = collections.defaultdict(list)

    def stem() -> str:
        # The workers' backend: asking JAX here would start it in this process.
        done = [v for rs in runs.values() for v in rs]
        backend = done[0]["backend"] if done else jax.default_backend()
        return args.name or f"generation_throughput_{backend}{'_quick' if quick else ''}"

    errors = {}

    def save_partial() -> None:
        # After every variant, so that a kill keeps what was measured. No JAX
        # backend here (see above): host facts only until the final write.
        common.write_result(
            stem(),
            {
                "benchmark": "generation_throughput",
                "machine": common.host_info(),
                "versions": common.versions(),
                "complete": False,
                "settings": settings,
                "generation": {"parent": parent.text, "signature_group_sizes": groups},
                "variants": {
                    name: dict(rs[-1], wall_s_repeats=[v["wall_s"] for v in rs]) for name, rs in runs.items() if rs
                },
                "errors": errors,
            },
            args.out,
        )

    for r in range(args.repeats):
        # Rotated order: a change of the machine's load hits every variant alike.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - started)
            if left is not None and left <= 0:
                if not runs[name]:
                    errors[name] = f"skipped: --budget-s {args.budget_s:g} spent before it started"
                print(f"{name:>10}: skipped (budget)", flush=True)
                continue
            spec = {
                "variant": name,
                "seed": args.seed,
                "offspring": args.offspring,
                "dataset": args.dataset,
                "subset": args.subset,
                "time_steps": args.time_steps,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "threefry_partitionable": threefry,
                "parent_pool": args.parent_pool,
                "devices": args.devices,
                "shared": args.shared_signature,
            }
            try:
                v = run_variant(spec, timeout=left)
            except RuntimeError as err:
                errors.setdefault(name, f"error: {err}"[:3000])
                print(f"{name:>10}: {str(err).splitlines()[0]}", flush=True)
                continue
            runs[name].append(v)
            save_partial()
            print(
                f"{name:>10}: wall {v['wall_s']:7.1f} s  {v['individuals_per_hour']:7.1f} ind/h  "
                f"compile {v['compile_s']:6.1f} s  run {v['run_s']:6.1f} s  load {common.load_average()}",
                flush=True,
            )
    variants = {}
    for name in names:
        if not runs[name]:
            variants[name] = {"variant": name, "error": errors.get(name, "error: no run")}
            continue
        # The repeat with the median wall time represents the variant.
        ordered = sorted(runs[name], key=lambda v: v["wall_s"])
        variants[name] = dict(ordered[(len(ordered) - 1) // 2], wall_s_repeats=[v["wall_s"] for v in runs[name]])
        if name in errors:
            variants[name]["error_in_a_repeat"] = errors[name]
    measured = {k: v for k, v in variants.items() if "error" not in v}
    reference = measured.get("none")
    for name, v in measured.items():
        # Compared with the one-by-one variant of the same XLA and PRNG settings.
        base, _, tf = name.partition("/")
        ref = measured.get("none" + (base[base.index("@") :] if "@" in base else "") + (f"/{tf}" if tf else ""))
        v["identical_to_none"] = (
            None if ref is None else all(x["results_sha256"] == ref["results_sha256"] for x in runs[name])
        )

    sharing = signature_sharing(args.share_seeds, args.share_generations, args.offspring)
    print(
        f"sharing: {sharing['exact']['share_alone']:.0%} of offspring alone in their signature group, "
        f"{sharing['exact']['seen_before_share']:.0%} seen in an earlier generation",
        flush=True,
    )
    scaling = None
    compile_ratio = {}
    if not (quick or args.no_compile_scaling):
        steps = sorted({args.time_steps, *PAPER.values()})
        scaling = compile_scaling(args.seed, args.subset, steps, args.batch_size, args.parent_pool)
        base = scaling["compile_s_by_time_steps"][str(args.time_steps)]
        compile_ratio = {t: scaling["compile_s_by_time_steps"][str(t)] / base for t in PAPER.values()}
        print("compile s by T (parent):", {k: round(v, 1) for k, v in scaling["compile_s_by_time_steps"].items()})
    seen = sharing["exact"]["seen_before_share"]
    # The computations are the same in every variant: the clean (blocking,
    # one-by-one) run time is the reference; what a variant adds or hides is
    # its wall time beyond it.
    ratios = {}
    if measured:
        reference_run = (reference or next(iter(measured.values())))["run_s"]
        for v in measured.values():
            v["projected_paper_run"] = project(v, reference_run, args, compile_ratio, seen)
    if reference is not None:

        def hours(result, dataset):
            return result["projected_paper_run"][dataset]["hours_200_generations"]

        for name, v in measured.items():
            if name != "none":
                ratios[name] = {
                    "speedup_wall": reference["wall_s"] / v["wall_s"],
                    "paper_mnist_speedup": hours(reference, "mnist") / hours(v, "mnist"),
                    "paper_fmnist_speedup": hours(reference, "fmnist") / hours(v, "fmnist"),
                }
    payload = {
        **common.header("generation_throughput", load_before),
        "complete": True,
        "settings": settings,
        "generation": {"parent": parent.text, "signature_group_sizes": groups},
        "variants": variants,
        "ratios_vs_none": ratios,
        "signature_sharing": sharing,
        "compile_scaling": scaling,
        "memory_per_offspring_estimate": memory_per_offspring(phenotypes, args.batch_size),
        "projection_method": "per generation: (wall - run_ref) x compile(T)/compile(T_run) x (1 - seen_before_share) "
        "+ run_ref x (60000 / subset) x (T / T_run); run_ref = sum of train_seconds of the "
        "one-by-one variant (blocking, so uncontended by compiles)",
        "benchmark_seconds": time.perf_counter() - started,
    }
    for name, r in ratios.items():
        print(
            f"{name}: {r['speedup_wall']:.2f}x faster than one by one "
            f"(projected paper run: mnist {r['paper_mnist_speedup']:.2f}x, fmnist {r['paper_fmnist_speedup']:.2f}x)"
        )
    for name, v in measured.items():
        p = v["projected_paper_run"]
        print(
            f"{name:>8}: projected 200 generations: mnist {p['mnist']['hours_200_generations']:.0f} h, "
            f"fmnist {p['fmnist']['hours_200_generations']:.0f} h; identical to none: {v['identical_to_none']}"
        )
    print("wrote", common.write_result(stem(), payload, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
