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

    python benchmarks/neurobench_check.py --venvs /work/venvs
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
    summary = activity.summarise(sig, nir_readers.SHAPE, steps, totals, batch)
    updates = nbm.membrane_updates(sig, hyper, params, jnp.asarray(x))
    metrics = {
        **nbm.static(sig, nir_readers.SHAPE, params),
        **nbm.workload(sig, nir_readers.SHAPE, steps, summary, membrane_updates=updates),
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venvs", default="/work/venvs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    python = Path(args.venvs) / "neurobench" / "bin" / "python"
    payload = common.header("neurobench_check")
    payload.update(batch=args.batch, time_steps=args.steps, networks={})
    rng = np.random.default_rng(1)
    x = (rng.random((args.steps, args.batch, *nir_readers.SHAPE)) < 0.5).astype(np.float32)
    networks = {
        "lif": (nir_readers.NETWORKS["lif"], 0.0),
        "no_pool": (nir_readers.NETWORKS["no_pool"], 0.0),
        "pruned": (nir_readers.NETWORKS["lif"], 0.3),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = work / "x.npz"
        np.savez(inputs, x=x.transpose(0, 1, 4, 2, 3))
        for key, (text, pruned) in networks.items():
            ph = phenotype.parse(text)
            params = nir_readers.make_params(ph, 0)
            prune = np.random.default_rng(2)
            for leaves in params.values():
                if "kernel" in leaves:
                    leaves["kernel"] = np.where(prune.random(leaves["kernel"].shape) < pruned, 0, leaves["kernel"])
                    leaves["kernel"] = leaves["kernel"].astype(np.float32)
            mine, out = ours(ph, params, x)
            graph = export.graph_for(
                export.to_nir(ph, params, input_shape=nir_readers.SHAPE, time_steps=args.steps), ph, "snntorch"
            )
            path = work / f"{key}.nir"
            export._write(path, graph)
            result = work / f"{key}.json"
            proc = subprocess.run(
                [str(python), str(HERE / "neurobench_run.py"), str(path), str(inputs), str(result)],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode != 0:
                payload["networks"][key] = {"error": proc.stderr[-2000:]}
                print(f"{key}: neurobench failed\n{proc.stderr[-2000:]}")
                continue
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
            payload["networks"][key] = {
                "phenotype": text,
                "pruned_fraction": pruned,
                "same_output_spikes": same_output,
                "versions": {k: theirs[k] for k in ("neurobench", "snntorch", "torch")},
                "metrics": rows,
            }
    print(f"-> {common.write_result('neurobench_check', payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
