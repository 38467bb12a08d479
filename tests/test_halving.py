"""Successive halving within a generation (``search.halving``): its arithmetic, its rule, and a real tiny run."""

import dataclasses
import fractions

import numpy as np
import pytest

from spenser_jax import evolve
from spenser_jax.run import files
from spenser_jax.scheduler import Evaluator
from spenser_jax.search import halving
from spenser_jax.training.evaluation import Evaluation
from spenser_jax.training.protocol import Protocol, budget_steps

from helpers import SETTINGS, SHAPE, BudgetFakeEvaluator, assert_same, config, phenotypes, strip_timing, toy_splits


def steps(protocol, n):
    return budget_steps(protocol.plan(n), n, protocol.batch_size)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_a_part_of_the_budget_trains_exactly_its_steps(batch_size):
    fast, paper = Protocol(2, epochs=0.25, batch_size=batch_size, min_steps=5), Protocol(2, epochs=3)
    for n in range(1, 1500, 7):
        for protocol in (fast, paper):
            whole = steps(protocol, n)
            half = protocol.part(n, halving.HALF)
            assert steps(half, n) == max(1, whole // 2)
            assert half.time_steps == protocol.time_steps and half.early_stop == protocol.early_stop
            assert protocol.part(n, 1) is protocol  # the whole budget: the same protocol, the same programs
        for s in (1, 2, -(-n // batch_size), 2 * -(-n // batch_size) + 1):
            assert steps(fast.with_steps(n, s), n) == s
    # search=fast on MNIST's EvoTrain (42,000): a quarter epoch of 657 batches is 165 steps; half is 82.
    quarter = Protocol(2, epochs=0.25, min_steps=100)
    assert (steps(quarter, 42000), steps(quarter.part(42000, halving.HALF), 42000)) == (165, 82)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        fast.with_steps(100, 0)


def test_rounds_never_train_more_than_a_generation_without_halving():
    for candidates in range(2, 12):
        for budget in range(2, 40):
            first, on, total = halving.round_steps(budget, candidates)
            assert (first, on) == (budget // 2, candidates // 2)
            short = (candidates % 2) * fractions.Fraction(budget, 2) + (budget % 2) * fractions.Fraction(candidates, 2)
            assert candidates * budget - total == short
            assert short == 0 or candidates % 2 or budget % 2


def ev(fitness, status="ok", **kw):
    return Evaluation(fitness, status, weights={"w": np.array([fitness], np.float32)}, **kw)


def test_the_better_half_trains_on_failed_and_stopped_never():
    first = [ev(0.5), ev(0.7), ev(0.5), ev(0.9, "stopped"), ev(-1.0, "nonfinite_loss"), ev(0.1)]
    # floor(6 / 2) = 3 places: 0.7, then the tie at 0.5 in place order; the stopped 0.9 never.
    assert halving.survivors(first) == [0, 1, 2]
    assert halving.survivors(first[:5]) == [0, 1]  # floor(5 / 2)
    assert halving.survivors([ev(-1.0, "error"), ev(0.3, "stopped"), ev(0.2)]) == [2]
    assert halving.survivors([ev(0.2, "stopped"), ev(0.3, "stopped")]) == []
    done = halving.combined(
        Evaluation(0.4, train_samples=70, train_steps=2, train_seconds=1.0, compile_seconds=2.0, inherited=0.8),
        Evaluation(0.6, train_samples=140, train_steps=4, train_seconds=3.0, compile_seconds=0.5, inherited=1.0),
    )
    assert (done.fitness, done.train_samples, done.train_steps, done.inherited) == (0.6, 210, 6, 0.8)
    assert (done.train_seconds, done.compile_seconds) == (4.0, 2.5)


def test_who_trains_on_and_what_the_strategy_sees():
    fake = BudgetFakeEvaluator()
    phenotypes = [evolve.setup(config(), load_data=False).space.phenotype(g) for g in _genotypes(5)]
    out, rounds = halving.evaluate(fake, phenotypes, 3)
    first = fake.rounds[0]
    assert first[1:3] == (halving.HALF, None) and first[0] is None
    half = [e for e in BudgetFakeEvaluator().evaluate(phenotypes, 3, budget=halving.HALF)]
    on = sorted(sorted(range(5), key=lambda i: (-half[i].fitness, i))[:2])
    indices, budget, tag, inherited = fake.rounds[1]
    assert (indices, budget, tag) == (on, None, halving.ROUND_TAG)
    assert [x[2] for x in inherited] == [1.0, 1.0] and all(x[1]["w"].all() for x in inherited)
    assert [x[0]["w"][0] for x in inherited] == [np.float32(half[i].fitness) for i in on]
    for i, (e, r) in enumerate(zip(out, rounds)):
        assert r == {"round": 2 if i in on else 1, "first_fitness": half[i].fitness}
        if i in on:
            assert e.fitness == pytest.approx(half[i].fitness + 0.25) and (e.train_samples, e.train_steps) == (30, 3)
        else:
            assert e == half[i] and e.train_samples == 10


def _genotypes(n):
    from spenser_jax.genome import mutation
    from spenser_jax.search import generation_rng

    space = evolve.setup(config(), load_data=False).space
    rng = generation_rng(0, 0)
    return [mutation.sample(rng, space, mutation.MutationConfig()) for _ in range(n)]


# Halving alone: without search=fast's redraws (they add candidates) and the end's verification (a
# finished run asked for more generations searches on from its verified best).
ALONE = ("search.redraw_stopped=0", "search.verify_best=0")
HALVING = ("search=fast", *ALONE, "search.halving=true", "evolution.offspring=4")


def test_a_halving_run_records_its_rounds_and_resumes_exactly(tmp_path):
    for generations, run_dir in ((3, "whole"), (1, "resumed"), (3, "resumed")):
        cfg = config(*HALVING, f"evolution.generations={generations}")
        evolve.run(cfg, tmp_path / run_dir, evaluator=BudgetFakeEvaluator())
    records = files.read_generations(tmp_path / "whole")
    assert strip_timing(files.read_generations(tmp_path / "resumed")) == strip_timing(records)
    for r in records:
        assert sorted(i["halving"]["round"] for i in r["individuals"]) == [1, 1, 2, 2]
        for i in r["individuals"]:
            assert i["train_samples"] == (30 if i["halving"]["round"] == 2 else 10)
        assert r["train_samples_total"] == 80 * (r["generation"] + 1)
    assert evolve.setup(config(*HALVING), load_data=False).identity["search"]["halving"] is True
    # Off (the default, search=fast's too): no key in the identity, none in the records.
    evolve.run(config("search=fast", "evolution.generations=1"), tmp_path / "off", evaluator=BudgetFakeEvaluator())
    assert "halving" not in evolve.setup(config("search=fast"), load_data=False).identity["search"]
    assert not any("halving" in i for i in files.read_generations(tmp_path / "off")[0]["individuals"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("search.halving=true",), "search.halving needs search.inherit"),
        (
            (*HALVING, "search.parent_continues=false", "evolution.offspring=1"),
            r"search.halving needs evolution.offspring >= 2",
        ),
        (("search=fast", "search.halving=1"), "search.halving must be true or false"),
    ],
)
def test_halving_config_errors(overrides, message):
    with pytest.raises(evolve.ConfigError, match=message):
        evolve.setup(config(*overrides), load_data=False)


@pytest.mark.slow
def test_both_rounds_batched_equal_one_by_one():
    """Round 1's half budget and round 2's start from its own weights, through the fused programs and one by one."""
    settings = dataclasses.replace(SETTINGS, inherit=True)  # 2 epochs of 3 batches of 16: 6 steps, round 1 3

    def run(batching):
        ev = Evaluator(toy_splits(), seed=3, input_shape=SHAPE, protocol=settings, batching=batching, compile_threads=0)
        return ev, *halving.evaluate(ev, phenotypes(), 2)

    _, alone, rounds = run("none")
    ev, together, again = run("map")
    assert_same(alone, together)
    assert rounds == again
    # The NaN learning rate fails in round 1; the better 2 of the other 3 train on.
    assert [e.status for e in alone] == ["ok", "ok", "nonfinite_loss", "ok"]
    assert sorted(r["round"] for r in rounds) == [1, 1, 2, 2] and rounds[2]["round"] == 1
    for e, r in zip(alone, rounds):
        if e.ok:
            assert (e.train_steps, e.train_samples) == ((9, 144) if r["round"] == 2 else (3, 48))
    # Round 1's programs and the run's share one cache, told apart by their budget.
    assert {key[-1] for key in ev.programs._items} == {settings, settings.part(48, halving.HALF)}


# search=fast at T = 2 on 200 samples: 140 EvoTrain samples at batch 35 are 4 steps, the whole
# epoch (the floor of 100 steps lifts the quarter); round 1 trains 2 of them.
REAL = [
    "search=fast",
    *ALONE,
    "dataset.time_steps=2",
    "evolution.offspring=4",
    "training.batch_size=35",
    "training.eval_batch_size=256",
    "runtime.progress=false",
]


@pytest.mark.slow
def test_a_real_halving_run_spends_what_a_run_without_spends_and_resumes_exactly(tmp_path):
    evolve.run(config(*REAL, "evolution.generations=2"), tmp_path / "plain")
    evolve.run(config(*REAL, "search.halving=true", "evolution.generations=2"), tmp_path / "whole")
    evolve.run(config(*REAL, "search.halving=true", "evolution.generations=1"), tmp_path / "resumed")
    evolve.run(config(*REAL, "search.halving=true", "evolution.generations=2"), tmp_path / "resumed")
    plain, records = files.read_generations(tmp_path / "plain"), files.read_generations(tmp_path / "whole")
    assert strip_timing(files.read_generations(tmp_path / "resumed")) == strip_timing(records)
    for r in records:
        everyone = r["individuals"]
        assert all(i["status"] in ("ok", "stopped") for i in everyone)
        on = [i for i in everyone if i["halving"]["round"] == 2]
        assert len(on) == 2 and all(i["status"] == "ok" for i in on)
        for i in everyone:
            assert (i["train_steps"], i["train_samples"]) == ((6, 210) if i in on else (2, 70))
        assert min(i["halving"]["first_fitness"] for i in on) >= max(
            i["halving"]["first_fitness"] for i in everyone if i not in on and i["status"] == "ok"
        )
    # Every candidate trained as planned in both runs: the same compute, 4 x 140 samples a generation.
    assert all(i["train_samples"] == 140 for r in plain for i in r["individuals"])
    assert [r["train_samples_total"] for r in records] == [r["train_samples_total"] for r in plain] == [560, 1120]
