"""The (1+λ) loop, checkpoints and resume, with a fake (hash) evaluator."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spenser_jax import evolve
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace
from spenser_jax.grammar import load_grammar
from spenser_jax.run import checkpoint, files, runs
from spenser_jax.run.runtime import keeps_host_memory
from spenser_jax.search import one_plus_lambda as evolution
from spenser_jax.training.evaluation import Evaluation

from helpers import FakeEvaluator, config, strip_timing  # config, strip_timing: also test_layer_programs'

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace(load_grammar(ROOT / "grammars" / "csnn.grammar"))


def test_public_config_keys():
    cfg = config()
    for key in (
        "seed",
        "grammar",
        "dataset.name",
        "dataset.data_dir",
        "dataset.subset",
        "dataset.time_steps",
        "evolution.generations",
        "evolution.offspring",
        "training.epochs",
        "training.batch_size",
        "training.correct_rate",
        "training.incorrect_rate",
    ):
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert (cfg.evolution.generations, cfg.evolution.offspring, cfg.training.batch_size) == (200, 10, 64)
    assert (cfg.training.correct_rate, cfg.training.incorrect_rate, cfg.training.epochs) == (1.0, 0.0, 1)
    assert config("dataset=fmnist").dataset.time_steps == 25 and cfg.dataset.time_steps == 10


def ask(state, n):
    rng = evolution.generation_rng(state.seed, state.generation)
    return evolution.ask(rng, state, SPACE, mutation.MutationConfig(), n)


def test_tell_selection_rules():
    state = evolution.init(0)
    cands = ask(state, 3)
    assert len(cands) == 3 and all(SPACE.is_valid(c.genotype) for c in cands)
    state, metrics = evolution.tell(state, cands, [Evaluation(0.5), Evaluation(0.7), Evaluation(0.7)])
    assert state.parent == cands[1].genotype and state.parent_fitness == 0.7  # first of equals
    assert metrics["best_fitness"] == 0.7 and metrics["mean_fitness"] == pytest.approx((0.5 + 0.7 + 0.7) / 3)
    assert metrics["best_index"] == 1 and metrics["parent_replaced"] and metrics["failed"] == 0
    kids = ask(state, 3)
    assert kids == ask(state, 3)  # (seed, generation) only
    assert kids != ask(dataclasses.replace(state, generation=state.generation + 1), 3)
    # A tie goes to the parent; a failure never becomes parent whatever its number.
    same, metrics = evolution.tell(state, kids, [Evaluation(0.7), Evaluation(0.1), Evaluation(0.99, "error", "boom")])
    assert same.parent == state.parent and same.generation == 2 and not metrics["parent_replaced"]
    assert metrics["failed"] == 1 and metrics["mean_fitness"] == pytest.approx(0.4)
    better, metrics = evolution.tell(state, kids, [Evaluation(0.7), Evaluation(0.71), Evaluation(0.2)])
    assert better.parent == kids[1].genotype and metrics["parent_replaced"]


def test_a_parent_that_trains_on_competes_with_its_new_score_not_its_lucky_one():
    state = evolution.init(0)
    first = ask(state, 2)
    state, _ = evolution.tell(state, first, [Evaluation(0.9, weights="lucky"), Evaluation(0.2)])
    rng = evolution.generation_rng(state.seed, state.generation)
    cands = evolution.ask(rng, state, SPACE, mutation.MutationConfig(), 3, parent_continues=True)
    # The parent takes the last of the λ places, unmutated; the others are the plain (1+λ)'s offspring.
    assert len(cands) == 3 and [c.genotype for c in cands[:2]] == [c.genotype for c in ask(state, 2)]
    assert cands[2].genotype == state.parent and cands[2].continued and not cands[2].mutations
    assert not any(c.continued for c in cands[:2])

    def tell(*fitness):
        evaluations = [
            Evaluation(f, weights=k) if f >= 0 else Evaluation(-1.0, "error", "x") for k, f in enumerate(fitness)
        ]
        return evolution.tell(state, cands, evaluations)

    # Its score of 0.9 is forgotten: an offspring at 0.6 beats the parent now at 0.5.
    new, metrics = tell(0.3, 0.6, 0.5)
    assert new.parent == cands[1].genotype and new.parent_fitness == 0.6 and metrics["parent_replaced"]
    # The parent keeps its place with the score and weights it has now (ties too).
    new, metrics = tell(0.7, 0.3, 0.7)
    assert (new.parent, new.parent_fitness, new.parent_weights) == (state.parent, 0.7, 2)
    assert not metrics["parent_replaced"] and metrics["best_fitness"] == 0.7
    # If it fails to train on, its old score stands, as without continuing.
    new, metrics = tell(0.3, 0.6, -1)
    assert (new.parent, new.parent_fitness, new.parent_weights) == (state.parent, 0.9, "lucky")


def test_all_failed_generation_zero_redraws():
    state = evolution.init(1)
    cands = ask(state, 2)
    state, metrics = evolution.tell(state, cands, [Evaluation(-1.0, "error", "x")] * 2)
    assert state.parent is None and metrics["failed"] == 2 and metrics["mean_fitness"] == -1.0
    again = ask(state, 2)
    assert all(not c.mutations for c in again) and again != cands


def test_run_writes_outputs_and_resumes(tmp_path):
    cfg = config("evolution.generations=4", "evolution.offspring=3")
    fake = FakeEvaluator(fail_every=5)
    final = evolve.run(cfg, tmp_path, evaluator=fake)
    records = files.read_generations(tmp_path)
    assert [r["generation"] for r in records] == [0, 1, 2, 3] and final.generation == 4
    for r in records:
        assert {"best_fitness", "mean_fitness", "individuals"} <= set(r)
        assert len(r["individuals"]) == 3
        for ind in r["individuals"]:
            assert {"phenotype", "fitness", "status", "parameters", "train_seconds"} <= set(ind)
    assert any(
        i["status"] == "nonfinite_loss" and i["fitness"] == -1.0 and "nan" in i["reason"]
        for r in records
        for i in r["individuals"]
    )
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["fitness"] == max(r["best_fitness"] for r in records) == final.parent_fitness
    assert np.asarray(checkpoint.load(tmp_path).parent_weights["w"]).tolist() == [pytest.approx(final.parent_fitness)]
    # Rerunning does nothing; asking for more generations continues.
    calls = fake.calls
    evolve.run(cfg, tmp_path, evaluator=fake)
    assert fake.calls == calls
    evolve.run(config("evolution.generations=6", "evolution.offspring=3"), tmp_path, evaluator=fake)
    longer = files.read_generations(tmp_path)
    assert len(longer) == 6 and strip_timing(longer[:4]) == strip_timing(records)


def test_resume_refuses_other_config_and_corrupt_checkpoint(tmp_path):
    evolve.run(config("evolution.generations=1", "evolution.offspring=2"), tmp_path, evaluator=FakeEvaluator())
    before = (tmp_path / files.CHECKPOINT).read_bytes()
    with pytest.raises(files.CheckpointError, match="offspring: 2 -> 3"):
        evolve.run(config("evolution.generations=2", "evolution.offspring=3"), tmp_path, evaluator=FakeEvaluator())
    assert (tmp_path / files.CHECKPOINT).read_bytes() == before
    (tmp_path / files.CHECKPOINT).write_bytes(before[: len(before) // 2])
    with pytest.raises(files.CheckpointError, match="corrupt checkpoint"):
        evolve.run(config("evolution.generations=2", "evolution.offspring=2"), tmp_path, evaluator=FakeEvaluator())
    assert (tmp_path / files.CHECKPOINT).read_bytes() == before[: len(before) // 2]


def snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_refused_process_leaves_the_run_directory_as_it_found_it(tmp_path):
    run_dir = tmp_path / "run"
    evolve.run(
        config("evolution.generations=1", "evolution.offspring=2"),
        run_dir,
        evaluator=FakeEvaluator(),
        overrides=["evolution.generations=1", "evolution.offspring=2"],
    )
    before = snapshot(run_dir)
    assert {files.CONFIG, Path(".hydra/overrides.yaml"), Path(files.LOCK)} <= set(before)
    for refused, message in (
        (["evolution.offspring=3"], "offspring: 2 -> 3"),
        (["grammar=grammars/csnn_plus.grammar"], "grammar_sha256"),
    ):
        overrides = ["evolution.generations=2", "evolution.offspring=2", *refused]
        with pytest.raises(files.CheckpointError, match=message):
            evolve.run(config(*overrides), run_dir, evaluator=FakeEvaluator(), overrides=overrides)
        assert snapshot(run_dir) == before
    # The commands after the search still read the run as the search left it.
    run = runs.load_run(run_dir)
    assert run.space().text(run.state.parent) == json.loads((run_dir / files.BEST).read_text())["phenotype"]
    # A bad config makes no run directory.
    with pytest.raises(evolve.ConfigError, match="offspring"):
        evolve.run(config("evolution.offspring=0"), tmp_path / "new" / "run", evaluator=FakeEvaluator())
    assert not (tmp_path / "new").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    files.atomic_write(target, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        files.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("evolution.offspring=0", "offspring"),
        ("dataset.name=cifar", "dataset.name"),
        ("training.correct_rate=2.0", "correct_rate"),
        ("mutation.add_layer=1.5", "add_layer"),
        ("grammar=nope.grammar", "not found"),
        ("search.min_steps=0", "search.min_steps"),
        ("search.stop_min_steps=0", "search.stop_min_steps"),
        ("search.time_steps=0", "search.time_steps"),
        ("search.parent_continues=true", "needs search.inherit"),
        ("search.fresh_on_learning_change=true", "fresh_on_learning_change needs search.inherit"),
        ("search.fresh_on_learning_change=1", "fresh_on_learning_change must be true or false"),
        ("search.parent_continues=true search.inherit=true evolution.offspring=1", "offspring >= 2"),
    ],
)
def test_bad_config_values(override, message):
    with pytest.raises(evolve.ConfigError, match=message):
        evolve.setup(config(*override.split()), load_data=False)


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from hydra import compose, initialize_config_dir
from spenser_jax import evolve
from helpers import FakeEvaluator, config, strip_timing  # config, strip_timing: also test_layer_programs'
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose("config", overrides=["dataset.subset=200", "evolution.generations=8",
                                       "evolution.offspring=3"])
evolve.run(cfg, Path(sys.argv[1]), evaluator=FakeEvaluator(delay={delay}))
"""


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(ROOT / "tests"), conf=str(ROOT / "conf"), delay=0.3))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(whole)], check=True, timeout=300)
    proc = subprocess.Popen([sys.executable, str(script), str(killed)])
    deadline = time.time() + 120
    while len(files.read_generations(killed)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(files.read_generations(killed))
    assert 3 <= done < 8, "the kill should land mid-run"
    subprocess.run([sys.executable, str(script), str(killed)], check=True, timeout=300)
    assert strip_timing(files.read_generations(killed)) == strip_timing(files.read_generations(whole))
    assert json.loads((killed / "best.json").read_text()) == json.loads((whole / "best.json").read_text())


def test_loop_needs_no_data_on_disk(tmp_path):
    # With an evaluator of its own the loop reads no data set (a bad path proves it).
    cfg = config("evolution.generations=2", "evolution.offspring=2", "dataset.data_dir=/nonexistent/data")
    evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())
    assert len(files.read_generations(tmp_path)) == 2
    saved = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "/nonexistent/data" in saved and "generations: 2" in saved


