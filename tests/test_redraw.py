"""search.redraw_stopped (stopped candidates drawn again) and search.verify_best (the best learns from scratch)."""

import dataclasses
import hashlib
import json

import pytest

from spenser_jax import evolve
from spenser_jax.run import files, runs
from spenser_jax.search import redraw, verify
from spenser_jax.search.strategy import Candidate
from spenser_jax.training.evaluation import Evaluation

from helpers import FakeEvaluator, config, strip_timing


class Stopping(FakeEvaluator):
    """The fake's fitness, but a third of the phenotypes (by hash) stop early; it records the keys' places."""

    def __init__(self):
        super().__init__()
        self.places = []

    def evaluate(self, phenotypes, generation, inherited=None, indices=None):
        self.places.append((generation, list(range(len(phenotypes))) if indices is None else list(indices)))
        out = []
        for p, e in zip(phenotypes, super().evaluate(phenotypes, generation)):
            if hashlib.sha256(p.text.encode()).digest()[8] % 3 == 0:
                e = dataclasses.replace(e, fitness=0.098, status="stopped", reason="silent", train_samples=2)
            out.append(e)
        return out


# search=fast with both rules off; each test turns on what it checks.
FAST = (
    "search=fast",
    "evolution.offspring=4",
    "runtime.progress=false",
    "search.redraw_stopped=0",
    "search.verify_best=0",
)


@pytest.mark.parametrize("strategy", ["one_plus_lambda", "random", "nsga2"])
def test_stopped_candidates_are_replaced_recorded_and_counted(tmp_path, strategy):
    rounds = 3
    cfg = config(*FAST, "evolution.generations=3", f"evolution.strategy={strategy}", f"search.redraw_stopped={rounds}")
    evaluator = Stopping()
    evolve.run(cfg, tmp_path, evaluator=evaluator)
    records = files.read_generations(tmp_path)
    assert sum(len(r["redrawn"]) for r in records) > 0  # the rule had something to do
    total = 0
    for r in records:
        λ = len(r["individuals"])
        for x in r["redrawn"]:
            assert x["status"] == "stopped" and x["train_samples"] == 2 and 0 <= x["round"] < rounds
        # Whatever is still stopped survived every round: its place was redrawn `rounds` times.
        for place, ind in enumerate(r["individuals"]):
            if ind["status"] == "stopped" and not ind.get("continued"):
                assert sum(x["place"] == place for x in r["redrawn"]) == rounds
        total += sum(i["train_samples"] for i in r["individuals"]) + sum(x["train_samples"] for x in r["redrawn"])
        assert r["train_samples_total"] == total  # the stopped ones trained: the compute counts them
        # Replacements train with keys of places beyond λ: round k's place i is λ (k + 1) + i.
        calls = [places for g, places in evaluator.places if g == r["generation"]]
        expected = [
            sorted(λ * (x["round"] + 1) + x["place"] for x in r["redrawn"] if x["round"] == k) for k in range(rounds)
        ]
        assert [sorted(c) for c in calls[1:]] == [e for e in expected if e]
    stopped = sum(i["status"] == "stopped" for r in records for i in r["individuals"])
    assert stopped < sum(len(r["redrawn"]) for r in records)


def test_off_the_records_are_unchanged_and_on_resume_equals_an_uninterrupted_run(tmp_path):
    plain = tmp_path / "plain"
    evolve.run(config(*FAST, "evolution.generations=2"), plain, evaluator=Stopping())
    assert all("redrawn" not in r for r in files.read_generations(plain))  # off: the records as before
    on = (*FAST, "search.redraw_stopped=2")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    evolve.run(config(*on, "evolution.generations=3"), whole, evaluator=Stopping())
    evolve.run(config(*on, "evolution.generations=1"), resumed, evaluator=Stopping())
    evolve.run(config(*on, "evolution.generations=3"), resumed, evaluator=Stopping())
    assert strip_timing(files.read_generations(resumed)) == strip_timing(files.read_generations(whole))


def test_replace_stopped_keeps_the_continuing_parent_and_stops_when_none_is_left():
    def ev(status):
        return Evaluation(0.5 if status == "ok" else 0.1, status)

    parent = Candidate("P", continued=True)
    cands = [Candidate("a"), Candidate("b"), parent]
    evals = [ev("stopped"), ev("ok"), ev("stopped")]
    asked = []

    def ask(r):
        asked.append(r)
        return [Candidate(f"new{r}{i}") for i in range(3)]

    out_c, out_e, redrawn = redraw.replace_stopped(cands, evals, 5, ask, lambda cs, idx: [ev("ok") for _ in cs])
    assert [c.genotype for c in out_c] == ["new00", "b", "P"] and asked == [0]
    assert [x["place"] for x in redrawn] == [0] and redrawn[0]["candidate"].genotype == "a"
    assert out_e[2].status == "stopped"  # the parent training on is never replaced


