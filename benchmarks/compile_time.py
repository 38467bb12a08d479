"""Compile time per new signature: what an offspring with an unseen architecture costs.

Every offspring whose :class:`~spenser_jax.snn.architecture.Signature` has not been
compiled before (in this run, or in the persistent XLA cache) pays a compile
before it trains. This script measures that cost for the networks a real
generation holds: the distinct signatures of a random parent and its
offspring (drawn as ``generation_throughput.py`` draws them), at the paper's
data sizes (42,000 EvoTrain and 18,000 Fitness samples by default; only
shapes matter, no data is read) and at each ``T``:

* ``fused``: the batched path's per-individual program,
  ``training.train_and_score`` (initialisation, the epochs and the scoring in
  one program), jitted afresh, then ``lower()`` and ``compile()``;
* ``separate``: the one-by-one path's three programs: the initialisation
  (what ``network.init_params`` jits once per signature), one epoch
  (``training.train_epoch``) and the scoring (``training.score``), each
  jitted afresh, lowered and compiled.

Each figure is trace + lower + compile wall time in this process (the
persistent compilation cache is off). Work stops when ``--budget-s`` is
spent; what was measured is kept (the JSON is rewritten after every compile,
``"complete": false`` until the end). ``T`` values come first, then
signatures, then ``separate``, so a short budget still measures ``fused`` at
every ``T``.

Usage (from the repository root)::

    python benchmarks/compile_time.py                       # T = 10 and 25, 3 signatures
    python benchmarks/compile_time.py --time-steps 10 --signatures 5 --paths fused

Results: ``<out>/compile_time_<backend>_<date>.json``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import common  # benchmarks/common.py (the script's folder is on sys.path); checkout first
import generation_throughput as gt
import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax import training
from spenser_jax.snn import architecture, network
from spenser_jax.training.protocol import Protocol

INPUT_SHAPE = (28, 28, 1)


def distinct_signatures(seed: int, offspring: int, parent_pool: int, count: int) -> list:
    """Up to ``count`` distinct ``(phenotype, signature)``: the parent's, then its offspring's."""
    parent, children = gt.generation(seed, offspring, parent_pool)
    seen, out = set(), []
    for p in [parent, *children]:
        sig = architecture.signature(p)
        if sig not in seen:
            seen.add(sig)
            out.append((p, sig))
    return out[:count]


def _shapes(n: int):
    return (jax.ShapeDtypeStruct((n, *INPUT_SHAPE), jnp.uint8), jax.ShapeDtypeStruct((n,), jnp.int32))


def compile_fused(sig, hyper, time_steps: int, n_train: int, n_fit: int, batch_size: int, eval_batch_size: int) -> dict:
    """Trace+lower and compile of ``train_and_score`` (the batched path's program)."""
    fn = jax.jit(
        functools.partial(
            training.train_and_score,
            sig,
            protocol=Protocol(
                time_steps=time_steps, epochs=1, batch_size=batch_size, eval_batch_size=eval_batch_size, activity=False
            ),
        )
    )
    t0 = time.perf_counter()
    lowered = fn.lower(jax.random.key(0), hyper, *_shapes(n_train), *_shapes(n_fit), jax.random.key(1))
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


def compile_separate(
    sig, hyper, time_steps: int, n_train: int, n_fit: int, batch_size: int, eval_batch_size: int
) -> dict:
    """The one-by-one path's three programs: init (first call), epoch and scoring."""
    # network.init_params jits this once per signature (and caches it).
    model = network.SpikingNetwork(sig)
    dummy = np.zeros((1, 1, *INPUT_SHAPE), np.float32)
    init = jax.jit(lambda key, hyper: model.init(key, dummy, hyper)["params"])
    t0 = time.perf_counter()
    init.lower(jax.random.key(0), hyper).compile()
    t_init = time.perf_counter() - t0
    state = training.create_train_state(jax.random.key(0), sig, hyper, INPUT_SHAPE)
    params = state.params
    epoch = jax.jit(
        functools.partial(training.train_epoch, sig, Protocol(time_steps, batch_size=batch_size)), donate_argnums=(0,)
    )
    score = jax.jit(
        functools.partial(training.score, sig, Protocol(time_steps, eval_batch_size=min(eval_batch_size, n_fit)))
    )
    t0 = time.perf_counter()
    epoch.lower(state, hyper, *_shapes(n_train), jax.random.key(1)).compile()
    t1 = time.perf_counter()
    score.lower(params, hyper, *_shapes(n_fit), jax.random.key(2)).compile()
    t2 = time.perf_counter()
    return {"init_s": t_init, "epoch_s": t1 - t0, "score_s": t2 - t1, "total_s": t_init + (t2 - t0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--signatures", type=int, default=3, help="distinct signatures (default 3)")
    parser.add_argument("--paths", default="fused,separate", help="fused, separate or both (default)")
    parser.add_argument(
        "--samples", type=int, default=60_000, help="train samples, split 70/30 into EvoTrain/Fitness (default 60000)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offspring", type=int, default=10)
    parser.add_argument(
        "--parent-pool", type=int, default=1, help="as generation_throughput.py: keep the cheapest of N parents"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="stop measuring after this long")
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - {"fused", "separate"}:
        parser.error("--paths: fused, separate or fused,separate")
    jax.config.update("jax_enable_compilation_cache", False)
    started = time.perf_counter()
    load_before = common.load_average()
    n_fit = round(args.samples * 0.3)
    n_train = args.samples - n_fit
    nets = distinct_signatures(args.seed, args.offspring, args.parent_pool, args.signatures)
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3)))  # backend start-up
    print(
        f"{len(nets)} signatures, T {args.time_steps}, {n_train}/{n_fit} samples, {jax.devices()[0].device_kind}",
        flush=True,
    )

    rows, skipped = [], []
    name = args.name or f"compile_time_{jax.default_backend()}"

    def save(complete: bool) -> None:
        """Writes what was measured so far (after every compile: a kill keeps it)."""
        summary = {}
        for path in paths:
            for t in args.time_steps:
                times = [r["total_s"] for r in rows if r["path"] == path and r["time_steps"] == t and "total_s" in r]
                if times:
                    summary.setdefault(path, {})[str(t)] = {
                        "mean_s": statistics.fmean(times),
                        "median_s": statistics.median(times),
                        "min_s": min(times),
                        "max_s": max(times),
                        "count": len(times),
                    }
        if complete:
            for path, by_t in summary.items():
                print(
                    f"{path}: "
                    + ", ".join(f"T={t} {v['mean_s']:.1f} s per signature (n={v['count']})" for t, v in by_t.items()),
                    flush=True,
                )
        payload = {
            **common.header("compile_time", load_before),
            "settings": {
                "time_steps": args.time_steps,
                "signatures": len(nets),
                "paths": paths,
                "evo_train_samples": n_train,
                "fitness_samples": n_fit,
                "batch_size": args.batch_size,
                "eval_batch_size": args.eval_batch_size,
                "seed": args.seed,
                "offspring": args.offspring,
                "parent_pool": args.parent_pool,
                "default_mode": network.default_mode(),
                "budget_s": args.budget_s,
            },
            "complete": complete,
            "networks": [p.text for p, _ in nets],
            "per_signature_s": summary,
            "results": rows,
            "skipped_for_budget": skipped,
            "method": "fresh jax.jit per program; trace+lower+compile wall time; persistent cache "
            "off; separate = init + epoch + scoring programs",
            "total_wall_s": round(time.perf_counter() - started, 1),
        }
        path = common.write_result(name, payload, args.out)
        if complete:
            print("wrote", path, flush=True)

    plan = [(path, t, i) for path in paths for t in args.time_steps for i in range(len(nets))]
    for path, t, i in plan:
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            skipped.append({"path": path, "time_steps": t, "signature": i})
            continue
        phen, sig = nets[i]
        hyper = architecture.hyper(phen)
        measure = compile_fused if path == "fused" else compile_separate
        try:
            timing = measure(sig, hyper, t, n_train, n_fit, args.batch_size, args.eval_batch_size)
        except Exception as err:  # noqa: BLE001 - one network must not sink the step
            timing = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]}
        row = {
            "path": path,
            "time_steps": t,
            "signature": i,
            "parameters": architecture.parameter_count(sig, INPUT_SHAPE),
            "macs": architecture.macs(sig, INPUT_SHAPE),
            "layers": len(sig.layers),
            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in timing.items()},
        }
        rows.append(row)
        shown = f"{row['total_s']:.1f} s" if "total_s" in row else row["error"]
        print(
            f"  {path:>8} T={t:<3} signature {i} ({row['layers']} layers, {row['parameters']} parameters): {shown}",
            flush=True,
        )
        save(complete=False)
    save(complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
