"""The network built from a phenotype: snntorch parity, execution orders, genes."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax.genome import phenotype
from spenser_jax.snn import architecture, network
from spenser_jax.snn.loss import mse_count_loss

FIXTURE = Path(__file__).parent / "fixtures" / "snntorch_network.npz"

LIF_TRAINABLE = (
    "layer:act beta:0.9 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:subtract"
)
LIF_FIXED = (
    "layer:act beta:0.8 beta-trainable:False threshold:0.6 threshold-trainable:False surr-grad:fast-sigmoid reset:zero"
)
ADAM = "learning:adam lr:0.01 beta1:0.9 beta2:0.99 decay:0.001 amsgrad:True"
# Every kind of layer, a strided `same` conv and a dropout before a dense layer.
SMALL = (
    "layer:conv num-filters:4 filter-shape:3 stride:2 padding:same bias:True "
    "layer:pool-max kernel-size:2 " + LIF_TRAINABLE + " layer:dropout rate:0.3 "
    "layer:conv num-filters:5 filter-shape:2 stride:1 padding:valid bias:False "
    "layer:no-op " + LIF_FIXED + " layer:dropout rate:0.2 layer:fc num-units:10 bias:True " + LIF_TRAINABLE + " " + ADAM
)


def load_fixture():
    data = np.load(FIXTURE)
    out = {"params": {}, "grads": {}, "after2": {}}
    for name in data.files:
        group, _, rest = name.partition("/")
        if group in out:
            layer, leaf = rest.split("/")
            out[group].setdefault(layer, {})[leaf] = jnp.asarray(data[name])
        else:
            out[name] = data[name]
    return out


def input_spikes(key, shape, p=0.4):
    return jax.random.bernoulli(key, p, shape).astype(jnp.float32)


def run(sig, params, spikes, genes, key=None, mode="stepwise"):
    model = network.SpikingNetwork(sig, mode=mode)
    return model.apply({"params": params}, spikes, genes, key)


# --------------------------------------------------------------------------
# Parity with snntorch


@pytest.mark.parametrize("mode", network.MODES)
def test_matches_snntorch(mode):
    ref = load_fixture()
    sig, genes = architecture.split(phenotype.parse(str(ref["text"])))
    spikes = jnp.asarray(ref["spikes"])
    labels = jnp.asarray(ref["labels"])

    def loss_fn(params):
        # The fixture's net has a dropout of rate 0: with a key it must be exact.
        out = run(sig, params, spikes, genes, jax.random.key(0), mode)
        return mse_count_loss(out, labels), out

    (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(ref["params"])
    assert out.shape == ref["out_spikes"].shape
    assert ref["out_spikes"].sum() > 0
    np.testing.assert_array_equal(out, ref["out_spikes"])
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-6)
    for layer, leaves in grads.items():
        for leaf, value in leaves.items():
            expected = ref["grads"].get(layer, {}).get(leaf)
            if expected is None:  # a fixed β/θ: a buffer in torch
                assert value == 0, (layer, leaf)
            else:
                np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=f"{layer}/{leaf}")


def test_weights_in_fixture_layout_match_init_shapes():
    ref = load_fixture()
    sig, genes = architecture.split(phenotype.parse(str(ref["text"])))
    params = network.init_params(jax.random.key(0), sig, genes, ref["spikes"].shape[2:])
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref["params"])
    # β/θ start at the genes' values.
    np.testing.assert_array_equal(params["lif_6"]["beta"], np.float32(0.8))
    np.testing.assert_array_equal(params["lif_8"]["threshold"], np.float32(0.5))


# --------------------------------------------------------------------------
# Execution orders


@pytest.fixture(scope="module")
def small_net():
    sig, genes = architecture.split(phenotype.parse(SMALL))
    params = network.init_params(jax.random.key(1), sig, genes, (12, 12, 1))
    # A stronger draw than torch's default, so that every layer spikes.
    params = jax.tree.map(lambda x: x * 3 if x.ndim else x, params)
    spikes = input_spikes(jax.random.key(2), (4, 3, 12, 12, 1))
    return sig, genes, params, spikes


def test_modes_agree_with_dropout(small_net):
    sig, genes, params, spikes = small_net
    labels = jnp.array([1, 2, 3])
    results = {}
    for mode in network.MODES:

        def loss_fn(params, mode=mode):
            out = run(sig, params, spikes, genes, jax.random.key(3), mode)
            return mse_count_loss(out, labels), out

        results[mode] = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    (_, out), grads = results["stepwise"]
    assert 0 < out.sum() < out.size
    for mode in ("scan", "layerwise"):
        (_, other_out), other_grads = results[mode]
        np.testing.assert_array_equal(other_out, out, err_msg=mode)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), other_grads, grads)


def test_dropout_changes_output_and_zero_rate_is_identity(small_net):
    sig, genes, params, spikes = small_net
    no_dropout = run(sig, params, spikes, genes)
    assert not jnp.array_equal(run(sig, params, spikes, genes, jax.random.key(3)), no_dropout)
    zero = {**genes, "dropout": jnp.zeros_like(genes["dropout"])}
    np.testing.assert_array_equal(run(sig, params, spikes, zero, jax.random.key(3)), no_dropout)


def test_dropout_mask_statistics_with_traced_rate():
    keep = jax.jit(lambda key, rate: network.dropout_keep(key, 0, 3, rate, (100_000,)))
    values = np.asarray(keep(jax.random.key(0), jnp.float32(0.25)))
    np.testing.assert_allclose(np.unique(values), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((values == 0).mean() - 0.25) < 0.01
    # A new mask at every time step.
    other = keep(jax.random.key(0), jnp.float32(0.25))
    assert np.array_equal(values, other)
    step4 = network.dropout_keep(jax.random.key(0), 0, 4, jnp.float32(0.25), (100_000,))
    assert not np.array_equal(values, step4)


# --------------------------------------------------------------------------
# Layers


def test_same_padding_matches_xla_with_stride():
    conv = network.Conv2d(4, 3, 2, "same", False)
    x = jax.random.normal(jax.random.key(0), (2, 11, 12, 3))
    params = conv.init(jax.random.key(1), x)
    y = conv.apply(params, x)
    expected = jax.lax.conv_general_dilated(
        x, params["params"]["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert y.shape == (2, 6, 6, 4)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,k", [("max", 2), ("max", 3), ("avg", 3)])
def test_pooling_matches_reduce_window(kind, k):
    x = jax.random.normal(jax.random.key(0), (2, 10, 11, 3))
    init, op = (-jnp.inf, jax.lax.max) if kind == "max" else (0.0, jax.lax.add)
    expected = jax.lax.reduce_window(x, init, op, (1, k, k, 1), (1, k, k, 1), "VALID")
    if kind == "avg":
        expected = expected / (k * k)
    np.testing.assert_allclose(network.pool2d(x, kind, k), expected, rtol=1e-6)


def test_max_pool_gradient_goes_to_first_maximum_like_torch():
    x = jnp.array([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 2.0, 2.0]])[None, :, :, None]
    grad = jax.grad(lambda x: network.pool2d(x, "max", 2).sum())(x)[0, :, :, 0]
    # torch.nn.functional.max_pool2d sends a tied window's gradient to its
    # first element in row-major order.
    np.testing.assert_array_equal(grad, [[1, 0, 0, 1], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "fan_in_shape,layer",
    [
        ((1, 6, 6, 8), network.Conv2d(64, 3, 1, "valid", True)),
        ((1, 200), network.Linear(300, True)),
    ],
)
def test_torch_init_bounds(fan_in_shape, layer):
    params = layer.init(jax.random.key(0), jnp.zeros(fan_in_shape))["params"]
    kernel = params["kernel"]
    fan_in = np.prod(kernel.shape[:-1])
    bound = 1 / np.sqrt(fan_in)
    for value in (kernel, params["bias"]):
        assert np.abs(value).max() <= bound
        assert np.abs(value).max() > 0.9 * bound
    # Uniform on ±bound: standard deviation bound / sqrt(3).
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)


def test_lecun_init_has_zero_bias():
    params = network.Linear(30, True, "lecun").init(jax.random.key(0), jnp.zeros((1, 50)))
    np.testing.assert_array_equal(params["params"]["bias"], 0)
    with pytest.raises(ValueError, match="init"):
        network.Linear(30, True, "he").init(jax.random.key(0), jnp.zeros((1, 50)))


# --------------------------------------------------------------------------
# Signature and genes


def test_signature_ignores_float_genes_only():
    base = phenotype.parse(SMALL)
    floats = phenotype.parse(
        SMALL.replace("beta:0.9", "beta:0.7").replace("rate:0.3", "rate:0.1").replace("lr:0.01", "lr:0.05")
    )
    ints = phenotype.parse(SMALL.replace("num-filters:5", "num-filters:6"))
    flags = phenotype.parse(SMALL.replace("amsgrad:True", "amsgrad:False"))
    assert architecture.signature(floats) == architecture.signature(base)
    assert hash(architecture.signature(floats)) == hash(architecture.signature(base))
    assert architecture.signature(ints) != architecture.signature(base)
    assert architecture.signature(flags) != architecture.signature(base)
    g0, g1 = architecture.hyper(base), architecture.hyper(floats)
    assert jax.tree.structure(g0) == jax.tree.structure(g1)
    np.testing.assert_allclose(g1["beta"], [0.7, 0.8, 0.7])
    np.testing.assert_allclose(g1["dropout"], [0.1, 0.2])
    np.testing.assert_allclose(g1["optimizer"]["lr"], 0.05)


def test_signature_drops_noop_and_genes_are_float32():
    sig, genes = architecture.split(phenotype.parse(SMALL))
    assert len(sig.layers) == len(phenotype.parse(SMALL).layers) - 1
    assert (sig.num_lif, sig.num_dropout) == (3, 2)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(genes))
    np.testing.assert_allclose(genes["threshold"], [0.5, 0.6, 0.5])


def test_trainable_mask_follows_flags(small_net):
    sig, _, params, _ = small_net
    mask = architecture.trainable_mask(sig, params)
    assert mask["lif_2"] == {"beta": True, "threshold": True}
    assert mask["lif_5"] == {"beta": False, "threshold": False}
    assert all(jax.tree.leaves(mask["conv_0"]))


def test_default_mode_per_backend():
    assert network.default_mode("cpu") == "scan"
    assert network.default_mode("gpu") == "layerwise"
    assert network.default_mode() in network.MODES


def test_bad_inputs_are_rejected(small_net):
    sig, genes, params, spikes = small_net
    with pytest.raises(ValueError, match=r"\[T, B, H, W, C\]"):
        run(sig, params, spikes[0], genes)
    with pytest.raises(ValueError, match="mode"):
        run(sig, params, spikes, genes, mode="fast")
    model = network.SpikingNetwork(sig)
    with pytest.raises(ValueError, match="what must be one of"):
        model.apply({"params": params}, spikes, genes, method=network.SpikingNetwork.recording, what="spikes")
    with pytest.raises(ValueError, match="weights weigh activity sums"):
        model.apply(
            {"params": params},
            spikes,
            genes,
            method=network.SpikingNetwork.recording,
            what="trace",
            weights=jnp.ones(3),
        )


@pytest.mark.parametrize("mode", network.MODES)
def test_a_recording_call_outputs_what_a_plain_call_does(small_net, mode):
    sig, genes, params, spikes = small_net
    model = network.SpikingNetwork(sig, mode=mode)
    out = model.apply({"params": params}, spikes, genes, jax.random.key(3))
    assert isinstance(out, jax.Array) and out.shape == (4, 3, 10)
    for what in network.RECORDS:
        recorded_out, recorded = model.apply(
            {"params": params}, spikes, genes, jax.random.key(3), method=network.SpikingNetwork.recording, what=what
        )
        np.testing.assert_array_equal(recorded_out, out, err_msg=what)
        assert recorded is not None
    _, trace = model.apply({"params": params}, spikes, genes, method=network.SpikingNetwork.recording, what="trace")
    assert len(trace) == sum(isinstance(s, network.LIFSlot) for s in sig.layers)


def test_init_rejects_an_input_too_small():
    sig, genes = architecture.split(phenotype.parse(SMALL))
    with pytest.raises(phenotype.InvalidPhenotype, match="output shape"):
        network.init_params(jax.random.key(0), sig, genes, (4, 4, 1))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_nhwc_gradients_equal_autodiff(padding):
    from spenser_jax.genome.phenotype import same_padding
    from spenser_jax.snn.conv import _DN, conv_nhwc

    key = jax.random.key(0)
    for kernel in (2, 3, 4):
        for stride in (1, 2, 3):
            kx, kw, kg = jax.random.split(jax.random.fold_in(key, kernel * 10 + stride), 3)
            x = jax.random.normal(kx, (2, 9, 8, 3))
            w = jax.random.normal(kw, (kernel, kernel, 3, 4))
            pads = tuple(same_padding(n, kernel, stride) if padding == "same" else (0, 0) for n in (9, 8))

            def ours(x, w):
                return conv_nhwc(x, w, (stride, stride), pads)  # noqa: B023 (used in this iteration)

            def ref(x, w, stride=stride, pads=pads):
                return jax.lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_DN)

            y, vjp = jax.vjp(ours, x, w)
            y_ref, vjp_ref = jax.vjp(ref, x, w)
            g = jax.random.normal(kg, y.shape)
            np.testing.assert_array_equal(y, y_ref)
            for a, b in zip(vjp(g), vjp_ref(g)):
                np.testing.assert_array_equal(a, b)  # exactly autodiff's, as claimed
