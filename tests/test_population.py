"""The (μ + λ) NSGA-II population: sorting, crowding, survival, hypervolume, and the loop with a fake evaluator."""

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from spenser_jax import evolve
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace
from spenser_jax.grammar import load_grammar
from spenser_jax.run import checkpoint, files, runs
from spenser_jax.search import nsga2 as population
from spenser_jax.search import one_plus_lambda as evolution
from spenser_jax.search.strategy import Candidate
from spenser_jax.training import inheritance
from spenser_jax.training.evaluation import Evaluation

from helpers import FakeEvaluator, config, strip_timing

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace(load_grammar(ROOT / "grammars" / "csnn.grammar"))


def peeled_ranks(points):
    """Fronts by definition: peel the non-dominated set off, again and again."""
    left, out, front = set(range(len(points))), {}, 0
    while left:
        idx = sorted(left)
        # evolution.pareto_front maximises; these points are minimised.
        keep = [idx[k] for k in evolution.pareto_front([[-v for v in points[i]] for i in idx])]
        for i in keep:
            out[i] = front
        left -= set(keep)
        front += 1
    return [out[i] for i in range(len(points))]


def test_ranks_are_the_fronts_peeled_one_by_one_and_failures_come_last():
    rng = np.random.default_rng(0)
    for n, m in ((12, 2), (20, 3)):
        points = [tuple(float(v) for v in rng.integers(0, 5, m)) for _ in range(n)]  # ties on purpose
        assert population.ranks(points) == peeled_ranks(points)
    got = population.ranks([(0.5, 1.0), (), (0.2, 2.0), (0.6, 1.5)])
    assert got == [0, 2, 0, 1]
    assert population.ranks([(), ()]) == [0, 0]


def test_networks_at_chance_rank_after_every_network_that_learned_and_add_no_hypervolume():
    g0 = [mutation.sample(np.random.default_rng(i), SPACE, mutation.MutationConfig()) for i in range(4)]
    # A silent network costs nothing: on the objectives alone it is on the front.
    evals = [evaluation(0.1, 1.0), evaluation(0.9, 1e6), evaluation(0.5, 1e4), evaluation(0.11, 1e2)]
    points = [population.values(e, ("accuracy", "synops")) for e in evals]
    assert population.ranks(points) == [0, 0, 0, 0]
    assert population.ranks(points, [False, True, True, False]) == [1, 0, 0, 1]
    strategy = population.NSGA2(offspring=4, population=2, objectives=("accuracy", "synops"), chance=0.12)
    new, metrics = strategy.tell(strategy.init(0), [Candidate(g) for g in g0], evals)
    assert [m.born[1] for m in new.members] == [1, 2] and new.ranks == (0, 0)
    assert len(new.archive) == 2  # only what learned
    reference = population.reference_point(("accuracy", "synops"), 0.12)
    assert reference == (pytest.approx(0.88), 10.0)
    assert metrics["hypervolume"] == pytest.approx(population.hypervolume([points[1], points[2]], reference))
    assert population.hypervolume([points[0], points[3]], reference) == 0.0


def test_crowding_distance_follows_its_definition():
    # One front of four points on a line from (0, 3) to (3, 0), plus a
    # dominated point alone in its front.
    points = [(0.0, 3.0), (1.0, 2.0), (3.0, 0.0), (2.5, 0.5), (3.0, 3.0)]
    front = [0, 0, 0, 0, 1]
    got = population.crowding_distances(points, front)
    # Sorted by the first value: 0, 1, 2.5, 3; point 1's neighbours are 0
    # and 2.5 in both objectives: (2.5 - 0) / 3 + (3 - 0.5) / 3.
    assert got[0] == got[2] == math.inf
    assert got[1] == pytest.approx(2.5 / 3 + 2.5 / 3)
    assert got[3] == pytest.approx((3 - 1) / 3 + (2 - 0) / 3)
    assert got[4] == math.inf  # alone in its front: an extreme
    # A flat objective adds nothing; a failure (no values) gets 0.
    flat = population.crowding_distances([(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), ()], [0, 0, 0, 1])
    assert flat == [math.inf, 1.0, math.inf, 0.0]


