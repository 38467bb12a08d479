"""Search efficiency: layer identities, weight inheritance, partial training, early stops.

Inheritance is checked on a tiny grammar whose layers are picked by hand, with
synthetic parent weights that say where they came from (every leaf of the
layer with uid u is filled with 10 * u + leaf code), so each test can tell an
identity-based match from a positional one.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import training
from spenser_jax.genome import mutation, phenotype
from spenser_jax.genome.space import Derivation, Expansion, Genotype, Module, SearchSpace
from spenser_jax.grammar import load_grammar, parse_grammar
from spenser_jax.search import one_plus_lambda
from spenser_jax.snn import architecture
from spenser_jax.training import inheritance
from spenser_jax.training.evaluation import Evaluation
from spenser_jax.training.protocol import Protocol

CSNN = SearchSpace(load_grammar("grammars/csnn.grammar"))
TINY = parse_grammar("""
<features> ::= <c4> | <c6>
<c4> ::= layer:conv num-filters:4 filter-shape:3 stride:1 padding:same bias:True <act>
<c6> ::= layer:conv num-filters:6 filter-shape:3 stride:1 padding:same bias:True <act>
<act> ::= layer:act [beta, float, 1, 0.5, 0.9] beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero
<classification> ::= layer:fc num-units:5 bias:True layer:act beta:0.9 beta-trainable:False threshold:0.5 threshold-trainable:False surr-grad:atan reset:zero
<output> ::= layer:fc num-units:10 bias:True layer:act beta:0.9 beta-trainable:False threshold:0.5 threshold-trainable:False surr-grad:atan reset:zero
<learning> ::= learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False
""")  # noqa: E501 (grammar rules as written)
SHAPE = (6, 6, 1)
SPACE = SearchSpace(TINY, input_shape=SHAPE)


def conv_block(filters: int, beta: float, uid: int) -> Derivation:
    which = {4: "c4", 6: "c6"}[filters]
    return Derivation(
        tuple(
            sorted(
                {
                    "features": (Expansion(0 if filters == 4 else 1),),
                    which: (Expansion(0),),
                    "act": (Expansion(0, ((beta,),)),),
                }.items()
            )
        ),
        uid=uid,
    )


def genotype(*blocks: Derivation) -> Genotype:
    fixed = {"classification": 10, "output": 11, "learning": 12}
    return Genotype(
        (Module("features", tuple(blocks)),)
        + tuple(Module(name, (Derivation(((name, (Expansion(0),)),), uid=uid),)) for name, uid in fixed.items())
    )


PARENT = genotype(conv_block(4, 0.6, 0), conv_block(6, 0.7, 1), conv_block(4, 0.8, 2))
LEAF = {"kernel": 1, "bias": 2, "beta": 3, "threshold": 4}


def tagged_params(genome: Genotype) -> dict:
    """Parameters whose every element says ``10 * uid + leaf code`` of the layer it belongs to."""
    ph = SPACE.phenotype(genome)
    sig = architecture.signature(ph)
    kept = [o for o, layer in zip(SPACE.origins(genome), ph.layers) if not isinstance(layer, phenotype.NoOp)]
    shapes = architecture.param_shapes(sig, SHAPE)
    out = {}
    for i, spec in enumerate(sig.layers):
        name = architecture.param_name(i, spec)
        if name:
            uid = kept[i][0]
            out[name] = {
                leaf: np.full(shape, 10 * uid + LEAF[leaf], np.float32) for leaf, shape in shapes[name].items()
            }
    return out


def inherit(child: Genotype, partial=False):
    return inheritance.inherit(
        SPACE.phenotype(PARENT),
        SPACE.origins(PARENT),
        tagged_params(PARENT),
        SPACE.phenotype(child),
        SPACE.origins(child),
        SHAPE,
        partial=partial,
    )


def source_of(values, mask, name):
    """The uid each leaf of a child layer came from (None: fresh; 'part' for a partial slice)."""
    out = {}
    for leaf, m in mask[name].items():
        if not m.any():
            out[leaf] = None
        elif not m.all():
            out[leaf] = "part"
        else:
            uids = np.unique((values[name][leaf] - LEAF[leaf]) / 10)
            assert len(uids) == 1
            out[leaf] = int(uids[0])
    return out


# --- identities -----------------------------------------------------------------


def test_origins_follow_the_phenotype_layers():
    origins = SPACE.origins(PARENT)
    layers = SPACE.phenotype(PARENT).layers
    assert len(origins) == len(layers) == 3 * 2 + 2 + 2
    assert origins[:4] == ((0, 0), (0, 1), (1, 0), (1, 1))
    assert [type(x).__name__ for x in layers[:2]] == ["Conv", "LIF"]
    assert Genotype.loads(PARENT.dumps()) == PARENT  # uids round-trip through JSON


def test_uids_are_unique_and_survive_mutation():
    """Add, remove and duplicate keep the survivors' uids; new and copied layers get unused ones."""
    rng = np.random.default_rng(0)
    parent = mutation.sample(rng, CSNN, mutation.MutationConfig())
    uids = [x.uid for m in parent.modules for x in m.layers]
    assert None not in uids and len(set(uids)) == len(uids)
    ops = {
        "add": dict(add_layer=1.0, reuse_layer=0.0, remove_layer=0.0),
        "reuse": dict(add_layer=1.0, reuse_layer=1.0, remove_layer=0.0),
        "remove": dict(add_layer=0.0, remove_layer=1.0),
    }
    for op, rates in ops.items():
        config = mutation.MutationConfig(layer_dsge=0.3, learning_dsge=0.3, remutate_neutral=False, **rates)
        for _ in range(30):
            child, events = mutation.mutation_round(rng, parent, CSNN, config)
            before = {x.uid: x for m in parent.modules for x in m.layers}
            after = [x for m in child.modules for x in m.layers]
            assert len({x.uid for x in after}) == len(after)
            new = [x for x in after if x.uid not in before]
            assert all(x.uid > parent.max_uid for x in new)
            kinds = [e.op for e in events if e.op != "dsge"]
            assert len(new) == sum(k in ("add", "reuse") for k in kinds), (op, events)
            removed = set(before) - {x.uid for x in after}
            assert len(removed) == kinds.count("remove")