class Interrupt(BaseException):
    """Stands in for a kill at one exact point of the write sequence."""


def interrupted_run(tmp_path, monkeypatch, after, at_generation):
    """Run 4 generations, interrupting right after ``after`` is written for ``at_generation``."""
    cfg = config("evolution.generations=4", "evolution.offspring=3")
    original = {"append": files.append_generation, "atomic": files.atomic_write}

    def append(run_dir, record):
        original["append"](run_dir, record)
        if after == "record" and record["generation"] == at_generation:
            raise Interrupt

    def atomic(path, payload):
        original["atomic"](path, payload)
        if after == "best" and Path(path).name == files.BEST and json.loads(payload)["generation"] == at_generation:
            raise Interrupt

    monkeypatch.setattr(files, "append_generation", append)
    monkeypatch.setattr(files, "atomic_write", atomic)
    with pytest.raises(Interrupt):
        evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())
    monkeypatch.setattr(files, "append_generation", original["append"])
    monkeypatch.setattr(files, "atomic_write", original["atomic"])
    return cfg


@pytest.mark.parametrize("after", ["record", "best"])
def test_resume_after_a_kill_between_writes(tmp_path, monkeypatch, after):
    """A kill after the log line (or best.json) but before the checkpoint: resume equals uninterrupted."""
    whole = tmp_path / "whole"
    evolve.run(config("evolution.generations=4", "evolution.offspring=3"), whole, evaluator=FakeEvaluator())
    cut = tmp_path / "cut"
    cfg = interrupted_run(cut, monkeypatch, after, at_generation=2)
    # The log (and maybe best.json) is ahead of the checkpoint now.
    assert len(files.read_generations(cut)) == 3 and checkpoint.load(cut).generation == 2
    if after == "best":
        assert json.loads((cut / files.BEST).read_text())["generation"] == 2
    evolve.run(cfg, cut, evaluator=FakeEvaluator())
    assert strip_timing(files.read_generations(cut)) == strip_timing(files.read_generations(whole))
    for name in (files.BEST, files.PARETO):
        assert json.loads((cut / name).read_text()) == json.loads((whole / name).read_text())


