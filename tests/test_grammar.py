"""Grammar parsing: Grammar 2 as printed, and every error with its line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spenser_jax import grammar as gm
from spenser_jax.genome.space import SearchSpace, derive, macro_for
from spenser_jax.grammar.__main__ import main as sampler_main

ROOT = Path(__file__).resolve().parents[1]
CSNN = ROOT / "grammars" / "csnn.grammar"


@pytest.fixture(scope="module")
def csnn():
    return gm.load_grammar(CSNN)


def genes_of(grammar, nt):
    return {s.name: s for p in grammar.rules[nt] for s in p if isinstance(s, gm.Gene)}


def test_grammar2_structure(csnn):
    features = csnn.rules["features"]
    assert len(features) == 4
    assert features[0] == features[1] == features[2] == (gm.NonTerminal("aux-convolution"),)
    assert features[3] == (gm.NonTerminal("dropout"),)
    assert csnn.rules["fully-last"] == (
        (gm.Terminal("layer:fc"), gm.Terminal("num-units:10"), gm.Terminal("bias:True")),
    )
    assert len(csnn.rules["learning"]) == 3
    assert csnn.rules["surr-grad"] == ((gm.Terminal("surr-grad:atan"),), (gm.Terminal("surr-grad:fast-sigmoid"),))


@pytest.mark.parametrize(
    "nt, name, kind, low, high",
    [
        ("convolution", "num-filters", "int", 32, 128),
        ("convolution", "filter-shape", "int", 2, 4),
        ("convolution", "stride", "int", 1, 3),
        ("pooling", "kernel-size", "int", 2, 4),
        ("dropout", "rate", "float", 0.0, 0.5),
        ("fully-connected", "num-units", "int", 32, 256),
        ("beta", "beta", "float", 0.0, 1.0),
        ("threshold", "threshold", "float", 0.5, 1.5),
        ("gradient-descent", "lr", "float", 0.0001, 0.1),
        ("gradient-descent", "momentum", "float", 0.68, 0.99),
        ("gradient-descent", "decay", "float", 0.000001, 0.001),
        ("adam", "beta1", "float", 0.5, 0.9999),
        ("adam", "beta2", "float", 0.5, 0.9999),
        ("rmsprop", "rho", "float", 0.5, 1.0),
    ],
)
def test_grammar2_gene_ranges(csnn, nt, name, kind, low, high):
    gene = genes_of(csnn, nt)[name]
    assert (gene.type, gene.count, gene.low, gene.high) == (kind, 1, low, high)
    assert type(gene.low) is (int if kind == "int" else float)


def test_continuation_comments_and_spaces():
    g = gm.parse_grammar(
        "# header\n\n<a> ::= <b>   # trailing comment\n   | key : v  [x, int, 2, 1, 3]\n<b> ::= k:1\n     k2 :  two\n"
    )
    assert g.rules["a"] == ((gm.NonTerminal("b"),), (gm.Terminal("key:v"), gm.Gene("x", "int", 2, 1, 3)))
    assert g.rules["b"] == ((gm.Terminal("k:1"), gm.Terminal("k2:two")),)


BAD = [
    ("unknown", "<a> ::= <c>\n<c> ::= x:1\n   | <zz>\n", 3, "unknown nonterminal <zz>"),
    ("gene-fields", "<a> ::= x:1\n<b> ::= [lr, float, 1, 0.1]\n", 2, "5 fields"),
    ("gene-number", "<a> ::= [lr, float, 1, low, 0.1]\n", 1, "not a number"),
    ("gene-int-bound", "<a> ::= [n, int, 1, 1.5, 3]\n", 1, "not an int"),
    ("gene-count", "<a> ::= [n, int, 0, 1, 3]\n", 1, "count >= 1"),
    ("min-max", "<a> ::= y:1\n\n<b> ::= [n, int, 1, 5, 3]\n", 3, "min > max"),
    ("gene-type", "<a> ::= [n, double, 1, 1, 3]\n", 1, "unknown type 'double'"),
    ("gene-unclosed", "<a> ::= [n, int, 1, 1, 3\n", 1, "unclosed"),
    ("no-productions", "<a> ::= x:1\n<b> ::=\n", 2, "no productions"),
    ("empty-alt", "<a> ::= x:1 | | y:2\n", 1, "empty alternative"),
    ("recursion", "<a> ::= <b>\n<b> ::= x:1 <c>\n<c> ::= <b> | <c> y:2\n", 2, "unbounded recursion"),
    ("duplicate", "<a> ::= x:1\n<a> ::= y:1\n", 2, "defined again"),
    ("outside", "x:1\n<a> ::= y:1\n", 1, "outside any rule"),
    ("bad-head", "<a b> ::= y:1\n", 1, "malformed rule head"),
    ("dangling-colon", "<a> ::= layer:\n", 1, "missing a key or a value"),
]


@pytest.mark.parametrize("name, text, line, message", BAD, ids=[b[0] for b in BAD])
def test_errors_name_file_and_line(tmp_path, name, text, line, message):
    path = tmp_path / f"{name}.grammar"
    path.write_text(text)
    with pytest.raises(gm.GrammarError) as err:
        gm.load_grammar(path)
    assert f"{path}:{line}:" in str(err.value)
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(gm.GrammarError, match="not found"):
        gm.load_grammar(tmp_path / "nope.grammar")


def test_recursive_grammar_terminates():
    # Productive recursion: <list> can always stop. Sampling is depth-limited.
    g = gm.parse_grammar("<list> ::= <list> <list> item:x | item:y\n")
    rng = np.random.default_rng(0)
    for _ in range(50):
        layer, text = derive(g, "list", rng=rng, max_depth=6)
        assert text and all(t in ("item:x", "item:y") for t in text.split())
        assert derive(g, "list", layer)[1] == text


@pytest.mark.parametrize(
    "line, message",
    [
        ("%levels-back banana", "%levels-back needs a whole number >= 1, got 'banana'"),
        ("%levels-back 2.5", "%levels-back needs a whole number >= 1, got '2.5'"),
        ("%levels-back -2", "%levels-back needs a whole number >= 1, got -2"),
        ("%levels-back 0", "%levels-back needs a whole number >= 1, got 0"),
        ("%add-connection lots", "%add-connection needs a probability in [0, 1], got 'lots'"),
        ("%remove-connection 1.5", "%remove-connection needs a probability in [0, 1], got 1.5"),
        ("%add-connection nan", "%add-connection needs a probability in [0, 1], got nan"),
        ("%colour blue", "unknown option %colour (known: %levels-back, %add-connection, %remove-connection)"),
    ],
)
def test_bad_options_name_file_and_line(tmp_path, capsys, line, message):
    path = tmp_path / "g.grammar"
    path.write_text(CSNN.read_text() + f"\n{line}\n")
    number = len(CSNN.read_text().splitlines()) + 2
    with pytest.raises(gm.GrammarError) as err:
        gm.load_grammar(path)
    assert str(err.value) == f"{path}:{number}: {message}"
    # The sampler and a run say the same, not a traceback nor evolution.levels_back's name.
    assert sampler_main([str(path)]) == 1
    assert capsys.readouterr().err == f"error: {path}:{number}: {message}\n"
    from hydra import compose, initialize_config_dir

    from spenser_jax import evolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"grammar={path}"])
    with pytest.raises(gm.GrammarError, match=f"{path}:{number}: "):
        evolve.setup(cfg, load_data=False)


def test_a_loss_layer_or_optimizer_no_one_knows_is_an_error(tmp_path):
    plus = (ROOT / "grammars" / "csnn_plus.grammar").read_text()
    lines = plus.splitlines()
    number = next(k for k, text in enumerate(lines, start=1) if "| loss : ce-rate" in text)
    path = tmp_path / "plus.grammar"
    path.write_text(plus.replace("| loss : ce-rate", "| loss : banana"))
    g = gm.load_grammar(path)
    with pytest.raises(gm.GrammarError, match=rf"^{path}:{number}: unknown loss type 'banana' \(known: mse-count"):
        SearchSpace(g, macro_for(g))
    path.write_text(plus.replace("layer : dropout", "layer : dropin"))
    g = gm.load_grammar(path)
    with pytest.raises(gm.GrammarError, match=r":\d+: unknown layer type 'dropin'"):
        SearchSpace(g, macro_for(g))


def test_macro_module_missing_from_grammar():
    g = gm.parse_grammar("<features> ::= layer:dropout rate:0.1\n")
    with pytest.raises(gm.GrammarError, match="classification"):
        SearchSpace(g)


# --- the command line -------------------------------------------------------


def run_cli(args, capsys):
    code = sampler_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_sample_is_reproducible(capsys):
    code, a, _ = run_cli([CSNN, "--sample", 5, "--seed", 3], capsys)
    _, b, _ = run_cli([CSNN, "--sample", 5, "--seed", 3], capsys)
    _, c, _ = run_cli([CSNN, "--sample", 5, "--seed", 4], capsys)
    assert code == 0 and a == b and a != c
    lines = a.strip().split("\n")
    assert len(lines) == 5 and all(line.startswith("layer:") for line in lines)


def test_cli_mutate_prints_parent_and_children(capsys):
    code, out, _ = run_cli([CSNN, "--mutate", 4, "--seed", 1], capsys)
    lines = out.strip().split("\n")
    assert code == 0 and len(lines) == 5
    assert all(child != lines[0] for child in lines[1:])  # neutral offspring re-mutated


@pytest.mark.parametrize(
    "args", [["missing.grammar"], [CSNN, "--sample", "x"], [CSNN, "--sample", "-1"], [CSNN, "--bogus"]]
)
def test_cli_errors_are_one_line_and_usage_errors_as_every_commands(args, capsys):
    try:
        code = sampler_main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's errors: the usage, then the program's name (issue 31)
        code = exit_.code
        out = capsys.readouterr()
        assert code == 2 and out.out == "" and out.err.startswith("usage: python -m spenser_jax.grammar ")
        assert out.err.strip().splitlines()[-1].startswith("python -m spenser_jax.grammar: error: ")
        return
    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and out.err.startswith("error:")


@pytest.mark.slow
def test_cli_bad_grammar_exits_nonzero(tmp_path):
    path = tmp_path / "bad.grammar"
    path.write_text("<features> ::= <nothing>\n")
    proc = subprocess.run([sys.executable, "-m", "spenser_jax.grammar", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "unknown nonterminal <nothing>" in proc.stderr


def test_packaged_grammar_found_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gm.locate("grammars/csnn.grammar").read_bytes() == CSNN.read_bytes()
    assert gm.locate("csnn.grammar") == gm.locate("grammars/csnn.grammar")
    mine = tmp_path / "grammars" / "csnn.grammar"
    mine.parent.mkdir()
    mine.write_text("<features> ::= layer:dropout rate:0.1\n")
    assert gm.locate("grammars/csnn.grammar") == Path("grammars/csnn.grammar")  # the user's copy first
    with pytest.raises(gm.GrammarError, match="not found"):
        gm.locate("nope.grammar")
