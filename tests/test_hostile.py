"""Property: whatever users and crashes feed the readers, the answer is a SpenserError or a correct result.

Never another exception, and never a changed byte of an existing file where a
command refuses or only reads (issue 31). Hypothesis draws grammar text and
``%options``, config values, ``generations.jsonl`` with torn or damaged lines,
truncated or bit-flipped checkpoint and weight files, and run directories with
files missing. Each example works on a copy of one tiny run made once (the
stand-in evaluator: nothing trains); the examples are few and bounded so that
the whole module stays within a few seconds.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spenser_jax import evolve, report
from spenser_jax.errors import SpenserError
from spenser_jax.grammar import PACKAGE_GRAMMARS
from spenser_jax.grammar.__main__ import main as grammar_main
from spenser_jax.run import checkpoint, files, load_run
from spenser_jax.run.config import setup, to_plain

from helpers import FakeEvaluator, hashes, tiny_run, untouched

# 20 fixed examples each in the suite; SPENSER_FUZZ_EXAMPLES=500 searches further, with fresh draws.
_MORE = int(os.environ.get("SPENSER_FUZZ_EXAMPLES", 0))
FEW = settings(
    max_examples=_MORE or 20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=not _MORE
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run of 2 generations, retrained (test.json and retrained.msgpack), and its config."""
    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    cfg = tiny_run(run_dir, 2)
    run = load_run(run_dir)
    text = run.space().text(run.state.parent)
    checkpoint.save_weights(run_dir / files.RETRAINED, text, run.state.parent_weights)
    files.atomic_write(run_dir / files.TEST, json.dumps({"accuracy": 0.5, "phenotype": text}))
    return run_dir, to_plain(cfg)


@contextlib.contextmanager
def copied(run_dir):
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(shutil.copytree(run_dir, Path(tmp) / "run"))


def read_everything(run_dir):
    """What inspect, export and report read of a run, without training or plotting."""
    run = load_run(run_dir)
    report.markdown({run.dataset: [run]})
    report.warnings(run)
    report.best_per_generation(run)
    files.pareto_archive(run.records)
    run.choose("best")  # no best yet, or retrained weights of another: a SpenserError too
    return run


def settles(call, run_dir):
    """``call()`` returns or raises a SpenserError, and a refusal changes no file; returns whether it refused."""
    before = hashes(run_dir)
    try:
        call()
    except SpenserError:
        assert untouched(before, hashes(run_dir))
        return True
    return False


# Damage as kills, disks and editors make it.


@st.composite
def damaged(draw, data: bytes, lines: bool = True) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        ops = ["truncate", "flip", "zero_tail"] + (["drop_line", "repeat_line", "garbage_line", "json_value"] * lines)
        op = draw(st.sampled_from(ops))
        if op == "truncate":
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif op == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif op == "zero_tail" and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes(len(data) - at)
        elif op in ("drop_line", "repeat_line", "garbage_line", "json_value"):
            rows = data.split(b"\n")
            k = _edit_line(draw, rows, op.removesuffix("_line"))
            if op == "garbage_line":
                rows.insert(k, draw(st.binary(max_size=20)).replace(b"\n", b""))
            elif op == "json_value":
                rows[k] = _damaged_record(draw, rows[k])
            data = b"\n".join(rows)
    return data


def _edit_line(draw, rows: list, op: str) -> int:
    """Drop (``op`` "drop") or repeat ("repeat") a drawn line of ``rows`` in place; returns its index."""
    k = draw(st.integers(0, len(rows) - 1))
    if op == "drop":
        del rows[k]
    elif op == "repeat":
        rows.insert(k, rows[k])
    return k


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4), st.just([]), st.just({}))


def _damaged_record(draw, row: bytes) -> bytes:
    """A record with one value replaced or one key removed: valid JSON, not a valid record."""
    try:
        record = json.loads(row)
    except ValueError:
        return row
    target = record
    if isinstance(record, dict) and record.get("individuals") and draw(st.booleans()):
        target = record["individuals"][draw(st.integers(0, len(record["individuals"]) - 1))]
    if not isinstance(target, dict) or not target:
        return row
    key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        del target[key]
    else:
        target[key] = draw(JSON_VALUES)
    return json.dumps(record).encode()


# The properties.