def test_stale_best_json_is_rewritten_on_resume(tmp_path):
    cfg = config("evolution.generations=3", "evolution.offspring=3")
    evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())
    good = (tmp_path / files.BEST).read_text()
    (tmp_path / files.BEST).write_text('{"generation": 0, "fitness": 0.0}')  # as an older writer left it
    evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())  # finished: nothing to train, but best.json is fixed
    assert (tmp_path / files.BEST).read_text() == good


@pytest.mark.slow
def test_second_process_on_a_busy_run_directory_stops_at_once(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(ROOT / "tests"), conf=str(ROOT / "conf"), delay=0.4))
    busy, alone = tmp_path / "busy", tmp_path / "alone"
    proc = subprocess.Popen([sys.executable, str(script), str(busy)])
    try:
        deadline = time.time() + 120
        while len(files.read_generations(busy)) < 1 and time.time() < deadline:
            time.sleep(0.05)
        config_before = (busy / ".hydra" / "config.yaml").read_text()
        cfg = config("evolution.generations=8", "evolution.offspring=3", "seed=5")  # another run's config
        with pytest.raises(files.CheckpointError, match=rf"{busy} is in use by process {proc.pid}"):
            evolve.run(cfg, busy, evaluator=FakeEvaluator())
        assert (busy / ".hydra" / "config.yaml").read_text() == config_before
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    subprocess.run([sys.executable, str(script), str(alone)], check=True, timeout=300)
    # The first process went on untouched: each generation once, as an undisturbed run.
    assert [r["generation"] for r in files.read_generations(busy)] == list(range(8))
    assert strip_timing(files.read_generations(busy)) == strip_timing(files.read_generations(alone))
    # Its lock went with it: the directory is free again.
    evolve.run(config("evolution.generations=8", "evolution.offspring=3"), busy, evaluator=FakeEvaluator())


