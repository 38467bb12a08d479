"""Do the NIR readers run our exported graphs as we do? Output spikes compared step by step.

For a few networks (random weights, PyTorch's bound times 3 so that every
layer spikes; one with a β = 1 layer, which becomes a ``nir.IF`` node) this
exports the default graph (``export``, NIR's semantics) and the graph
``export --for READER`` writes (or records its refusal), imports each with
the reader's own importer in the reader's own environment
(benchmarks/nir_reader_run.py under ``VENVS/READER/bin/python``: their pins
conflict, so one venv each), runs it on the same batch of input spikes and
compares its output spikes with our network's, time step by time step. The
``nir`` row is tests/nir_sim.py, an independent NumPy simulator of NIR's
semantics. Writes benchmarks/results/nir_readers_<date>.json: per network,
reader and graph, the exact-match fraction of output spikes, the fraction of
samples whose whole output train matches, the largest absolute difference,
the spike counts, and the reader's and its nir's versions (or the error).

    python benchmarks/nir_readers.py                       # venvs under /work/venvs
    python benchmarks/nir_readers.py --venvs DIR --batch 32 --readers snntorch norse
    python benchmarks/nir_readers.py --run RUN_DIR          # also a run's best, on its rate-coded images

A reader's venv: ``python -m venv DIR/snntorch && DIR/snntorch/bin/pip install
snntorch==1.0.0 nirtorch nir torch`` (norse==1.1.0, spyx==1.0.0 and
sinabs==3.1.3 likewise; rockpool needs nirtorch too). Dev-only: none of them
is a dependency of spenser_jax.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # nir_sim: the independent NIR simulator
import common  # noqa: E402

from spenser_jax import export  # noqa: E402
from spenser_jax.genome import phenotype  # noqa: E402
from spenser_jax.snn import network  # noqa: E402
from spenser_jax.snn.architecture import split  # noqa: E402
from spenser_jax.snn.nir_readers import READERS  # noqa: E402

import nir_sim  # noqa: E402
from helpers import drawn_params  # noqa: E402

SHAPE = (12, 12, 2)
ACT = "layer:act beta:{b} beta-trainable:True threshold:{t} threshold-trainable:True surr-grad:atan reset:zero"
ADAM = "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"


def network_text(beta: float, pool: bool = True) -> str:
    """Every layer kind the export writes (conv valid/same, avg-pool, fc with and without bias)."""
    return " ".join(
        [
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:valid bias:True",
            ACT.format(b=0.5, t=0.5),
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:same bias:False",
            "layer:pool-avg kernel-size:2" if pool else "layer:no-op",
            ACT.format(b=beta, t=0.5),
            f"layer:conv num-filters:8 filter-shape:3 stride:2 padding:{'same' if pool else 'valid'} bias:True",
            ACT.format(b=0.0, t=0.3),
            "layer:fc num-units:16 bias:True",
            ACT.format(b=0.9, t=0.3),
            "layer:fc num-units:10 bias:False",
            ACT.format(b=0.75, t=0.5),
            ADAM,
        ]
    )


#: ``no_pool``: norse and spyx have no AvgPool2d, so only without one does the
#: default graph import there, which shows what they make of it as it is.
NETWORKS = {"lif": network_text(0.95), "with_if": network_text(1.0), "no_pool": network_text(0.95, pool=False)}


def make_params(ph, seed: int, gain: float = 3.0) -> dict:
    return drawn_params(ph, SHAPE, seed, gain)


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    theirs = np.asarray(theirs, np.float64).reshape(ours.shape)
    equal = ours == theirs
    return {
        "exact_match": float(equal.mean()),
        "exact_match_per_step": [float(e.mean()) for e in equal],
        "samples_identical": float(equal.all(axis=(0, 2)).mean()),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "our_spikes": float(ours.sum()),
        "reader_spikes": float(theirs.sum()),
    }


def run_reader(python: Path, reader: str, graph: Path, inputs: Path, work: Path) -> dict:
    out = work / f"{graph.stem}.{reader}.out.npz"
    proc = subprocess.run(
        [str(python), str(HERE / "nir_reader_run.py"), reader, str(graph), str(inputs), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        return {"error": f"the harness failed ({proc.returncode}): {proc.stderr[-1000:]}"}
    got = np.load(out)
    return {k: (got[k] if k == "output" else str(got[k])) for k in got.files}


def random_cases(steps: int, batch: int, seed: int):
    """(name, phenotype, params, input spikes [T, B, H, W, C]) of :data:`NETWORKS`, random spikes (p = 0.5)."""
    x = (np.random.default_rng(seed + 1).random((steps, batch, *SHAPE)) < 0.5).astype(np.float32)
    for key, text in NETWORKS.items():
        ph = phenotype.parse(text)
        yield key, ph, make_params(ph, seed), x


def run_case(run_dir: str, batch: int):
    """A run's best with the weights ``inspect`` and ``export`` choose, on its first rate-coded Fitness images."""
    from spenser_jax import training
    from spenser_jax.run import runs
    from spenser_jax.training import evaluation

    run = runs.load_run(Path(run_dir))
    chosen = run.choose("best", "auto")
    if chosen.again is not None:
        raise SystemExit(f"{run_dir}: the best's weights are not stored")
    protocol = run.protocol()
    images = run.splits(None).fitness.images[:batch]
    key = evaluation.fitness_key(run.identity["seed"])
    x = np.asarray(training.encode(protocol.encoding, key, jnp.asarray(images), protocol.time_steps), np.float32)
    return f"run:{run_dir}", chosen.phenotype, chosen.params, x


