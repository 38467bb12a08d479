"""The commands after the search on runs a fake evaluator made: what they read, what they say.

Nothing here trains a network: the runs come from tests/helpers.py, and where a
command would train or measure, the test puts a stand-in there.
"""

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from spenser_jax import evolve, inspect, report, retrain
from spenser_jax.run import checkpoint, files, runs

from helpers import FakeEvaluator

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["dataset.subset=200", "dataset.time_steps=2", *overrides])


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fake") / "run"
    evolve.run(config("evolution.generations=3", "evolution.offspring=3"), run_dir, evaluator=FakeEvaluator())
    return run_dir


def copy(run_dir, to):
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns(".lock"))
    return to


class Measured(Exception):
    """Raised by the stand-in for inspect.measure: what inspect would have measured."""


def stub_measure(monkeypatch):
    def measure(run, phenotype, weights, samples, data_dir=None, again=None):
        raise Measured(weights)

    monkeypatch.setattr(inspect, "measure", measure)


def test_a_corrupt_retrained_file_blocks_only_what_needs_it(fake_run, tmp_path, monkeypatch, capsys):
    run_dir = copy(fake_run, tmp_path / "run")
    (run_dir / files.RETRAINED).write_bytes(b"\x00 not msgpack")
    run = runs.load_run(run_dir)  # inspect, export, report and retrain all start here
    with pytest.raises(files.CheckpointError, match="retrained.msgpack: corrupt weights file"):
        run.retrained  # noqa: B018
    # inspect measures the search's weights.
    stub_measure(monkeypatch)
    with pytest.raises(Measured) as measured:
        inspect.main([str(run_dir)])
    assert measured.value.args[0] is not None
    # retrain trains and rewrites the file.
    state = run.state

    class Trainer:
        def __init__(self, settings, input_shape):
            pass

        def train(self, phenotype, key, data, params=None, after_epoch=None):
            return types.SimpleNamespace(params=state.parent_weights), {"nonfinite": False, "steps": 1, "losses": [0.5]}

        def score(self, phenotype, params, data, key):
            return 0.75, None, None

    monkeypatch.setattr(retrain, "Trainer", Trainer)
    assert retrain.main([str(run_dir), "--epochs", "1"]) == 0
    text, weights = runs.load_run(run_dir).retrained
    assert text == run.space().text(state.parent)
    np.testing.assert_array_equal(weights["w"], state.parent_weights["w"])
    capsys.readouterr()


