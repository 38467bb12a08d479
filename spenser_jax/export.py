"""The export command: one individual of a run as a NIR graph (the Neuromorphic Intermediate Representation).

``python -m spenser_jax.export RUN_DIR --out net.nir [--individual best|G:I]
[--retrained | --search-weights] [--dt DT] [--for READER] [--data-dir DIR] [--json [PATH]]``;
docs/export.md says what it writes (``--json``: that summary as JSON). The
conversion, and why the graph's spikes are exactly ours, is
:mod:`spenser_jax.snn.nir_graph` (its names are offered here too); ``--for``
rewrites the graph for one reader (:mod:`spenser_jax.snn.nir_readers`), or
refuses naming the layers it cannot run. The weights are chosen as ``inspect`` chooses them
(:meth:`spenser_jax.run.runs.Run.choose`): the best's retrained ones when
they are readable and belong to it, else the search's, with a note. Errors
print one ``error: ...`` line and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from spenser_jax.errors import (
    add_individual_arguments,
    add_json_argument,
    chosen_weights,
    command,
    fail,
    file_mode,
    output_file,
    write_json,
)
from spenser_jax.snn.nir_graph import (  # noqa: F401 (MissingDependency, lif_node: offered here as before)
    DT,
    MissingDependency,
    NotExportable,
    chw,
    exportable,
    lif_node,
    node_labels,
    require_nir,
    to_nir,
)
from spenser_jax.snn.nir_readers import READERS, ReaderRefusal, for_reader
from spenser_jax.training import evaluation


def _write(path: Path, graph) -> None:
    """``nir.write`` to a temporary file beside ``path``, then renamed: never half a file."""
    nir = require_nir()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 otherwise: one policy for every file (errors.file_mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def graph_for(graph, phenotype, reader: str):
    """:func:`~spenser_jax.snn.nir_readers.for_reader`, its refusal as :class:`NotExportable` naming our layers."""
    try:
        return for_reader(graph, reader)
    except ReaderRefusal as err:
        labels = node_labels(phenotype)
        raise NotExportable(
            [f"{labels.get(node, 'node ' + node)}: {why}" for node, why in err.problems.items()],
            target=err.reader.label,
        ) from None


def export_run(
    run_dir,
    out,
    *,
    individual: str = "best",
    weights: str = "auto",
    dt: float = DT,
    reader: str = "nir",
    data_dir=None,
    log=print,
) -> dict:
    """Export one individual of a run to ``out`` (what the command line does).

    ``individual`` and ``weights`` as :meth:`spenser_jax.run.runs.Run.choose`;
    ``reader`` one of :data:`~spenser_jax.snn.nir_readers.READERS` (``nir``:
    the graph as NIR means it, unchanged). Returns ``{"path", "nodes" (input
    to output), "bytes", "phenotype", "weights" ("retrained" or "search"),
    "weights_text", "input_shape" (C, H, W), "time_steps", "dt" (the
    graph's: a reader may need its own), "reader"}``.

    Raises:
      IndividualError: no best individual yet, a bad ``individual``, no
        retrained weights where they were asked for.
      CheckpointError: not a run directory (or a corrupt one, or its grammar changed).
      NotExportable: the network has layers NIR (or ``reader``) cannot express exactly.
      ImportError: ``nir`` is missing.
      DataError: the run's data (needed for the input shape or to train
        ``G:I`` again) cannot be loaded.
    """
    from spenser_jax.run import runs

    if weights not in runs.WEIGHTS:
        raise ValueError(f"weights must be auto, retrained or search, got {weights!r}")
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
    require_nir()
    run = runs.load_run(Path(run_dir))
    chosen = run.choose(individual, weights)
    for note in chosen.notes:
        log(note)
    phenotype, params, again = chosen.phenotype, chosen.params, chosen.again
    splits = None

    def data_splits():
        nonlocal splits
        if splits is None:
            splits = run.splits(data_dir)
        return splits

    shape = run.identity.get("input_shape")
    input_shape = tuple(int(n) for n in shape) if shape else tuple(data_splits().fitness.images.shape[1:])
    reasons = exportable(phenotype, input_shape)
    if reasons:
        raise NotExportable(reasons)
    if again is not None:
        log(f"training individual {individual} again from its key, as the search did ...")
        params = evaluation.train_again(run, phenotype, *again, data_splits())
    time_steps = int(run.identity["time_steps"])
    graph = to_nir(phenotype, params, input_shape=input_shape, time_steps=time_steps, dt=dt)
    graph = graph_for(graph, phenotype, reader)
    out = Path(out)
    _write(out, graph)
    # The chain in edge order (to_nir writes one path: input -> ... -> output).
    nxt = dict(graph.edges)
    chain, node = ["input"], "input"
    while node in nxt:
        node = nxt[node]
        chain.append(node)
    return {
        "path": out,
        "nodes": chain,
        "bytes": out.stat().st_size,
        "phenotype": phenotype.text,
        "weights": "retrained" if chosen.source == "retrained" else "search",
        "weights_text": chosen.text,
        "input_shape": chw(input_shape),
        "time_steps": time_steps,
        "dt": float(graph.metadata["dt"]),
        "reader": reader,
    }


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spenser_jax.export",
        description="Export one individual of a run to NIR (an HDF5 file) with exactly its spikes.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", type=output_file, required=True, metavar="PATH.nir", help="the file to write")
    add_individual_arguments(parser, "trained again from its key unless the search kept its weights")
    parser.add_argument(
        "--dt",
        type=float,
        default=DT,
        help=f"time step the LIF parameters are written for (default {DT:g}, snntorch's)",
    )
    parser.add_argument(
        "--for",
        dest="reader",
        choices=tuple(READERS),
        default="nir",
        help="write the graph so that this reader runs it with our spikes, or refuse naming each layer it "
        "cannot (default nir: NIR's own semantics; docs/export.md has the table)",
    )
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="override the run's dataset.data_dir")
    add_json_argument(parser, "what was written (path, nodes, bytes, phenotype, weights, input shape, T, dt)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.dt) and args.dt > 0):
        parser.error(f"--dt must be a positive number, got {args.dt!r}")

    weights = chosen_weights(args)
    try:
        result = export_run(
            args.run_dir,
            args.out,
            individual=args.individual,
            weights=weights,
            dt=args.dt,
            reader=args.reader,
            data_dir=args.data_dir,
            log=lambda line: print(line, file=sys.stderr),
        )
    except NotExportable as err:
        if args.reader != "nir":
            return fail(f"individual {args.individual} of {args.run_dir} is {err}")
        return fail(
            f"individual {args.individual} of {args.run_dir} is {err} (a search with "
            f"grammar=grammars/csnn_nir.grammar finds only networks that export)"
        )
    if args.json:
        summary = {**result, "path": str(result["path"]), "individual": args.individual, "run": str(args.run_dir)}
        write_json(args.json, json.dumps(summary, indent=1))
        if args.json == "-":
            return 0
    c, *hw = result["input_shape"]
    print(f"individual {args.individual} of {args.run_dir}, {result['weights_text']}")
    print(f"wrote {result['path']}: {len(result['nodes'])} nodes, {_size(result['bytes'])}")
    print("  " + " -> ".join(result["nodes"]))
    print(
        f"  input: spikes [T, {c}, {', '.join(map(str, hw))}], T = {result['time_steps']} steps, "
        f"rate-coded outside the graph (Bernoulli(pixel / 255) per step); dt = {result['dt']:g}"
    )
    if args.reader != "nir":
        spec = READERS[args.reader]
        print(f"  for {spec.label}: {spec.entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
