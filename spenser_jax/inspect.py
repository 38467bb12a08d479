"""``python -m spenser_jax.inspect RUN_DIR [--individual best|G:I] [--retrained | --search-weights] [--samples N] [--json [PATH]] [--raster PATH.png]``.

What one individual of a run does, layer by layer (docs/running.md), and
whether it exports to NIR exactly. Measured on the first ``--samples``
samples of the run's Fitness split, rate-coded with the run's Fitness key,
so for the whole split (the default) the figures are the ones the search
recorded. Weights are chosen as ``export`` chooses them
(:meth:`spenser_jax.run.runs.Run.choose`). A ``G:I`` that is not the best
its generation's checkpoint kept has lost its weights, so it is trained
again from its own key, exactly as the search trained it (not possible when
the run inherits weights: its start depends on its parent's training, whose
weights are gone). Works on a finished or a running run.
"""  # noqa: E501 (the usage line is the --help description)

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from spenser_jax import data
from spenser_jax.errors import (
    add_individual_arguments,
    add_json_argument,
    chosen_weights,
    command,
    output_file,
    positive_int,
    write_json,
)
from spenser_jax.run import Run, load_run
from spenser_jax.training import evaluation


def measure(
    run: Run, phenotype, weights, samples: int | None, data_dir=None, again: tuple[int, int] | None = None
) -> dict:
    """The per-layer table and totals of one individual (see the module docstring)."""
    import numpy as np

    from spenser_jax.export import exportable
    from spenser_jax.snn import architecture
    from spenser_jax.training.evaluation import Trainer, on_device

    identity = run.identity
    splits = run.splits(data_dir)
    protocol = run.protocol()
    input_shape = tuple(splits.fitness.images.shape[1:])
    trainer = Trainer(protocol, input_shape)
    if weights is None:  # train it again, exactly as the search did
        weights = evaluation.train_again(run, phenotype, *again, splits)
    n = len(splits.fitness.labels) if samples is None else min(samples, len(splits.fitness.labels))
    scored = data.Arrays(splits.fitness.images[:n], splits.fitness.labels[:n])
    accuracy, _, summary = trainer.score(
        phenotype, weights, on_device(scored), evaluation.fitness_key(identity["seed"]), activity=True
    )
    sig = architecture.signature(phenotype)
    shapes = architecture.layer_shapes(sig, input_shape)
    network_layers = [x for x in phenotype.layers if type(x).__name__ != "NoOp"]
    layers, lif, weighted = [], 0, 0
    for layer, spec, shape in zip(network_layers, sig.layers, shapes):
        tag = f"pool-{layer.kind}" if hasattr(layer, "kind") else layer.tag
        row = {"type": tag, "shape": list(shape)}
        if isinstance(spec, architecture.LIFSlot):
            row["neurons"] = math.prod(shape)
            row["spikes_per_sample"] = summary["spikes_per_sample"][lif]
            row["firing_rate"] = summary["firing_rates"][lif]
            lif += 1
        elif tag in ("conv", "fc"):
            row["synops_per_sample"] = summary["synops_per_layer"][weighted]
            weighted += 1
        layers.append(row)
    reasons = exportable(phenotype, input_shape)
    neurobench = _neurobench(run, phenotype, weights, scored, summary, input_shape)
    return {
        "run": str(run.dir),
        "phenotype": phenotype.text,
        "samples": n,
        "accuracy": accuracy,
        "layers": layers,
        **{
            k: summary[k]
            for k in (
                "spikes_per_sample",
                "input_spikes_per_sample",
                "synops_per_sample",
                "macs_per_sample",
                "neuron_updates_per_sample",
                "energy_pj_per_sample",
                "ann_energy_pj_per_sample",
                "break_even_synops_per_sample",
                "parameters",
            )
        },
        "neurobench": neurobench,
        "exportable": not reasons,
        "export_problems": reasons,
        "_weights": weights,
        "_input": np.asarray(scored.images[:1]),
    }


MEMBRANE_SAMPLES = 64
"""``MembraneUpdates`` needs every layer's membranes: measured on the first this many scored samples."""


def _neurobench(run: Run, phenotype, weights, scored, summary: dict, input_shape) -> dict:
    """NeuroBench's metrics by its names (:mod:`spenser_jax.snn.neurobench_metrics`), per sample."""
    import jax.numpy as jnp

    from spenser_jax import training
    from spenser_jax.snn import architecture
    from spenser_jax.snn import neurobench_metrics as nbm

    protocol = run.protocol()
    sig, hyper = architecture.split(phenotype, protocol.time_steps)
    k = min(MEMBRANE_SAMPLES, len(scored.labels))
    spikes = training.encode(
        protocol.encoding,
        evaluation.fitness_key(run.identity["seed"]),
        jnp.asarray(scored.images[:k]),
        protocol.time_steps,
    )
    updates = nbm.membrane_updates(sig, hyper, weights, spikes)
    return {
        "version": nbm.NEUROBENCH_VERSION,
        **nbm.static(sig, input_shape, weights),
        **nbm.workload(
            sig,
            input_shape,
            protocol.time_steps,
            summary,
            membrane_updates=updates,
            spiking_input=protocol.encoding == "rate",
        ),
        "MembraneUpdates_samples": k,
    }


def _break_even(result: dict) -> str:
    crossing = result["break_even_synops_per_sample"]
    if crossing <= 0:
        return "its ANN equivalent costs less at any activity (neuron updates alone cost more)"
    return f"cheaper than its ANN equivalent while SynOps/sample stay under {crossing:,.0f}"