def test_bad_values_are_refused():
    for override, message in (
        ("search.redraw_stopped=-1", "redraw_stopped must be an int >= 0"),
        ("search.early_stop=null", "redraw_stopped needs search.early_stop"),
    ):
        cfg = config(*FAST, "search.redraw_stopped=2", override)
        with pytest.raises(evolve.ConfigError, match=message):
            evolve.setup(cfg, load_data=False)


class Verifying(Stopping):
    """Trained from scratch at the end (places from verify.PLACE), the first network tried stays at chance."""

    def evaluate(self, phenotypes, generation, inherited=None, indices=None):
        out = super().evaluate(phenotypes, generation, inherited, indices)
        if indices and indices[0] >= verify.PLACE:
            fitness = 0.05 if indices[0] == verify.PLACE else 0.5
            out = [dataclasses.replace(e, fitness=fitness, status="ok", train_samples=5) for e in out]
        return out


def test_a_best_that_cannot_learn_from_scratch_is_not_named(tmp_path):
    on = (*FAST, "search.verify_best=3")
    evolve.run(config(*on, "evolution.generations=2"), tmp_path, evaluator=Verifying())
    records = files.read_generations(tmp_path)
    assert "verified" not in records[0]  # only the last generation's best is checked
    first, second = records[-1]["verified"]
    assert (first["learns"], first["from_scratch_fitness"]) == (False, 0.05)
    assert (second["learns"], second["from_scratch_fitness"]) == (True, 0.5)
    # The best of the last generation first, then the next by search fitness; the record names the second.
    scored = sorted((-i["fitness"], n) for n, i in enumerate(records[-1]["individuals"]) if i["status"] == "ok")
    texts = [records[-1]["individuals"][n]["phenotype"] for _, n in scored]
    assert first["phenotype"] == texts[0] != second["phenotype"]
    assert second["phenotype"] == next(t for t in texts if t != texts[0]) == records[-1]["parent"]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["phenotype"] == second["phenotype"] and best["learns_from_scratch"] is True
    assert best["from_scratch_fitness"] == 0.5 and best["fitness"] == second["search_fitness"]
    assert runs.load_run(tmp_path).individual("best")[0].text == second["phenotype"]  # what retrain takes
    trained = sum(i["train_samples"] for r in records for i in r["individuals"]) + 10
    assert records[-1]["train_samples_total"] == trained
    # A finished run asked again rewrites best.json as it was, verification included.
    (tmp_path / "best.json").unlink()
    evolve.run(config(*on, "evolution.generations=2"), tmp_path, evaluator=Verifying())
    assert json.loads((tmp_path / "best.json").read_text()) == best


def test_verification_resumes_exactly_and_a_population_is_only_checked(tmp_path):
    class Killed(Verifying):  # the process dies while verifying the last generation's best
        def evaluate(self, phenotypes, generation, inherited=None, indices=None):
            if indices and indices[0] >= verify.PLACE:
                raise KeyboardInterrupt
            return super().evaluate(phenotypes, generation, inherited, indices)

    on = (*FAST, "search.verify_best=3", "evolution.generations=3")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    evolve.run(config(*on), whole, evaluator=Verifying())
    with pytest.raises(KeyboardInterrupt):
        evolve.run(config(*on), resumed, evaluator=Killed())
    assert len(files.read_generations(resumed)) == 2  # the last generation left nothing behind
    evolve.run(config(*on), resumed, evaluator=Verifying())
    assert strip_timing(files.read_generations(resumed)) == strip_timing(files.read_generations(whole))
    assert (resumed / "best.json").read_text() == (whole / "best.json").read_text()
    population = tmp_path / "population"
    evolve.run(config(*on, "evolution.generations=2", "evolution.strategy=nsga2"), population, evaluator=Verifying())
    (only,) = files.read_generations(population)[-1]["verified"]
    best = json.loads((population / "best.json").read_text())
    assert only["learns"] is False and best["learns_from_scratch"] is False and best["phenotype"] == only["phenotype"]