def test_hypervolume_of_a_staircase_and_points_beyond_the_reference():
    # Three points of a staircase below the reference (4, 4), as slabs by hand.
    pts = [(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)]
    expected = (4 - 1) * (4 - 2) + (4 - 2) * (2 - 1) + (4 - 3) * (1 - 0.5)
    assert population.hypervolume(pts, (4.0, 4.0)) == pytest.approx(expected)
    assert population.hypervolume([*pts, (5.0, 0.0), ()], (4.0, 4.0)) == pytest.approx(expected)
    assert population.hypervolume([], (4.0, 4.0)) == 0.0
    assert population.nondominated([(1.0, 2.0), (1.0, 2.0), (2.0, 2.0), (), (2.0, 1.0)]) == [(1.0, 2.0), (2.0, 1.0)]


def test_objective_values_are_minimised_in_decades():
    e = Evaluation(0.9, parameters=5000, activity={"synops_per_sample": 1e6, "energy_pj_per_sample": 2e6})
    assert population.values(e, ("accuracy", "synops")) == pytest.approx((0.1, 6.0))
    assert population.values(e, ("accuracy", "parameters", "energy")) == pytest.approx((0.1, math.log10(5000), 6.30103))
    assert population.values(Evaluation(-1.0, "error", "boom"), ("accuracy", "synops")) == ()
    assert population.reference_point(("accuracy", "synops")) == (1.0, 10.0)
    with pytest.raises(ValueError, match="needs measured activity"):
        population.values(Evaluation(0.5), ("accuracy", "synops"))
    for names, message in (
        (("accuracy", "speed"), "unknown objectives"),
        (("accuracy",), "at least two"),
        (("accuracy", "synops", "synops"), "synops named more than once"),  # not "too few" (issue 31)
        (("synops", "energy"), "must include accuracy"),
    ):
        with pytest.raises(ValueError, match=message):
            population.check_objectives(names)


def evaluation(acc, synops):
    return Evaluation(acc, activity={"synops_per_sample": synops}, weights={"w": np.float32(acc)}, train_samples=3)


def test_survival_keeps_whole_fronts_then_the_most_isolated_of_the_next():
    g0 = [mutation.sample(np.random.default_rng(i), SPACE, mutation.MutationConfig()) for i in range(6)]
    strategy = population.NSGA2(offspring=6, population=4, objectives=("accuracy", "synops"))
    state = strategy.init(0)
    # Front 0: (0.9, 1e6) and (0.5, 1e2). Front 1, each dominated by one of
    # them: (0.8, 1e7) and (0.45, 10^2.5), its extremes, and (0.48, 1e3)
    # between them. One failure.
    evals = [
        evaluation(0.9, 1e6),
        evaluation(0.5, 1e2),
        evaluation(0.8, 1e7),
        evaluation(0.45, 10**2.5),
        evaluation(0.48, 1e3),
        Evaluation(-1.0, "nonfinite_loss", "nan"),
    ]
    new, metrics = strategy.tell(state, [Candidate(g) for g in g0], evals)
    assert population.tell(state, [Candidate(g) for g in g0], evals, ("accuracy", "synops"), 4) == (new, metrics)
    kept = [m.born[1] for m in new.members]
    assert kept[:2] == [0, 1] and set(kept[2:]) == {2, 3}  # the middle one of front 1 (index 4) is cut
    assert new.ranks == (0, 0, 1, 1) and new.generation == 1 and new.train_samples == 15
    assert new.parent_fitness == 0.9 and new.parent == g0[0] and new.parent_weights["w"] == np.float32(0.9)
    assert metrics["failed"] == 1 and metrics["best_index"] == 0 and metrics["front_size"] == 2
    assert [p["crowding"] for p in metrics["population"]] == [None] * 4  # all extremes of their fronts
    assert metrics["hypervolume"] == pytest.approx(population.hypervolume(new.archive, (1.0, 10.0)))
    # The archive only grows: a worse generation leaves the hypervolume as it was.
    later, again = strategy.tell(new, [Candidate(g0[0])], [evaluation(0.1, 1e9)])
    assert again["hypervolume"] == metrics["hypervolume"] and later.archive == new.archive