def test_energy_constrained_search_keeps_its_best_within_budget(tmp_path):
    cfg = config(
        "evolution.generations=5", "evolution.offspring=4", "fitness.objective=constrained", "fitness.max_synops=300000"
    )
    final = evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())
    records = files.read_generations(tmp_path)
    over = [i for r in records for i in r["individuals"] if i["synops_per_sample"] > 300000]
    assert over  # the budget binds: some candidates were over it
    best = next(
        i for r in records for i in r["individuals"] if i["phenotype"] == records[-1]["parent"] and i["score"][0] == 1.0
    )
    assert best["synops_per_sample"] <= 300000 and records[-1]["best_score"] == best["score"]
    # Unconstrained, the same seed ends with a parent over the budget: the objective mattered.
    free = evolve.run(
        config("evolution.generations=5", "evolution.offspring=4"), tmp_path / "free", evaluator=FakeEvaluator()
    )
    assert free.parent != final.parent
    identity = json.loads((tmp_path / "run.json").read_text())
    assert identity["fitness"]["kind"] == "constrained" and "fitness" not in json.loads(
        (tmp_path / "free" / "run.json").read_text()
    )
    archive = json.loads((tmp_path / files.PARETO).read_text())
    assert archive["evaluated"] == sum(len(r["individuals"]) for r in records)
    front = archive["accuracy_synops"]
    assert all(
        a["synops_per_sample"] < b["synops_per_sample"] and a["accuracy"] < b["accuracy"]
        for a, b in zip(front, front[1:])
    )