def test_a_copy_is_a_new_layer():
    child = genotype(
        PARENT.module("features").layers[0],
        dataclasses.replace(PARENT.module("features").layers[0], uid=None),
        *PARENT.module("features").layers[1:],
    ).with_uids(13)
    copy = child.module("features").layers[1]
    assert copy.uid == 13 and copy.expansions == child.module("features").layers[0].expansions


# --- inheritance -------------------------------------------------------------------


def test_an_unchanged_child_inherits_everything():
    values, mask, share = inherit(PARENT)
    assert share == 1.0
    assert all(m.all() for leaves in mask.values() for m in leaves.values())
    assert source_of(values, mask, "conv_2") == {"kernel": 1, "bias": 1}


def test_removal_matches_by_identity_not_position():
    a, _, c = PARENT.module("features").layers
    values, mask, share = inherit(genotype(a, c))
    assert source_of(values, mask, "conv_0") == {"kernel": 0, "bias": 0}
    assert source_of(values, mask, "lif_1") == {"beta": 0, "threshold": 0}
    # C's conv now reads A's 4 channels, not B's 6: reshaped, fresh. Its LIF
    # is C's own (position 3 held B's LIF in the parent).
    assert source_of(values, mask, "conv_2") == {"kernel": None, "bias": None}
    assert source_of(values, mask, "lif_3") == {"beta": 2, "threshold": 2}
    assert source_of(values, mask, "dense_4") == {"kernel": 10, "bias": 10}
    assert 0 < share < 1
    # With partial inheritance the reshaped conv keeps the overlapping slice:
    # here all of it, the first 4 of the 6 input channels parent C read.
    values, mask, _ = inherit(genotype(a, c), partial=True)
    assert source_of(values, mask, "conv_2") == {"kernel": 2, "bias": 2}


def test_addition_and_duplication_shift_no_match():
    a, b, c = PARENT.module("features").layers
    added = genotype(conv_block(6, 0.5, None), a, b, c).with_uids(13)
    values, mask, _ = inherit(added)
    assert source_of(values, mask, "conv_0") == {"kernel": None, "bias": None}  # the new layer
    assert source_of(values, mask, "conv_2") == {"kernel": None, "bias": None}  # A reads 6 channels now
    assert source_of(values, mask, "lif_3") == {"beta": 0, "threshold": 0}
    assert source_of(values, mask, "conv_4") == {"kernel": 1, "bias": 1}  # B, two places later
    values, mask, _ = inherit(added, partial=True)
    assert source_of(values, mask, "conv_2") == {"kernel": "part", "bias": 0}
    kept = mask["conv_2"]["kernel"]  # A read 1 channel, now 6: the first one is its parent's
    assert kept[:, :, :1, :].all() and not kept[:, :, 1:, :].any()
    np.testing.assert_array_equal(values["conv_2"]["kernel"][kept], 10 * 0 + LEAF["kernel"])
    dup = genotype(a, dataclasses.replace(a, uid=None), b, c).with_uids(13)
    values, mask, _ = inherit(dup)
    assert source_of(values, mask, "conv_0") == {"kernel": 0, "bias": 0}
    assert source_of(values, mask, "conv_2") == {"kernel": None, "bias": None}  # the copy
    assert source_of(values, mask, "lif_3") == {"beta": None, "threshold": None}
    assert source_of(values, mask, "conv_4") == {"kernel": 1, "bias": 1}  # B still reads 4 channels


