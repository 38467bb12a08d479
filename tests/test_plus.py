"""grammars/csnn_plus.grammar: an evolvable loss unit and skip connections (the paper's future work)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spenser_jax import training
from spenser_jax.genome import mutation, units
from spenser_jax.genome.genotype import Genotype
from spenser_jax.genome.phenotype import Phenotype, infer_shapes, parse
from spenser_jax.genome.space import SearchSpace, macro_for
from spenser_jax.genome.units import InvalidPhenotype
from spenser_jax.grammar import GrammarError, load_grammar, locate, parse_grammar
from spenser_jax.snn import architecture, network
from spenser_jax.training.protocol import Protocol

GRAMMAR = load_grammar(locate("grammars/csnn_plus.grammar"))
SPACE = SearchSpace(GRAMMAR, macro_for(GRAMMAR), levels_back=GRAMMAR.option("levels-back"))
CONFIG = mutation.MutationConfig(
    add_connection=GRAMMAR.option("add-connection"), remove_connection=GRAMMAR.option("remove-connection")
)
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(genotype: Genotype):
    """A valid DAG within levels_back, consistent shapes, exact text and JSON round trips."""
    ph = SPACE.phenotype(genotype)
    shapes = infer_shapes(ph, SPACE.input_shape, 10)
    assert all(min(s) > 0 for s in shapes)
    blocks = SPACE.blocks(genotype)
    place = {b[1].uid: k for k, b in enumerate(blocks)}
    for k, ((module, _), layer, first, _) in enumerate(blocks):
        if layer.inputs:
            assert module != "output"
            for uid in layer.inputs:
                q = -1 if uid == -1 else place[uid]
                assert q in SPACE.window(k) and q != k - 1  # backwards, within reach, not the predecessor
            # The phenotype reads the predecessor too, and only earlier layers.
            sources = ph.inputs[first]
            assert sources == tuple(sorted(sources)) and all(-1 <= j < first for j in sources)
            assert (blocks[k - 1][3] if k else -1) in sources
    assert parse(ph.text) == ph and Phenotype.from_json(json.loads(ph.dumps())) == ph
    assert Genotype.loads(genotype.dumps()) == genotype
    assert isinstance(ph.loss, tuple(units._LOSS_TAGS.values()))
    return ph


@SLOW
@given(st.integers(0, 2**32 - 1))
def test_random_and_mutated_individuals(seed):
    rng = np.random.default_rng(seed)
    parent = mutation.sample(rng, SPACE, CONFIG)
    check(parent)
    for _ in range(6):
        parent, events = mutation.offspring(rng, parent, SPACE, CONFIG)
        check(parent)


def test_connections_and_losses_are_drawn_and_mutated():
    rng = np.random.default_rng(3)
    samples = [mutation.sample(rng, SPACE, CONFIG) for _ in range(60)]
    phenos = [SPACE.phenotype(g) for g in samples]
    assert sum(p.inputs is not None for p in phenos) > 20  # creation draws connections
    assert len({type(p.loss) for p in phenos}) == 5  # every loss of the unit occurs
    ops = set()
    parent = samples[0]
    for _ in range(300):
        child, events = mutation.offspring(rng, parent, SPACE, CONFIG)
        ops |= {e.op for e in events}
        parent = child
    assert {"connect", "disconnect"} <= ops
    # Rates are keys: with both at 0 no connection ever changes.
    quiet = mutation.MutationConfig()
    for _ in range(50):
        child, events = mutation.offspring(rng, parent, SPACE, quiet)
        assert not {e.op for e in events} & {"connect", "disconnect"}
        parent = child


def test_removing_a_layer_drops_the_connections_that_reached_it():
    rng = np.random.default_rng(5)
    genotype = next(
        g
        for g in (mutation.sample(rng, SPACE, CONFIG) for _ in range(200))
        if any(x.inputs and any(u != -1 for u in x.inputs) for m in g.modules for x in m.layers)
    )
    target = next(u for m in genotype.modules for x in m.layers if x.inputs for u in x.inputs if u != -1)
    module = next(m for m in genotype.modules if any(x.uid == target for x in m.layers))
    if len(module.layers) == 1:
        pytest.skip("the source is alone in its module")
    pruned = genotype.replace_module(module.name, [x for x in module.layers if x.uid != target])
    repaired = SPACE.repair_connections(pruned)
    assert all(target not in (x.inputs or ()) for m in repaired.modules for x in m.layers)


def test_levels_back_one_and_no_rates_is_grammar_2_exactly():
    """With levels_back 1 no random number is drawn for connections: Grammar 2 stays as it was."""
    g2 = SearchSpace(load_grammar(locate("grammars/csnn.grammar")))
    assert g2.levels_back == 1
    draws = [mutation.sample(np.random.default_rng(s), g2, mutation.MutationConfig()) for s in range(5)]
    assert all(x.inputs is None for g in draws for m in g.modules for x in m.layers)
    assert "input:" not in " ".join(g2.text(g) for g in draws)


def test_phenotype_inputs_are_checked():
    text = (
        "layer:fc num-units:10 bias:True input:0 layer:act beta:0.5 beta-trainable:False threshold:0.5 "
        "threshold-trainable:False surr-grad:atan reset:zero "
        "learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    with pytest.raises(InvalidPhenotype, match="earlier layers"):
        parse(text)
    with pytest.raises(InvalidPhenotype, match="one loss unit"):
        parse(text.replace(" input:0", "") + " loss:ce-rate loss:ce-count")
    with pytest.raises(InvalidPhenotype, match="unknown loss"):
        parse(text.replace(" input:0", "") + " loss:hinge")


def test_grammar_options_are_parsed_and_checked():
    g = parse_grammar("%levels-back 4\n%add-connection 1\n<a> ::= x:y\n")
    assert g.options == {"levels-back": 4, "add-connection": 1.0}
    assert type(g.option("levels-back")) is int and type(g.option("add-connection")) is float
    with pytest.raises(GrammarError, match=":2: option %levels-back is set twice"):
        parse_grammar("%levels-back 4\n%levels-back 5\n<a> ::= x:y\n")
    with pytest.raises(GrammarError, match=":1: malformed option"):
        parse_grammar("%levels-back\n<a> ::= x:y\n")


SKIP = (
    "layer:conv num-filters:6 filter-shape:3 stride:1 padding:same bias:True "
    "layer:act beta:0.6 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
    "layer:conv num-filters:6 filter-shape:3 stride:2 padding:valid bias:True input:-1,1 "
    "layer:pool-max kernel-size:1 "
    "layer:act beta:0.6 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
    "layer:fc num-units:10 bias:True input:1,4 "
    "layer:act beta:0.9 beta-trainable:False threshold:0.5 threshold-trainable:False surr-grad:atan reset:zero "
    "learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
)


def toy(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    # Learnable: the class decides which rows are bright.
    images = np.zeros((n, 10, 10, 1), np.uint8)
    for i, c in enumerate(labels):
        images[i, c, :, 0] = 255
    return jnp.asarray(images), jnp.asarray(labels, jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize("unit", [" loss:mse-count correct-rate:0.8 incorrect-rate:0.1", " loss:ce-max-membrane"])
def test_a_network_with_skip_connections_learns(unit):
    ph = parse(SKIP + unit)
    sig, hyper = architecture.split(ph, 4)
    assert sig.inputs is not None
    images, labels = toy(0, 96)
    state = training.create_train_state(jax.random.key(0), sig, hyper, (10, 10, 1))
    epoch = training.make_train_epoch(sig, Protocol(time_steps=4, batch_size=16))
    losses = []
    for e in range(4):
        state, metrics = epoch(state, hyper, images, labels, jax.random.key(e))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.8 * losses[0], losses


def test_execution_orders_agree_with_skip_connections():
    sig, hyper = architecture.split(parse(SKIP + " loss:mse-membrane on-target:1.0 off-target:0.0"), 4)
    params = network.init_params(jax.random.key(1), sig, hyper, (10, 10, 1))
    assert params["conv_2"]["kernel"].shape == (3, 3, 7, 6)  # reads the input (1) and layer 1 (6)
    assert params["dense_5"]["kernel"].shape == (4 * 4 * 12, 10)  # 10x10x6 pooled to 4x4, and 4x4x6
    params = jax.tree.map(lambda x: 2 * x if x.ndim else x, params)
    spikes = jax.random.bernoulli(jax.random.key(2), 0.5, (4, 3, 10, 10, 1)).astype(jnp.float32)
    outs = {
        mode: network.SpikingNetwork(sig, mode=mode).apply(
            {"params": params}, spikes, hyper, method=network.SpikingNetwork.recording, what="membrane"
        )
        for mode in network.MODES
    }
    assert 0 < float(outs["stepwise"][0].sum())
    for mode in ("scan", "layerwise"):
        np.testing.assert_array_equal(outs[mode][0], outs["stepwise"][0])
        np.testing.assert_allclose(outs[mode][1], outs["stepwise"][1], rtol=1e-6, atol=1e-6)


def test_mse_count_targets_come_from_the_host_in_float64():
    ph = parse(SKIP + " loss:mse-count correct-rate:0.58 incorrect-rate:0.1")
    hyper = architecture.hyper(ph, 50)
    assert float(hyper["loss"]["on"]) == int(50 * 0.58) == 28  # float32 would give 29
    with pytest.raises(ValueError, match="time_steps"):
        architecture.hyper(ph)