def check(case, readers, venvs: Path, work: Path) -> dict:
    """One network in every reader: its rows of the result, printed as it goes."""
    key, ph, params, x = case
    shape = x.shape[2:]
    x_chw = x.transpose(0, 1, 4, 2, 3)
    inputs = work / f"{len(list(work.iterdir()))}.inputs.npz"
    np.savez(inputs, x=x_chw)
    sig, hyper = split(ph)
    ours = np.asarray(network.SpikingNetwork(sig).apply({"params": params}, jnp.asarray(x), hyper, None), np.float64)
    graph = export.to_nir(ph, params, input_shape=shape, time_steps=x.shape[0])
    stem = key.replace("/", "_").replace(":", "_")
    plain = work / f"{stem}.nir"
    export._write(plain, graph)
    simulated = compare(ours, nir_sim.simulate(graph, x_chw).output)
    rows = {"nir": {"default": {"version": READERS["nir"].version, **simulated}}}
    print(f"{key}: our output spikes {ours.sum():.0f} of {ours.size}")
    print(f"  {'nir':9s} {'default':8s} exact {simulated['exact_match']:.4f} (tests/nir_sim.py)")
    for reader in readers:
        python = venvs / reader / "bin" / "python"
        row = {}
        try:
            rewritten = export.graph_for(graph, ph, reader)
        except export.NotExportable as err:
            row["for"] = {"refused": err.reasons}
            rewritten = None
        if not python.exists():
            row["not_installed"] = f"no {python}"
            rows[reader] = row
            print(f"  {reader:9s} not installed ({python})")
            continue
        graphs = {"default": plain}
        if rewritten is not None:
            graphs["for"] = work / f"{stem}.for_{reader}.nir"
            export._write(graphs["for"], rewritten)
        for kind, path in graphs.items():
            got = run_reader(python, reader, path, inputs, work)
            entry = {k: v for k, v in got.items() if k not in ("output", "traceback")}
            if "output" in got:
                entry.update(compare(ours, got["output"]))
            row[kind] = entry
        rows[reader] = row
        for kind in ("default", "for"):
            e = row.get(kind, {})
            what = (
                f"refused ({len(e['refused'])} layers)"
                if "refused" in e
                else e.get("error", "")[:90]
                if "error" in e
                else f"exact {e['exact_match']:.4f}, samples identical {e['samples_identical']:.3f}, "
                f"max |diff| {e['max_abs_diff']:g}"
            )
            print(f"  {reader:9s} {kind:8s} {what}")
    return {"phenotype": ph.text, "input_shape_chw": list(x_chw.shape[2:]), "time_steps": x.shape[0], "readers": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venvs", default="/work/venvs", help="one venv per reader: VENVS/READER/bin/python")
    parser.add_argument("--readers", nargs="*", default=[r for r in READERS if r != "nir"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", action="append", default=[], help="also a run's best (trained), on its images")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    payload = common.header("nir_readers")
    payload.update(batch=args.batch, time_steps=args.steps, networks={})
    cases = [*random_cases(args.steps, args.batch, args.seed), *(run_case(r, args.batch) for r in args.run)]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            payload["networks"][case[0]] = check(case, args.readers, Path(args.venvs), Path(tmp))
    path = common.write_result("nir_readers", payload, args.out)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