def _neurobench_line(nb: dict) -> str:
    ops = nb["SynapticOperations"]
    return (
        f"NeuroBench {nb['version']}: ActivationSparsity {nb['ActivationSparsity']:.3f} | SynapticOperations "
        f"Effective_ACs {ops['Effective_ACs']:,.0f}, Effective_MACs {ops['Effective_MACs']:,.0f}, Dense "
        f"{ops['Dense']:,.0f} | MembraneUpdates {nb['MembraneUpdates']:,.1f} (first {nb['MembraneUpdates_samples']} "
        f"samples) | Footprint {nb['Footprint']:,} B | ParameterCount {nb['ParameterCount']:,}"
    )


def table(result: dict) -> str:
    lines = [
        f"{result['phenotype']}",
        "",
        f"{'#':>2}  {'layer':<9} {'output':<13} {'neurons':>8} {'spikes/sample':>14} {'rate':>6} {'SynOps/sample':>14}",
    ]
    for k, row in enumerate(result["layers"]):
        shape = "x".join(str(x) for x in row["shape"])
        neurons = f"{row['neurons']:,}" if "neurons" in row else ""
        spikes = f"{row['spikes_per_sample']:,.1f}" if "spikes_per_sample" in row else ""
        rate = f"{row['firing_rate']:.3f}" if "firing_rate" in row else ""
        synops = f"{row['synops_per_sample']:,.0f}" if "synops_per_sample" in row else ""
        lines.append(f"{k:>2}  {row['type']:<9} {shape:<13} {neurons:>8} {spikes:>14} {rate:>6} {synops:>14}")
    ratio = result["ann_energy_pj_per_sample"] / max(result["energy_pj_per_sample"], 1e-12)
    lines += [
        "",
        f"accuracy on {result['samples']} Fitness samples: {result['accuracy']:.4f}",
        f"input spikes/sample {result['input_spikes_per_sample']:,.1f} | spikes/sample "
        f"{sum(result['spikes_per_sample']):,.1f} | SynOps/sample {result['synops_per_sample']:,.0f} | "
        f"parameters {result['parameters']:,}",
        f"energy/sample {result['energy_pj_per_sample'] / 1e3:,.2f} nJ (ANN equivalent "
        f"{result['ann_energy_pj_per_sample'] / 1e3:,.2f} nJ: {ratio:.1f}x)",
        _break_even(result),
        _neurobench_line(result["neurobench"]),
        "exports to NIR exactly"
        if result["exportable"]
        else "does not export to NIR: " + "; ".join(result["export_problems"]),
    ]
    return "\n".join(lines)


def raster(result: dict, run: Run, path: Path) -> None:
    """Spike rasters of every LIF layer for the first scored sample."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spenser_jax import training
    from spenser_jax.genome.phenotype import parse
    from spenser_jax.snn import architecture, network

    phenotype = parse(result["phenotype"])
    protocol = run.protocol()
    sig, hyper = architecture.split(phenotype, protocol.time_steps)
    spikes = training.encode(
        protocol.encoding, evaluation.fitness_key(run.identity["seed"]), result["_input"], protocol.time_steps
    )
    _, trains = network.SpikingNetwork(sig).apply(
        {"params": result["_weights"]}, spikes, hyper, method=network.SpikingNetwork.recording, what="trace"
    )
    panels = [("input", np.asarray(spikes)[:, 0])] + [(f"LIF {k}", np.asarray(t)[:, 0]) for k, t in enumerate(trains)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (name, train) in zip(axes[0], panels):
        flat = train.reshape(train.shape[0], -1)
        t, neuron = np.nonzero(flat)
        ax.scatter(t, neuron, s=1.5, marker="|", color="k")
        ax.set(
            title=f"{name} ({flat.shape[1]:,} neurons)",
            xlabel="time step",
            xlim=(-0.5, flat.shape[0] - 0.5),
            ylim=(-0.5, flat.shape[1] - 0.5),
        )
    axes[0][0].set_ylabel("neuron")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spenser_jax.inspect", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    add_individual_arguments(parser, "the log's 'generation 2 done' is G = 2")
    parser.add_argument(
        "--samples", type=positive_int, default=None, help="Fitness samples to measure on (default: all)"
    )
    add_json_argument(parser, "the result")
    parser.add_argument(
        "--raster", type=output_file, default=None, metavar="PATH.png", help="draw spike rasters of one sample"
    )
    parser.add_argument("--data-dir", default=None, help="override the run's dataset.data_dir")
    args = parser.parse_args(argv)
    text = sys.stderr if args.json == "-" else sys.stdout  # stdout is the JSON's with --json alone
    run = load_run(Path(args.run_dir))
    chosen = run.choose(args.individual, chosen_weights(args))
    for note in chosen.notes:
        print(note, file=sys.stderr)
    print(f"individual {args.individual} of {args.run_dir}, {chosen.text}", file=text)
    if chosen.again is not None:
        print(f"training individual {args.individual} again from its key ...", file=sys.stderr)
    result = measure(run, chosen.phenotype, chosen.params, args.samples, args.data_dir, chosen.again)
    result.update(
        individual=args.individual,
        weights="retrained" if chosen.source == "retrained" else "search",
        weights_text=chosen.text,
    )
    if args.json != "-":
        print(table(result))
    if args.json:
        write_json(args.json, json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=1))
    if args.raster:
        raster(result, run, Path(args.raster))
        print(f"raster -> {args.raster}", file=text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