def test_report_skips_a_broken_run_with_a_warning(fake_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    good = copy(fake_run, runs / "good")
    broken = copy(fake_run, runs / "broken")
    (broken / files.CHECKPOINT).write_bytes(b"\x00 not msgpack")
    also = copy(fake_run, runs / "retrained-corrupt")
    (also / files.RETRAINED).write_bytes(b"\x00 not msgpack")  # report does not need it
    out = tmp_path / "report"
    assert report.main([str(runs), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: skipping the run {broken}: ") and "corrupt checkpoint" in err
    assert err.count("\n") == 1
    table = (out / "report.md").read_text()
    assert f"| {good} |" in table and f"| {also} |" in table and str(broken) not in table
    # Nothing readable at all: an error, not an empty report.
    shutil.rmtree(good)
    shutil.rmtree(also)
    assert report.main([str(runs), "--out", str(tmp_path / "none")]) == 1
    assert "none of the 1 runs found could be read" in capsys.readouterr().err


def usage_error(main, args, capsys) -> str:
    """Run a command expecting argparse to refuse ``args``: exit status 2; returns stderr."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got '0'"),
        (["--epochs", "0"], "argument --epochs: must be a whole number >= 1, got '0'"),
        (["--epochs", "two"], "argument --epochs: must be a whole number >= 1, got 'two'"),
        (["--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
        (["--minutes", "0"], "argument --minutes: must be a number > 0, got '0'"),
        (["--minutes", "nan"], "argument --minutes: must be a number > 0, got 'nan'"),
    ],
)
def test_retrain_refuses_bad_numbers_before_it_starts(fake_run, args, message, capsys):
    assert message in usage_error(retrain.main, [fake_run, *args], capsys)


def test_retrain_batch_size_zero_is_not_the_runs(fake_run):
    # The function too: 0 was taken for "not given" and trained with the run's batch size.
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        retrain.retrain(fake_run, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="minutes must be > 0"):
        retrain.retrain(fake_run, epochs=1, minutes=-1.0)


def test_inspect_checks_where_it_writes_before_it_measures(fake_run, tmp_path, monkeypatch, capsys):
    stub_measure(monkeypatch)  # measuring would raise Measured
    missing = tmp_path / "no" / "dir"
    err = usage_error(inspect.main, [fake_run, "--raster", missing / "r.png"], capsys)
    assert f"argument --raster: the folder {missing} does not exist" in err
    err = usage_error(inspect.main, [fake_run, "--json", missing / "r.json"], capsys)
    assert f"argument --json: the folder {missing} does not exist" in err
    assert "must be a whole number >= 1" in usage_error(inspect.main, [fake_run, "--samples", "0"], capsys)


def test_report_out_must_be_a_folder(fake_run, tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text("mine")
    err = usage_error(report.main, [fake_run, "--out", out], capsys)
    assert f"argument --out: {out} is a file, not a folder" in err and out.read_text() == "mine"


def test_grammar_seed_must_not_be_negative(capsys):
    from spenser_jax.grammar.__main__ import main

    err = usage_error(main, ["grammars/csnn.grammar", "--seed", "-1"], capsys)
    # The usage and the program's name, as every command's argparse error (issue 31).
    assert err.startswith("usage: python -m spenser_jax.grammar ")
    assert err.endswith(
        "python -m spenser_jax.grammar: error: argument --seed: must be a whole number >= 0, got '-1'\n"
    )


def test_report_counts_generations_in_whole_numbers(fake_run):
    run = runs.load_run(fake_run)  # 3 generations: matplotlib alone ticks 0, 0.25, 0.5, ...
    figures = [report.fitness_figure([run], "mnist"), report.energy_figure([run], "mnist")]
    axes = [*figures[0].axes, *figures[1].axes[1:]]
    assert all(ax.get_xlabel() == "generation" for ax in axes)
    for fig in figures:
        fig.canvas.draw()
    for ax in axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all("." not in label for label in labels), labels
    for fig in figures:
        report._pyplot().close(fig)


def fake_measure(monkeypatch, seen):
    """inspect.measure and table stand-ins: the weights inspect measured go into ``seen``."""

    def measure(run, phenotype, weights, samples, data_dir=None, again=None):
        seen.append(weights)
        return {"run": str(run.dir), "phenotype": phenotype.text, "accuracy": 0.5, "_weights": weights}

    monkeypatch.setattr(inspect, "measure", measure)
    monkeypatch.setattr(inspect, "table", lambda result: "TABLE")


def test_json_alone_prints_it_and_json_path_writes_it(fake_run, tmp_path, monkeypatch, capsys):
    from spenser_jax.grammar.__main__ import main as grammar_main

    # grammar
    assert grammar_main(["grammars/csnn.grammar", "--sample", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["modules"] for line in lines)
    path = tmp_path / "g.jsonl"
    assert grammar_main(["grammars/csnn.grammar", "--sample", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert path.read_text().splitlines() == lines and all(line.startswith("layer:") for line in out)
    # inspect (`inspect RUN --json` was "expected one argument")
    fake_measure(monkeypatch, [])
    assert inspect.main([str(fake_run), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["accuracy"] == 0.5 and result["weights"] == "search" and "_weights" not in result
    assert "the search's weights" in captured.err
    path = tmp_path / "i.json"
    assert inspect.main([str(fake_run), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TABLE" in out and json.loads(path.read_text()) == result
    # retrain
    run_dir = copy(fake_run, tmp_path / "run")

    class Trainer:
        def __init__(self, settings, input_shape):
            pass

        def train(self, phenotype, key, data, params=None, after_epoch=None):
            return types.SimpleNamespace(params=params), {"nonfinite": False, "steps": 1, "losses": [0.5]}

        def score(self, phenotype, params, data, key):
            return 0.75, None, None

    monkeypatch.setattr(retrain, "Trainer", Trainer)
    assert retrain.main([str(run_dir), "--epochs", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run_dir / files.TEST).read_text()) and printed["accuracy"] == 0.75


def test_inspect_takes_the_weights_export_takes_and_says_which(fake_run, tmp_path, monkeypatch, capsys):
    run_dir = copy(fake_run, tmp_path / "run")
    run = runs.load_run(run_dir)
    search = run.state.parent_weights
    retrained = {"w": search["w"] + np.float32(1.0)}
    seen = []
    fake_measure(monkeypatch, seen)

    def inspected(*args):
        code = inspect.main([str(run_dir), *args])
        captured = capsys.readouterr()
        return code, captured.out.splitlines()[0] if captured.out else "", captured.err

    assert inspected()[:2] == (0, f"individual best of {run_dir}, the search's weights")
    code, _, err = inspected("--retrained")
    assert code == 1 and "no retrained weights" in err
    checkpoint.save_weights(run_dir / files.RETRAINED, run.space().text(run.state.parent), retrained)
    files.atomic_write(run_dir / files.TEST, json.dumps({"accuracy": 0.25}))
    seen.clear()
    assert inspected() == (
        0,
        f"individual best of {run_dir}, retrained weights (test accuracy 0.2500, --search-weights for the search's)",
        "",
    )
    assert inspected("--search-weights")[1] == f"individual best of {run_dir}, the search's weights"
    assert inspected("--retrained")[1] == f"individual best of {run_dir}, retrained weights (test accuracy 0.2500)"
    assert [float(w["w"][0]) for w in seen] == [
        float(retrained["w"][0]),
        float(search["w"][0]),
        float(retrained["w"][0]),
    ]
    assert run.choose().source == "retrained"  # what export takes by default
    # Retrained weights that cannot be used: the search's, with a note saying why.
    checkpoint.save_weights(run_dir / files.RETRAINED, "layer:fc num-units:10 bias:True", retrained)
    code, line, err = inspected()
    assert line.endswith("the search's weights") and "retrain ran for an earlier best individual" in err
    (run_dir / files.RETRAINED).write_bytes(b"\x00 not msgpack")
    code, line, err = inspected()
    assert code == 0 and line.endswith("the search's weights") and "corrupt weights file" in err
    with pytest.raises(SystemExit):
        inspect.main([str(run_dir), "--retrained", "--search-weights"])
    capsys.readouterr()


def test_individuals_are_counted_from_0_as_in_generations_jsonl(fake_run, monkeypatch, capsys):
    fake_measure(monkeypatch, [])
    assert inspect.main([str(fake_run), "--individual", "3:0"]) == 1
    err = capsys.readouterr().err
    assert "no individual 3:0 (3 generations recorded; G is 0..2, counted from 0 as in generations.jsonl" in err
    assert inspect.main([str(fake_run), "--individual", "2:7"]) == 1
    assert "G is 0..2 and I 0..2, counted from 0" in capsys.readouterr().err
    # A malformed G:I is a usage error (exit 2), as every other bad argument (issue 31).
    err = usage_error(inspect.main, [fake_run, "--individual", "2"], capsys)
    assert "both whole numbers counted from 0 as in generations.jsonl" in err
    from spenser_jax import export

    for main in (inspect.main, export.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "counted from 0 as in generations.jsonl" in " ".join(capsys.readouterr().out.split())
