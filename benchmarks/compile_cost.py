"""What a new architecture costs to compile, today's path against the new one, over the offspring of a run.

Once training is cut (``search=fast``), compiling is most of a search's wall
time: nearly every offspring has an architecture (a
:class:`~spenser_jax.snn.architecture.Signature`) of its own, so its program is
compiled before it trains. This script walks a search's lineage as the
search makes it (a random parent of the paper's grammar, its λ offspring by
``one_plus_lambda.ask``, one of them the next parent, and so on) until it holds
``--archs`` distinct signatures, and for each compiles the batched path's
per-individual program (``training.train_and_score``: initialisation, the
epochs and the scoring in one program) in the same process, three ways
(the old implementations are swapped in for ``baseline``):

* ``baseline``: the path before these changes: ``jax.random.uniform`` drawn
  in the parameters' and input spikes' own shapes, a failed step's state
  kept by a ``where`` per leaf, XLA's default options;
* ``new``: the default now: the same draws made flat, the weights' small
  draws sharing one loop (:mod:`spenser_jax.genome.draws`), the state kept by a
  cond (``training.keep_if``); the same bits, so ``max_abs_difference`` is 0;
* ``loop_emitters``: ``new`` with XLA:CPU's loop emitters
  (``runtime.xla_cpu_fusion_emitters=false``, which ``search=fast`` sets):
  cheaper still, results that differ in the last bits.

On the first ``--variant-archs`` architectures it also compiles each change
alone (``draws_only``, ``cond_only``, ``emitters_only``), to say what each is
worth. Each compiled
program then trains one epoch of ``--train-samples`` MNIST images (random
images when the data is not there) and scores ``--fitness-samples``:
``epoch_seconds`` is that run's wall time, and ``max_abs_difference`` (per
path) the largest difference of any weight, loss or accuracy from the
baseline's (0: bit for bit). The order of the paths alternates from one
architecture to the next, so drift in the machine's load favours none.

Output (``results/compile_cost_<date>.json``, ``--out`` to change): per path
``median_compile_seconds``, ``p90_compile_seconds`` (trace + lower +
compile), ``median_epoch_seconds``, the per-architecture ratios with their
spread, and every row.

    python benchmarks/compile_cost.py                 # 50 architectures, about 40 min on one core
    python benchmarks/compile_cost.py --quick         # 4 small ones, a smoke test
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from spenser_jax import scheduler, training  # noqa: E402
from spenser_jax.genome import draws, mutation
from spenser_jax.genome.space import SearchSpace  # noqa: E402
from spenser_jax.grammar import load_grammar, locate  # noqa: E402
from spenser_jax.search import one_plus_lambda
from spenser_jax.snn import architecture, network
from spenser_jax.training.protocol import Protocol  # noqa: E402

UNIFORM, UNIFORM_MANY = draws.uniform, draws.uniform_many
KEEP_IF = training.core.keep_if


def _keep_if_per_leaf(ok, new, old):  # how a failed step kept the old state before: a select per leaf
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _shaped_uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    return jax.random.uniform(key, tuple(shape), dtype, minval, maxval)


def _one_by_one(uniform):
    return lambda requests: [uniform(k, shape, jnp.float32, lo, hi) for k, shape, lo, hi in requests]


# How the draws are made: in their own shapes, one loop each (before); flat,
# the weights' small draws sharing one loop (now).
DRAWS = {
    "shaped": (_shaped_uniform, _one_by_one(_shaped_uniform)),
    "shared": (UNIFORM, UNIFORM_MANY),
}
# path -> (draws, XLA:CPU fusion emitters, state kept by a cond)
PATHS = {
    "baseline": ("shaped", True, False),  # before these changes
    "new": ("shared", True, True),  # the default now (the same bits)
    "loop_emitters": ("shared", False, True),  # and runtime.xla_cpu_fusion_emitters=false (search=fast)
    "draws_only": ("shared", True, False),  # attribution: the draws alone
    "cond_only": ("shaped", True, True),  # attribution: the cond alone
    "emitters_only": ("shaped", False, False),  # attribution: the emitters alone
}
VARIANTS = ("draws_only", "cond_only", "emitters_only")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def add_lineage_arguments(parser) -> None:
    """The walked lineage's and the evaluation's settings, shared with ``layer_programs.py``."""
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--offspring", type=int, default=10, help="λ of the walked lineage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, default=320, help="one epoch of this many (5 steps at batch 64)")
    parser.add_argument("--fitness-samples", type=int, default=256)


def lineage(space: SearchSpace, seed: int, offspring: int, count: int) -> list:
    """``count`` phenotypes of distinct signatures, in the order a search meets them."""
    config = mutation.MutationConfig()
    rng = np.random.default_rng([seed, 0xC0C0])
    state = one_plus_lambda.State(seed=seed, parent=mutation.sample(rng, space, config), generation=1)
    seen, out = set(), []

    def keep(genotype) -> None:
        ph = space.phenotype(genotype)
        sig = architecture.signature(ph)
        if sig not in seen:
            seen.add(sig)
            out.append(ph)

    keep(state.parent)
    while len(out) < count:
        candidates = one_plus_lambda.ask(
            one_plus_lambda.generation_rng(seed, state.generation), state, space, config, offspring
        )
        for c in candidates:
            keep(c.genotype)
        # The next parent: one of the offspring, as a search that found it better would keep.
        winner = candidates[int(rng.integers(len(candidates)))].genotype
        state = one_plus_lambda.State(seed=seed, parent=winner, generation=state.generation + 1)
    return out[:count]


def layer_reuse(phenotypes: list, input_shape: tuple[int, int, int]) -> dict:
    """How many of each architecture's per-layer programs an earlier architecture already had.

    The alternative not built: a program per layer (forward and backward,
    keyed by the layer and its input shape) cached across architectures, so
    that only the layers a mutation touched compile. This counts, along the
    lineage, the share of an offspring's layers whose (layer, input shape)
    an earlier architecture held: an upper bound on what such a cache saves.
    """
    seen: set = set()
    shares, new_counts = [], []
    for ph in phenotypes:
        sig = architecture.signature(ph)
        shapes = [tuple(input_shape), *architecture.layer_shapes(sig, input_shape)]
        keys = {(layer, shapes[i]) for i, layer in enumerate(sig.layers)}
        if seen:  # the first architecture has nothing to reuse
            shares.append(len(keys & seen) / len(keys))
            new_counts.append(len(keys - seen))
        seen |= keys
    return {
        "architectures": len(shares),
        "median_share_reused": statistics.median(shares) if shares else None,
        "mean_share_reused": statistics.fmean(shares) if shares else None,
        "median_new_layer_programs": statistics.median(new_counts) if new_counts else None,
        "note": "layer programs keyed by (layer, input shape); skip connections read more than one input",
    }


def compile_and_run(path: str, phenotype, protocol: Protocol, data: tuple, platform: str) -> dict:
    how, emitters, cond = PATHS[path]
    draws.uniform, draws.uniform_many = DRAWS[how]
    training.core.keep_if = KEEP_IF if cond else _keep_if_per_leaf
    try:
        # Traces of inner jitted functions (the initialisation) are cached per
        # signature: without this the first path's draws would serve them all.
        network._init_fn.cache_clear()
        jax.clear_caches()
        options = scheduler.compiler_options(platform, cpu_fusion_emitters=emitters)
        sig, hyper = architecture.split(phenotype, protocol.time_steps)
        fn = jax.jit(functools.partial(training.train_and_score, sig, protocol=protocol))
        args = (jax.random.key(1), hyper, *data, jax.random.key(2))
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile(compiler_options=options or None)
        t2 = time.perf_counter()
        params, metrics = jax.block_until_ready(compiled(*args))
        t3 = time.perf_counter()
    finally:  # the product's own functions again, whatever happened
        draws.uniform, draws.uniform_many = UNIFORM, UNIFORM_MANY
        training.core.keep_if = KEEP_IF
    return {
        "trace_lower_seconds": t1 - t0,
        "compile_seconds": t2 - t0,
        "xla_compile_seconds": t2 - t1,
        "epoch_seconds": t3 - t2,
        "outputs": jax.tree.map(np.asarray, (params, {k: metrics[k] for k in ("losses", "accuracy", "steps")})),
    }


def max_abs_difference(a, b) -> float:
    diffs = [
        float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return max(diffs, default=0.0)


def summarise(rows: list[dict], path: str) -> dict:
    done = [r[path] for r in rows if path in r]
    if not done:
        return {}
    compile_s = [d["compile_seconds"] for d in done]
    return {
        "architectures": len(done),
        "median_compile_seconds": statistics.median(compile_s),
        "p90_compile_seconds": float(np.percentile(compile_s, 90)),
        "mean_compile_seconds": statistics.fmean(compile_s),
        "median_xla_compile_seconds": statistics.median(d["xla_compile_seconds"] for d in done),
        "median_trace_lower_seconds": statistics.median(d["trace_lower_seconds"] for d in done),
        "median_epoch_seconds": statistics.median(d["epoch_seconds"] for d in done),
    }


def ratios(rows: list[dict], path: str, key: str) -> dict:
    return common.spread([r[path][key] / r["baseline"][key] for r in rows if path in r and "baseline" in r])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_lineage_arguments(parser)
    parser.add_argument("--variant-archs", type=int, default=10, help="also measure each change alone on these")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new architecture after this long")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--name", default="compile_cost")
    parser.add_argument("--quick", action="store_true", help="4 architectures at T = 2 (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.variant_archs, args.time_steps, args.train_samples, args.fitness_samples = 4, 1, 2, 128, 64
        args.name += "_quick"
    jax.config.update("jax_enable_compilation_cache", False)
    load_before = common.load_average()
    started = time.perf_counter()
    space = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    phenotypes = lineage(space, args.seed, args.offspring, args.archs)
    platform = jax.devices()[0].platform
    reuse = layer_reuse(phenotypes, space.input_shape)
    log(f"per-layer programs an earlier architecture held: median share {reuse['median_share_reused']}")
    n = args.train_samples + args.fitness_samples
    try:
        from spenser_jax import data

        ds = data.load("mnist", None)
        images, labels = np.asarray(ds.train_images[:n]), np.asarray(ds.train_labels[:n], np.int32)
        source = "mnist"
    except Exception as err:  # noqa: BLE001 - any missing data: random images measure compile just as well
        log(f"MNIST not available ({type(err).__name__}); random images")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int32)
        source = "random"
    k = args.train_samples
    data_args = tuple(jnp.asarray(x) for x in (images[:k], labels[:k], images[k:], labels[k:]))
    protocol = Protocol(
        time_steps=args.time_steps,
        epochs=1,
        batch_size=args.batch_size,
        eval_batch_size=args.fitness_samples,
        activity=False,
    )
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3)))  # backend start-up
    log(f"{len(phenotypes)} architectures, T = {args.time_steps}, {platform}, data {source}")

    rows = []

    def payload(complete: bool) -> dict:
        summary = {p: summarise(rows, p) for p in PATHS}
        return {
            **common.header("compile_cost", load_before),
            "settings": {**vars(args), "data": source, "protocol": "train_and_score, one epoch, no activity"},
            "complete": complete,
            "baseline": summary["baseline"],
            "new": summary["new"],
            "loop_emitters": summary["loop_emitters"],
            "variants": {p: summary[p] for p in VARIANTS},
            "compile_ratio_to_baseline": {p: ratios(rows, p, "compile_seconds") for p in PATHS if p != "baseline"},
            "epoch_ratio_to_baseline": {p: ratios(rows, p, "epoch_seconds") for p in PATHS if p != "baseline"},
            "max_abs_difference": {
                p: max((r["difference"][p] for r in rows if p in r["difference"]), default=None)
                for p in PATHS
                if p != "baseline"
            },
            "bit_identical": {p: sum(r["difference"].get(p) == 0.0 for r in rows) for p in PATHS if p != "baseline"},
            "per_layer_reuse": reuse,
            "rows": rows,
            "total_wall_seconds": round(time.perf_counter() - started, 1),
        }

    for i, ph in enumerate(phenotypes):
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            log(f"budget of {args.budget_s:.0f} s spent after {i} architectures")
            break
        paths = ["baseline", "new", "loop_emitters"] + (list(VARIANTS) if i < args.variant_archs else [])
        if i % 2:
            paths = paths[::-1]  # alternate the order against drift
        row = {"arch": i, "phenotype": ph.text, "layers": ph.text.count("layer:")}
        outputs = {}
        for p in paths:
            result = compile_and_run(p, ph, protocol, data_args, platform)
            outputs[p] = result.pop("outputs")
            row[p] = result
        row["difference"] = {q: max_abs_difference(outputs["baseline"], outputs[q]) for q in outputs if q != "baseline"}
        rows.append(row)
        log(
            f"{i + 1}/{len(phenotypes)}: "
            + " ".join(f"{p} {row[p]['compile_seconds']:.1f}s/{row[p]['epoch_seconds']:.1f}s" for p in paths)
            + " |diff| "
            + " ".join(f"{q} {d:.2g}" for q, d in row["difference"].items())
        )
        common.write_result(args.name, payload(False), args.out)
    result = payload(True)
    path = common.write_result(args.name, result, args.out)
    b = result["baseline"]
    print(f"baseline: median {b['median_compile_seconds']:.1f} s (p90 {b['p90_compile_seconds']:.1f}) per architecture")
    for p in ("new", "loop_emitters"):
        s, cr, er = result[p], result["compile_ratio_to_baseline"][p], result["epoch_ratio_to_baseline"][p]
        print(
            f"{p}: median {s['median_compile_seconds']:.1f} s (p90 {s['p90_compile_seconds']:.1f}); per-architecture "
            f"compile ratio {cr['median']:.2f} [p10 {cr['p10']:.2f}, p90 {cr['p90']:.2f}], epoch ratio "
            f"{er['median']:.2f} [{er['p10']:.2f}, {er['p90']:.2f}]; max |difference| "
            f"{result['max_abs_difference'][p]:.3g} ({result['bit_identical'][p]}/{len(rows)} bit-identical)"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