def test_bad_objectives_are_config_errors():
    with pytest.raises(evolve.ConfigError, match="fitness"):
        evolve.setup(config("fitness.objective=constrained"), load_data=False)
    with pytest.raises(evolve.ConfigError, match="fitness"):
        evolve.setup(config("fitness.objective=speed"), load_data=False)
    with pytest.raises(evolve.ConfigError, match="max_synops must be null or a number > 0, got -1"):
        evolve.setup(config("fitness.objective=constrained", "fitness.max_synops=-1"), load_data=False)
    with pytest.raises(evolve.ConfigError, match="energy"):
        evolve.setup(config("energy.e_ac_pj=-1"), load_data=False)


def test_fitness_subset_scores_on_part_of_the_fitness_split():
    s = evolve.setup(config("dataset.subset=200", "search.fitness_subset=30"))
    assert len(s.splits.fitness.labels) == 30 and len(s.splits.evo_train.labels) == 140
    assert s.identity["search"] == {"fitness_subset": 30}
    with pytest.raises(evolve.ConfigError, match=r"search.fitness_subset: .*\[1, 60\], got 61"):
        evolve.setup(config("dataset.subset=200", "search.fitness_subset=61"))


def test_search_time_steps_caps_t_while_searching_and_joins_the_identity():
    paper = evolve.setup(config("dataset=fmnist"), load_data=False)
    assert paper.protocol.time_steps == 25 and "search" not in paper.identity
    low = evolve.setup(config("dataset=fmnist", "search.time_steps=6"), load_data=False)
    assert low.protocol.time_steps == 6 and low.identity["time_steps"] == 25  # the data set's, for retrain
    assert low.identity["search"] == {"time_steps": 6}
    # A cap, never a raise: MNIST at T = 4 stays at 4.
    assert evolve.setup(config("dataset.time_steps=4", "search.time_steps=6"), load_data=False).protocol.time_steps == 4
    run = runs.Run(dir=Path("."), identity=low.identity, config={}, records=[], best=None, test=None, state=None)
    assert run.protocol().time_steps == 6  # how the search trained its individuals
    assert run.protocol(time_steps=low.identity["time_steps"]).time_steps == 25


@pytest.mark.parametrize(
    "overrides", [(), ("search=fast",), ("training.encoding=direct", "search.early_stop=0.25", "search.inherit=true")]
)
def test_a_run_rebuilds_the_protocol_its_setup_built(overrides):
    # The writer's side (setup) and the reader's (Run.protocol) share one
    # mapping from the identity; only the execution order stays outside it.
    s = evolve.setup(config(*overrides), load_data=False)
    run = runs.Run(dir=Path("."), identity=s.identity, config={}, records=[], best=None, test=None, state=None)
    assert run.protocol(mode=s.protocol.mode) == s.protocol
    assert hash(s.protocol) == hash(run.protocol(mode=s.protocol.mode))