def test_ask_draws_mu_then_lambda_tournament_winners():
    state = population.NSGA2(offspring=3, population=5).init(3)
    rng = evolution.generation_rng(3, 0)
    first = population.NSGA2(offspring=3, population=5).ask(rng, state, SPACE, mutation.MutationConfig())
    assert len(first) == 5 and all(c.parent is None and not c.mutations for c in first)
    members = tuple(
        population.Member(c.genotype, 0.5, (0.5, float(i)), (0, i), {"w": np.float32(i)}) for i, c in enumerate(first)
    )
    state = population.PopulationState(
        seed=3, generation=1, members=members, ranks=(0, 1, 1, 2, 2), crowding=(1.0, math.inf, 0.5, 2.0, 0.0)
    )
    kids = population.NSGA2(offspring=4, population=5).ask(
        evolution.generation_rng(3, 1), state, SPACE, mutation.MutationConfig()
    )
    assert len(kids) == 4 and all(c.mutations for c in kids)
    # Replay the tournaments: the lower front wins, then the larger distance, ties to the first drawn.
    rng = evolution.generation_rng(3, 1)
    for kid in kids:
        a, b = rng.integers(5, size=2)
        expected = a if (state.ranks[a], -state.crowding[a]) <= (state.ranks[b], -state.crowding[b]) else b
        assert kid.parent == expected
        mutation.offspring(rng, members[expected].genotype, SPACE, mutation.MutationConfig())
    again = population.NSGA2(offspring=4, population=5).ask(
        evolution.generation_rng(3, 1), state, SPACE, mutation.MutationConfig()
    )
    assert again == kids


NSGA2 = ("evolution.strategy=nsga2", "evolution.population=4", "evolution.offspring=3")


