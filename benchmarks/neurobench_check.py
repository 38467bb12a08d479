"""Our NeuroBench metrics against NeuroBench itself, on exported networks (dev-only: neurobench is GPL).

For each network of benchmarks/nir_readers.py that snntorch can import
(``lif``, ``no_pool``, and ``lif`` with 30 % of its weights set to zero,
``pruned``), this computes :mod:`spenser_jax.snn.neurobench_metrics` from
our own forward pass, exports the graph with ``--for snntorch``, and runs
NeuroBench 2.3.0's harness on the snntorch import in its own venv
(benchmarks/neurobench_run.py under ``VENVS/neurobench/bin/python``: neurobench,
snntorch 1.0.0, nirtorch, torch), on the same input spikes. Writes
benchmarks/results/neurobench_check_<date>.json with both sides' figures and
each metric's relative difference; prints the table.

    python benchmarks/neurobench_check.py --venvs /work/venvs [--run RUN_DIR]   # and a run's best
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import nir_readers  # noqa: E402 (its networks and weights)

from spenser_jax import export  # noqa: E402
from spenser_jax.genome import phenotype  # noqa: E402
from spenser_jax.snn import activity, network  # noqa: E402
from spenser_jax.snn import neurobench_metrics as nbm  # noqa: E402
from spenser_jax.snn.architecture import split  # noqa: E402


def ours(ph, params, x) -> tuple[dict, np.ndarray]:
    sig, hyper = split(ph)
    out, totals = network.SpikingNetwork(sig).apply(
        {"params": params},
        jnp.asarray(x),
        hyper,
        method=network.SpikingNetwork.recording,
        what="activity",
        weights=jnp.ones(x.shape[1]),  # sums over the batch, as scoring hands them to summarise
    )
    steps, batch = x.shape[:2]
    shape = x.shape[2:]
    summary = activity.summarise(sig, shape, steps, totals, batch)
    updates = nbm.membrane_updates(sig, hyper, params, jnp.asarray(x))
    metrics = {
        **nbm.static(sig, shape, params),
        **nbm.workload(sig, shape, steps, summary, membrane_updates=updates),
    }
    return metrics, np.asarray(out)


def flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def random_cases(steps: int, batch: int):
    """(name, phenotype, params, input spikes, zeroed fraction): nir_readers' networks, one with weights zeroed."""
    x = (np.random.default_rng(1).random((steps, batch, *nir_readers.SHAPE)) < 0.5).astype(np.float32)
    for key, text, pruned in (
        ("lif", nir_readers.NETWORKS["lif"], 0.0),
        ("no_pool", nir_readers.NETWORKS["no_pool"], 0.0),
        ("pruned", nir_readers.NETWORKS["lif"], 0.3),
    ):
        ph = phenotype.parse(text)
        params = nir_readers.make_params(ph, 0)
        prune = np.random.default_rng(2)
        for leaves in params.values():
            if "kernel" in leaves:
                kernel = np.where(prune.random(leaves["kernel"].shape) < pruned, 0, leaves["kernel"])
                leaves["kernel"] = kernel.astype(np.float32)
        yield key, ph, params, x, pruned


def check(case, python: Path, work: Path) -> dict:
    key, ph, params, x, pruned = case
    mine, out = ours(ph, params, x)
    graph = export.graph_for(export.to_nir(ph, params, input_shape=x.shape[2:], time_steps=x.shape[0]), ph, "snntorch")
    stem = key.replace("/", "_").replace(":", "_")
    path, inputs, result = work / f"{stem}.nir", work / f"{stem}.x.npz", work / f"{stem}.json"
    export._write(path, graph)
    np.savez(inputs, x=x.transpose(0, 1, 4, 2, 3))
    proc = subprocess.run(
        [str(python), str(HERE / "neurobench_run.py"), str(path), str(inputs), str(result)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        print(f"{key}: neurobench failed\n{proc.stderr[-2000:]}")
        return {"error": proc.stderr[-2000:]}
    theirs = json.loads(result.read_text())
    same_output = bool((np.asarray(theirs["output"]) == out).all())
    a, b = flat(mine), flat(theirs["results"])
    rows = {}
    print(f"{key} (pruned {pruned:.0%}; NeuroBench's snntorch output equals ours: {same_output})")
    for name in sorted(set(a) | set(b)):
        ra, rb = a.get(name), b.get(name)
        rel = None if ra is None or rb is None else abs(ra - rb) / max(abs(rb), 1e-12)
        rows[name] = {"ours": ra, "neurobench": rb, "relative_difference": rel}
        print(f"  {name:38s} {ra!s:>22} {rb!s:>22}  {'' if rel is None else f'{rel:.2e}'}")
    return {
        "phenotype": ph.text,
        "pruned_fraction": pruned,
        "input_shape_chw": [x.shape[4], *x.shape[2:4]],
        "time_steps": x.shape[0],
        "samples": x.shape[1],
        "same_output_spikes": same_output,
        "versions": {k: theirs[k] for k in ("neurobench", "snntorch", "torch")},
        "metrics": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venvs", default="/work/venvs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--run", action="append", default=[], help="also a run's best (trained), on its images")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    python = Path(args.venvs) / "neurobench" / "bin" / "python"
    payload = common.header("neurobench_check")
    payload.update(batch=args.batch, time_steps=args.steps, networks={})
    cases = [*random_cases(args.steps, args.batch), *((*nir_readers.run_case(r, args.batch), 0.0) for r in args.run)]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            payload["networks"][case[0]] = check(case, python, Path(tmp))
    print(f"-> {common.write_result('neurobench_check', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
