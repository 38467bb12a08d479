"""``benchmarks/twin_layers.py``: the original's torch layers for a phenotype, and our weights in torch's layouts.

No torch: the benchmark's twin (``benchmarks/original_engine.py``) builds its modules from these specs, so a
wrong shape, padding, name or flatten order here would make it a different network from ours.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from spenser_jax.genome import phenotype
from spenser_jax.snn import architecture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import twin_layers  # noqa: E402

TEXT = (
    "layer:conv num-filters:4 filter-shape:3 stride:2 padding:same bias:True "
    "layer:no-op "
    "layer:act beta:0.9 beta-trainable:True threshold:1.0 threshold-trainable:False surr-grad:atan reset:subtract "
    "layer:conv num-filters:6 filter-shape:2 stride:1 padding:valid bias:False "
    "layer:pool-max kernel-size:2 "
    "layer:dropout rate:0.25 "
    "layer:fc num-units:7 bias:False "
    "layer:act beta:0.5 beta-trainable:False threshold:0.7 threshold-trainable:True surr-grad:fast-sigmoid reset:zero "
    "layer:fc num-units:10 bias:True "
    "layer:act beta:0.6 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:subtract "
    "learning:adam lr:0.01 beta1:0.9 beta2:0.99 decay:0.001 amsgrad:False"
)
SHAPE = (11, 11, 1)


@pytest.fixture(scope="module")
def specs():
    return twin_layers.layer_specs(phenotype.parse(TEXT), SHAPE)


def test_layers_shapes_and_paddings(specs):
    conv0, lif2, conv3, pool, drop, fc6, lif7, fc8, lif9 = specs
    # same at stride 2 on 11: 6 outputs, (6 - 1) * 2 + 3 - 11 = 2 padded, 1 before and 1 after, on both axes
    assert conv0 == twin_layers.ConvSpec("conv_0", 1, 4, 3, 2, (1, 1, 1, 1), True)
    assert conv3 == twin_layers.ConvSpec("conv_2", 4, 6, 2, 1, (0, 0, 0, 0), False)
    assert pool == twin_layers.PoolSpec("max", 2) and drop == twin_layers.DropoutSpec(0.25)
    # 6x6 -> valid 2x2 conv: 5x5 -> pool 2: 2x2x6, flattened
    assert fc6 == twin_layers.LinearSpec("dense_5", 24, 7, False, (2, 2, 6))
    assert fc8 == twin_layers.LinearSpec("dense_7", 7, 10, True, None)
    assert (lif2.name, lif2.beta, lif2.learn_beta, lif2.learn_threshold) == ("lif_1", 0.9, True, False)
    assert (lif7.surrogate, lif7.reset, lif9.threshold) == ("fast-sigmoid", "zero", 0.5)


def test_same_padding_puts_the_odd_pixel_after():
    text = TEXT.replace("filter-shape:3 stride:2", "filter-shape:2 stride:1")
    assert twin_layers.layer_specs(phenotype.parse(text), SHAPE)[0].pad == (0, 1, 0, 1)


def test_names_and_shapes_are_our_parameters(specs):
    sig = architecture.signature(phenotype.parse(TEXT))
    ours = architecture.param_shapes(sig, SHAPE)
    rng = np.random.default_rng(0)
    params = {name: {k: rng.standard_normal(s).astype(np.float32) for k, s in p.items()} for name, p in ours.items()}
    weights = twin_layers.torch_weights(specs, params)
    expected = {
        "conv_0.weight": (4, 1, 3, 3),
        "conv_0.bias": (4,),
        "conv_2.weight": (6, 4, 2, 2),
        "dense_5.weight": (7, 24),
        "dense_7.weight": (10, 7),
        "dense_7.bias": (10,),
    }
    expected |= {f"lif_{i}.{k}": () for i in (1, 6, 8) for k in ("beta", "threshold")}
    assert {k: v.shape for k, v in weights.items()} == expected
    np.testing.assert_array_equal(weights["conv_0.weight"][2, 0, 1, 0], params["conv_0"]["kernel"][1, 0, 0, 2])
    np.testing.assert_array_equal(weights["dense_7.weight"], params["dense_7"]["kernel"].T)


def test_flattened_dense_gives_our_output_on_torch_order(specs):
    fc = specs[5]
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((24, 7)).astype(np.float32)
    weight = twin_layers.torch_weights((fc,), {fc.name: {"kernel": kernel}})[f"{fc.name}.weight"]
    x = rng.standard_normal((3, *fc.flatten_from)).astype(np.float32)  # ours: N, H, W, C
    ours = x.reshape(3, -1) @ kernel
    theirs = x.transpose(0, 3, 1, 2).reshape(3, -1) @ weight.T  # torch: N, C, H, W, flattened
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)


def test_skip_connections_are_refused():
    text = TEXT.replace("layer:fc num-units:10 bias:True", "layer:fc num-units:10 bias:True input:6")
    with pytest.raises(ValueError, match="skip connections"):
        twin_layers.layer_specs(phenotype.parse(text), SHAPE)
