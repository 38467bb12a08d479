"""The package as users get it: a wheel that runs anywhere, its public names, its import graph."""

import ast
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

import spenser_jax
from spenser_jax.run import files
from spenser_jax.training import evaluation

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spenser_jax"
DATA = Path(os.environ.get("SPENSER_DATA_DIR", ROOT.parent / "shared" / "data"))


def project_imports(path: Path) -> set[str]:
    """spenser_jax modules a file imports (at any depth, lazily or not)."""
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
    }
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles_and_the_parser_stands_alone():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py" or path == PACKAGE / "__init__.py":
            continue  # entry points and the lazy facade import everything; nothing imports them
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = project_imports(path) - {"spenser_jax"}
    # The parser imports nothing of ours but the errors' base, which imports nothing.
    assert graph["spenser_jax.grammar"] <= {"spenser_jax.errors"} and graph["spenser_jax.errors"] == set()

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join(stack + [node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, stack + [node])

    for node in graph:
        visit(node, [])


def test_public_names_import_and_work(tmp_path):
    for name in spenser_jax.__all__:
        assert getattr(spenser_jax, name).__doc__, name
    with pytest.raises(AttributeError, match="nope"):
        spenser_jax.nope  # noqa: B018
    space = spenser_jax.SearchSpace(spenser_jax.load_grammar("grammars/csnn.grammar"))
    rng = np.random.default_rng(0)
    parent = spenser_jax.sample(rng, space)
    child, events = spenser_jax.mutate(rng, parent, space)
    assert events and space.text(child) != space.text(parent)
    assert spenser_jax.parse_phenotype(space.text(child)) == space.phenotype(child)


def test_public_train_and_score_are_the_search_s_training_and_scoring():
    import jax

    from spenser_jax.data import Arrays
    from spenser_jax.training.protocol import Protocol

    phenotype = spenser_jax.parse_phenotype(
        "layer:conv num-filters:2 filter-shape:3 stride:2 padding:valid bias:True "
        "layer:act beta:0.7 beta-trainable:False threshold:0.6 threshold-trainable:False "
        "surr-grad:fast-sigmoid reset:zero layer:fc num-units:10 bias:True "
        "layer:act beta:0.9 beta-trainable:True threshold:0.8 threshold-trainable:True "
        "surr-grad:atan reset:subtract learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 48).astype(np.int32)
    params, info = spenser_jax.train(
        phenotype, images, labels, time_steps=2, key=jax.random.key(0), epochs=2, batch_size=16
    )
    assert info["steps"] == 6 and len(info["losses"]) == 2 and not info["nonfinite"]
    # The same as the search's Trainer, key for key.
    trainer = evaluation.Trainer(Protocol(time_steps=2, epochs=2, batch_size=16), (8, 8, 1))
    data = evaluation.on_device(Arrays(images, labels))
    state, _ = trainer.train(phenotype, jax.random.key(0), data)
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.params))
    accuracy = spenser_jax.score(phenotype, params, images, labels, time_steps=2, key=jax.random.key(1), batch_size=20)
    assert accuracy == trainer.score(phenotype, state.params, data, jax.random.key(1))[0]
    with pytest.warns(DeprecationWarning, match="spenser_jax.score"):
        assert spenser_jax.evaluate is spenser_jax.score


def borrowing_venv(env_dir: Path) -> Path:
    """A fresh venv that imports this interpreter's packages (jax, hydra, ...) but not spenser_jax.

    ``system_site_packages=True`` is not that inside a venv: the system's
    packages are the base interpreter's, not the venv's (where pip put jax).
    So the venv is plain, and a ``.pth`` file in it appends the directories
    this interpreter imports from; their own ``.pth`` files (an editable
    install of spenser_jax) are not run, and a directory holding a
    spenser_jax package (a checkout on the path) is left out. Returns the
    venv's python.
    """
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    inner = json.loads(
        subprocess.run(
            [
                str(python),
                "-c",
                "import json, sys, sysconfig; print(json.dumps([sysconfig.get_path('purelib'), sys.path]))",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={},
        ).stdout
    )
    purelib, own = Path(inner[0]), {Path(p).resolve() for p in inner[1] if p}
    borrowed = [
        p
        for p in map(Path, sys.path)
        if p.is_dir()
        and p.resolve() not in own
        and p.resolve() != ROOT
        and ROOT not in p.resolve().parents
        and not (p / "spenser_jax").exists()
    ]
    (purelib / "_borrowed_packages.pth").write_text("".join(f"{p.resolve()}\n" for p in borrowed))
    return python


WHEEL_RUN = [
    "dataset.subset=100",
    "dataset.time_steps=1",
    "evolution.generations=1",
    "evolution.offspring=2",
    "runtime.progress=false",
    "runtime.compile_cache=null",
]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"MNIST not in {DATA}")
def test_wheel_installs_and_runs_a_generation_from_anywhere(tmp_path):
    """``pip install`` of the wheel (not editable) runs the search from a directory with nothing in it."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    wheel = next(wheels.glob("spenser_jax-*.whl"))
    assert wheel.name.startswith(f"spenser_jax-{spenser_jax.__version__}-")  # one version, in __init__.py
    env_dir = tmp_path / "venv"
    python = borrowing_venv(env_dir)
    # --ignore-installed: the borrowed directories may list spenser_jax (an
    # editable install); it is neither reused nor uninstalled.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPENSER_DATA_DIR")}
    where = subprocess.run(
        [str(python), "-c", "import spenser_jax; print(spenser_jax.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(env_dir) in where.stdout, where.stdout
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "spenser_jax.evolve",
            f"dataset.data_dir={DATA / 'mnist'}",
            "hydra.run.dir=run",
            *WHEEL_RUN,
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (work / "run" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 1 and any(i["status"] == "ok" for i in records[0]["individuals"])
    identity = json.loads((work / "run" / "run.json").read_text())
    assert identity["grammar_sha256"] == files.grammar_sha256(ROOT / "grammars" / "csnn.grammar")


# The layers in the order data flows; a module imports only from its own layer or those before it.
LAYERS = (
    ("spenser_jax.errors",),
    ("spenser_jax.data", "spenser_jax.grammar"),
    ("spenser_jax.genome",),
    ("spenser_jax.snn",),
    ("spenser_jax.training",),
    ("spenser_jax.scheduler",),
    ("spenser_jax.search",),
    ("spenser_jax.run",),
    tuple(f"spenser_jax.{c}" for c in ("evolve", "retrain", "inspect", "export", "report")),
)


def layer_of(module: str) -> int:
    if module.endswith(".__main__"):  # python -m spenser_jax.grammar: a command inside its layer's folder
        return len(LAYERS) - 1
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS or move it into one")


def test_no_layer_imports_from_a_layer_above_it():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the lazy facade and the old names' finder
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        rank = layer_of(name)
        for imported in project_imports(path) - {"spenser_jax"}:
            if layer_of(imported) > rank:
                upward.append(f"{name} -> {imported}")
    assert not upward, "imports from a layer above:\n" + "\n".join(sorted(upward))


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_old_module_names_import_their_new_homes_with_a_warning():
    import importlib
    import sys

    for old, new in spenser_jax.MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert module.__name__ == module.__spec__.name == new  # the module keeps its own name and spec
