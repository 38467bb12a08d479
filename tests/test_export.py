"""NIR export: exact spikes through nir.write/nir.read, refusals, metadata, the LIF mapping.

The reference is tests/nir_sim.py, a float64 NumPy simulator written from
NIR's node definitions; tests/fixtures/snntorch_nir.npz holds what snntorch's
own NIR import computes for an exported graph (made by
tests/fixtures/make_snntorch_nir_reference.py; no torch needed here).
The last part covers the export grammar (grammars/csnn_nir.grammar: every
network it derives exports) and ``python -m spenser_jax.export`` on a real
search run and on hand-made run directories.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from spenser_jax import data, export
from spenser_jax.genome import mutation, phenotype
from spenser_jax.genome.space import SearchSpace
from spenser_jax.grammar import NonTerminal, Terminal, load_grammar
from spenser_jax.run import checkpoint, files, runs
from spenser_jax.search.one_plus_lambda import State
from spenser_jax.snn import network
from spenser_jax.snn.architecture import LIFSlot, split
from spenser_jax.snn.lif import lif_sequence

import nir_sim  # tests/ is on sys.path, as for helpers.py

FIXTURE = Path(__file__).parent / "fixtures" / "snntorch_nir.npz"
FIXTURE_NIR = Path(__file__).parent / "fixtures" / "snntorch_nir.nir"

INPUT_SHAPE = (12, 12, 2)  # H, W, C: two channels, so the C, H, W permutations matter
T, B = 8, 4


def lif(beta, threshold, trainable=(True, True), surrogate="atan", reset="zero"):
    return (
        f"layer:act beta:{beta} beta-trainable:{trainable[0]} threshold:{threshold} "
        f"threshold-trainable:{trainable[1]} surr-grad:{surrogate} reset:{reset}"
    )


ADAM = "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"


def network_text(beta4: float) -> str:
    """Every exportable layer kind; layer 5 has β = ``beta4`` (1.0: an IF node)."""
    return " ".join(
        [
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:valid bias:True",  # 0 -> 10x10x6
            lif(0.5, 0.5, (True, False)),  # 1
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:same bias:False",  # 2 pads (1, 1)
            "layer:no-op",  # 3
            "layer:pool-avg kernel-size:3",  # 4 -> 3x3 (floor)
            lif(beta4, 0.5, (False, True), "fast-sigmoid"),  # 5
            "layer:conv num-filters:8 filter-shape:3 stride:2 padding:same bias:True",  # 6 -> 2x2, pads (1, 1)
            lif(0.0, 0.3),  # 7
            "layer:dropout rate:0.3",  # 8
            "layer:fc num-units:16 bias:True",  # 9
            lif(0.9, 0.3),  # 10
            "layer:fc num-units:10 bias:False",  # 11
            lif(0.75, 0.5, (False, False)),  # 12
            ADAM,
        ]
    )


TEXT = network_text(1.0)
GAIN = 3.0  # weights: PyTorch's U(±1/sqrt(fan_in)) times this, so every layer spikes


def make_params(ph: phenotype.Phenotype, seed: int = 0, gain: float = GAIN) -> dict:
    """Parameters shaped and named exactly as ``network.init_params`` makes them.

    The tree comes from ``init_params`` itself, traced with ``jax.eval_shape``
    (its jitted initialiser takes ~25 s to compile on a 2-core machine); the
    weights are NumPy draws of PyTorch's scheme times ``gain``; β and θ are
    the phenotype's float genes, as ``init_params`` sets them.
    """
    sig, hyper = split(ph)
    tree = jax.eval_shape(lambda key: network.init_params(key, sig, hyper, INPUT_SHAPE), jax.random.key(0))
    rng = np.random.default_rng(seed)
    betas, thresholds = np.asarray(hyper["beta"]), np.asarray(hyper["threshold"])
    params, lif_index = {}, 0
    for name in sorted(tree, key=lambda n: int(n.rsplit("_", 1)[1])):
        if name.startswith("lif_"):
            params[name] = {"beta": np.float32(betas[lif_index]), "threshold": np.float32(thresholds[lif_index])}
            lif_index += 1
        else:
            fan_in = int(np.prod(tree[name]["kernel"].shape[:-1]))
            bound = gain / np.sqrt(fan_in)
            params[name] = {
                leaf: rng.uniform(-bound, bound, s.shape).astype(np.float32) for leaf, s in tree[name].items()
            }
    return params


def input_spikes(seed: int = 0) -> np.ndarray:
    """Fixed random spikes ``[T, B, H, W, C]``."""
    return (np.random.default_rng(seed).random((T, B, *INPUT_SHAPE)) < 0.5).astype(np.float32)


def layer_index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


@functools.lru_cache(maxsize=4)
def lif_outputs_fn(sig):
    """One jitted program: the spikes of every LIF layer of ``sig`` (prefix networks)."""
    lif_layers = [j for j, spec in enumerate(sig.layers) if isinstance(spec, LIFSlot)]

    def run(params, spikes, hyper):
        out = {}
        for j in lif_layers:
            sub = dataclasses.replace(sig, layers=sig.layers[: j + 1])
            sub_params = {k: v for k, v in params.items() if layer_index(k) <= j}
            out[f"lif_{j}"] = network.SpikingNetwork(sub).apply({"params": sub_params}, spikes, hyper, None)
        return out

    return jax.jit(run)


def ours(ph, params, spikes) -> dict:
    """Our network's spikes per LIF layer, channels first; the last one is the output."""
    sig, hyper = split(ph)
    out = lif_outputs_fn(sig)(params, jnp.asarray(spikes), hyper)
    return {k: np.asarray(v).transpose(0, 1, 4, 2, 3) if v.ndim == 5 else np.asarray(v) for k, v in out.items()}


