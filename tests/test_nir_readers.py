"""``export --for READER``: the graph rewritten per reader keeps NIR's semantics exactly, or is refused.

No reader is installed here: each rewritten graph is checked against the
original under NIR's own semantics with tests/nir_sim.py (the original is
checked against our network in tests/test_export.py), and against what the
reader assumes (its dt, r = 1, no AvgPool2d, no Linear). Whether the
readers themselves agree is benchmarks/nir_readers.py's measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata

import numpy as np
import pytest

from spenser_jax import export
from spenser_jax.genome import phenotype
from spenser_jax.snn import nir_readers as nr

import nir_sim
from helpers import drawn_params

nir = pytest.importorskip("nir")

SHAPE = (12, 12, 2)
T, B = 8, 4
ACT = "layer:act beta:{b} beta-trainable:True threshold:{t} threshold-trainable:True surr-grad:atan reset:zero"
ADAM = "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"


def text(beta: float = 0.95, first_act: bool = False) -> str:
    """Every node kind the export writes; layer 5's β = ``beta`` (1.0: an IF node)."""
    layers = [ACT.format(b=0.6, t=0.5)] if first_act else []
    return " ".join(
        layers
        + [
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:valid bias:True",
            ACT.format(b=0.5, t=0.5),
            "layer:conv num-filters:6 filter-shape:3 stride:1 padding:same bias:False",
            "layer:no-op",
            "layer:pool-avg kernel-size:3",
            ACT.format(b=beta, t=0.5),
            "layer:fc num-units:16 bias:True",
            ACT.format(b=0.9, t=0.3),
            "layer:fc num-units:10 bias:False",
            ACT.format(b=0.75, t=0.5),
            ADAM,
        ]
    )


def graph_of(source: str, seed: int = 0, gain: float = 3.0):
    """``to_nir`` of ``source`` with NumPy weights (PyTorch's bound times ``gain``: every layer spikes)."""
    ph = phenotype.parse(source)
    params = drawn_params(ph, SHAPE, seed, gain)
    return ph, params, export.to_nir(ph, params, input_shape=SHAPE, time_steps=T)


def spikes(seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((T, B, SHAPE[2], *SHAPE[:2])) < 0.5).astype(np.float32)


def snapshot(graph) -> dict:
    return {
        (name, f.name): np.array(getattr(node, f.name), copy=True)
        for name, node in graph.nodes.items()
        for f in dataclasses.fields(node)
        if isinstance(getattr(node, f.name), np.ndarray)
    }


def assert_same_semantics(original, rewritten, x):
    """Every node's spikes equal, and no membrane near its threshold (rounding cannot flip one)."""
    a, b = nir_sim.simulate(original, x), nir_sim.simulate(rewritten, x)
    np.testing.assert_array_equal(b.output, a.output)
    for name, v in b.membranes.items():
        np.testing.assert_array_equal(b.nodes[name], a.nodes[name], err_msg=name)
        np.testing.assert_allclose(v, a.membranes[name], rtol=0, atol=1e-12, err_msg=name)
        assert np.abs(v - np.asarray(rewritten.nodes[name].v_threshold)).min() > 1e-6, name
    for name in a.membranes:
        assert 0 < a.nodes[name].sum() < a.nodes[name].size, name  # every layer spikes, not everywhere


@pytest.fixture(scope="module")
def graphs():
    return {beta: graph_of(text(beta)) for beta in (0.95, 1.0)}


@pytest.mark.parametrize("beta", [0.95, 1.0])
@pytest.mark.parametrize("reader", list(nr.READERS))
def test_each_reader_gets_an_exact_graph_or_a_refusal(graphs, reader, beta):
    ph, _, graph = graphs[beta]
    before = snapshot(graph)
    spec = nr.READERS[reader]
    expected = nr.refusals(graph, spec)
    if expected:
        with pytest.raises(export.NotExportable) as err:
            export.graph_for(graph, ph, reader)
        assert err.value.target == spec.label and str(err.value).startswith(f"not exportable to {spec.label}: ")
        labels = export.node_labels(ph)
        assert err.value.reasons == [f"{labels[n]}: {why}" for n, why in expected.items()]
        return
    rewritten = export.graph_for(graph, ph, reader)
    if reader == "nir":
        assert rewritten is graph
        return
    kinds = {type(n).__name__ for n in rewritten.nodes.values()}
    meta = rewritten.metadata
    assert meta["reader"] == reader and meta["reader_version"] == spec.version
    assert meta["phenotype"] == ph.text and meta["time_steps"] == T
    if spec.dt is not None:
        assert meta["dt"] == spec.dt
    if spec.fold_r:
        assert all(np.all(n.r == 1.0) for n in rewritten.nodes.values() if isinstance(n, nir.LIF))
    if spec.sum_pool:
        assert "AvgPool2d" not in kinds and "SumPool2d" in kinds
    if spec.affine:
        assert "Linear" not in kinds
    assert_same_semantics(graph, rewritten, spikes())
    after = snapshot(graph)  # pure: the original graph is untouched
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=str(key))


