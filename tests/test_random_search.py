"""evolution.strategy=random: fresh draws every generation, the best ever kept, resumed exactly."""

import json

from spenser_jax import evolve
from spenser_jax.genome import mutation
from spenser_jax.run import config as run_config
from spenser_jax.run import files
from spenser_jax.search.strategy import generation_rng

from helpers import FakeEvaluator, config, strip_timing


class Recording(FakeEvaluator):
    """The fake evaluator, noting whether anything was offered to inherit."""

    def __init__(self):
        super().__init__()
        self.inherited = []

    def evaluate(self, phenotypes, generation, inherited=None, indices=None):
        if indices is None:  # not the end's check from scratch (search=fast's verify_best)
            self.inherited.append(inherited)
        return super().evaluate(phenotypes, generation)


def test_every_candidate_is_a_fresh_draw_and_the_best_ever_is_kept(tmp_path):
    # search=fast: the per-candidate protocol a comparison uses (its inheritance and parent_continues
    # have no parent to act on here).
    cfg = config("evolution.strategy=random", "search=fast", "evolution.generations=4", "evolution.offspring=3")
    fake = Recording()
    final = evolve.run(cfg, tmp_path, evaluator=fake)
    records = files.read_generations(tmp_path)
    setup = run_config.setup(cfg, load_data=False)
    for r in records:
        rng = generation_rng(0, r["generation"])
        drawn = [setup.space.text(mutation.sample(rng, setup.space, setup.mutation)) for _ in range(3)]
        assert [i["phenotype"] for i in r["individuals"]] == drawn
        assert all(i["mutations"] == [] and "continued" not in i for i in r["individuals"])
    # A fresh draw inherits nothing, even with search.inherit.
    assert all(i is None or i == [None] * 3 for i in fake.inherited) and len(fake.inherited) == 4
    fitness = [i["fitness"] for r in records for i in r["individuals"]]
    assert [r["best_fitness"] for r in records] == [max(fitness[: 3 * (g + 1)]) for g in range(4)]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["fitness"] == max(fitness) == final.parent_fitness
    assert json.loads((tmp_path / "run.json").read_text())["strategy"] == {"name": "random"}


def test_a_resumed_random_search_equals_an_uninterrupted_one(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ("evolution.strategy=random", "evolution.offspring=3")
    evolve.run(config(*args, "evolution.generations=4"), whole, evaluator=FakeEvaluator())
    evolve.run(config(*args, "evolution.generations=2"), resumed, evaluator=FakeEvaluator())
    evolve.run(config(*args, "evolution.generations=4"), resumed, evaluator=FakeEvaluator())
    assert strip_timing(files.read_generations(resumed)) == strip_timing(files.read_generations(whole))
    assert (resumed / "best.json").read_text() == (whole / "best.json").read_text()


def test_a_random_search_is_not_resumed_as_another_strategy(tmp_path):
    evolve.run(config("evolution.strategy=random", "evolution.generations=1"), tmp_path, evaluator=FakeEvaluator())
    try:
        evolve.run(config("evolution.generations=2"), tmp_path, evaluator=FakeEvaluator())
    except Exception as err:  # noqa: BLE001 - the checkpoint's refusal, whatever its class
        assert "settings" in str(err) or "strategy" in str(err), err
    else:
        raise AssertionError("a (1 + λ) run resumed a random search's checkpoint")