def chw(spikes: np.ndarray) -> np.ndarray:
    return spikes.transpose(0, 1, 4, 2, 3)


def round_trip(graph, tmp_path, name="net.nir"):
    path = tmp_path / name
    nir.write(path, graph)
    return nir.read(path)


def assert_margin(trace, graph, at_least=1e-5):
    """No membrane within ``at_least`` of its threshold: float32 rounding cannot flip a spike."""
    for name, v in trace.membranes.items():
        margin = np.abs(v - np.asarray(graph.nodes[name].v_threshold)).min()
        assert margin > at_least, (name, margin)


# --------------------------------------------------------------------------
# Exact round trip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ph = phenotype.parse(TEXT)
    params = make_params(ph)
    graph = export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=T)
    read = round_trip(graph, tmp_path_factory.mktemp("nir"))
    return ph, params, read


def test_round_trip_gives_our_spikes_exactly(exported):
    ph, params, graph = exported
    spikes = input_spikes()
    mine = ours(ph, params, spikes)
    trace = nir_sim.simulate(graph, chw(spikes))

    # The network spikes in every LIF layer, but not everywhere.
    for name, s in mine.items():
        assert 0 < s.sum() < s.size, (name, s.sum())
    output = mine["lif_11"]
    assert output.shape == (T, B, 10)
    np.testing.assert_array_equal(trace.output, output)
    for name, s in mine.items():  # hidden layers too
        np.testing.assert_array_equal(trace.nodes[name], s, err_msg=name)
    assert_margin(trace, graph)

    # One sample at a time ([T, C, H, W]) gives the same spikes.
    one = nir_sim.simulate(graph, chw(spikes)[:, 2])
    np.testing.assert_array_equal(one.output, output[:, 2])


def test_graph_structure(exported):
    _, params, graph = exported
    chain = [
        "input",
        "conv_0",
        "lif_1",
        "conv_2",
        "pool_3",
        "lif_4",
        "conv_5",
        "lif_6",
        "flatten_8",
        "dense_8",
        "lif_9",
        "dense_10",
        "lif_11",
        "output",
    ]
    assert sorted(graph.nodes) == sorted(chain)  # no-op and dropout are left out
    assert sorted(graph.edges) == sorted(itertools.pairwise(chain))
    n = graph.nodes
    assert isinstance(n["lif_4"], nir.IF)  # β = 1
    assert all(isinstance(n[k], nir.LIF) for k in ("lif_1", "lif_6", "lif_9", "lif_11"))
    assert isinstance(n["dense_8"], nir.Affine) and isinstance(n["dense_10"], nir.Linear)
    assert isinstance(n["pool_3"], nir.AvgPool2d)
    np.testing.assert_array_equal(n["pool_3"].kernel_size, [3, 3])
    np.testing.assert_array_equal(n["pool_3"].stride, [3, 3])
    np.testing.assert_array_equal(n["pool_3"].padding, [0, 0])
    np.testing.assert_array_equal(n["conv_0"].padding, [0, 0])
    np.testing.assert_array_equal(n["conv_2"].padding, [1, 1])
    np.testing.assert_array_equal(n["conv_5"].padding, [1, 1])
    np.testing.assert_array_equal(n["conv_5"].stride, [2, 2])
    np.testing.assert_array_equal(n["conv_2"].bias, np.zeros(6))  # bias:False
    # Layouts: OIHW conv weights; the flattened dense input in C, H, W order.
    np.testing.assert_array_equal(n["conv_0"].weight, params["conv_0"]["kernel"].transpose(3, 2, 0, 1))
    w8 = params["dense_8"]["kernel"]  # [(h, w, c), out] for a 2x2x8 map
    h, w, c = 1, 0, 5
    np.testing.assert_array_equal(n["dense_8"].weight[:, c * 4 + h * 2 + w], w8[(h * 2 + w) * 8 + c])
    np.testing.assert_array_equal(n["dense_10"].weight, params["dense_10"]["kernel"].T)
    # Per-neuron parameters, channels first.
    assert n["lif_1"].tau.shape == (6, 10, 10) and n["lif_4"].r.shape == (6, 3, 3)
    assert n["lif_9"].v_threshold.shape == (16,)
    np.testing.assert_array_equal(n["input"].input_type["input"], [2, 12, 12])
    np.testing.assert_array_equal(n["output"].output_type["output"], [10])


