"""``original_engine.py --check``: is the twin the same network and the same training as ours?

1. Forward from equal weights: for each of the generation's architectures, our
   initial weights (times ``--check-gain`` so that deep layers spike; β and θ
   as drawn) copied into the twin, equal input spikes (Bernoulli of real
   images, 16 samples), dropout off: output spikes equal element for element
   and ``mse_count_loss`` within 1e-5 relative (``forward_exact`` counts
   them), or at most :data:`FLIPS` of the output spikes differ
   (``forward_ok``: one last-bit difference of a membrane at its threshold
   flips a spike, and the flip propagates).
2. Accuracy after one epoch: the generation's ``--check-networks`` cheapest
   architectures (:func:`~spenser_jax.snn.architecture.cost`) trained by each engine
   with ``--check-seeds`` seeds (ours: the run seed; the twin: torch's
   seed; 0 skips this part): they agree when |mean(ours) - mean(twin)| is at most the larger
   of the two seed ranges (max - min).
Needs jax and torch in one environment (the venv with torch + snntorch and this package).
"""

from __future__ import annotations

import statistics
import time

import common
import jax
import jax.numpy as jnp
import numpy as np
import original_engine as oe
import torch
import twin_torch
from twin_layers import layer_specs

from spenser_jax import scheduler
from spenser_jax.snn import architecture, network
from spenser_jax.snn.loss import mse_count_loss

FLIPS = 0.005
"""Share of output spikes that may differ: a last-bit difference of a membrane at its threshold flips a spike, and
the flip propagates through later layers and steps (seen at T = 25 on one of ten networks: 0.125 %)."""


def forward_check(phenotype, images: np.ndarray, labels: np.ndarray, time_steps: int, gain: float, seed: int) -> dict:
    sig, hyper = architecture.split(phenotype)
    params = network.init_params(jax.random.key(seed), sig, hyper, (28, 28, 1))
    params = {k: {n: v * gain if n in ("kernel", "bias") else v for n, v in p.items()} for k, p in params.items()}
    params = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng(seed)
    spikes = (rng.random((time_steps, *images.shape)) < images / 255.0).astype(np.float32)  # [T, B, H, W, C]
    ours = np.asarray(network.SpikingNetwork(sig).apply({"params": params}, jnp.asarray(spikes), hyper))
    ours_loss = float(mse_count_loss(jnp.asarray(ours), jnp.asarray(labels)))
    net = twin_torch.TwinNet(layer_specs(phenotype, (28, 28, 1)))
    net.load_ours(params)
    net.eval()
    with torch.no_grad():
        twin = net(torch.from_numpy(spikes.transpose(0, 1, 4, 2, 3).copy())).numpy()
        twin_loss = float(
            twin_torch.SF.mse_count_loss(correct_rate=1.0, incorrect_rate=0.0)(
                torch.from_numpy(twin), torch.from_numpy(labels.astype(np.int64))
            )
        )
    return {
        "network": phenotype.text,
        "output_spikes": float(ours.sum()),
        "differing_share": float((ours != twin).mean()),
        "equal": bool((ours == twin).all()),
        "loss_ours": ours_loss,
        "loss_twin": twin_loss,
        "loss_rel_diff": abs(ours_loss - twin_loss) / max(abs(twin_loss), 1e-12),
    }


def accuracy_check(phenotypes, splits, time_steps: int, seeds: int) -> list[dict]:
    train = twin_torch.to_tensors(splits.evo_train.images, splits.evo_train.labels)
    fitness = twin_torch.to_tensors(splits.fitness.images, splits.fitness.labels)
    proto = oe.protocol({"time_steps": time_steps})
    ours = []
    for seed in range(seeds):
        with scheduler.Evaluator(splits, seed=seed, input_shape=(28, 28, 1), protocol=proto, progress=False) as ev:
            ours.append([e.fitness for e in ev.evaluate(phenotypes, generation=0)])
    twin = [
        [twin_torch.evaluate(p, train, fitness, time_steps=time_steps, seed=seed)["fitness"] for p in phenotypes]
        for seed in range(seeds)
    ]
    rows = []
    for i, p in enumerate(phenotypes):
        a, b = [s[i] for s in ours], [s[i] for s in twin]
        spread = max(max(a) - min(a), max(b) - min(b))
        diff = statistics.mean(a) - statistics.mean(b)
        rows.append({"network": p.text, "ours": a, "twin": b, "mean_diff": diff, "spread": spread})
    return rows


def verdicts(result: dict) -> dict:
    """One data set's ``forward_exact``, ``forward_ok`` and ``accuracy_ok`` from its rows (the criteria above)."""
    for row in result["accuracy"]:  # 1e-6: ours are float32 accuracies, the twin's float64
        row["agree"] = abs(row["mean_diff"]) <= row["spread"] + 1e-6
    forward = result["forward"]
    return result | {
        "forward_exact": sum(r["equal"] and r["loss_rel_diff"] <= 1e-5 for r in forward),
        "forward_ok": all(r["differing_share"] <= FLIPS for r in forward),
        "accuracy_ok": all(r["agree"] for r in result["accuracy"]) if result["accuracy"] else None,
    }


def main(args) -> None:
    payload = common.header("original_engine_check", common.load_average())
    payload["settings"] = {
        k: v for k, v in vars(args).items() if k.startswith("check") or k in ("seed", "subset", "datasets", "quick")
    }
    payload["settings"]["torch_threads"] = torch.get_num_threads()
    payload["tolerances"] = {
        "forward": "exact: output spikes equal element for element and loss rel. diff <= 1e-5; "
        f"ok: at most {FLIPS:.1%} of output spikes differ (last-bit flips at a threshold)",
        "accuracy": "|mean(ours) - mean(twin)| <= max(range(ours), range(twin)) + 1e-6 over the seeds",
    }
    name = args.name or "original_engine_check" + ("_quick" if args.quick else "")
    subset = args.subset or (1500 if args.quick else 3000)
    payload["settings"]["accuracy_subset"] = subset
    for dataset in args.datasets.split(","):
        t = args.time_steps or oe.PAPER_T[dataset]
        drawn = oe.draw_generation(args.seed, args.offspring)
        # The cheapest first: the accuracy check trains each one 2 x seeds times.
        costs = [architecture.cost(architecture.signature(p), (28, 28, 1)) for p in drawn]
        phenotypes = [drawn[i] for i in sorted(range(len(drawn)), key=costs.__getitem__)[: args.check_networks]]
        splits, source = common.load_splits(dataset, args.seed, subset)
        images, labels = splits.fitness.images[:16], splits.fitness.labels[:16]
        start = time.perf_counter()
        forward = [forward_check(p, images, labels, t, args.check_gain, i) for i, p in enumerate(drawn)]
        for row in forward:
            print(dataset, "forward", {k: row[k] for k in ("output_spikes", "differing_share", "loss_rel_diff")})
        accuracy = accuracy_check(phenotypes, splits, t, args.check_seeds) if args.check_seeds else []
        for row in accuracy:
            print(dataset, "accuracy", {k: row[k] for k in ("ours", "twin", "mean_diff", "spread")})
        payload[dataset] = verdicts(
            {
                "data": source,
                "time_steps": t,
                "forward": forward,
                "accuracy": accuracy,
                "seconds": time.perf_counter() - start,
            }
        )
        payload["load_average"]["after"] = common.load_average()
        print("wrote", common.write_result(name, payload, args.out), flush=True)