def test_a_population_search_records_its_front_and_resumes_exactly(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    final = evolve.run(config("evolution.generations=5", *NSGA2), whole, evaluator=FakeEvaluator(fail_every=7))
    records = files.read_generations(whole)
    assert [len(r["individuals"]) for r in records] == [4, 3, 3, 3, 3]  # μ random, then λ offspring
    volumes = [r["hypervolume"] for r in records]
    assert volumes == sorted(volumes) and volumes[-1] > 0 and volumes[-1] > volumes[0]
    for r in records:
        assert len(r["population"]) == 4 and r["front_size"] >= 1
        assert [p["rank"] for p in r["population"]] == sorted(p["rank"] for p in r["population"])
        born = {(p["generation"], p["index"]) for p in r["population"]}
        assert all(g <= r["generation"] for g, _ in born)
    # Each member is the individual its record names.
    last = records[-1]
    fitness = {(p["generation"], p["index"]): None for p in last["population"]}
    for g, i in fitness:
        fitness[g, i] = records[g]["individuals"][i]["fitness"]
    assert max(fitness.values()) == last["best_fitness"] == final.parent_fitness
    best = json.loads((whole / files.BEST).read_text())
    assert best["fitness"] == final.parent_fitness and best["phenotype"] == last["parent"]
    identity = json.loads((whole / files.RUN).read_text())
    assert identity["strategy"] == {
        "name": "nsga2",
        "population": 4,
        "objectives": ["accuracy", "synops"],
        "chance": pytest.approx(0.12),
        "reference": [pytest.approx(0.88), 10.0],
    }
    # The checkpoint holds every member with its weights; a run cut after 2
    # generations and resumed equals the uninterrupted one.
    loaded = checkpoint.load(whole)
    assert loaded == final and [float(m.weights["w"][0]) for m in loaded.members] == pytest.approx(
        [m.fitness for m in final.members]
    )
    evolve.run(config("evolution.generations=2", *NSGA2), cut, evaluator=FakeEvaluator(fail_every=7))
    evolve.run(config("evolution.generations=5", *NSGA2), cut, evaluator=FakeEvaluator(fail_every=7))
    assert strip_timing(files.read_generations(cut)) == strip_timing(records)
    assert checkpoint.load(cut) == final
    # The commands after the search read it as a run.
    run = runs.load_run(whole)
    assert run.state.parent == final.parent and run.state.parent_weights is not None
    # A population checkpoint that lost a part is a clear error, and the file is left as it was.
    from flax import serialization

    path = whole / files.CHECKPOINT
    payload = serialization.msgpack_restore(path.read_bytes())
    del payload["members"]["1"]["genotype"]
    path.write_bytes(serialization.msgpack_serialize(payload))
    broken = path.read_bytes()
    with pytest.raises(files.CheckpointError, match=r"checkpoint.msgpack: unreadable population \(KeyError"):
        evolve.run(config("evolution.generations=6", *NSGA2), whole, evaluator=FakeEvaluator(fail_every=7))
    assert path.read_bytes() == broken and len(files.read_generations(whole)) == 5


def test_population_settings_are_checked_and_stay_out_of_the_paper_identity():
    assert "strategy" not in evolve.setup(config(), load_data=False).identity
    s = evolve.setup(config(*NSGA2, "fitness.objectives=[accuracy,energy,parameters]"), load_data=False)
    assert s.strategy.objectives == ("accuracy", "energy", "parameters") and s.strategy.population == 4
    assert s.identity["strategy"]["reference"] == [pytest.approx(0.88), 12.0, 8.0]
    assert s.identity["strategy"]["energy"]["e_ac_pj"] == 0.9  # energy constants decide selection now
    assert "energy" not in s.identity and "energy" not in evolve.setup(config(*NSGA2), load_data=False).identity
    memory = evolve.setup(config("energy.memory=true"), load_data=False)
    assert memory.identity["energy"]["memory"] is True and memory.protocol.energy.memory
    with pytest.raises(evolve.ConfigError, match="energy.memory must be true or false"):
        evolve.setup(config("energy.memory=2"), load_data=False)
    # search=fast's (1 + λ) rule does not apply to a population; the rest of fast does.
    fast = evolve.setup(config("search=fast", *NSGA2), load_data=False)
    assert not getattr(fast.strategy, "parent_continues", False) and fast.protocol.inherit
    for overrides, message in (
        (("evolution.strategy=mu_comma_lambda",), "evolution.strategy must be one of"),
        ((*NSGA2, "evolution.population=1"), "evolution.population must be an int >= 2"),
        ((*NSGA2, "fitness.objectives=[accuracy,speed]"), "fitness.objectives: unknown objectives"),
        ((*NSGA2, "fitness.objectives=[synops,energy]"), "must include accuracy"),
        ((*NSGA2, "fitness.objective=scalarised"), "leave fitness.objective at accuracy"),
        (("fitness.objectives=[accuracy,synops]",), "fitness.objectives is for evolution.strategy=nsga2"),
    ):
        with pytest.raises(evolve.ConfigError, match=message):
            evolve.setup(config(*overrides), load_data=False)


def test_offspring_inherit_from_the_member_they_were_mutated_from(tmp_path, monkeypatch):
    seen = []

    class Inheriting(FakeEvaluator):
        def evaluate(self, phenotypes, generation, inherited=None):
            seen.append((generation, inherited))
            return super().evaluate(phenotypes, generation)

    asked = []
    original = population.NSGA2.ask

    def ask(*args, **kwargs):
        out = original(*args, **kwargs)
        asked.append(out)
        return out

    monkeypatch.setattr(population.NSGA2, "ask", ask)
    taken = []
    monkeypatch.setattr(
        inheritance, "inherit", lambda parent, origins, weights, *rest, **kw: taken.append(weights) or weights
    )
    evolve.run(config("evolution.generations=2", "search.inherit=true", *NSGA2), tmp_path, evaluator=Inheriting())
    assert seen[0] == (0, None) and seen[1][0] == 1 and len(seen[1][1]) == 3
    first = files.read_generations(tmp_path)[0]
    members = first["population"]
    # Generation 1's offspring took the weights of their own parents (the fake's weights are [fitness]).
    expected = [first["individuals"][members[c.parent]["index"]]["fitness"] for c in asked[1]]
    assert [float(w["w"][0]) for w in taken] == pytest.approx(expected)


def test_report_draws_the_front_and_retrain_tests_every_first_front_member(tmp_path, monkeypatch, capsys):
    from spenser_jax import report, retrain

    run_dir = tmp_path / "run"
    final = evolve.run(config("evolution.generations=3", *NSGA2), run_dir, evaluator=FakeEvaluator())
    run = runs.load_run(run_dir)
    # The plotted front at a generation is the non-dominated set of what was scored up to it.
    records = run.records
    upto1 = [
        (i["synops_per_sample"], i["fitness"]) for r in records[:2] for i in r["individuals"] if i["fitness"] > 0.12
    ]
    front = report.front_at(run, 1, "synops")
    assert front and set(front) <= set(upto1)
    assert all(not (c2 <= c and a2 >= a and (c2, a2) != (c, a)) for c, a in front for c2, a2 in upto1)
    out = tmp_path / "report"
    assert report.main([str(run_dir), "--out", str(out)]) == 0
    assert (out / "front_mnist.png").stat().st_size > 1000
    capsys.readouterr()

    trained = []

    class Trainer:
        def __init__(self, protocol, input_shape):
            assert protocol.time_steps == 10 and protocol.early_stop is None and not protocol.inherit

        def train(self, phenotype, key, data, params=None, after_epoch=None):
            trained.append(phenotype.text)
            return types.SimpleNamespace(params={"n": len(trained)}), {"nonfinite": False, "steps": 1, "losses": [0.5]}

        def score(self, phenotype, params, data, key, activity=False):
            assert activity
            n = params["n"]
            summary = {"synops_per_sample": 10.0**n, "energy_pj_per_sample": 9.0**n, "spikes_per_sample": [n]}
            return 0.5 + n / 100, 0.0, summary

    monkeypatch.setattr(retrain, "Trainer", Trainer)
    assert retrain.main([str(run_dir), "--front", "--epochs", "2"]) == 0
    result = json.loads((run_dir / files.FRONT_TEST).read_text())
    first = [m for m, r in zip(final.members, final.ranks) if r == 0]
    texts = [SPACE.text(m.genotype) for m in first]
    assert trained == texts and [m["phenotype"] for m in result["members"]] == texts  # sorted by SynOps
    assert result["epochs"] == 2 and result["objectives"] == ["accuracy", "synops"]
    assert [m["search_fitness"] for m in result["members"]] == [m.fitness for m in first]
    assert "test accuracy 0.5100" in capsys.readouterr().out
    # One network's retrain is not a population's.
    with pytest.raises(SystemExit):
        retrain.main([str(run_dir), "--front", "--curve"])
    single = tmp_path / "single"
    evolve.run(config("evolution.generations=1", "evolution.offspring=2"), single, evaluator=FakeEvaluator())
    with pytest.raises(files.CheckpointError, match="--front needs a population search"):
        retrain.retrain_front(single, epochs=1)


@pytest.mark.slow
def test_the_multi_objective_benchmark_runs_and_records_what_it_compares(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("multi_objective", ROOT / "benchmarks" / "multi_objective.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    (path,) = (tmp_path / "out").glob("multi_objective_*.json")
    result = json.loads(path.read_text())
    assert result["settings"]["candidates_per_arm"] == 4 and (tmp_path / "out" / path.with_suffix(".png").name).exists()
    runs = result["runs"]
    assert runs["nsga2"][0]["candidates"] == runs["random"][0]["candidates"] == 4
    assert runs["scalarised"][0]["candidates"] == 3  # three runs of one candidate: the budget split between them
    volumes = runs["nsga2"][0]["hypervolume_per_generation"]
    assert volumes == sorted(volumes) and volumes[-1] == pytest.approx(runs["nsga2"][0]["hypervolume"])
    assert runs["nsga2"][0]["front_tested"] and all(0 <= m["accuracy"] <= 1 for m in runs["nsga2"][0]["front_tested"])
    for arm in ("nsga2", "scalarised", "random"):
        assert result["summary"][arm]["hypervolume"]["values"] == [r["hypervolume"] for r in runs[arm]]