def test_metadata(exported):
    ph, _, graph = exported
    meta = graph.metadata
    assert float(meta["dt"]) == export.DT == 1e-4
    assert int(meta["time_steps"]) == T
    assert meta["input_coding"] == "rate"
    assert tuple(int(x) for x in meta["input_shape"]) == (2, 12, 12)
    assert "outside" in meta["note"] or "not part of the graph" in meta["note"]
    assert "Bernoulli" in meta["note"]
    assert meta["phenotype"] == ph.text
    assert meta["source"] == "spenser_jax"


def test_dt_is_a_free_choice(exported, tmp_path):
    ph, params, _ = exported
    spikes = chw(input_spikes(1))
    reference = nir_sim.simulate(exported[2], spikes).output
    for dt in (1e-3, 1.0):
        graph = round_trip(
            export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=T, dt=dt), tmp_path, f"dt{dt}.nir"
        )
        assert float(graph.metadata["dt"]) == dt
        np.testing.assert_array_equal(nir_sim.simulate(graph, spikes).output, reference)


def test_non_square_input_and_lif_first(tmp_path):
    """H != W (a transposed axis would show), a LIF on the input, a dense layer on a map."""
    shape = (6, 9, 3)
    ph = phenotype.parse(
        " ".join(
            [
                lif(0.6, 0.5),
                "layer:conv num-filters:4 filter-shape:3 stride:1 padding:valid bias:True",
                "layer:pool-avg kernel-size:2",
                lif(0.8, 0.4),
                "layer:fc num-units:5 bias:True",
                lif(0.7, 0.4),
                ADAM,
            ]
        )
    )
    sig, hyper = split(ph)
    tree = jax.eval_shape(lambda key: network.init_params(key, sig, hyper, shape), jax.random.key(0))
    rng = np.random.default_rng(11)
    params = {
        name: {leaf: rng.uniform(-1.5, 1.5, s.shape).astype(np.float32) for leaf, s in leaves.items()}
        for name, leaves in tree.items()
        if not name.startswith("lif_")
    }
    # Layers: 0 act, 1 conv, 2 pool, 3 act, 4 fc, 5 act.
    for name, beta, theta in (("lif_0", 0.6, 0.5), ("lif_3", 0.8, 0.4), ("lif_5", 0.7, 0.4)):
        params[name] = {"beta": np.float32(beta), "threshold": np.float32(theta)}
    assert set(params) == set(tree)
    x = (np.random.default_rng(12).random((T, B, *shape)) < 0.6).astype(np.float32)
    y = np.asarray(network.SpikingNetwork(sig).apply({"params": params}, jnp.asarray(x), hyper, None))
    assert 0 < y.sum() < y.size
    graph = round_trip(export.to_nir(ph, params, input_shape=shape, time_steps=T), tmp_path)
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [3, 6, 9])
    assert graph.nodes["lif_0"].tau.shape == (3, 6, 9) and graph.nodes["lif_3"].tau.shape == (4, 2, 3)
    trace = nir_sim.simulate(graph, x.transpose(0, 1, 4, 2, 3))
    np.testing.assert_array_equal(trace.output, y)
    assert all(0 < trace.nodes[k].sum() < trace.nodes[k].size for k in ("lif_0", "lif_3"))
    assert_margin(trace, graph)


def test_invalid_phenotype_is_not_a_refusal():
    ph = phenotype.parse(
        "layer:fc num-units:10 bias:True layer:conv num-filters:3 filter-shape:3 "
        "stride:1 padding:valid bias:True " + lif(0.5, 1.0) + " " + FC + " " + ADAM
    )
    with pytest.raises(phenotype.InvalidPhenotype):
        export.exportable(ph, INPUT_SHAPE)


def test_trained_params_wrapped_and_clamped(tmp_path):
    """β outside [0, 1] (trainable β after training) is clamped as our forward pass does."""
    ph = phenotype.parse(TEXT)
    params = make_params(ph, seed=3)
    params["lif_1"]["beta"] = np.float32(-0.25)  # -> 0
    params["lif_9"]["beta"] = np.float32(1.5)  # -> 1: an IF node
    graph = round_trip(export.to_nir(ph, {"params": params}, input_shape=INPUT_SHAPE, time_steps=T), tmp_path)
    assert isinstance(graph.nodes["lif_9"], nir.IF)
    np.testing.assert_array_equal(graph.nodes["lif_1"].tau, export.DT)
    spikes = input_spikes(2)
    trace = nir_sim.simulate(graph, chw(spikes))
    np.testing.assert_array_equal(trace.output, ours(ph, params, spikes)["lif_11"])


# --------------------------------------------------------------------------
# Refusals


CONV = "layer:conv num-filters:3 filter-shape:{k} stride:{s} padding:{p} bias:True"
FC = "layer:fc num-units:10 bias:True " + lif(0.9, 1.0)