@FEW
@given(st.data())
def test_damaged_generations_are_refused_untouched_or_resumed_whole(base, data):
    run_dir, cfg = base
    with copied(run_dir) as run:
        path = run / files.GENERATIONS
        path.write_bytes(data.draw(damaged(path.read_bytes())))
        before = hashes(run)
        settles(lambda: read_everything(run), run)
        assert hashes(run) == before  # reading never writes
        generations = data.draw(st.sampled_from([2, 3]))
        grown = {**cfg, "evolution": {**cfg["evolution"], "generations": generations}}
        if not settles(lambda: evolve.run(grown, run, evaluator=FakeEvaluator()), run):
            assert [r["generation"] for r in files.read_generations(run)] == list(range(generations))
            read_everything(run)


@FEW
@given(st.data())
def test_damaged_checkpoint_and_weights_are_refused_untouched(base, data):
    run_dir, cfg = base
    with copied(run_dir) as run:
        name = data.draw(st.sampled_from([files.CHECKPOINT, files.RETRAINED]))
        (run / name).write_bytes(data.draw(damaged((run / name).read_bytes(), lines=False)))
        before = hashes(run)
        settles(lambda: read_everything(run), run)
        settles(lambda: load_run(run).retrained, run)
        assert hashes(run) == before  # reading never writes
        settles(lambda: evolve.run(cfg, run, evaluator=FakeEvaluator()), run)


RUN_FILES = [files.RUN, files.CHECKPOINT, files.GENERATIONS, files.BEST, files.PARETO, files.TEST, files.RETRAINED]


@FEW
@given(st.sets(st.sampled_from([*RUN_FILES, str(files.CONFIG), files.LOCK]), min_size=1), st.sampled_from([2, 3]))
def test_a_run_missing_files_is_refused_untouched_or_read_correctly(base, missing, generations):
    run_dir, cfg = base
    with copied(run_dir) as run:
        for name in missing:
            (run / name).unlink()
        before = hashes(run)
        settles(lambda: read_everything(run), run)
        assert hashes(run) == before
        grown = {**cfg, "evolution": {**cfg["evolution"], "generations": generations}}
        if not settles(lambda: evolve.run(grown, run, evaluator=FakeEvaluator()), run):
            # Resumed or started over (no checkpoint and no records to lose): every generation, in order.
            assert [r["generation"] for r in files.read_generations(run)] == list(range(generations))


GRAMMAR = (PACKAGE_GRAMMARS / "csnn.grammar").read_text()
PIECES = ["::=", "|", "<", ">", "[", "]", ",", ":", "%", "#", "\n", " ", "int", "float", "-1", "0", "1e9", "nan"]
OPTIONS = ["%levels-back", "%add-connection", "%remove-connection", "%nope"]


@st.composite
def grammar_text(draw) -> str:
    lines = GRAMMAR.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "edit", "option", "repeat"]))
        k = _edit_line(draw, lines, op)
        if op == "option":
            value = draw(
                st.one_of(st.sampled_from(["", "x", "-1", "0", "2", "0.5", "1e400", "nan"]), st.text(max_size=4))
            )
            lines.insert(k, f"{draw(st.sampled_from(OPTIONS))} {value}")
        elif op == "edit":
            at = draw(st.integers(0, len(lines[k])))
            piece = draw(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)))
            lines[k] = lines[k][:at] + piece + lines[k][at + draw(st.integers(0, 4)) :]
    return "\n".join(lines)


@FEW
@given(grammar_text())
def test_any_grammar_text_is_a_grammar_error_or_a_search_space(base, text):
    _, cfg = base
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.grammar"
        path.write_text(text)
        try:
            setup({**cfg, "grammar": str(path)}, load_data=False)
        except SpenserError:
            pass
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert grammar_main([str(path), "--sample", "2"]) in (0, 1)  # 1: one "error: ..." line, no traceback


def _leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*prefix, k))
    else:
        yield prefix


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "all", "accuracy", "x", "", "ray", "nsga2", "mnist", "[a]"]),
    st.lists(st.sampled_from(["accuracy", "synops", "x", 1, None]), max_size=3),
)


@FEW
@given(st.data())
def test_any_config_value_is_a_config_error_or_a_run(base, data):
    _, cfg = base
    keys = [k for k in _leaves(cfg) if k[0] not in ("hydra", "grammar")]
    changed = json.loads(json.dumps(cfg))
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        section = changed
        for k in key[:-1]:
            section = section[k]
        section[key[-1]] = data.draw(VALUES)
    try:
        s = setup(changed, load_data=False)
    except SpenserError:
        return
    # A config accepted: its run's identity is plain JSON, its counts whole numbers.
    assert json.loads(json.dumps(s.identity)) == s.identity and s.generations >= 0