def test_a_mutated_lif_gene_starts_from_its_new_value():
    a, b, c = PARENT.module("features").layers
    values, mask, _ = inherit(genotype(a, conv_block(6, 0.55, 1), c))
    assert source_of(values, mask, "conv_2") == {"kernel": 1, "bias": 1}
    assert source_of(values, mask, "lif_3") == {"beta": None, "threshold": None}


@pytest.mark.slow
def test_inherited_weights_are_where_training_starts():
    """An offspring with every weight inherited and lr 0 ends exactly where its parent's weights were."""
    text = SPACE.phenotype(PARENT).text.replace("lr:0.01", "lr:0.0")
    ph = phenotype.parse(text)
    sig, hyper = architecture.split(ph)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (20, *SHAPE), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 20), jnp.int32)
    fresh = network_params(sig, hyper)
    given = jax.tree.map(lambda x: np.asarray(x) + 0.25, fresh)
    mask = jax.tree.map(lambda x: np.ones(np.shape(x), bool), fresh)
    mask["conv_0"]["kernel"][...] = False
    params, metrics = jax.jit(
        lambda key: training.train_and_score(
            sig,
            key,
            hyper,
            images,
            labels,
            images,
            labels,
            jax.random.key(9),
            Protocol(time_steps=2, epochs=0.5, batch_size=8, eval_batch_size=20, activity=False),
            inherited=(given, mask),
        )
    )(jax.random.key(1))
    assert int(metrics["steps"]) == 2 and int(metrics["samples"]) == 16  # half of 3 batches, rounded up
    np.testing.assert_array_equal(params["conv_2"]["kernel"], given["conv_2"]["kernel"])
    np.testing.assert_array_equal(params["conv_0"]["kernel"], fresh["conv_0"]["kernel"])


def network_params(sig, hyper):
    from spenser_jax.snn import network

    key_init, _ = jax.random.split(jax.random.key(1))
    return jax.device_get(network.init_params(key_init, sig, hyper, SHAPE))


# --- budgets and early stops ------------------------------------------------------


@pytest.mark.parametrize(
    "epochs, plan", [(1, (None,)), (2, (None, None)), (0.25, (3,)), (1.5, (None, 5)), (0.01, (1,))]
)
def test_epoch_plan(epochs, plan):
    assert training.epoch_plan(epochs, 600, 64) == plan  # 10 batches per epoch


def test_epoch_plan_rejects_bad_budgets():
    for bad in (0, -1, 0.0, True, "1"):
        with pytest.raises(ValueError, match="epochs"):
            training.epoch_plan(bad, 600, 64)


@pytest.mark.slow
def test_a_silent_output_stops_at_the_check_and_competes_with_its_score():
    silent = phenotype.parse(
        SPACE.phenotype(PARENT).text.replace(
            "layer:fc num-units:10 bias:True layer:act beta:0.9 beta-trainable:False threshold:0.5",
            "layer:fc num-units:10 bias:True layer:act beta:0.9 beta-trainable:False threshold:1000.0",
        )
    )
    sig, hyper = architecture.split(silent)
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 40), jnp.int32)
    _, metrics = training.train_and_score(
        sig,
        jax.random.key(0),
        hyper,
        images,
        labels,
        images,
        labels,
        jax.random.key(1),
        # 5 batches; the check after stop_min_steps = 2 of them
        Protocol(time_steps=2, batch_size=8, eval_batch_size=40, early_stop=0.2, stop_min_steps=2, activity=False),
    )
    assert bool(metrics["stopped"]) and not bool(metrics["nonfinite"])
    assert int(metrics["steps"]) == 2 and int(metrics["samples"]) == 16
    assert float(metrics["accuracy"]) == float(jnp.mean(labels == 0))  # silent: class 0 for all
    state = one_plus_lambda.init(0)
    cands = [one_plus_lambda.Candidate(PARENT), one_plus_lambda.Candidate(PARENT)]
    stopped = Evaluation(0.1, "stopped", "output silent", train_samples=16)
    new, metrics = one_plus_lambda.tell(state, cands, [stopped, Evaluation(0.3, train_samples=40)])
    assert new.parent_fitness == 0.3 and metrics["best_index"] == 1 and metrics["failed"] == 0
    assert metrics["mean_fitness"] == pytest.approx(0.2) and new.train_samples == 56
    # With nothing better, a stopped individual is a parent still (better than none).
    alone, _ = one_plus_lambda.tell(state, cands, [stopped, Evaluation(-1.0, "error", "x")])
    assert alone.parent == PARENT and alone.parent_fitness == 0.1