@pytest.mark.parametrize(
    "layers, label, words",
    [
        (
            [CONV.format(k=3, s=1, p="valid"), "layer:pool-max kernel-size:2", lif(0.9, 1.0)],
            "layer 1 (pool-max)",
            "max pooling",
        ),
        ([CONV.format(k=3, s=1, p="valid"), lif(0.9, 1.0, reset="subtract")], "layer 1 (act)", "reset:subtract"),
        (
            ["layer:no-op", CONV.format(k=2, s=1, p="same"), lif(0.9, 1.0)],  # even kernel: total 1
            "layer 1 (conv)",
            "(0, 1)",
        ),
        (
            [CONV.format(k=3, s=2, p="same"), lif(0.9, 1.0)],  # 12 -> 6: total 5*2 + 3 - 12 = 1
            "layer 0 (conv)",
            "symmetric",
        ),
    ],
)
def test_refusals_name_the_layer(layers, label, words):
    ph = phenotype.parse(" ".join(layers + [FC, ADAM]))
    reasons = export.exportable(ph, INPUT_SHAPE)
    assert len(reasons) == 1 and reasons[0].startswith(label + ":") and words in reasons[0]
    with pytest.raises(export.NotExportable, match=label.replace("(", r"\(").replace(")", r"\)")) as err:
        export.to_nir(ph, {}, input_shape=INPUT_SHAPE, time_steps=T)
    assert err.value.reasons == reasons
    assert isinstance(err.value, ValueError)


def test_every_refused_layer_is_named():
    ph = phenotype.parse(
        " ".join(
            [CONV.format(k=4, s=1, p="same"), "layer:pool-max kernel-size:2", lif(0.5, 1.0, reset="subtract"), FC, ADAM]
        )
    )
    reasons = export.exportable(ph, INPUT_SHAPE)
    assert [r.split(":")[0] for r in reasons] == ["layer 0 (conv)", "layer 1 (pool-max)", "layer 2 (act)"]


def test_symmetric_same_padding_exports():
    # stride 1 with an odd kernel, and stride 2 where the total is even (12 -> 6, k 2: total 0;
    # k 4: total 2).
    for k, s in ((3, 1), (5, 1), (2, 2), (4, 2)):
        ph = phenotype.parse(" ".join([CONV.format(k=k, s=s, p="same"), lif(0.9, 1.0), FC, ADAM]))
        assert export.exportable(ph, INPUT_SHAPE) == [], (k, s)


def test_exportable_without_nir(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    ph = phenotype.parse(TEXT)
    assert export.exportable(ph, INPUT_SHAPE) == []
    with pytest.raises(ImportError, match=r"pip install 'spenser_jax\[nir\]'"):
        export.to_nir(ph, make_params(ph), input_shape=INPUT_SHAPE, time_steps=T)


def test_bad_arguments():
    ph = phenotype.parse(TEXT)
    params = make_params(ph)
    with pytest.raises(ValueError, match="input_coding"):
        export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=T, input_coding="latency")
    with pytest.raises(ValueError, match="time_steps"):
        export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=0)
    with pytest.raises(ValueError, match="dt"):
        export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=T, dt=0.0)


# --------------------------------------------------------------------------
# The LIF mapping


_lif_zero = jax.jit(functools.partial(lif_sequence, reset="zero"))  # one compile for all β


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0, -0.3, 1.7])
@pytest.mark.parametrize("dt", [export.DT, 1e-3, 1.0])
def test_lif_mapping(beta, dt, tmp_path):
    theta = np.float32(0.8)
    node = export.lif_node(beta, theta, (3,), dt)
    b = float(np.clip(np.float32(beta), 0, 1))
    if b == 1.0:
        assert isinstance(node, nir.IF)
        np.testing.assert_allclose(dt * node.r, 1.0, rtol=1e-15)
    else:
        assert isinstance(node, nir.LIF)
        np.testing.assert_allclose(node.tau, dt / (1 - b), rtol=1e-15)
        np.testing.assert_allclose(node.r, node.tau / dt, rtol=1e-15)
        np.testing.assert_allclose(1 - dt / node.tau, b, rtol=0, atol=1e-15)  # β back
        np.testing.assert_allclose(node.r * dt / node.tau, 1.0, rtol=1e-15)  # input unscaled
        np.testing.assert_array_equal(node.v_leak, 0.0)
    np.testing.assert_array_equal(node.v_threshold, float(theta))
    np.testing.assert_array_equal(node.v_reset, 0.0)
    assert node.v_threshold.dtype == np.float64

    # Spike trains equal ours although NIR resets in the spike step and we in
    # the next one: 3 neurons, 64 steps of random currents (several spikes each).
    steps = 64
    currents = np.random.default_rng(7).uniform(-0.3, 0.9, (steps, 3)).astype(np.float32)
    spikes_ours, _ = _lif_zero(jnp.asarray(currents), np.float32(beta), theta)
    spikes_ours = np.asarray(spikes_ours)
    assert spikes_ours.sum(axis=0).min() >= 2
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([3])),
            "lif": node,
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "lif"), ("lif", "output")],
        metadata={"dt": dt},
    )
    graph = round_trip(graph, tmp_path)
    trace = nir_sim.simulate(graph, currents)
    np.testing.assert_array_equal(trace.output, spikes_ours)
    assert_margin(trace, graph)


# --------------------------------------------------------------------------
# snntorch's NIR import


def load_fixture():
    data = np.load(FIXTURE)
    params, hidden, rest = {}, {}, {}
    for name in data.files:
        group, _, leaf = name.partition("/")
        if group == "hidden":
            hidden[leaf] = data[name]
        elif leaf:
            params.setdefault(group, {})[leaf] = data[name]
        else:
            rest[name] = data[name]
    return params, hidden, rest