@pytest.mark.parametrize(
    "overrides", [(), ("mutation.log_uniform=true",), ("+mutation.output_modules=[output,learning]",)]
)
def test_a_run_rebuilds_the_space_its_setup_built(tmp_path, overrides):
    # retrain, inspect and export decode and draw with the space the search had,
    # its fixed modules and log-uniform draws included.
    cfg = config("evolution.generations=1", "evolution.offspring=2", *overrides)
    evolve.run(cfg, tmp_path, evaluator=FakeEvaluator())
    s = evolve.setup(cfg, load_data=False)
    space = runs.load_run(tmp_path).space()
    assert space == s.space
    draws = [mutation.sample(np.random.default_rng(k), sp, s.mutation) for sp in (space, s.space) for k in (0, 1)]
    assert draws[:2] == draws[2:]


def test_new_switches_stay_out_of_the_paper_identity():
    paper = evolve.setup(config(), load_data=False)
    assert "runtime" not in paper.identity and paper.runtime["compiler_options"] == {}
    loop = evolve.setup(config("runtime.xla_cpu_fusion_emitters=false"), load_data=False)
    assert loop.identity["runtime"] == {"xla_cpu_fusion_emitters": False}
    assert loop.runtime["compiler_options"] == {"xla_cpu_use_fusion_emitters": False}
    with pytest.raises(evolve.ConfigError, match="xla_cpu_fusion_emitters must be true or false"):
        evolve.setup(config("runtime.xla_cpu_fusion_emitters=3"), load_data=False)
    assert paper.runtime["compile_unit"] == "network"
    layer = evolve.setup(config("runtime.compile_unit=layer"), load_data=False)
    assert layer.identity["runtime"] == {"compile_unit": "layer"} and layer.runtime["compile_unit"] == "layer"
    with pytest.raises(evolve.ConfigError, match=r"compile_unit must be one of \['auto', 'network', 'layer'\]"):
        evolve.setup(config("runtime.compile_unit=layers"), load_data=False)
    # auto: blocks on one CPU device; whole programs where a run spreads over devices or vmaps its groups.
    auto = evolve.setup(config("runtime.compile_unit=auto"), load_data=False)
    assert auto.runtime["compile_unit"] == "layer" and auto.identity["runtime"] == {"compile_unit": "layer"}
    vmapped = evolve.setup(config("runtime.compile_unit=auto", "runtime.batching=vmap"), load_data=False)
    assert vmapped.runtime["compile_unit"] == "network"
    # The allocator's setting changes no result: not in the identity; auto keeps memory for programs per
    # block only; a bad value is refused.
    kept = evolve.setup(config("runtime.keep_host_memory=true"), load_data=False)
    assert "runtime" not in kept.identity
    assert not keeps_host_memory({}) and keeps_host_memory({"keep_host_memory": True})
    assert keeps_host_memory({"compile_unit": "layer"}) and keeps_host_memory({"compile_unit": "auto"})
    assert not keeps_host_memory({"compile_unit": "layer", "keep_host_memory": False})
    with pytest.raises(evolve.ConfigError, match="keep_host_memory must be auto, true or false"):
        evolve.setup(config("runtime.keep_host_memory=always"), load_data=False)
    assert "log_uniform" not in paper.identity["mutation"] and paper.space.log_uniform_ratio is None
    wide = evolve.setup(config("mutation.log_uniform=true"), load_data=False)
    assert wide.identity["mutation"]["log_uniform"] is True and wide.space.log_uniform_ratio == 100.0
    steps = evolve.setup(
        config("search.min_steps=50", "search.inherit=true", "search.parent_continues=true", "training.epochs=0.25"),
        load_data=False,
    )
    assert steps.protocol.min_steps == 50 and steps.strategy.parent_continues
    assert steps.identity["search"] == {"inherit": True, "min_steps": 50, "parent_continues": True}
