"""The (1+λ) loop, checkpoints and resume, with a fake (hash) evaluator."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from spenser_jax import checkpoint, evolution, evolve, mutation
from spenser_jax.evolution import Evaluation
from spenser_jax.genotype import SearchSpace
from spenser_jax.grammar import load_grammar

from fakes import FakeEvaluator

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace(load_grammar(ROOT / "grammars" / "csnn.grammar"))
TIMING = ("wall_seconds", "evaluations_per_second", "train_seconds", "compile_seconds")


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["dataset.subset=200", *overrides])


def strip_timing(records):
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if k not in TIMING}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj
    return clean(records)


def test_public_config_keys():
    cfg = config()
    for key in ("seed", "grammar", "dataset.name", "dataset.data_dir", "dataset.subset",
                "dataset.time_steps", "evolution.generations", "evolution.offspring", "training.epochs",
                "training.batch_size", "training.correct_rate", "training.incorrect_rate"):
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert (cfg.evolution.generations, cfg.evolution.offspring, cfg.training.batch_size) == (200, 10, 64)
    assert (cfg.training.correct_rate, cfg.training.incorrect_rate, cfg.training.epochs) == (1.0, 0.0, 1)
    assert config("dataset=fmnist").dataset.time_steps == 25 and cfg.dataset.time_steps == 10


def test_tell_selection_rules():
    state = evolution.init(0)
    cands = evolution.ask(state, SPACE, mutation.MutationConfig(), 3)
    assert len(cands) == 3 and all(SPACE.is_valid(c.genotype) for c in cands)
    state, record = evolution.tell(state, SPACE, cands, [Evaluation(0.5), Evaluation(0.7), Evaluation(0.7)])
    assert state.parent == cands[1].genotype and state.parent_fitness == 0.7  # first of equals
    assert record["best_fitness"] == 0.7 and record["mean_fitness"] == pytest.approx(0.6333333)
    kids = evolution.ask(state, SPACE, mutation.MutationConfig(), 3)
    assert kids == evolution.ask(state, SPACE, mutation.MutationConfig(), 3)  # (seed, generation) only
    # A tie goes to the parent; a failure never becomes parent whatever its number.
    same, _ = evolution.tell(state, SPACE, kids, [Evaluation(0.7), Evaluation(0.1),
                                                   Evaluation(0.99, "error", "boom")])
    assert same.parent == state.parent and same.generation == 2
    better, record = evolution.tell(state, SPACE, kids, [Evaluation(0.7), Evaluation(0.71), Evaluation(0.2)])
    assert better.parent == kids[1].genotype and record["parent_replaced"]


def test_all_failed_generation_zero_redraws():
    state = evolution.init(1)
    cands = evolution.ask(state, SPACE, mutation.MutationConfig(), 2)
    state, record = evolution.tell(state, SPACE, cands, [Evaluation(-1.0, "error", "x")] * 2)
    assert state.parent is None and record["failed"] == 2
    again = evolution.ask(state, SPACE, mutation.MutationConfig(), 2)
    assert all(not c.mutations for c in again) and again != cands


def test_run_writes_outputs_and_resumes(tmp_path):
    cfg = config("evolution.generations=4", "evolution.offspring=3")
    fake = FakeEvaluator(fail_every=5)
    final = evolve.run(cfg, tmp_path, evaluator=fake)
    records = checkpoint.read_generations(tmp_path)
    assert [r["generation"] for r in records] == [0, 1, 2, 3] and final.generation == 4
    for r in records:
        assert {"best_fitness", "mean_fitness", "individuals"} <= set(r)
        assert len(r["individuals"]) == 3
        for ind in r["individuals"]:
            assert {"phenotype", "fitness", "status", "parameters", "train_seconds"} <= set(ind)
    assert any(i["status"] == "nonfinite_loss" and i["fitness"] == -1.0 and "nan" in i["reason"]
               for r in records for i in r["individuals"])
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["fitness"] == max(r["best_fitness"] for r in records) == final.parent_fitness
    assert np.asarray(checkpoint.load(tmp_path).parent_weights["w"]).tolist() == [
        pytest.approx(final.parent_fitness)]
    # Rerunning does nothing; asking for more generations continues.
    calls = fake.calls
    evolve.run(cfg, tmp_path, evaluator=fake)
    assert fake.calls == calls
    evolve.run(config("evolution.generations=6", "evolution.offspring=3"), tmp_path, evaluator=fake)
    longer = checkpoint.read_generations(tmp_path)
    assert len(longer) == 6 and strip_timing(longer[:4]) == strip_timing(records)


def test_resume_refuses_other_config_and_corrupt_checkpoint(tmp_path):
    evolve.run(config("evolution.generations=1", "evolution.offspring=2"), tmp_path, evaluator=FakeEvaluator())
    before = (tmp_path / checkpoint.CHECKPOINT).read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match="offspring: 2 -> 3"):
        evolve.run(config("evolution.generations=2", "evolution.offspring=3"), tmp_path,
                   evaluator=FakeEvaluator())
    assert (tmp_path / checkpoint.CHECKPOINT).read_bytes() == before
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(before[: len(before) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt checkpoint"):
        evolve.run(config("evolution.generations=2", "evolution.offspring=2"), tmp_path,
                   evaluator=FakeEvaluator())
    assert (tmp_path / checkpoint.CHECKPOINT).read_bytes() == before[: len(before) // 2]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    checkpoint.atomic_write(target, "old")

    def boom(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        checkpoint.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("override, message", [
    ("evolution.offspring=0", "offspring"),
    ("dataset.name=cifar", "dataset.name"),
    ("training.correct_rate=2.0", "correct_rate"),
    ("mutation.add_layer=1.5", "add_layer"),
    ("grammar=nope.grammar", "not found"),
])
def test_bad_config_values(override, message):
    with pytest.raises(evolve.ConfigError, match=message):
        evolve.setup(config(override), load_data=False)


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from hydra import compose, initialize_config_dir
from spenser_jax import evolve
from fakes import FakeEvaluator
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose("config", overrides=["dataset.subset=200", "evolution.generations=8",
                                       "evolution.offspring=3"])
evolve.run(cfg, Path(sys.argv[1]), evaluator=FakeEvaluator(delay={delay}))
"""


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(ROOT / "tests"), conf=str(ROOT / "conf"), delay=0.3))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(whole)], check=True, timeout=300)
    proc = subprocess.Popen([sys.executable, str(script), str(killed)])
    deadline = time.time() + 120
    while len(checkpoint.read_generations(killed)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(checkpoint.read_generations(killed))
    assert 3 <= done < 8, "the kill should land mid-run"
    subprocess.run([sys.executable, str(script), str(killed)], check=True, timeout=300)
    assert strip_timing(checkpoint.read_generations(killed)) == strip_timing(checkpoint.read_generations(whole))
    assert json.loads((killed / "best.json").read_text()) == json.loads((whole / "best.json").read_text())