def test_snntorch_import_agrees():
    """snntorch 1.0.0's ``import_from_nir`` of an exported graph spikes exactly as we do.

    Its LIF import hard-codes dt = 1e-4 (our default), builds
    ``Leaky(beta=1 - dt/tau, threshold, reset_mechanism="zero", reset_delay=False)``
    and checks ``r·dt/tau == 1``: our mapping. It cannot import IF nodes
    (β = 1): it asserts ``r == 1``, and would build ``Leaky(beta=0.9)`` with a
    subtractive reset if it did not. It ignores the graph's ``dt``.
    """
    params, hidden, ref = load_fixture()
    ph = phenotype.parse(str(ref["text"]))
    assert tuple(ref["input_shape"]) == INPUT_SHAPE and ref["spikes"].shape == (T, B, *INPUT_SHAPE)
    # The fixture network differs from TEXT only in β of layer 5 (0.95, not 1).
    assert ph.text == network_text(0.95)
    mine = ours(ph, params, ref["spikes"])
    assert set(hidden) == set(mine)
    for name, s in hidden.items():  # every layer spikes in snntorch too
        assert 0 < s.sum() < s.size, name
        np.testing.assert_array_equal(mine[name], s, err_msg=name)
    np.testing.assert_array_equal(mine["lif_11"], ref["snntorch_output"])
    assert str(ref["if_import"]) == "AssertionError: r != 1 not supported"
    # snntorch ignores the graph's dt (it assumes 1e-4): the same network written
    # for dt = 1e-3 imports with β' = 1 - 0.1·(1 - β) and θ' = 10·θ and falls
    # silent: all 134 of our output spikes are missing.
    wrong = ref["snntorch_output_dt1e_3"]
    assert mine["lif_11"].sum() == 134 and wrong.sum() == 0
    assert (wrong != mine["lif_11"]).sum() == 134

    # The stored graph is what to_nir writes today, and our simulator agrees too.
    graph = nir.read(FIXTURE_NIR)
    again = export.to_nir(ph, params, input_shape=INPUT_SHAPE, time_steps=T)
    assert sorted(graph.nodes) == sorted(again.nodes)
    for name, node in again.nodes.items():
        for field in ("weight", "bias", "tau", "r", "v_threshold", "padding", "stride"):
            if hasattr(node, field):
                np.testing.assert_array_equal(
                    getattr(graph.nodes[name], field), getattr(node, field), err_msg=f"{name}.{field}"
                )
    trace = nir_sim.simulate(graph, chw(ref["spikes"]))
    np.testing.assert_array_equal(trace.output, ref["snntorch_output"])
    assert_margin(trace, graph)


# --------------------------------------------------------------------------
# The export grammar: every network it derives exports


ROOT = Path(__file__).resolve().parents[1]
GRAMMAR_2 = ROOT / "grammars" / "csnn.grammar"
NIR_GRAMMAR = ROOT / "grammars" / "csnn_nir.grammar"


def test_export_grammar_restricts_only_what_does_not_export():
    g2, g = load_grammar(GRAMMAR_2), load_grammar(NIR_GRAMMAR)
    changed = {nt for nt in g2.rules.keys() | g.rules.keys() if g2.rules.get(nt) != g.rules.get(nt)}
    assert changed == {"reset-mechanism", "pool-type", "convolution", "padding", "conv-valid", "conv-same"}
    assert g.rules["reset-mechanism"] == ((Terminal("reset:zero"),),)
    assert g.rules["pool-type"] == ((Terminal("layer:pool-avg"),),)
    assert g.rules["convolution"] == ((NonTerminal("conv-valid"),), (NonTerminal("conv-same"),))
    (conv,) = g2.rules["convolution"]
    valid = tuple(Terminal("padding:valid") if x == NonTerminal("padding") else x for x in conv)
    assert g.rules["conv-valid"] == (valid,)  # Grammar 2's ranges: filter 2-4, stride 1-3
    same = [x.text if isinstance(x, Terminal) else x for x in g.rules["conv-same"][0]]
    assert same == ["layer:conv", conv[1], "filter-shape:3", "stride:1", "padding:same", NonTerminal("bias")]
    # The default macro structure's modules are there.
    SearchSpace(g)


@pytest.mark.parametrize(
    "input_shape, config",
    [
        ((28, 28, 1), mutation.MutationConfig()),
        ((32, 32, 3), mutation.MutationConfig(independent_copies=False, log_scale=True)),
    ],
)
def test_every_network_of_the_export_grammar_exports(input_shape, config):
    """Random individuals and chains of their mutants (what a search visits) all export."""
    space = SearchSpace(load_grammar(NIR_GRAMMAR), input_shape=input_shape)
    rng = np.random.default_rng(13)
    seen, checked = collections.Counter(), 0
    for _ in range(100):
        genotype = mutation.sample(rng, space, config)
        for generation in range(3):
            if generation:
                genotype, _ = mutation.offspring(rng, genotype, space, config)
            ph = space.phenotype(genotype)
            assert export.exportable(ph, input_shape) == [], ph.text
            checked += 1
            seen.update(
                t
                for t in ph.text.split()
                if t.startswith(("padding:", "stride:", "filter-shape:", "layer:pool", "reset:"))
            )
    assert checked == 300
    # The search still has every choice that exports.
    assert set(seen) == {
        "padding:same",
        "padding:valid",
        "stride:1",
        "stride:2",
        "stride:3",
        "filter-shape:2",
        "filter-shape:3",
        "filter-shape:4",
        "layer:pool-avg",
        "reset:zero",
    }


