"""Programs per block of layers (runtime.compile_unit=layer) compute what the whole program computes."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import evolve, training
from spenser_jax.genome.phenotype import parse
from spenser_jax.run import files
from spenser_jax.snn import architecture, network
from spenser_jax.training import block_programs, blocks
from spenser_jax.training.protocol import Protocol

from helpers import config, strip_timing

SHAPE = (10, 10, 1)
ACT = "layer:act beta:{beta} beta-trainable:{bt} threshold:0.3 threshold-trainable:{tt} surr-grad:{surr} reset:{reset}"
TOLERANCE = 1e-6
"""The two paths fuse differently (XLA rounds a program's fused kernels its own way): after a few steps on
these networks weights, losses and activity agree to this (absolute), and accuracy exactly."""


def act(beta=0.9, bt=True, tt=True, surr="atan", reset="subtract"):
    return ACT.format(beta=beta, bt=bt, tt=tt, surr=surr, reset=reset)


ADAM = "learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.001 amsgrad:{amsgrad}"
SGD = "learning:gradient-descent lr:0.1 momentum:0.9 decay:0.001 nesterov:{nesterov}"
RMSPROP = "learning:rmsprop lr:0.005 rho:0.9 decay:0.0"

# Together: every layer type (conv same/valid and strided, both pools, dropout, fc), both resets, both
# surrogates, fixed and trainable β/θ, every optimizer and its flags, and the loss units.
NETWORKS = {
    "conv-max-fc-adam": (
        f"layer:conv num-filters:4 filter-shape:3 stride:1 padding:same bias:True layer:pool-max kernel-size:2 "
        f"{act()} layer:fc num-units:10 bias:True {act(reset='zero')} {ADAM.format(amsgrad=False)}"
    ),
    "valid-avg-dropout-sgd": (
        f"layer:conv num-filters:3 filter-shape:3 stride:2 padding:valid bias:False layer:pool-avg kernel-size:2 "
        f"{act(bt=False, tt=False, surr='fast-sigmoid', reset='zero')} layer:dropout rate:0.3 "
        f"layer:fc num-units:10 bias:True {act(surr='fast-sigmoid')} {SGD.format(nesterov=True)}"
    ),
    "fc-fc-rmsprop-mse-count": (
        f"layer:fc num-units:12 bias:True {act(beta=0.8, tt=False)} layer:dropout rate:0.2 "
        f"layer:fc num-units:10 bias:False {act(bt=False)} {RMSPROP} loss:mse-count correct-rate:0.8 incorrect-rate:0.1"
    ),
    "conv-fc-amsgrad-membrane": (
        f"layer:conv num-filters:2 filter-shape:2 stride:1 padding:same bias:True {act()} "
        f"layer:fc num-units:10 bias:True {act()} {ADAM.format(amsgrad=True)} "
        "loss:mse-membrane on-target:1.0 off-target:0.0"
    ),
    "fc-momentum-ce-max-membrane": (
        f"layer:fc num-units:10 bias:True {act(reset='zero')} {SGD.format(nesterov=False)} loss:ce-max-membrane"
    ),
    "fc-ce-rate": f"layer:fc num-units:10 bias:True {act()} {ADAM.format(amsgrad=False)} loss:ce-rate",
}


def toy(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, *SHAPE)).astype(np.uint8)
    for i, c in enumerate(labels):  # learnable: the class decides which row is bright
        images[i, c, :, 0] = 255
    return jnp.asarray(images), jnp.asarray(labels, jnp.int32)


def both(text, protocol, n_train=24, n_score=16, inherited=None):
    sig, hyper = architecture.split(parse(text), protocol.time_steps)
    images, labels = toy(0, n_train)
    score_images, score_labels = toy(1, n_score)
    args = (jax.random.key(3), hyper, images, labels, score_images, score_labels, jax.random.key(4))
    whole = jax.jit(lambda *a: training.train_and_score(sig, *a, protocol, inherited=inherited))(*args)
    layers = blocks.train_and_score(sig, *args, protocol, inherited=inherited)
    return jax.device_get(whole), jax.device_get(layers)


def assert_same(whole, layers):
    assert jax.tree.structure(whole) == jax.tree.structure(layers)
    for path, a, b in zip(
        jax.tree_util.tree_flatten_with_path(whole)[0], jax.tree.leaves(whole), jax.tree.leaves(layers), strict=True
    ):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, path[0]
        if a.dtype.kind in "bi":
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path[0]))
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=jax.tree_util.keystr(path[0]))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_init_draws_the_same_bits(name):
    sig, hyper = architecture.split(parse(NETWORKS[name]), 3)
    whole = network.init_params(jax.random.key(7), sig, hyper, SHAPE)
    layers = block_programs.init_params(jax.random.key(7), sig, hyper, SHAPE)
    assert jax.tree.structure(whole) == jax.tree.structure(layers)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(layers), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_training_and_scoring_equal_the_whole_program(name):
    protocol = Protocol(time_steps=3, batch_size=8, eval_batch_size=8)
    whole, layers = both(NETWORKS[name], protocol)
    (_, metrics), _ = whole, layers
    assert int(metrics["steps"]) == 3 and not bool(metrics["nonfinite"])
    assert float(metrics["activity"]["lif"][0]) > 0  # the networks spike: the surrogates and resets matter
    assert_same(whole, layers)
    # A step moved the weights: equality is not that of two untrained networks.
    sig, hyper = architecture.split(parse(NETWORKS[name]), 3)
    start = network.init_params(jax.random.split(jax.random.key(3))[0], sig, hyper, SHAPE)
    first = next(k for k in start if not k.startswith("lif"))
    assert not np.allclose(start[first]["kernel"], whole[0][first]["kernel"])


@pytest.mark.slow
def test_partial_epochs_the_early_check_and_inheritance_follow_the_protocol():
    text = NETWORKS["conv-max-fc-adam"]
    sig, hyper = architecture.split(parse(text), 3)
    parent = network.init_params(jax.random.key(9), sig, hyper, SHAPE)
    mask = jax.tree.map(lambda x: jnp.arange(x.size).reshape(x.shape) % 2 == 0, parent)
    protocol = Protocol(time_steps=3, batch_size=8, eval_batch_size=8, epochs=1.5, inherit=True, min_steps=2)
    whole, layers = both(text, protocol, inherited=(parent, mask))
    assert int(whole[1]["steps"]) == 3 + 2
    assert_same(whole, layers)


@pytest.mark.slow
def test_a_silent_network_stops_at_the_check_as_the_whole_program_stops():
    silent = NETWORKS["fc-ce-rate"].replace("threshold:0.3", "threshold:50.0")
    protocol = Protocol(time_steps=3, batch_size=4, eval_batch_size=8, early_stop=0.1, stop_min_steps=2)
    whole, layers = both(silent.replace("loss:ce-rate", "loss:mse-count correct-rate:1.0 incorrect-rate:0.0"), protocol)
    assert bool(whole[1]["stopped"]) and int(whole[1]["steps"]) == 2
    assert_same(whole, layers)


@pytest.mark.slow
def test_a_step_that_goes_non_finite_fails_as_in_the_whole_program():
    text = NETWORKS["fc-fc-rmsprop-mse-count"].replace("lr:0.005", "lr:1e38")
    protocol = Protocol(time_steps=3, batch_size=8, eval_batch_size=8, epochs=2)
    whole, layers = both(text, protocol)
    assert bool(whole[1]["nonfinite"]) and int(whole[1]["correct"]) == 0
    assert_same(whole, layers)


def test_skip_connections_are_refused_with_a_reason():
    text = (
        "layer:conv num-filters:2 filter-shape:3 stride:1 padding:same bias:True "
        f"{act()} layer:fc num-units:10 bias:True input:-1,1 {act()} {ADAM.format(amsgrad=False)}"
    )
    sig, hyper = architecture.split(parse(text), 3)
    assert sig.inputs is not None and not blocks.supports(sig)
    images, labels = toy(0, 8)
    with pytest.raises(NotImplementedError, match="skip connections"):
        blocks.train_and_score(
            sig, jax.random.key(0), hyper, images, labels, images, labels, jax.random.key(1), Protocol(time_steps=2)
        )


@pytest.mark.slow
def test_programs_are_shared_across_architectures():
    protocol = Protocol(time_steps=2, batch_size=8, eval_batch_size=8)
    first = NETWORKS["conv-max-fc-adam"]
    both(first, protocol)  # fills the caches
    # A child: the same layers and a wider hidden fc added at the end's place.
    child = first.replace("layer:fc num-units:10", "layer:fc num-units:7 bias:True " + act() + " layer:fc num-units:10")
    before = blocks.compile_seconds()
    sig, hyper = architecture.split(parse(child), 2)
    images, labels = toy(0, 16)
    blocks.train_and_score(sig, jax.random.key(0), hyper, images, labels, images, labels, jax.random.key(1), protocol)
    child_seconds = blocks.compile_seconds() - before
    before = blocks.compile_seconds()
    blocks.train_and_score(sig, jax.random.key(5), hyper, images, labels, images, labels, jax.random.key(1), protocol)
    assert blocks.compile_seconds() == before  # nothing new the second time
    assert child_seconds > 0


def test_each_program_compiles_once_for_data_on_a_device():
    """As the evaluator calls it: the data placed on a device, so every program's outputs are committed there.

    A jit compiles again when an argument goes from uncommitted (the first step's) to committed (a program's
    output): every block's programs compiled twice in a search until its arrays were all placed on the device.
    """
    text = (  # a network of this test only, so the programs counted are this run's
        f"layer:conv num-filters:5 filter-shape:2 stride:1 padding:same bias:True layer:pool-avg kernel-size:2 "
        f"{act()} layer:dropout rate:0.2 layer:fc num-units:10 bias:True {act()} {ADAM.format(amsgrad=True)}"
    )
    sig, hyper = architecture.split(parse(text), 2)
    device = jax.devices()[0]
    images, labels = jax.device_put(toy(0, 24), device)
    options = (("xla_cpu_use_fusion_emitters", False),)
    protocol = Protocol(time_steps=2, batch_size=8, eval_batch_size=8)
    _, metrics = blocks.train_and_score(
        sig, jax.random.key(0), hyper, images, labels, images, labels, jax.random.key(1), protocol, options=options
    )
    assert int(metrics["steps"]) == 3
    net = block_programs._Net(sig, hyper, SHAPE, options, device)
    for b, (_, block) in enumerate(net.blocks):
        assert block_programs._forward_saving(block, b > 0, False, options)._cache_size() == 1
        assert block_programs._backward(block, b > 0, False, options)._cache_size() == 1
        assert block_programs._forward(block, True, options)._cache_size() == 1
    sizes = {
        block_programs._bucket(sum(math.prod(s) for names in block.layout for _, s in names)) for _, block in net.blocks
    }
    assert blocks._update(sig.optimizer, options)._cache_size() == len(sizes)


@pytest.mark.slow
def test_a_search_with_programs_per_layer_resumes_exactly(tmp_path):
    """search=fast (inheritance, the early check, the parent training on) with runtime.compile_unit=layer."""
    small = [  # with dataset.subset=200 (config)
        "dataset.time_steps=3",
        "search.time_steps=2",
        "evolution.offspring=3",
        "training.eval_batch_size=256",
        "runtime.progress=false",
        "search=fast",
        "search.verify_best=0",  # a finished run would name its verified best and search on from it
        "runtime.compile_unit=layer",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    evolve.run(config(*small, "evolution.generations=2"), whole)
    evolve.run(config(*small, "evolution.generations=1"), resumed)
    evolve.run(config(*small, "evolution.generations=2"), resumed)
    records = files.read_generations(whole)
    assert strip_timing(files.read_generations(resumed)) == strip_timing(records)
    assert any(i["status"] == "ok" for r in records for i in r["individuals"])
    assert json.loads((whole / "run.json").read_text())["runtime"] == {
        "xla_cpu_fusion_emitters": False,
        "compile_unit": "layer",
    }
