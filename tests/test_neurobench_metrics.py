"""NeuroBench's metrics under its names: equal to what NeuroBench itself measured, and their parts checked alone.

benchmarks/neurobench_check.py ran NeuroBench 2.3.0 on the snntorch import of
exported networks and stored its figures in benchmarks/results/; here our
functions, without NeuroBench, must give those figures for the same networks
and inputs (drawn as the benchmark draws them), and the dense counts and
membrane updates are checked against independent computations.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax.genome import phenotype
from spenser_jax.snn import activity, network
from spenser_jax.snn import neurobench_metrics as nbm
from spenser_jax.snn.architecture import split

from helpers import drawn_params

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "results" / "neurobench_check_2026-12-08.json"
SHAPE = (12, 12, 2)


def metrics(ph, params, x) -> dict:
    sig, hyper = split(ph)
    record = jax.jit(
        lambda p, x, h: network.SpikingNetwork(sig).apply(
            {"params": p}, x, h, method=network.SpikingNetwork.recording, what="activity", weights=jnp.ones(x.shape[1])
        )
    )
    _, totals = record(params, jnp.asarray(x), hyper)
    summary = activity.summarise(sig, SHAPE, x.shape[0], jax.tree.map(np.asarray, totals), x.shape[1])
    updates = nbm.membrane_updates(sig, hyper, params, jnp.asarray(x))
    return {
        **nbm.static(sig, SHAPE, params),
        **nbm.workload(sig, SHAPE, x.shape[0], summary, membrane_updates=updates),
    }


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("name", ["lif"])
def test_equal_to_neurobench_itself(name):
    check = json.loads(CHECK.read_text())
    entry = check["networks"][name]
    assert entry["same_output_spikes"] and entry["versions"]["neurobench"] == nbm.NEUROBENCH_VERSION
    ph = phenotype.parse(entry["phenotype"])
    steps, batch = check["time_steps"], check["batch"]
    x = (np.random.default_rng(1).random((steps, batch, *SHAPE)) < 0.5).astype(np.float32)  # as the check drew it
    ours = flat(metrics(ph, drawn_params(ph, SHAPE), x))
    theirs = {k: v["neurobench"] for k, v in entry["metrics"].items()}
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_pruned_weights_are_the_stated_difference():
    """NeuroBench skips zero-weight connections in Effective_ACs; ours count them. All else agrees."""
    entry = json.loads(CHECK.read_text())["networks"]["pruned"]
    rows = entry["metrics"]
    assert rows["ConnectionSparsity"]["ours"] == rows["ConnectionSparsity"]["neurobench"] > 0.3
    differing = sorted(k for k, v in rows.items() if v["relative_difference"] > 1e-12)
    assert differing == ["SynapticOperations.Effective_ACs"]
    assert rows["SynapticOperations.Effective_ACs"]["ours"] > rows["SynapticOperations.Effective_ACs"]["neurobench"]


def test_dense_counts_real_connections():
    """``Dense`` per step: an all-ones conv of an all-ones input, summed (padding contributes nothing)."""
    text = (
        "layer:conv num-filters:3 filter-shape:3 stride:2 padding:same bias:True "
        "layer:act beta:0.5 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
        "layer:fc num-units:4 bias:False "
        "layer:act beta:0.5 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
        "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    sig, _ = split(phenotype.parse(text))
    summary = {"spikes_per_sample": [0.0, 0.0], "macs_per_sample": 0.0, "synops_per_sample": 0.0}
    dense = nbm.workload(sig, SHAPE, 5, summary)["SynapticOperations"]["Dense"]
    ones = jax.lax.conv_general_dilated(
        jnp.ones((1, *SHAPE)), jnp.ones((3, 3, 2, 3)), (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert ones.shape == (1, 6, 6, 3)
    assert dense == 5 * (float(ones.sum()) + 6 * 6 * 3 * 4)


def test_static_metrics_by_hand():
    text = (
        "layer:conv num-filters:3 filter-shape:2 stride:1 padding:valid bias:False "
        "layer:act beta:0.5 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
        "layer:fc num-units:4 bias:True "
        "layer:act beta:0.5 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
        "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    ph = phenotype.parse(text)
    params = drawn_params(ph, SHAPE)
    params["conv_0"]["kernel"][0, 0] = 0.0  # 2 x 3 of the 24 conv weights
    sig, _ = split(ph)
    got = nbm.static(sig, SHAPE, params)
    weights = 2 * 2 * 2 * 3 + 11 * 11 * 3 * 4
    parameters = weights + 3 + 4  # the conv's zero bias counts: NIR's Conv2d always has one
    assert got == {
        "Footprint": 4 * (parameters + 11 * 11 * 3 + 4 + 2 * nbm.LEAKY_SCALARS),
        "ParameterCount": parameters,
        "ConnectionSparsity": round(6 / weights, 4),
    }