def test_grammar_2_networks_mostly_do_not_export():
    """The property above is not vacuous: Grammar 2's networks are refused most of the time."""
    space = SearchSpace(load_grammar(GRAMMAR_2))
    rng = np.random.default_rng(5)
    refused = [
        bool(
            export.exportable(
                space.phenotype(mutation.sample(rng, space, mutation.MutationConfig())), space.input_shape
            )
        )
        for _ in range(50)
    ]
    assert sum(refused) > 35


# --------------------------------------------------------------------------
# python -m spenser_jax.export


def cli(module, *args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", f"spenser_jax.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_export(capsys, *args) -> tuple[int, str, str]:
    """``python -m spenser_jax.export ARGS`` in this process: (exit status, stdout, stderr)."""
    code = export.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_error(code, err, *words):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def nir_run(tmp_path_factory):
    """A real one-generation search with the export grammar, through the CLI.

    100 MNIST samples, 2 time steps, one offspring (a second one compiles a
    second network), compiled at the suite's XLA optimisation level 0
    (conftest).
    """
    root = data.default_data_dir()
    if root is None or not root.is_dir():
        message = f"MNIST not found (SPENSER_DATA_DIR or shared/data beside the checkout; got {root})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("nir-search")
    run = base / "run"
    cli(
        "evolve",
        "grammar=grammars/csnn_nir.grammar",
        "dataset.subset=100",
        "dataset.time_steps=2",
        "evolution.generations=1",
        "evolution.offspring=1",
        "runtime.progress=false",
        f"hydra.run.dir={run}",
        f"runtime.compile_cache={base / 'xla-cache'}",
    )
    return run


@functools.lru_cache(maxsize=2)
def lif_io_fn(sig):
    """One jitted program: every LIF layer's spikes and the current into it (prefix networks)."""
    lif_layers = [j for j, spec in enumerate(sig.layers) if isinstance(spec, LIFSlot)]

    def prefix(params, spikes, hyper, end):
        sub = dataclasses.replace(sig, layers=sig.layers[:end])
        sub_params = {k: v for k, v in params.items() if layer_index(k) < end}
        return network.SpikingNetwork(sub).apply({"params": sub_params}, spikes, hyper, None)

    def run(params, spikes, hyper):
        return (
            {j: prefix(params, spikes, hyper, j + 1) for j in lif_layers},
            {j: prefix(params, spikes, hyper, j) for j in lif_layers if j > 0},
        )

    return jax.jit(run)


def channels_first(x) -> np.ndarray:
    x = np.asarray(x)
    return x.transpose(0, 1, 4, 2, 3) if x.ndim == 5 else x


def output_dense(graph) -> str:
    """The Affine node feeding the output LIF (the grammar's ``fc num-units:10 bias:True``)."""
    into = {b: a for a, b in graph.edges}
    return into[into["output"]]


@pytest.mark.slow
def test_cli_exports_a_searched_network_exactly(nir_run, tmp_path):
    out = tmp_path / "net.nir"
    proc = cli("export", nir_run, "--out", out)
    run = runs.load_run(nir_run)
    graph = nir.read(out)
    assert run.test is None and "the search's weights" in proc.stdout
    assert f"wrote {out}: {len(graph.nodes)} nodes, {export._size(out.stat().st_size)}\n" in proc.stdout
    assert " -> ".join(["input", *(n for _, n in graph.edges)]) in proc.stdout
    ph = phenotype.parse(str(graph.metadata["phenotype"]))
    assert ph.text == run.best["phenotype"] and "layer:pool-max" not in ph.text
    meta = graph.metadata
    assert float(meta["dt"]) == export.DT and int(meta["time_steps"]) == 2 and meta["input_coding"] == "rate"
    assert [int(n) for n in meta["input_shape"]] == [1, 28, 28]  # from the run's data, channels first
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [1, 28, 28])

    # Fixed input spikes through the file and through our network: every LIF
    # layer's spikes equal exactly, and the currents into them agree to float32.
    weights = run.state.parent_weights
    x = (np.random.default_rng(0).random((2, 4, 28, 28, 1)) < 0.5).astype(np.float32)
    sig, hyper = split(ph)
    spikes, currents = lif_io_fn(sig)(weights, jnp.asarray(x), hyper)
    trace = nir_sim.simulate(graph, chw(x))
    into = {b: a for a, b in graph.edges}
    last = max(spikes)
    assert into["output"] == f"lif_{last}"
    np.testing.assert_array_equal(trace.output, np.asarray(spikes[last]))
    for j, s in spikes.items():
        np.testing.assert_array_equal(trace.nodes[f"lif_{j}"], channels_first(s), err_msg=f"lif_{j}")
    for j, c in currents.items():
        source = into[f"lif_{j}"]
        assert source != "input" and not source.startswith("lif_")
        np.testing.assert_allclose(trace.nodes[source], channels_first(c), rtol=1e-5, atol=1e-5, err_msg=source)
    assert_margin(trace, graph)
    counts = {f"lif_{j}": int(np.asarray(s).sum()) for j, s in spikes.items()}
    print("spikes per LIF layer (4 samples, 2 steps):", counts)
    # A network trained one epoch on 70 samples may be silent in its deeper
    # layers (this one is: only its first LIF layer spikes); the output layer
    # is compared all the same, and its input current exactly as computed.
    assert sum(counts.values()) > 0 and f"lif_{last}" in counts

    # --for norse: rewritten for norse (dt 1e-3, r folded, sum pools), the same spikes under NIR's semantics;
    # spyx refuses every act layer (tests/test_nir_readers.py covers the rewrites).
    proc = cli("export", nir_run, "--out", tmp_path / "norse.nir", "--for", "norse")
    norse = nir.read(tmp_path / "norse.nir")
    assert "for norse 1.1.0: norse.torch.from_nir" in proc.stdout and norse.metadata["reader"] == "norse"
    assert float(norse.metadata["dt"]) == 1e-3 and "dt = 0.001" in proc.stdout
    np.testing.assert_array_equal(nir_sim.simulate(norse, chw(x)).output, trace.output)
    proc = cli("export", nir_run, "--out", tmp_path / "spyx.nir", "--for", "spyx", check=False)
    assert_error(proc.returncode, proc.stderr, "not exportable to spyx 1.0.0: layer ", "(act): spyx 1.0.0's LIF")
    assert not (tmp_path / "spyx.nir").exists()


