"""Genotypes, decoding and mutation: properties over thousands of individuals."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spenser_jax.genome import mutation
from spenser_jax.genome.genotype import Genotype, SearchSpaceError
from spenser_jax.genome.phenotype import Phenotype, infer_shapes, parse
from spenser_jax.genome.space import MacroModule, SearchSpace, macro_from_config
from spenser_jax.grammar import Gene, load_grammar, parse_grammar

ROOT = Path(__file__).resolve().parents[1]

CSNN = Path(__file__).resolve().parents[1] / "grammars" / "csnn.grammar"
SPACE = SearchSpace(load_grammar(CSNN))
CONFIG = mutation.MutationConfig()
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_individual(space: SearchSpace, genotype: Genotype):
    """Every invariant an individual handed to training must satisfy."""
    grammar = space.grammar
    for module, bounds in zip(genotype.modules, space.macro):
        assert module.name == bounds.name
        assert bounds.min_layers <= len(module.layers) <= bounds.max_layers
        for layer in module.layers:
            for nt, expansions in layer.expansions:
                for e in expansions:
                    production = grammar.rules[nt][e.choice]
                    genes = [s for s in production if isinstance(s, Gene)]
                    assert len(genes) == len(e.values)
                    for gene, values in zip(genes, e.values):
                        assert len(values) == gene.count
                        for v in values:
                            assert type(v) is (int if gene.is_int else float)
                            assert gene.low <= v <= gene.high
    text = space.text(genotype)
    assert space.text(genotype) == text  # decoding is deterministic
    phenotype = space.phenotype(genotype)
    assert phenotype.text == text  # typed form writes the derivation's text exactly
    assert parse(text) == phenotype
    shapes = infer_shapes(phenotype, space.input_shape, space.num_classes)
    assert all(min(s) > 0 for s in shapes)
    # JSON round trips, through real JSON text.
    assert Genotype.loads(genotype.dumps()) == genotype
    assert Phenotype.from_json(json.loads(phenotype.dumps())) == phenotype


@SLOW
@given(st.integers(0, 2**32 - 1))
def test_random_individuals(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        genotype = SPACE.random_individual(rng)
        check_individual(SPACE, genotype)
        counts = [len(m.layers) for m in genotype.modules]
        assert counts[0] in (1, 3, 5) and counts[1:] == [1, 1, 1]


@SLOW
@given(st.integers(0, 2**32 - 1))
def test_mutation_chains(seed):
    rng = np.random.default_rng(seed)
    parent = SPACE.random_individual(rng)
    for _ in range(25):
        child, events = mutation.offspring(rng, parent, SPACE, CONFIG)
        check_individual(SPACE, child)
        assert SPACE.text(child) != SPACE.text(parent)
        assert events
        parent = child


def test_generation_zero_layer_counts_are_uniform():
    """Features start with 1, 3 or 5 layers, a third each, although deep stacks are often invalid.

    The counts are kept while the layers are redrawn; redrawing the counts
    too gave 48/36/16%. Tolerance: 4.5 binomial standard deviations.
    """
    rng = np.random.default_rng(31)
    n = 600
    counts = [len(mutation.sample(rng, SPACE, CONFIG).module("features").layers) for _ in range(n)]
    for k in (1, 3, 5):
        assert within(counts.count(k), n, 1 / 3), (k, counts.count(k))


@pytest.mark.parametrize("linked", [False, True])
def test_reuse_at_creation_rate_and_links(linked):
    """Each layer after a module's first copies an earlier one with p = reuse (the original's creation)."""
    rng = np.random.default_rng(17)
    n, copies = 800, 0
    for _ in range(n):
        genotype = SPACE.random_genotype(rng, (5, 1, 1, 1), reuse=0.15, linked=linked)
        layers = genotype.module("features").layers
        for k in range(1, 5):
            # A fresh derivation never equals an earlier one (float genes), a copy always does.
            copied = any(_same_derivation(layers[k], layers[j]) for j in range(k))
            copies += copied
            if copied:
                assert (layers[k].link is not None) == linked
    assert within(copies, 4 * n, 0.15)
    off = SPACE.random_genotype(rng, (5, 1, 1, 1), reuse=0.0)
    layers = off.module("features").layers
    assert not any(_same_derivation(layers[k], layers[j]) for k in range(5) for j in range(k))


def _same_derivation(a, b) -> bool:
    return a.expansions == b.expansions


def test_reuse_at_creation_switch():
    def features(reuse_at_creation):
        config = mutation.MutationConfig(reuse_at_creation=reuse_at_creation)
        rng = np.random.default_rng(5)
        return [mutation.sample(rng, SPACE, config).module("features").layers for _ in range(200)]

    dup = [
        sum(any(_same_derivation(ls[k], ls[j]) for j in range(k)) for k in range(1, len(ls))) for ls in features(True)
    ]
    assert sum(dup) > 0
    assert all(
        not any(_same_derivation(ls[k], ls[j]) for k in range(len(ls)) for j in range(k)) for ls in features(False)
    )


def test_decoding_does_not_depend_on_randomness():
    genotype = SPACE.random_individual(np.random.default_rng(7))
    # Decoding takes no generator at all; spending random numbers elsewhere
    # cannot change the result.
    before = SPACE.text(genotype)
    np.random.seed(123)
    np.random.random(100)
    assert SPACE.text(genotype) == before


def test_same_seed_same_individuals():
    def draw(seed):
        rng = np.random.default_rng(seed)
        parent = SPACE.random_individual(rng)
        return [SPACE.text(parent)] + [SPACE.text(mutation.offspring(rng, parent, SPACE, CONFIG)[0]) for _ in range(5)]

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


def test_incomplete_genotype_is_an_error():
    genotype = SPACE.random_individual(np.random.default_rng(0))
    obj = genotype.to_json()
    obj["modules"][3]["layers"][0]["expansions"]["learning"] = []
    with pytest.raises(SearchSpaceError, match="incomplete genotype"):
        SPACE.text(Genotype.from_json(obj))
    with pytest.raises(SearchSpaceError, match="malformed genotype JSON"):
        Genotype.from_json({"modules": [{"name": "features"}]})


def test_gene_out_of_range_is_an_error():
    obj = SPACE.random_individual(np.random.default_rng(0)).to_json()
    fl = obj["modules"][2]["layers"][0]["expansions"]["beta"]
    fl[0][1][0][0] = 1.5  # beta in [0, 1]
    with pytest.raises(SearchSpaceError, match="beta"):
        SPACE.text(Genotype.from_json(obj))


# --- validity ---------------------------------------------------------------


def test_invalid_shapes_never_escape():
    # On 6x6 inputs most random convolution stacks collapse; creation and
    # mutation must still only return networks whose shapes are valid.
    small = SearchSpace(SPACE.grammar, input_shape=(6, 6, 1))
    rng = np.random.default_rng(0)
    rejected = sum(not small.is_valid(small.random_genotype(rng)) for _ in range(200))
    assert rejected > 20  # the test is meaningful: many raw draws are invalid
    parent = small.random_individual(rng)
    for _ in range(200):
        parent, _ = mutation.offspring(rng, parent, small, CONFIG)
        check_individual(small, parent)


def test_impossible_space_gives_clear_error():
    g = parse_grammar(
        "<features> ::= layer:conv num-filters:4 filter-shape:5 stride:1 padding:valid bias:True\n"
        "<classification> ::= layer:fc num-units:8 bias:True\n"
        "<output> ::= layer:fc num-units:10 bias:True\n"
        "<learning> ::= learning:adam lr:0.001 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False\n"
    )
    space = SearchSpace(g, input_shape=(3, 3, 1), max_attempts=20)
    with pytest.raises(SearchSpaceError, match=r"no valid individual with \{'features': [135], .* in 20 random draws"):
        space.random_individual(np.random.default_rng(0))


def test_macro_from_config_checks_bounds():
    assert macro_from_config([["features", 1, 6, [1, 3, 5]], {"name": "learning", "min": 1, "max": 1}]) == (
        MacroModule("features", 1, 6, (1, 3, 5)),
        MacroModule("learning", 1, 1),
    )
    with pytest.raises(ValueError, match="min"):
        macro_from_config([["features", 3, 2]])
    with pytest.raises(ValueError, match="initial counts"):
        macro_from_config([["features", 1, 6, [7]]])


# --- operator rates -----------------------------------------------------------


def within(observed, trials, p, sigmas=4.5):
    """Observed count is within `sigmas` binomial standard deviations of n*p."""
    sd = math.sqrt(trials * p * (1 - p))
    return abs(observed - trials * p) <= sigmas * sd + 1


def test_operator_rates_match_config():
    """Empirical rates of add / reuse / remove / DSGE match the configuration.

    Tolerance: 4.5 binomial standard deviations over N draws.
    """
    rng = np.random.default_rng(2024)
    config = mutation.MutationConfig(remutate_neutral=False)
    n = 3000
    parents = [SPACE.random_individual(rng) for _ in range(50)]
    adds = reuses = removes = add_room = remove_room = 0
    dsge = {"features": [0, 0], "learning": [0, 0], "output": [0, 0]}
    tries_hist = []
    for i in range(n):
        parent = parents[i % len(parents)]
        _, events = mutation.mutation_round(rng, parent, SPACE, config)
        feats = len(parent.module("features").layers)
        # Count only the first module, where the counts are known up front:
        # with 1..2 tries, each add try happens while there is room.
        if feats <= 4:  # room for two adds
            add_room += 1
            fe = [e for e in events if e.module == "features" and e.op in ("add", "reuse")]
            adds += len(fe)
            reuses += sum(e.op == "reuse" for e in fe)
            tries_hist.append(len(fe))
        clf = len(parent.module("classification").layers)
        ce = [e for e in events if e.module == "classification"]
        if clf == 1 and not any(e.op in ("add", "reuse") for e in ce):
            remove_room += 1  # at the minimum: removal is impossible
            removes += sum(e.op == "remove" for e in ce)
        for module in dsge:
            count = len([e for e in events if e.module == module and e.op in ("add", "reuse", "remove")])
            if count == 0:
                layers = len(parent.module(module).layers)
                dsge[module][0] += layers
                dsge[module][1] += sum(e.op == "dsge" for e in events if e.module == module)
    # Adds: tries ~ U{1,2}, each succeeding with p=.25 -> mean .375 per module.
    assert abs(adds / add_room - 0.375) < 4.5 * math.sqrt(0.2) / math.sqrt(add_room)
    assert within(reuses, adds, 0.15)
    assert removes == 0
    assert within(dsge["features"][1], dsge["features"][0], 0.15)
    assert within(dsge["output"][1], dsge["output"][0], 0.15)
    assert within(dsge["learning"][1], dsge["learning"][0], 0.30)


def test_remove_rate():
    rng = np.random.default_rng(5)
    config = mutation.MutationConfig(add_layer=0.0, remutate_neutral=False)
    # Five feature layers, min 1: every try has something to remove.
    parent = next(
        g for g in (SPACE.random_individual(rng) for _ in range(1000)) if len(g.module("features").layers) == 5
    )
    n = 4000
    removed = sum(
        sum(e.op == "remove" and e.module == "features" for e in mutation.mutation_round(rng, parent, SPACE, config)[1])
        for _ in range(n)
    )
    assert abs(removed / n - 0.375) < 4.5 * math.sqrt(0.2 / n)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_extreme_rates(rate):
    config = mutation.MutationConfig(
        add_layer=rate, remove_layer=0.0, layer_dsge=0.0, learning_dsge=0.0, remutate_neutral=False
    )
    rng = np.random.default_rng(0)
    parent = SPACE.random_individual(rng)
    child, events = mutation.mutation_round(rng, parent, SPACE, config)
    if rate == 0.0:
        assert child == parent and not events
    else:
        grown = len(child.module("features").layers) - len(parent.module("features").layers)
        assert grown >= 1 or len(parent.module("features").layers) == 6
        assert len(child.module("features").layers) <= 6


def test_layer_counts_stay_in_bounds_under_pressure():
    rng = np.random.default_rng(1)
    grow = mutation.MutationConfig(add_layer=1.0, remove_layer=0.0, remutate_neutral=False)
    shrink = mutation.MutationConfig(add_layer=0.0, remove_layer=1.0, remutate_neutral=False)
    genotype = SPACE.random_individual(rng)
    for config in (grow,) * 10 + (shrink,) * 10:
        genotype, _ = mutation.mutation_round(rng, genotype, SPACE, config)
        for module, bounds in zip(genotype.modules, SPACE.macro):
            assert bounds.min_layers <= len(module.layers) <= bounds.max_layers
    assert [len(m.layers) for m in genotype.modules] == [1, 1, 1, 1]


# --- switches -------------------------------------------------------------------


def reuse_only(independent):
    return mutation.MutationConfig(
        add_layer=1.0,
        reuse_layer=1.0,
        remove_layer=0.0,
        layer_dsge=0.0,
        learning_dsge=0.0,
        remutate_neutral=False,
        independent_copies=independent,
    )


@pytest.mark.parametrize("independent", [True, False])
def test_copies_independent_or_shared(independent):
    rng = np.random.default_rng(3)
    parent = next(
        g for g in (SPACE.random_individual(rng) for _ in range(100)) if len(g.module("features").layers) == 1
    )
    child, events = mutation.mutation_round(rng, parent, SPACE, reuse_only(independent))
    layers = child.module("features").layers
    assert len(layers) >= 2 and all(e.op == "reuse" for e in events if e.module == "features")
    dsge_all = mutation.MutationConfig(
        add_layer=0.0,
        remove_layer=0.0,
        layer_dsge=1.0,
        learning_dsge=0.0,
        remutate_neutral=False,
        independent_copies=independent,
    )
    # Mutate until the copies' texts diverge or 30 rounds pass.
    for _ in range(30):
        child, _ = mutation.mutation_round(rng, child, SPACE, dsge_all)
        texts = {tuple(sorted(x.expansions)) for x in child.module("features").layers}
        if len(texts) > 1:
            break
    assert (len(texts) > 1) == independent


def test_output_frozen_when_switched_off():
    rng = np.random.default_rng(4)
    config = mutation.MutationConfig(mutate_output=False, layer_dsge=1.0, remutate_neutral=False)
    parent = SPACE.random_individual(rng)
    for _ in range(100):
        child, events = mutation.mutation_round(rng, parent, SPACE, config)
        assert child.module("output") == parent.module("output")
        assert not [e for e in events if e.module == "output"]
    on = mutation.MutationConfig(layer_dsge=1.0, remutate_neutral=False)
    assert any(
        mutation.mutation_round(rng, parent, SPACE, on)[0].module("output") != parent.module("output")
        for _ in range(20)
    )


def test_neutral_offspring_kept_when_switched_off():
    rng = np.random.default_rng(8)
    config = mutation.MutationConfig(remutate_neutral=False)
    parent = SPACE.random_individual(rng)
    same = sum(SPACE.text(mutation.offspring(rng, parent, SPACE, config)[0]) == SPACE.text(parent) for _ in range(200))
    assert same > 10  # the paper's rates leave many offspring unchanged


def lr_values_after_mutation(log_scale):
    rng = np.random.default_rng(9)
    config = mutation.MutationConfig(log_scale=log_scale)
    gene = next(s for s in SPACE.grammar.rules["adam"][0] if isinstance(s, Gene) and s.name == "lr")
    return [mutation._float_step(rng, 0.001, gene, config) for _ in range(2000)], gene


def test_log_scale_steps():
    linear, gene = lr_values_after_mutation(False)
    logged, _ = lr_values_after_mutation(True)
    # Absolute sigma .15 on [1e-4, 0.1] clips most steps from lr=1e-3 to a bound.
    assert np.mean([v in (gene.low, gene.high) for v in linear]) > 0.4
    assert np.mean([v in (gene.low, gene.high) for v in logged]) < 0.05
    assert all(gene.low <= v <= gene.high for v in logged)
    # A log-scale step is symmetric in log space around the old value.
    assert abs(np.median(np.log10(logged)) - (-3.0)) < 0.1


def test_bad_rates_rejected():
    with pytest.raises(ValueError, match="add_layer"):
        mutation.MutationConfig(add_layer=1.5)


def test_log_uniform_draws_spread_wide_ranges_over_their_decades():
    from spenser_jax.genome.space import sample_gene

    lr, beta = Gene("lr", "float", 4000, 1e-4, 0.1), Gene("beta", "float", 50, 0.5, 0.9)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    uniform, log_uniform = np.array(sample_gene(a, lr)), np.array(sample_gene(b, lr, log_ratio=100.0))
    assert a.bit_generator.state == b.bit_generator.state  # the generator advances the same
    assert np.all((log_uniform >= 1e-4) & (log_uniform <= 0.1))
    # Three decades: log-uniform puts 2/3 below 0.01, the uniform draw 9.9%.
    assert abs(np.mean(log_uniform < 0.01) - 2 / 3) < 0.03 and abs(np.mean(uniform < 0.01) - 0.099) < 0.02
    # A narrow range is drawn as the paper draws it, value for value.
    assert sample_gene(np.random.default_rng(4), beta, log_ratio=100.0) == sample_gene(np.random.default_rng(4), beta)


def test_log_uniform_creation_changes_only_the_float_genes_and_is_opt_in():
    grammar = load_grammar(ROOT / "grammars" / "csnn.grammar")
    plain, wide = SearchSpace(grammar), SearchSpace(grammar, log_uniform_ratio=100.0)
    config = mutation.MutationConfig()
    lrs = {}
    for name, space in (("plain", plain), ("wide", wide)):
        texts = [space.text(mutation.sample(np.random.default_rng([5, k]), space, config)) for k in range(40)]
        lrs[name] = [float(t.split(" lr:")[1].split()[0]) for t in texts]
        # Same layers and integer genes: only values of wide-range float genes differ.
        lrs[name + "_shape"] = [" ".join(w for w in t.split() if not w.startswith(("lr:", "decay:"))) for t in texts]
    assert lrs["plain_shape"] == lrs["wide_shape"]
    assert np.median(lrs["wide"]) < 0.01 < np.median(lrs["plain"])