# --- budgets in steps (issue 16) -----------------------------------------------------


@pytest.mark.parametrize(
    "epochs, min_steps, plan",
    [
        (0.25, 5, (5,)),  # a quarter of 10 batches is 3: the floor lifts it to 5
        (0.25, 2, (3,)),  # the fraction is above the floor
        (0.25, 10, (None,)),  # the floor reaches the epoch: the paper's budget, the same program
        (0.25, 50, (None,)),  # never more than one epoch
        (1, 50, (None,)),  # whole epochs are left alone
        (1.5, 50, (None, 5)),
    ],
)
def test_a_fractional_budget_has_a_step_floor_and_never_exceeds_an_epoch(epochs, min_steps, plan):
    assert training.epoch_plan(epochs, 600, 64, min_steps) == plan  # 10 batches per epoch
    assert training.budget_steps(plan, 600, 64) == sum(10 if p is None else p for p in plan)


def test_the_early_check_waits_for_its_floor_and_is_dropped_when_it_is_the_whole_budget():
    def check(n, **kw):
        return Protocol(time_steps=2, epochs=0.25, early_stop=0.2, min_steps=100, **kw).stop_check(n)

    assert check(64 * 1000) == 50  # budget 250 steps: a fifth of it
    assert check(64 * 200) == 20  # budget 100 steps: a fifth is 20, the floor
    assert check(64 * 200, stop_min_steps=30) == 30
    assert check(64 * 30) == 20  # budget 30 steps: the floor
    assert check(64 * 15) is None  # budget 15 steps (the epoch): shorter than the floor
    assert Protocol(time_steps=2, epochs=0.25, early_stop=None).stop_check(64 * 1000) is None


@pytest.mark.slow
def test_a_silent_output_whose_loss_moves_is_not_stopped():
    # A membrane loss keeps moving while the output is silent: the network is
    # still learning, so the early check must not stop it.
    base = SPACE.phenotype(PARENT).text.replace(
        "layer:fc num-units:10 bias:True layer:act beta:0.9 beta-trainable:False threshold:0.5",
        "layer:fc num-units:10 bias:True layer:act beta:0.9 beta-trainable:False threshold:1000.0",
    )
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 40), jnp.int32)
    stopped = {}
    for name, text in (("count", base), ("membrane", base + " loss:mse-membrane on-target:1.0 off-target:0.0")):
        sig, hyper = architecture.split(phenotype.parse(text))
        _, metrics = training.train_and_score(
            sig,
            jax.random.key(0),
            hyper,
            images,
            labels,
            images,
            labels,
            jax.random.key(1),
            # 5 batches; the check after stop_min_steps = 3 of them
            Protocol(time_steps=2, batch_size=8, eval_batch_size=40, early_stop=0.2, stop_min_steps=3, activity=False),
        )
        stopped[name] = (bool(metrics["stopped"]), int(metrics["steps"]))
    assert stopped == {"count": (True, 3), "membrane": (False, 5)}


@pytest.mark.parametrize("fresh", [True, False])
def test_an_offspring_whose_optimizer_changed_trains_from_scratch(tmp_path, monkeypatch, fresh):
    from spenser_jax import evolve
    from spenser_jax.run import files

    from helpers import FakeEvaluator, config

    seen = []

    class Inheriting(FakeEvaluator):
        def evaluate(self, phenotypes, generation, inherited=None):
            seen.append((generation, phenotypes, inherited))
            return super().evaluate(phenotypes, generation)

    # The fake's weights match no layer; a sentinel tells a call of inherit from a fresh start.
    monkeypatch.setattr(inheritance, "inherit", lambda *args, **kw: ("inherited", None, 0.5))
    overrides = ("evolution.generations=4", "evolution.offspring=6", "search.inherit=true")
    cfg = config(*overrides, f"search.fresh_on_learning_change={str(fresh).lower()}")
    evolve.run(cfg, tmp_path, evaluator=Inheriting())
    records = files.read_generations(tmp_path)
    changed = kept = 0
    for generation, phenotypes, inherited in seen[1:]:
        parent = phenotype.parse(records[generation - 1]["parent"]).learning
        for p, got in zip(phenotypes, inherited, strict=True):
            if p.learning != parent and fresh:
                changed += 1
                values, mask, share = got
                assert share == 0.0 and not any(m.any() for leaves in mask.values() for m in leaves.values())
            else:
                changed += p.learning != parent
                kept += 1
                assert got == ("inherited", None, 0.5)
    assert changed > 0 and kept > 0  # both kinds of offspring were drawn