def test_what_each_reader_refuses(graphs):
    """The readers' rules as read from their source: which of our networks they can run."""
    runs = {
        beta: [r for r in nr.READERS if not nr.refusals(graph, nr.READERS[r])] for beta, (_, _, graph) in graphs.items()
    }
    assert runs == {0.95: ["nir", "snntorch", "norse"], 1.0: ["nir", "norse"]}
    ph, _, graph = graphs[1.0]
    with pytest.raises(export.NotExportable, match=r"snntorch 1.0.0: layer 5 \(act\): β = 1 is a nir.IF node"):
        export.graph_for(graph, ph, "snntorch")


def test_fold_r_refuses_a_lif_on_the_input():
    ph, _, graph = graph_of(text(first_act=True))
    with pytest.raises(export.NotExportable) as err:
        export.graph_for(graph, ph, "norse")
    assert err.value.reasons == [
        "layer 0 (act): r = 2.5 cannot be folded into weights: no weighted node lies before it "
        "(the nearest is input, Input)"
    ]


@pytest.mark.parametrize("dt", [1e-3, 0.5, 1.0])
def test_retime_keeps_the_dynamics(graphs, dt):
    _, _, graph = graphs[1.0]  # an IF node too
    again = nr.retime(graph, dt)
    assert again.metadata["dt"] == dt
    assert_same_semantics(graph, again, spikes(2))


def test_fold_and_sum_pool_arithmetic(graphs):
    """conv_2 (before pool_3 and lif_4) carries 1/9 and lif_4's r; dense_5 carries lif_6's r."""
    _, _, graph = graphs[0.95]
    folded = nr.fold_r(nr.sum_pools(graph))
    n, m = graph.nodes, folded.nodes
    np.testing.assert_allclose(m["conv_2"].weight, n["conv_2"].weight * n["lif_4"].r.flat[0] / 9, rtol=1e-15)
    np.testing.assert_allclose(m["dense_5"].bias, n["dense_5"].bias * n["lif_6"].r.flat[0], rtol=1e-15)
    assert m["conv_2"].weight.dtype == np.float64
    np.testing.assert_array_equal(m["pool_3"].kernel_size, [3, 3])
    np.testing.assert_array_equal(m["lif_4"].tau, n["lif_4"].tau)
    assert_same_semantics(graph, folded, spikes(3))


def test_sum_pool_folds_forward_after_spikes():
    """A pool on spikes (no weighted node before it) passes its 1/k² to the weights after it."""
    lif = export.lif_node(0.5, 0.5, (2, 4, 4))
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2, 4, 4])),
            "lif": lif,
            "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
            "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0, end_dim=-1),
            "fc": nir.Affine(weight=rng.uniform(-2, 2, (3, 8)), bias=rng.uniform(-0.5, 0.5, 3)),
            "out_lif": export.lif_node(0.5, 0.3, (3,)),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "out_lif")]
        + [("out_lif", "output")],
        metadata={"dt": export.DT},
    )
    summed = nr.sum_pools(graph)
    np.testing.assert_allclose(summed.nodes["fc"].weight, graph.nodes["fc"].weight / 4, rtol=1e-15)
    np.testing.assert_array_equal(summed.nodes["fc"].bias, graph.nodes["fc"].bias)
    x = (rng.random((T, B, 2, 4, 4)) < 0.7).astype(np.float32) * 1.5
    a, b = nir_sim.simulate(graph, x), nir_sim.simulate(summed, x)
    np.testing.assert_array_equal(b.output, a.output)
    assert 0 < a.output.sum() < a.output.size


def test_unknown_reader():
    with pytest.raises(ValueError, match="reader must be one of nir, snntorch"):
        nr.for_reader(None, "lava")


# The default export (``--for nir``), byte for byte as before --for existed:
# the sha256 of the file that main's export._write made of the network below before --for
# existed, with the nir and h5py releases named (HDF5 files differ between h5py builds).
DEFAULT_SHA256 = {("1.0.8", "3.16.0"): "8a64ee011f32e09a98e114f0aad927ff62024b74e587402f92802f77705a72e9"}


def test_default_export_is_byte_identical(tmp_path):
    ph, _, graph = graph_of(text(0.95), seed=5)
    export._write(tmp_path / "a.nir", export.graph_for(graph, ph, "nir"))
    export._write(tmp_path / "b.nir", graph)
    a, b = ((tmp_path / n).read_bytes() for n in ("a.nir", "b.nir"))
    assert a == b
    versions = (importlib.metadata.version("nir"), importlib.metadata.version("h5py"))
    if versions not in DEFAULT_SHA256:
        pytest.skip(f"no recorded hash for nir, h5py {versions}")
    assert hashlib.sha256(a).hexdigest() == DEFAULT_SHA256[versions]
