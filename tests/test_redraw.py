"""search.redraw_stopped: candidates the early check stopped are drawn again, on every strategy."""

import dataclasses
import hashlib

import pytest

from spenser_jax import evolve
from spenser_jax.run import files
from spenser_jax.search import redraw
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


FAST = ("search=fast", "evolution.offspring=4", "runtime.progress=false")


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


def test_off_by_default_and_resume_equals_an_uninterrupted_run(tmp_path):
    plain = tmp_path / "plain"
    evolve.run(config(*FAST, "evolution.generations=2"), plain, evaluator=Stopping())
    assert all("redrawn" not in r for r in files.read_generations(plain))  # the records as before
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
