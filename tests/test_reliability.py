"""What a hostile but realistic user found (issue 31): each case ends in a clear error or a correct result,
and a refused command leaves every byte of the run directory as it was (``hashes`` before and after).

The runs come from the stand-in evaluator (tests/helpers.py): nothing trains, nothing is loaded.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from spenser_jax import evolve, export, inspect, report, retrain
from spenser_jax.errors import ConfigError, SpenserError
from spenser_jax.grammar import GrammarError, load_grammar, locate
from spenser_jax.run import checkpoint, files
from spenser_jax.run.config import setup

from helpers import FakeEvaluator, copy_run, hashes, strip_timing, tiny_config, tiny_run


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished run of 2 generations, and its config."""
    run_dir = tmp_path_factory.mktemp("reliability") / "run"
    return run_dir, tiny_run(run_dir, 2)


def cut_inside(path: Path, line: int) -> None:
    """``path`` cut in the middle of its line ``line`` (from 0), as a kill mid-write leaves it."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:line]) + lines[line][: len(lines[line]) // 2])


def refused(call, match, run_dir):
    """``call()`` must raise a SpenserError matching ``match`` and change no file under ``run_dir``."""
    before = hashes(run_dir)
    with pytest.raises(SpenserError, match=match) as info:
        call()
    assert hashes(run_dir) == before
    return str(info.value)


# 1. Following our own advice loses no records.


def test_moving_a_corrupt_checkpoint_away_does_not_lose_the_records(done, tmp_path):
    run_dir, cfg = copy_run(done[0], tmp_path / "run"), done[1]
    (run_dir / files.CHECKPOINT).write_bytes((run_dir / files.CHECKPOINT).read_bytes()[:100])
    message = refused(lambda: evolve.run(cfg, run_dir, evaluator=FakeEvaluator()), "corrupt checkpoint", run_dir)
    assert "with generations.jsonl" in message  # the advice names what a fresh start would overwrite
    (run_dir / files.CHECKPOINT).rename(tmp_path / "moved.msgpack")
    message = refused(lambda: evolve.run(cfg, run_dir, evaluator=FakeEvaluator()), "holds 2 generation", run_dir)
    assert "move generations.jsonl" in message and "a new run would overwrite them" in message
    # Following that advice too starts the run over, and it searches again what it searched before.
    (run_dir / files.GENERATIONS).rename(tmp_path / "moved.jsonl")
    evolve.run(cfg, run_dir, evaluator=FakeEvaluator())
    assert strip_timing(files.read_generations(run_dir)) == strip_timing(files.read_generations(done[0]))


def test_a_kill_before_the_first_checkpoint_still_starts_over(done, tmp_path):
    # Generation 0's line written, its checkpoint not: the one case a fresh start overwrites records.
    run_dir = copy_run(done[0], tmp_path / "run")
    (run_dir / files.CHECKPOINT).unlink()
    lines = (run_dir / files.GENERATIONS).read_text().splitlines(keepends=True)
    (run_dir / files.GENERATIONS).write_text(lines[0])
    evolve.run(done[1], run_dir, evaluator=FakeEvaluator())
    assert strip_timing(files.read_generations(run_dir)) == strip_timing(files.read_generations(done[0]))
    # Another run's settings: that line is not this run's to recompute.
    (run_dir / files.CHECKPOINT).unlink()
    (run_dir / files.GENERATIONS).write_text(lines[0])
    other = tiny_config(2, "seed=5")
    refused(lambda: evolve.run(other, run_dir, evaluator=FakeEvaluator()), "holds 1 generation", run_dir)


# 2. A refusal writes nothing: not the config, the overrides, the log or the lock.


def test_a_refused_resume_writes_nothing(done, tmp_path):
    run_dir = copy_run(done[0], tmp_path / "run")
    cut_inside(run_dir / files.GENERATIONS, 1)
    accepted = []
    more = tiny_config(3)

    def resume():
        evolve.run(more, run_dir, evaluator=FakeEvaluator(), overrides=["x=1"], on_accept=lambda: accepted.append(1))

    message = refused(resume, "does not hold generations 0..1 that the checkpoint covers", run_dir)
    assert accepted == []  # the command line's log is released only on acceptance: evolve.log untouched too
    assert "move checkpoint.msgpack and generations.jsonl away to start over" in message


def test_nothing_to_do_writes_nothing(done, tmp_path):
    run_dir = copy_run(done[0], tmp_path / "run")
    before, accepted = hashes(run_dir), []
    fewer = tiny_config(1)
    state = evolve.run(
        fewer, run_dir, evaluator=FakeEvaluator(), overrides=["x=1"], on_accept=lambda: accepted.append(1)
    )
    assert state.generation == 2 and accepted == [] and hashes(run_dir) == before


def test_the_held_log_writes_nothing_until_the_run_is_accepted(tmp_path):
    # Hydra's evolve.log: a record logged before acceptance (nothing to do, a config warning) stays out of it.
    import logging

    from spenser_jax.run import held_log

    root, logger = logging.getLogger(), logging.getLogger("spenser_jax")
    level = logger.level
    logger.setLevel(logging.INFO)
    for accepted in (False, True):
        path = tmp_path / f"evolve-{accepted}.log"
        path.write_text("[the run's log]\n")
        handler = logging.FileHandler(path)
        root.addHandler(handler)
        try:
            held = held_log.HeldLog(tmp_path)
            logger.info("said before acceptance")  # Handler.handle calls the handler's release() after each record
            assert path.read_text() == "[the run's log]\n" and handler not in root.handlers
            if accepted:
                held.accept()
            else:
                held_log.discard(held, tmp_path)
        finally:
            root.removeHandler(handler)
            handler.close()
        assert ("said before acceptance" in path.read_text()) == accepted
    logger.setLevel(level)


# 3. retrain holds the run; report shows only what belongs to its rows, each run once.


def test_retrain_refuses_a_run_that_evolve_is_writing(done, tmp_path):
    run_dir = copy_run(done[0], tmp_path / "run")
    with files.RunLock(run_dir, announce=False):  # evolve's lock, held
        refused(lambda: retrain.retrain(run_dir, epochs=1), "is in use by", run_dir)
        refused(lambda: retrain.retrain_front(run_dir, epochs=1), "is in use by", run_dir)
    # Refused for another reason, it leaves the lock's holder as it was too.
    refused(lambda: retrain.retrain_front(run_dir, epochs=1), "needs a population search", run_dir)


def test_report_counts_each_run_once_and_shows_only_what_belongs_to_its_row(done, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    good, stale, cut = (copy_run(done[0], runs / name) for name in ("good", "stale", "cut"))
    best = json.loads((good / files.BEST).read_text())["phenotype"]
    other = next(
        i["phenotype"] for r in files.read_generations(good) for i in r["individuals"] if i["phenotype"] != best
    )
    (good / files.TEST).write_text(json.dumps({"accuracy": 0.8125, "phenotype": best}))
    (stale / files.TEST).write_text(json.dumps({"accuracy": 0.9375, "phenotype": other}))  # an earlier best's
    cut_inside(cut / files.GENERATIONS, 0)
    before = hashes(runs)
    out = tmp_path / "report"
    monkeypatch.setattr(report, "plot", lambda runs, dataset, out: [])  # the figures are not the point here
    # The folder, a run in it, the folder again, a run by another spelling: three runs.
    assert report.main([str(runs), str(good), str(runs), str(runs / "." / "cut"), "--out", str(out)]) == 0
    assert hashes(runs) == before
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith(f"| {runs}")]
    assert sorted(rows) == sorted(set(rows)) and len(rows) == 3
    row = {Path(line.split(" | ")[0][2:]).name: line for line in rows}
    assert "| 0.8125 |" in row["good"]
    assert "0.9375" not in row["stale"] and "stale (retrain again)" in row["stale"]
    assert row["cut"].startswith(f"| {cut} | 0 |")
    err = capsys.readouterr().err
    assert f"{cut}: generations.jsonl ends in a line cut mid-write" in err and "0 generation(s) read" in err
    assert f"{stale}: test.json does not name the current best" in err


def test_a_report_row_shows_the_activity_of_its_own_best(done, tmp_path):
    # best.json names another individual than the last generation's parent (verify_best named it).
    run_dir = copy_run(done[0], tmp_path / "run")
    best = json.loads((run_dir / files.BEST).read_text())
    other = next(
        i for r in files.read_generations(run_dir) for i in r["individuals"] if i["phenotype"] != best["phenotype"]
    )
    files.atomic_write(run_dir / files.BEST, json.dumps({**best, "phenotype": other["phenotype"]}))
    row = next(
        line
        for line in report.markdown({"mnist": [report.load_run(run_dir)]}).splitlines()
        if line.startswith(f"| {run_dir}")
    )
    assert row.split(" | ")[4] == f"{other['synops_per_sample']:,.0f}"


# 4. No traceback for a run directory that is a file; no leftovers when Ray is missing.


@pytest.mark.parametrize("under", ["", "/sub/run"])
def test_a_run_dir_naming_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys, under):
    (tmp_path / "afile").write_text("mine")
    given = f"{tmp_path / 'afile'}{under}"
    monkeypatch.setattr(sys, "argv", ["evolve", "evolution.generations=1", f"hydra.run.dir={given}"])
    with pytest.raises(SystemExit) as exit_:
        evolve._hydra_main()  # refused before Hydra starts (it would make the directory, and fail in a traceback)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: hydra.run.dir={given}: {tmp_path / 'afile'} is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_ray_missing_is_refused_before_the_run_directory_is_made(done, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    cfg = tiny_config(2, "runtime.executor=ray")
    with pytest.raises(ConfigError, match=r"runtime.executor=ray needs Ray: pip install"):
        evolve.run(cfg, tmp_path / "new", evaluator=FakeEvaluator())
    assert not (tmp_path / "new").exists()
    run_dir = copy_run(done[0], tmp_path / "run")
    # The command line's run (no evaluator of its own) refuses it before it reads any data.
    refused(
        lambda: evolve.run(tiny_config(3, "runtime.executor=ray", "dataset.data_dir=/nonexistent"), run_dir),
        "needs Ray",
        run_dir,
    )


# 5. Config values that parse as they read.


@pytest.mark.parametrize(
    "objectives, message",
    [
        ("accuracy", "must be a list of at least two names, e.g. [accuracy,synops], got the one name 'accuracy'"),
        ("[accuracy,synops,synops]", "synops named more than once in ['accuracy', 'synops', 'synops']"),
        ("[accuracy]", "at least two different names"),
    ],
)
def test_objectives_are_names_not_letters(objectives, message):
    cfg = tiny_config(1, "evolution.strategy=nsga2", "evolution.population=2", f"fitness.objectives={objectives}")
    with pytest.raises(ConfigError, match="fitness.objectives: ") as info:
        setup(cfg, load_data=False)
    assert message in str(info.value) and "'a', 'c'" not in str(info.value)


def test_the_checksum_hint_names_the_real_key(tmp_path):
    from spenser_jax.data import DataError, idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"not MNIST")
    with pytest.raises(DataError, match=r"set dataset.verify=false \(verify=False from Python\)"):
        idx._verify(path, (str(path), 0, 0, 0), "mnist", "train-images-idx3-ubyte")


def test_a_folder_named_like_a_grammar_is_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.grammar").mkdir()
    with pytest.raises(GrammarError, match="'x.grammar' is not a file"):
        locate("x.grammar")
    with pytest.raises(GrammarError, match="x.grammar: not a file"):
        load_grammar(tmp_path / "x.grammar")
    with pytest.raises(GrammarError, match="not found"):
        locate("y.grammar")


# 6. Interfaces that agree.


def test_export_json_says_what_was_written(done, tmp_path, monkeypatch, capsys):
    written = {
        "path": tmp_path / "net.nir",
        "nodes": ["input", "0", "output"],
        "bytes": 1234,
        "phenotype": "layer:fc num-units:10",
        "weights": "search",
        "weights_text": "the search's weights",
        "input_shape": (1, 28, 28),
        "time_steps": 2,
        "dt": 1e-4,
    }
    monkeypatch.setattr(export, "export_run", lambda *args, **kwargs: written)
    out = tmp_path / "net.nir"
    assert export.main([str(done[0]), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # JSON alone on stdout, as inspect's and retrain's
    assert printed["path"] == str(out) and printed["nodes"] == written["nodes"] and printed["bytes"] == 1234
    assert printed["individual"] == "best" and printed["input_shape"] == [1, 28, 28]
    assert export.main([str(done[0]), "--out", str(out), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text()) == printed
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("main", [inspect.main, export.main])
def test_a_malformed_individual_is_a_usage_error(done, tmp_path, main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [str(done[0]), "--individual", "x:y", *(["--out", str(tmp_path / "n.nir")] if main is export.main else [])]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: ")
    assert "argument --individual: must be best or G:I" in err


def test_results_and_the_log_share_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        files.atomic_write(tmp_path / "result.json", "{}")
        checkpoint.save_weights(tmp_path / "w.msgpack", "layer:fc", {"w": [1.0]})
        with open(tmp_path / "evolve.log", "w"):  # as Hydra's log handler opens it
            pass
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert modes == {"result.json": 0o640, "w.msgpack": 0o640, "evolve.log": 0o640}
