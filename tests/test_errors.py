"""One error base, one way for every command line to report it."""

import types

import pytest

from spenser_jax import data, errors, evolve, export, grammar, inspect, report, retrain
from spenser_jax.errors import SpenserError
from spenser_jax.genome import genotype, phenotype
from spenser_jax.grammar import __main__ as grammar_cli
from spenser_jax.run import files, runs


@pytest.mark.parametrize(
    "cls, old_base",
    [
        (evolve.ConfigError, ValueError),
        (grammar.GrammarError, ValueError),
        (genotype.SearchSpaceError, RuntimeError),
        (data.DataError, Exception),
        (files.CheckpointError, RuntimeError),
        (files.IndividualError, RuntimeError),
        (phenotype.InvalidPhenotype, ValueError),
        (export.NotExportable, ValueError),
        (export.MissingDependency, ImportError),
        (report.ReportError, RuntimeError),
        (retrain.TrainingDiverged, ValueError),
    ],
)
def test_every_error_has_the_one_base_and_keeps_its_own(cls, old_base):
    assert issubclass(cls, SpenserError) and issubclass(cls, old_base)


COMMANDS = {
    "inspect": lambda run: inspect.main([run]),
    "retrain": lambda run: retrain.main([run, "--epochs", "1"]),
    "export": lambda run: export.main([run, "--out", run + "/x.nir"]),
    "report": lambda run: report.main([run, "--out", run + "/report"]),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_reports_any_of_our_errors_in_one_line(name, tmp_path, capsys, monkeypatch):
    def broken(run_dir):
        raise SpenserError(f"{run_dir}: something a user can fix")

    for module in (runs, retrain, inspect):  # export reads it from its module, the others by name
        monkeypatch.setattr(module, "load_run", broken)
    # report skips a run it cannot read (with a warning): it fails in what it does with the runs.
    monkeypatch.setattr(report, "load_run", lambda run_dir: types.SimpleNamespace(dataset="mnist"))
    monkeypatch.setattr(report, "plot", lambda runs, dataset, out: broken(tmp_path))
    (tmp_path / files.RUN).write_text("{}")  # report looks for runs before it reads them
    code = COMMANDS[name](str(tmp_path))
    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert out.err == f"error: {tmp_path}: something a user can fix\n"


def test_the_grammar_command_reports_search_space_errors(tmp_path, capsys):
    path = tmp_path / "g.grammar"
    path.write_text("<features> ::= layer:dropout rate:0.1\n")  # no <classification> module
    assert grammar_cli.main([str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("error: ") and out.err.count("\n") == 1


def test_a_bug_is_not_reported_as_a_user_error():
    @errors.command
    def main(argv=None):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main([])
