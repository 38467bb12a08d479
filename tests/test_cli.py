"""The command-line tools end to end, with real training on a small MNIST subset."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spenser_jax.run import files

from helpers import strip_timing

pytestmark = pytest.mark.slow  # every test here runs a command line

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "dataset.subset=200",
    "dataset.time_steps=2",
    "evolution.offspring=2",
    "training.eval_batch_size=256",
    "runtime.progress=false",
]


def cli(module, *args, cache=None, check=True):
    overrides = [f"runtime.compile_cache={cache}"] if cache and module == "evolve" else []
    proc = subprocess.run(
        [sys.executable, "-m", f"spenser_jax.{module}", *map(str, args), *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Resuming through the CLI is checked on search=fast (fast_runs), whose
    # checkpoint carries more (inherited weights, compute so far).
    whole = tmp_path_factory.mktemp("runs") / "whole"
    first = cli("evolve", *SMALL, "evolution.generations=2", f"hydra.run.dir={whole}", cache=whole.parent / "xla")
    assert "projected: 2 generations" in first.stdout + first.stderr  # once the first one ends
    return whole


def test_evolve_outputs(runs):
    whole = runs
    records = files.read_generations(whole)
    assert [r["generation"] for r in records] == [0, 1]
    for r in records:
        assert len(r["individuals"]) == 2
        for ind in r["individuals"]:
            assert ind["status"] in ("ok", "nonfinite_loss", "error")
            assert ind["parameters"] > 0 and ind["phenotype"].startswith("layer:")
            if ind["status"] == "ok":
                assert 0.0 <= ind["fitness"] <= 1.0
    # Something trained and was scored: a run where every individual failed must not pass.
    assert any(ind["status"] == "ok" for r in records for ind in r["individuals"])
    assert records[1]["best_fitness"] >= records[0]["best_fitness"] >= 0.0
    best = json.loads((whole / "best.json").read_text())
    assert best["fitness"] == records[-1]["best_fitness"] and best["phenotype"].startswith("layer:")
    assert (whole / "checkpoint.msgpack").exists() and (whole / ".hydra" / "config.yaml").exists()
    assert "evolution.generations=2" in (whole / ".hydra" / "overrides.yaml").read_text()
    log = (whole / "evolve.log").read_text()  # held back until the run was accepted, then all of it
    assert "new run in" in log and "generation 1 done (2 of 2)" in log


# Searching at T = 2 (search.time_steps) on a data set at T = 3: retrain tests at 3.
# The resumed run here stops after one generation and is asked for a second: with verify_best the
# finished run would name a verified best and search on from it (tests/test_redraw.py resumes that).
FAST = [*SMALL, "search=fast", "evolution.offspring=3", "dataset.time_steps=3", "search.time_steps=2"]
FAST = [*FAST, "search.verify_best=0"]


@pytest.fixture(scope="module")
def fast_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fast")
    cache = base / "xla-cache"
    whole, resumed = base / "whole", base / "resumed"
    cli("evolve", *FAST, "evolution.generations=2", f"hydra.run.dir={whole}", cache=cache)
    cli("evolve", *FAST, "evolution.generations=1", f"hydra.run.dir={resumed}", cache=cache)
    log = cli("evolve", *FAST, "evolution.generations=2", f"hydra.run.dir={resumed}", cache=cache)
    return whole, resumed, log


def test_fast_search_inherits_counts_compute_and_resumes_exactly(fast_runs):
    whole, resumed, log = fast_runs
    records = files.read_generations(whole)
    assert "resuming" in log.stderr + log.stdout
    # Generation 1 starts from generation 0's parent and its weights, read back from the checkpoint.
    assert strip_timing(files.read_generations(resumed)) == strip_timing(records)
    identity = json.loads((whole / "run.json").read_text())
    assert identity["search"] == {
        "inherit": True,
        "early_stop": 0.2,
        "min_steps": 100,
        "time_steps": 2,
        "parent_continues": True,
        "fresh_on_learning_change": True,
        "redraw_stopped": 3,
    }
    assert identity["training"]["epochs"] == 0.25 and identity["mutation"]["log_uniform"] is True
    # They round differently: part of the identity (compile_unit=auto resolved, to layer on this CPU).
    assert identity["runtime"] == {"xla_cpu_fusion_emitters": False, "compile_unit": "layer"}
    total = 0
    for r in records:
        for ind in r["individuals"]:
            # A quarter of 3 batches is 1 step; the floor of 100 steps lifts it to the whole
            # epoch (the paper's budget, never more): 3 steps, all 140 EvoTrain samples.
            if ind["status"] in ("ok", "stopped"):
                assert (ind["train_steps"], ind["train_samples"]) == (3, 140)
            total += ind["train_samples"]
        # Stopped candidates drawn again, and the end's networks trained from scratch, trained too.
        total += sum(x["train_samples"] for x in r["redrawn"]) + sum(t["train_samples"] for t in r.get("verified", []))
        assert r["train_samples_total"] == total
    later = [i for r in records[1:] if r["parent"] for i in r["individuals"]]
    assert later and all("inherited" in i for i in later)
    assert any(i["inherited"] > 0.5 for i in later)  # most offspring keep most of their parent
    # The parent trains on in the last of the λ places, keeping all its weights.
    assert all(r["individuals"][-1].get("continued") for r in records[1:])
    assert all(r["individuals"][-1]["inherited"] == 1.0 for r in records[1:])
    assert not any(i.get("continued") for r in records for i in r["individuals"][:-1])


def test_plus_grammar_searches_losses_and_connections(tmp_path):
    run = tmp_path / "plus"
    cli(
        "evolve",
        *SMALL,
        "grammar=grammars/csnn_plus.grammar",
        "evolution.offspring=2",
        "evolution.generations=1",
        f"hydra.run.dir={run}",
        cache=tmp_path / "cache",
    )
    records = files.read_generations(run)
    texts = [i["phenotype"] for r in records for i in r["individuals"]]
    assert all(" loss:" in t for t in texts) and any(" input:" in t for t in texts)
    assert any(i["status"] == "ok" for r in records for i in r["individuals"])
    identity = json.loads((run / "run.json").read_text())
    assert identity["levels_back"] == 3 and identity["mutation"]["add_connection"] == 0.15
    assert ["loss", 1, 1, []] in identity["macro"]


def test_inspect_measures_the_best_as_the_search_recorded(runs, tmp_path):
    whole = runs
    out, png = tmp_path / "best.json", tmp_path / "raster.png"
    proc = cli("inspect", whole, "--search-weights", "--json", out, "--raster", png)
    result = json.loads(out.read_text())
    assert "SynOps/sample" in proc.stdout and "energy/sample" in proc.stdout
    crossing = result["break_even_synops_per_sample"]
    assert ("ANN equivalent costs less" if crossing <= 0 else f"stay under {crossing:,.0f}") in proc.stdout
    records = files.read_generations(whole)
    best = json.loads((whole / "best.json").read_text())
    recorded = next(
        i
        for r in records
        for i in r["individuals"]
        if i["phenotype"] == best["phenotype"] and i["fitness"] == best["fitness"]
    )
    # The whole Fitness split with the run's key: the numbers the search recorded.
    for key in ("spikes_per_sample", "synops_per_sample", "energy_pj_per_sample", "parameters"):
        assert result[key] == pytest.approx(recorded[key], rel=1e-6), key
    lif = [row for row in result["layers"] if "spikes_per_sample" in row]
    assert [row["spikes_per_sample"] for row in lif] == pytest.approx(recorded["spikes_per_sample"])
    assert sum(row.get("synops_per_sample", 0) for row in result["layers"]) == pytest.approx(
        result["synops_per_sample"]
    )
    assert isinstance(result["exportable"], bool) and png.stat().st_size > 1000
    nb = result["neurobench"]  # NeuroBench's names (tests/test_neurobench_metrics.py checks the figures)
    assert nb["SynapticOperations"]["Effective_ACs"] == pytest.approx(result["synops_per_sample"], rel=1e-12)
    assert 0 < nb["MembraneUpdates"] <= nb["NeuronOperations"]["Neuron Dense Ops"] / 4
    assert 0 <= nb["ActivationSparsity"] <= 1 and "NeuroBench 2.3.0" in proc.stdout
    bad = cli("inspect", whole, "--individual", "7:9", check=False)
    assert bad.returncode == 1 and "no individual 7:9" in bad.stderr


def test_retrain_and_report(runs, fast_runs, tmp_path):
    whole, (fast, _, _) = runs, fast_runs
    proc = cli("retrain", whole, "--epochs", 1)
    result = json.loads((whole / "test.json").read_text())
    assert "test accuracy" in proc.stdout and 0.0 <= result["accuracy"] <= 1.0
    assert result["test_samples"] == 10000 and result["epochs"] == 1
    out = tmp_path / "report"
    cli("report", whole, fast, "--out", out)
    assert (out / "fitness_mnist.png").stat().st_size > 1000
    assert (out / "best_fitness_mnist.png").exists() and (out / "energy_mnist.png").stat().st_size > 1000
    table = (out / "report.md").read_text()
    assert "Convolutional" in table and "Adam" in table and "| 2 |" in table
    assert "ANN / SNN" in table and " nJ |" in table
    assert (whole / "retrained.msgpack").exists()
    cli("retrain", fast, "--epochs", 1, "--from-scratch")
    one = json.loads((fast / "test.json").read_text())
    assert one["time_steps"] == 3  # the data set's T, not the search's
    # A time limit ends after the first epoch that leaves no room for another: the first epoch of the same
    # retraining, so the same network; --curve tests it after that epoch.
    cli("retrain", fast, "--epochs", 3, "--from-scratch", "--minutes", 1e-6, "--curve")
    limited = json.loads((fast / "test.json").read_text())
    assert limited["epochs"] == 1 and limited["losses"] == one["losses"] and limited["accuracy"] == one["accuracy"]
    assert [(p["epoch"], p["loss"], p["accuracy"]) for p in limited["curve"]] == [(1, *one["losses"], one["accuracy"])]


@pytest.mark.parametrize(
    "args, message",
    [
        (["dataset.data_dir=/nonexistent/data"], "/nonexistent/data"),
        (["evolution.offspring=0"], "offspring"),
        (["evolution.nope=3"], "nope"),
        (["grammar=missing.grammar"], "missing.grammar"),
    ],
)
def test_bad_input_fails_clearly(tmp_path, args, message):
    proc = cli("evolve", *SMALL, "evolution.generations=1", f"hydra.run.dir={tmp_path / 'r'}", *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "r").exists()  # a refused config leaves no run directory (nor Hydra's log)


def test_a_busy_run_directory_keeps_its_log(tmp_path):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    (run_dir / "evolve.log").write_text("[the running search's log]\n")
    with files.RunLock(run_dir):  # another process's search
        before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
        proc = cli("evolve", *SMALL, "evolution.generations=1", f"hydra.run.dir={run_dir}", check=False)
        assert proc.returncode == 1 and "is in use by" in proc.stderr
        # Nothing written there: no ERROR line in the other process's log, no config.
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_retrain_without_run(tmp_path):
    proc = cli("retrain", tmp_path, "--epochs", 1, check=False)
    assert proc.returncode == 1 and "not a spenser_jax run directory" in proc.stderr


def test_multirun_sweeps_datasets(tmp_path):
    cli(
        "evolve",
        "-m",
        "dataset=mnist,fmnist",
        "seed=0",
        "dataset.subset=100",
        "dataset.time_steps=1",
        "evolution.generations=1",
        "evolution.offspring=1",
        "runtime.progress=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    for name in ("mnist", "fmnist"):
        run = tmp_path / name / "seed0"
        assert json.loads((run / "run.json").read_text())["dataset"] == name
        assert len(files.read_generations(run)) == 1
