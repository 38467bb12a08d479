"""Activity and energy: spike counts, exact SynOps, energy, objectives, the Pareto archive."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import training
from spenser_jax.genome import phenotype
from spenser_jax.genome.phenotype import same_padding
from spenser_jax.genome.units import Conv
from spenser_jax.run import files
from spenser_jax.search import one_plus_lambda
from spenser_jax.snn import activity, architecture, network
from spenser_jax.training.evaluation import Evaluation

SHAPE = (9, 8, 2)
ACT = "layer:act beta:0.8 beta-trainable:False threshold:0.3 threshold-trainable:False surr-grad:atan reset:zero"
# A valid conv, a strided same conv (asymmetric padding at the border), an
# avg pool (its pooled values stand for the spikes under it), a dense layer.
NET = phenotype.parse(
    "layer:conv num-filters:3 filter-shape:3 stride:1 padding:valid bias:True "
    + ACT
    + " layer:conv num-filters:4 filter-shape:2 stride:2 padding:same bias:False "
    + ACT
    + " layer:pool-avg kernel-size:2 layer:dropout rate:0.3 layer:fc num-units:10 bias:True "
    + ACT
    + " learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
)


def brute_fanout(layer: Conv, h: int, w: int) -> np.ndarray:
    """Output positions reading each input position, by enumerating every window."""
    pads = [same_padding(n, layer.kernel, layer.stride) if layer.padding == "same" else (0, 0) for n in (h, w)]
    counts = np.zeros((h, w), int)
    out_h = (h + sum(pads[0]) - layer.kernel) // layer.stride + 1
    out_w = (w + sum(pads[1]) - layer.kernel) // layer.stride + 1
    for oh, ow in itertools.product(range(out_h), range(out_w)):
        for dh, dw in itertools.product(range(layer.kernel), range(layer.kernel)):
            r, c = oh * layer.stride - pads[0][0] + dh, ow * layer.stride - pads[1][0] + dw
            if 0 <= r < h and 0 <= c < w:
                counts[r, c] += 1
    return counts


@pytest.mark.parametrize(
    "kernel, stride, padding", [(3, 1, "valid"), (2, 2, "same"), (3, 2, "same"), (4, 3, "valid"), (4, 3, "same")]
)
def test_conv_fanout_is_exact_at_the_borders(kernel, stride, padding):
    layer = Conv(5, kernel, stride, padding, True)
    expected = brute_fanout(layer, 9, 8)
    np.testing.assert_array_equal(activity.conv_fanout(layer, (9, 8)), expected)
    # The same count as convolving with a ones kernel: the input gradient of the summed output.
    pads = tuple(same_padding(n, kernel, stride) if padding == "same" else (0, 0) for n in (9, 8))

    def summed(x):
        return jax.lax.conv_general_dilated(
            x, jnp.ones((kernel, kernel, 1, 1)), (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        ).sum()

    grad = jax.grad(summed)(jnp.zeros((1, 9, 8, 1)))[0, :, :, 0]
    np.testing.assert_array_equal(grad, expected)
    if kernel > stride:  # overlapping windows: the borders are read less often than the middle
        assert len(np.unique(expected)) > 1


@pytest.fixture(scope="module")
def measured_with_totals():
    sig, hyper = architecture.split(NET)
    params = network.init_params(jax.random.key(0), sig, hyper, SHAPE)
    params = jax.tree.map(lambda x: 2.5 * x if x.ndim else x, params)  # make every layer spike
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (11, *SHAPE), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 11), jnp.int32)
    key = jax.random.key(5)
    result = training.score(
        sig, training.Protocol(time_steps=3, eval_batch_size=4), params, hyper, images, labels, key, activity=True
    )
    totals = jax.tree.map(np.asarray, result["activity"])
    summary = activity.summarise(sig, SHAPE, 3, totals, 11)
    # The same forward pass, batch by batch, with every spike train kept.
    trains, inputs = [], []
    for b, start in enumerate(range(0, 11, 4)):
        from spenser_jax.snn import encoding

        idx = np.arange(start, start + 4) % 11
        spikes = encoding.rate(jax.random.fold_in(key, b), images[idx], 3)
        keep = np.arange(start, start + 4) < 11
        out, lif = network.SpikingNetwork(sig).apply(
            {"params": params}, spikes, hyper, method=network.SpikingNetwork.recording, what="trace"
        )
        inputs.append(np.asarray(spikes)[:, keep])
        trains.append([np.asarray(x)[:, keep] for x in lif])
    trains = [np.concatenate([t[k] for t in trains], axis=1) for k in range(3)]
    return sig, summary, np.concatenate(inputs, axis=1), trains, totals


@pytest.fixture(scope="module")
def measured(measured_with_totals):
    return measured_with_totals[:4]


def test_spike_counts_are_the_networks_spikes(measured):
    sig, summary, inputs, trains = measured
    assert all(t.sum() > 0 for t in trains)
    for counted, train in zip(summary["spikes_per_sample"], trains):
        assert counted * 11 == pytest.approx(train.sum(), abs=1e-3)
    assert summary["input_spikes_per_sample"] * 11 == pytest.approx(inputs.sum(), abs=1e-3)
    neurons = [np.prod(t.shape[2:]) for t in trains]
    assert summary["firing_rates"] == pytest.approx(
        [s / (k * 3) for s, k in zip(summary["spikes_per_sample"], neurons)]
    )


def test_synops_equal_brute_force_enumeration(measured):
    """Every spike entering a weighted layer, times the synapses it drives, counted one by one."""
    sig, summary, inputs, trains = measured
    conv1, _, conv2, _, pool, _, fc, _ = sig.layers
    expected = []
    # conv1 reads the input spikes; conv2 reads LIF 0; the fc reads LIF 1 through
    # an avg pool: each pooled value is 1/4 of the spikes under its window.
    for layer, train, shape in ((conv1, inputs, SHAPE), (conv2, trains[0], (7, 6, 3))):
        fan = brute_fanout(layer, *shape[:2])
        total = 0
        for _t, _b, h, w, _c in zip(*np.nonzero(train)):
            total += fan[h, w] * layer.filters
        expected.append(total / 11)
    pooled_spikes = trains[1][:, :, :4, :2].sum()  # the 4x3 map pooled by 2: rows 0-3, column pair 0-1
    expected.append(pooled_spikes * fc.units / 11)
    np.testing.assert_allclose(summary["synops_per_layer"], expected, rtol=1e-6)
    assert summary["synops_per_sample"] == pytest.approx(sum(expected), rel=1e-6)
    assert summary["macs_per_sample"] == 0  # every weighted layer reads spikes


def test_energy_adds_up(measured):
    sig, summary, _, trains = measured
    e = activity.EnergyModel()
    updates = sum(np.prod(t.shape[2:]) for t in trains) * 3
    assert summary["neuron_updates_per_sample"] == updates
    assert summary["energy_pj_per_sample"] == pytest.approx(
        summary["synops_per_sample"] * e.e_ac_pj + updates * e.e_neuron_pj
    )
    assert summary["ann_energy_pj_per_sample"] == architecture.macs(sig, SHAPE) * e.e_mac_pj
    assert summary["parameters"] == phenotype.count_parameters(NET, SHAPE)
    # The break-even point: at that many SynOps the spiking estimate equals the ANN's.
    fixed = summary["energy_pj_per_sample"] - summary["synops_per_sample"] * e.e_ac_pj
    crossing = fixed + summary["break_even_synops_per_sample"] * e.e_ac_pj
    assert crossing == pytest.approx(summary["ann_energy_pj_per_sample"], rel=1e-9)


def test_memory_traffic_counts_every_read_and_write(measured_with_totals):
    sig, summary, _, trains, totals = measured_with_totals
    e = activity.EnergyModel(memory=True, e_read_pj=5.0, e_write_pj=7.0)
    spikes = sum(float(t.sum()) for t in trains) / 11
    neurons = sum(np.prod(t.shape[2:]) for t in trains)
    updates = neurons * 3
    with_memory = activity.summarise(sig, SHAPE, 3, totals, 11, energy=e)
    # Operations as before, plus: a weight read per SynOp, a membrane read and
    # write per update, a write per spike; the ANN reads a weight and an
    # input per MAC and writes each activation once.
    expected = summary["synops_per_sample"] * (0.9 + 5.0) + updates * (4.6 + 5.0 + 7.0) + spikes * 7.0
    assert with_memory["energy_pj_per_sample"] == pytest.approx(expected, rel=1e-6)
    macs = architecture.macs(sig, SHAPE)
    assert with_memory["ann_energy_pj_per_sample"] == pytest.approx(macs * (4.6 + 10.0) + neurons * 7.0)
    assert with_memory["synops_per_sample"] == summary["synops_per_sample"]
    # Memory traffic costs the sparse network more in proportion: the ratio to the ANN falls.
    ratio = summary["ann_energy_pj_per_sample"] / summary["energy_pj_per_sample"]
    assert with_memory["ann_energy_pj_per_sample"] / with_memory["energy_pj_per_sample"] < ratio


def test_analog_inputs_count_as_macs():
    sig = architecture.signature(NET)
    totals = {"input": 0.0, "lif": [0.0, 0.0, 0.0], "inputs": [np.zeros((9, 8)), np.zeros((7, 6)), 0.0]}
    spiking = activity.summarise(sig, SHAPE, 3, totals, 1)
    analog = activity.summarise(sig, SHAPE, 3, totals, 1, spiking_input=False)
    assert spiking["macs_per_sample"] == 0
    # The first conv reads the image itself: every input element times its fan-out, every step.
    assert analog["macs_per_sample"] == brute_fanout(sig.layers[0], 9, 8).sum() * 2 * 3 * 3


# --- objectives and the archive --------------------------------------------------------


def ev(accuracy, synops, parameters=100):
    return Evaluation(accuracy, parameters=parameters, activity={"synops_per_sample": synops})


def test_objectives_select_what_they_should():
    state = one_plus_lambda.init(0)
    cands = [one_plus_lambda.Candidate(None), one_plus_lambda.Candidate(None), one_plus_lambda.Candidate(None)]
    evals = [ev(0.90, 5e6), ev(0.89, 1e5), ev(0.50, 1e3, parameters=10)]
    assert one_plus_lambda.tell(state, cands, evals)[1]["best_index"] == 0  # accuracy alone
    scalar = one_plus_lambda.Objective("scalarised", synops_reference=1e6, synops_weight=-0.08)
    assert one_plus_lambda.tell(state, cands, evals, scalar)[1]["best_index"] == 1
    budget = one_plus_lambda.Objective("constrained", max_synops=1e6)
    new, metrics = one_plus_lambda.tell(state, cands, evals, budget)
    assert metrics["best_index"] == 1 and metrics["best_score"] == [1.0, 0.89]
    # Over budget loses to any candidate within it, even far less accurate.
    tight = one_plus_lambda.Objective("constrained", max_synops=1e4)
    assert one_plus_lambda.tell(state, cands, evals, tight)[1]["best_index"] == 2
    params = one_plus_lambda.Objective("constrained", max_parameters=50)
    assert one_plus_lambda.tell(state, cands, evals, params)[1]["best_index"] == 2
    # The parent keeps its score: an offspring must beat it under the objective.
    _, later = one_plus_lambda.tell(new, cands[:1], [ev(0.95, 5e6)], budget)
    assert not later["parent_replaced"]
    # Over budget, nearer the budget wins over more accurate: by how far over, then accuracy.
    far = one_plus_lambda.Objective("constrained", max_synops=1e2)
    assert [far.score(e)[0] for e in evals] == [
        pytest.approx(-(5e6 / 1e2 - 1)),
        pytest.approx(-(1e5 / 1e2 - 1)),
        pytest.approx(-9.0),
    ]
    assert one_plus_lambda.tell(state, cands, evals, far)[1]["best_index"] == 2
    assert far.score(ev(0.3, 1e2)) == (1.0, 0.3)  # at the budget is within it
    with pytest.raises(ValueError, match="constrained"):
        one_plus_lambda.Objective("constrained")
    for bad in (-1, 0, True):
        with pytest.raises(ValueError, match="max_synops"):
            one_plus_lambda.Objective("constrained", max_synops=bad)
    with pytest.raises(ValueError, match="synops_weight"):
        one_plus_lambda.Objective("scalarised", synops_weight=0.1)


def test_pareto_front():
    pts = [(0.9, -10), (0.8, -5), (0.85, -20), (0.8, -5), (0.5, -1), (0.4, -3)]
    assert one_plus_lambda.pareto_front(pts) == [0, 1, 3, 4]


def test_pareto_archive_from_records():
    records = [
        {
            "generation": 0,
            "individuals": [
                {
                    "phenotype": "a",
                    "fitness": 0.9,
                    "status": "ok",
                    "synops_per_sample": 10.0,
                    "energy_pj_per_sample": 9.0,
                    "parameters": 50,
                },
                {
                    "phenotype": "b",
                    "fitness": 0.7,
                    "status": "ok",
                    "synops_per_sample": 2.0,
                    "energy_pj_per_sample": 1.8,
                    "parameters": 500,
                },
                {"phenotype": "c", "fitness": -1.0, "status": "error", "parameters": 5},
                {
                    "phenotype": "d",
                    "fitness": 0.6,
                    "status": "ok",
                    "synops_per_sample": 20.0,
                    "energy_pj_per_sample": 18.0,
                    "parameters": 60,
                },
            ],
        }
    ]
    archive = files.pareto_archive(records)
    assert archive["evaluated"] == 3
    assert [p["phenotype"] for p in archive["accuracy_synops"]] == ["b", "a"]
    assert [p["phenotype"] for p in archive["accuracy_parameters"]] == ["a"]
