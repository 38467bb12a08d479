"""Typed phenotype: text parsing, shape inference, parameter counts."""

import pytest

from spenser_jax.genome.phenotype import conv_output, count_parameters, infer_shapes, parse, same_padding
from spenser_jax.genome.units import LIF, Adam, Conv, Dense, InvalidPhenotype, NoOp, Pool

ACT = "layer:act beta:0.9 beta-trainable:True threshold:1.0 threshold-trainable:False surr-grad:atan reset:subtract"
ADAM = "learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:1e-06 amsgrad:False"


def net(*layers):
    return parse(" ".join(layers + (f"layer:fc num-units:10 bias:True {ACT}", ADAM)))


def test_parse_typed_layers():
    p = net(
        "layer:conv num-filters:8 filter-shape:3 stride:2 padding:same bias:False",
        "layer:pool-avg kernel-size:2",
        "layer:no-op",
        ACT,
    )
    assert p.layers[:3] == (Conv(8, 3, 2, "same", False), Pool("avg", 2), NoOp())
    assert p.layers[3] == LIF(0.9, True, 1.0, False, "atan", "subtract")
    assert p.learning == Adam(0.001, 0.9, 0.999, 1e-06, False)
    assert p.network_layers[2] == p.layers[3]
    assert parse(p.text) == p


@pytest.mark.parametrize(
    "text, message",
    [
        ("layer:warp speed:9 " + ADAM, "unknown layer type 'warp'"),
        ("layer:dropout " + ADAM, "missing keys"),
        ("layer:dropout rate:0.1 extra:1 " + ADAM, "unexpected keys"),
        ("layer:dropout rate:abc " + ADAM, "not a valid float"),
        ("layer:fc num-units:10 bias:yes " + ADAM, "not a valid bool"),
        ("layer:dropout rate:0.1", "exactly one learning rule"),
        ("rate:0.1 " + ADAM, "before any layer"),
        ("layer:dropout rate:0.1 rate:0.2 " + ADAM, "repeated"),
        (ACT.replace("reset:subtract", "reset:never") + " " + ADAM, "reset must be one of"),
        ("layer:dropout rate " + ADAM, "not key:value"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(InvalidPhenotype, match=message):
        parse(text)


@pytest.mark.parametrize("n, k, s", [(28, 3, 1), (28, 4, 2), (27, 2, 3), (5, 4, 3), (1, 4, 1)])
def test_same_padding_rule(n, k, s):
    out = conv_output(n, k, s, "same")
    before, after = same_padding(n, k, s)
    assert out == -(-n // s)
    # With this padding a valid convolution produces exactly `out` positions.
    assert conv_output(n + before + after, k, s, "valid") == out
    assert before <= after <= before + 1


def test_shapes_and_parameters():
    p = net(
        "layer:conv num-filters:4 filter-shape:3 stride:1 padding:valid bias:True",
        "layer:pool-max kernel-size:2",
        ACT,
        "layer:conv num-filters:6 filter-shape:2 stride:2 padding:same bias:False",
        ACT,
    )
    shapes = infer_shapes(p, (28, 28, 1), num_classes=10)
    assert shapes[:5] == [(26, 26, 4), (13, 13, 4), (13, 13, 4), (7, 7, 6), (7, 7, 6)]
    assert shapes[-2:] == [(10,), (10,)]
    # conv1 3*3*1*4+4, conv2 2*2*4*6, fc 7*7*6*10+10, trainable betas: 3.
    assert count_parameters(p, (28, 28, 1)) == 40 + 96 + 2950 + 3


@pytest.mark.parametrize(
    "layers, message",
    [
        (
            (
                "layer:conv num-filters:4 filter-shape:4 stride:1 padding:valid bias:True",
                "layer:pool-max kernel-size:4",
                "layer:pool-max kernel-size:4",
            ),
            "reached zero",
        ),
        (
            (
                "layer:fc num-units:5 bias:True",
                "layer:conv num-filters:4 filter-shape:2 stride:1 padding:valid bias:True",
            ),
            "follows a dense",
        ),
    ],
)
def test_invalid_shapes(layers, message):
    with pytest.raises(InvalidPhenotype, match=message):
        infer_shapes(net(*layers), (8, 8, 1))


def test_output_size_and_ending():
    with pytest.raises(InvalidPhenotype, match="3 classes"):
        infer_shapes(net(), (8, 8, 1), num_classes=3)
    with pytest.raises(InvalidPhenotype, match="end in a dense"):
        infer_shapes(parse(f"layer:pool-max kernel-size:2 {ADAM}"), (8, 8, 1))
    assert infer_shapes(net(), (8, 8, 1))[0] == (10,)
    assert Dense(10, True) == net().layers[0]


# The names users import from the genome's and network's old modules (tests, benchmarks, docs), which
# the old name must still offer for one release; asked of the finder itself, so a stale editable
# install that still has the old files cannot answer in its place.
OLD_NAMES = {
    "spenser_jax.genotype": "DEFAULT_MACRO Derivation Expansion Genotype MacroModule Module SearchSpace "
    "SearchSpaceError derive macro_for macro_from_config copy_layer sample_gene",
    "spenser_jax.phenotype": "LIF LOSS_TAGS SGD TAGS Adam CECount CEMaxMembrane CERate Conv Dense Dropout "
    "InvalidPhenotype Layer Loss MSECount MSEMembrane NoOp Optimizer Phenotype Pool RMSProp conv_output "
    "count_parameters infer_shapes layer_inputs layer_parameters merge_shape next_shape parse same_padding "
    "walk_shapes",
    "spenser_jax.network": "DEFAULT_MODES LIFParams LIFSlot Linear MODES RECORDS Conv2d SpikingNetwork _deferred "
    "_flatten _init_fn activity_sums conv_nhwc default_mode dropout_keep init_params lif_options merge_inputs pool2d",
    "spenser_jax.mutation": "MutationConfig Event sample offspring mutation_round",
    "spenser_jax.draws": "uniform uniform_many",
    "spenser_jax.conv": "conv_nhwc",
    "spenser_jax.architecture": "Signature LIFSlot DropoutSlot Hyper split signature hyper trainable_mask",
    "spenser_jax.activity": "EnergyModel summarise conv_fanout",
    "spenser_jax.activity_sums": "activity_sums input_sums sample_sums",
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_names_offer_what_they_did(old):
    import importlib

    import spenser_jax

    finder = spenser_jax._MovedFinder()
    with pytest.warns(DeprecationWarning, match=f"{old} moved to"):
        module = finder.create_module(finder.find_spec(old))
    assert module is importlib.import_module(spenser_jax.MOVED[old])
    assert [n for n in OLD_NAMES[old].split() if not hasattr(module, n)] == []