@pytest.mark.slow
def test_retrained_weights_are_the_default_once_retrain_ran(nir_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(nir_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    run = runs.load_run(run_dir)
    search = run.state.parent_weights
    retrained = jax.tree.map(lambda w: (w * np.float32(1.5)).astype(np.float32), search)
    text = run.best["phenotype"]
    checkpoint.save_weights(run_dir / files.RETRAINED, text, retrained)
    files.atomic_write(run_dir / files.TEST, json.dumps({"accuracy": 0.5}))

    def bias(path):
        graph = nir.read(path)
        return graph.nodes[output_dense(graph)].bias, output_dense(graph)

    code, out, _ = run_export(capsys, run_dir, "--out", tmp_path / "a.nir")
    assert code == 0 and "retrained weights (test accuracy 0.5000, --search-weights for the search's)" in out
    b, name = bias(tmp_path / "a.nir")
    np.testing.assert_array_equal(b, retrained[name]["bias"])
    code, out, _ = run_export(capsys, run_dir, "--out", tmp_path / "b.nir", "--search-weights")
    assert code == 0 and "the search's weights" in out
    np.testing.assert_array_equal(bias(tmp_path / "b.nir")[0], search[name]["bias"])
    # G:I of the best's generation: the weights the search kept.
    code, out, _ = run_export(capsys, run_dir, "--out", tmp_path / "c.nir", "--individual", "0:0")
    assert code == 0 and "individual 0:0" in out and "the search's weights" in out
    np.testing.assert_array_equal(bias(tmp_path / "c.nir")[0], search[name]["bias"])

    # Retrained weights of an earlier best (the search went on after retrain).
    checkpoint.save_weights(run_dir / files.RETRAINED, "layer:fc num-units:10 bias:True", retrained)
    code, out, err = run_export(capsys, run_dir, "--out", tmp_path / "d.nir")
    assert code == 0 and "earlier best" in err and "the search's weights" in out
    np.testing.assert_array_equal(bias(tmp_path / "d.nir")[0], search[name]["bias"])
    code, _, err = run_export(capsys, run_dir, "--out", tmp_path / "e.nir", "--retrained")
    assert_error(code, err, "belong to another phenotype")
    assert not (tmp_path / "e.nir").exists()


@pytest.mark.slow
def test_a_corrupt_retrained_file_blocks_only_the_retrained_weights(nir_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(nir_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    (run_dir / files.RETRAINED).write_bytes(b"\x00 not msgpack")
    files.atomic_write(run_dir / files.TEST, json.dumps({"accuracy": 0.5}))
    code, out, _ = run_export(capsys, run_dir, "--out", tmp_path / "a.nir", "--search-weights")
    assert code == 0 and "the search's weights" in out and (tmp_path / "a.nir").exists()
    code, _, err = run_export(capsys, run_dir, "--out", tmp_path / "b.nir", "--retrained")
    assert_error(code, err, f"{run_dir / files.RETRAINED}: corrupt weights file")
    assert not (tmp_path / "b.nir").exists()
    # By default, as inspect: the search's weights, and a note why not the retrained ones.
    code, out, err = run_export(capsys, run_dir, "--out", tmp_path / "c.nir")
    assert code == 0 and "the search's weights" in out and "corrupt weights file" in err


SUBTRACT, MAX_POOL = "reset:subtract", "layer:pool-max"


def grammar_2_network(seed: int = 0):
    """A Grammar 2 genotype with a max-pool layer and a subtract reset (and its space)."""
    space = SearchSpace(load_grammar(GRAMMAR_2))
    rng = np.random.default_rng(seed)
    while True:
        genotype = mutation.sample(rng, space, mutation.MutationConfig())
        text = space.text(genotype)
        if MAX_POOL in text and SUBTRACT in text:
            return space, genotype


def hand_made_run(run_dir: Path, space: SearchSpace, genotype, **identity) -> Path:
    """A run directory as a one-generation search leaves it, without the search.

    Its best is ``genotype`` (individual 0:0) with zero weights; individual
    0:1 is another network. ``run.json`` records ``input_shape``, so
    nothing reads the data set.
    """
    ph = space.phenotype(genotype)
    sig, hyper = split(ph)
    tree = jax.eval_shape(lambda key: network.init_params(key, sig, hyper, space.input_shape), jax.random.key(0))
    weights = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)
    identity = {
        "seed": 0,
        "dataset": "mnist",
        "subset": 100,
        "source": "idx",
        "time_steps": 2,
        "fitness_fraction": 0.3,
        "input_shape": list(space.input_shape),
        "grammar_sha256": files.grammar_sha256(GRAMMAR_2),
        "macro": [list(dataclasses.astuple(m)) for m in space.macro],
        **identity,
    }
    identity = json.loads(json.dumps(identity))
    run_dir.mkdir(parents=True)
    files.atomic_write(run_dir / files.RUN, json.dumps(identity))
    other = space.text(mutation.sample(np.random.default_rng(1), space, mutation.MutationConfig()))
    record = {
        "generation": 0,
        "best_fitness": 0.5,  # what every record holds (files.read_generations refuses a line without them)
        "mean_fitness": 0.375,
        "individuals": [
            {"phenotype": ph.text, "status": "ok", "fitness": 0.5},
            {"phenotype": other, "status": "ok", "fitness": 0.25},
        ],
    }
    files.append_generation(run_dir, record)
    files.atomic_write(run_dir / files.BEST, json.dumps({"generation": 0, "fitness": 0.5, "phenotype": ph.text}))
    checkpoint.save(
        run_dir, State(seed=0, generation=1, parent=genotype, parent_fitness=0.5, parent_weights=weights), identity
    )
    return run_dir


@pytest.mark.slow
def test_cli_refuses_max_pool_and_subtract_reset(tmp_path):
    space, genotype = grammar_2_network()
    reasons = export.exportable(space.phenotype(genotype), (28, 28, 1))
    tags = [r.split(":")[0] for r in reasons]
    assert any("(pool-max)" in t for t in tags) and any("(act)" in t for t in tags)
    run_dir = hand_made_run(tmp_path / "g2", space, genotype)
    out = tmp_path / "net.nir"
    proc = cli("export", run_dir, "--out", out, check=False)
    assert_error(proc.returncode, proc.stderr, "not exportable to NIR", "grammar=grammars/csnn_nir.grammar", *reasons)
    assert proc.stdout == "" and not out.exists() and not list(tmp_path.glob(".net.nir*"))


def test_cli_errors(tmp_path, capsys, monkeypatch):
    space, genotype = grammar_2_network()
    run_dir = hand_made_run(tmp_path / "inherit", space, genotype, search={"inherit": True})
    out = tmp_path / "net.nir"

    def error(*args, words):
        code, stdout, err = run_export(capsys, *args, "--out", out)
        assert_error(code, err, *words)
        assert stdout == "" and not out.exists()

    error(run_dir, "--individual", "1:0", words=["no individual 1:0", "1 generations recorded"])
    error(run_dir, "--individual", "0:2", words=["no individual 0:2"])
    error(run_dir, "--individual", "0:1", words=["inherits weights", "--individual best"])
    error(run_dir, "--individual", "0:0", "--retrained", words=["--retrained is for --individual best"])
    error(run_dir, "--individual", "0:0", words=["not exportable", "layer "])  # the best, by G:I
    error(run_dir, "--retrained", words=["no retrained weights", "spenser_jax.retrain"])
    error(tmp_path / "nowhere", words=["not a spenser_jax run directory"])
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(run_dir / files.RUN, early / files.RUN)
    error(early, words=["no best individual yet"])
    monkeypatch.setitem(sys.modules, "nir", None)
    error(run_dir, words=["pip install 'spenser_jax[nir]'"])
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exit_:  # argparse: exclusive flags, a bad --dt
        export.main([str(run_dir), "--out", str(out), "--retrained", "--search-weights"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:  # a malformed G:I is a usage error too (issue 31)
        export.main([str(run_dir), "--out", str(out), "--individual", "best:3"])
    assert exit_.value.code == 2 and "best or G:I" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main([str(run_dir), "--out", str(out), "--dt", "0"])
    capsys.readouterr()


def test_skip_connections_are_refused():
    act = lif(0.5, 0.5)
    ph = phenotype.parse(
        "layer:conv num-filters:2 filter-shape:3 stride:1 padding:valid bias:True "
        + act
        + " layer:fc num-units:10 bias:True input:-1,1 "
        + act
        + " "
        + ADAM
    )
    reasons = export.exportable(ph, (6, 6, 1))
    assert len(reasons) == 1 and reasons[0].startswith("layer 2 (fc): reads layers [-1, 1] through a skip")
