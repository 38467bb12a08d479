"""``benchmarks/gpu.sh --smoke``: every measurement step runs and records its key figures.

One run (~2 min on 2 cores) shared by the tests below: JAX on the CPU, tiny
sizes, the same code paths as on a GPU host (all three time-loop orders,
``vmap``, several compile threads, two host devices). The snntorch side runs
when torch and snntorch are importable and records why it was skipped
otherwise.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmarks' smoke run trains networks

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
TAG = "cpu_smoke"
MEASUREMENTS = (
    "original_engine",
    "train_throughput",
    "generation_throughput",
    "compile_time",
    "compile_cost",
    "layer_programs",
    "paper_projection",
)
HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "snntorch"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_smoke")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,  # ~2.5 min quiet; the original_engine step (two engines, fresh processes) added ~40 s
        check=False,
    )
    return proc, out


def result(out: Path, stem: str) -> dict:
    files = sorted(out.glob(f"{stem}_{TAG}_*.json"))
    assert len(files) == 1, f"expected one {stem}_{TAG}_<date>.json in {out}, found {files}"
    return json.loads(files[0].read_text())


def test_runs_and_every_step_succeeds(smoke):
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout[-6000:]
    manifest = result(out, "gpu_run")
    steps = manifest["steps"]
    assert set(steps) == {"install", *MEASUREMENTS}
    assert steps["install"]["status"] == "skipped"
    for name in MEASUREMENTS:
        # Every measured step records results or an error string; in smoke mode no errors.
        assert steps[name]["status"] == "ok", steps[name].get("error")
        assert steps[name]["result"] == next(out.glob(f"{name}_{TAG}_*.json")).name
    assert "all steps ok" in manifest["table"]
    # The short table comes last.
    assert proc.stdout.rstrip().endswith("all steps ok")
    assert list(out.glob(f"gpu_run_{TAG}_*.log"))


@pytest.mark.parametrize("stem", MEASUREMENTS)
def test_every_result_has_its_context(smoke, stem):
    _, out = smoke
    payload = result(out, stem)
    assert "error" not in payload
    assert payload["benchmark"] == stem
    assert payload["date"] and payload["versions"]["jax"]
    assert payload["machine"]["jax_backend"] == "cpu"
    assert payload["machine"]["device_kind"] == "cpu"


def test_original_engine(smoke):
    _, out = smoke
    mnist = result(out, "original_engine")["results"]["mnist"]
    assert mnist["time_steps"] == 2
    assert mnist["ours"]["generation_seconds"] > 0 and len(mnist["ours"]["accuracies"]) == 2
    if HAVE_TORCH:
        assert mnist["twin"]["generation_seconds"] > 0 and len(mnist["twin"]["accuracies"]) == 2
        assert mnist["speedup"] > 0
    else:
        assert "torch" in mnist["twin"]["skipped"]


def test_train_throughput(smoke):
    _, out = smoke
    payload = result(out, "train_throughput")
    assert payload["complete"] is True
    assert payload["settings"]["data"]  # mnist, or random with the reason
    ours = [r for r in payload["results"] if r["framework"] == "spenser_jax"]
    assert sorted(r["mode"] for r in ours) == ["layerwise", "scan", "stepwise"]
    for r in ours:
        assert r["time_steps"] == 2
        assert r["samples_per_s"] > 0 and r["compile_s"] > 0 and r["step_ms"] > 0
    theirs = [r for r in payload["results"] if r["framework"] == "snntorch"]
    if HAVE_TORCH:
        assert theirs and all(r["samples_per_s"] > 0 for r in theirs)
        assert all(r["ratio_vs_snntorch"] > 0 for r in ours)
    else:
        assert not theirs
        assert payload["settings"]["snntorch"].startswith("skipped: torch")


def test_generation_throughput(smoke):
    _, out = smoke
    payload = result(out, "generation_throughput")
    assert payload["machine"]["device_count"] == 2  # --xla_force_host_platform_device_count=2
    assert payload["generation"]["signature_group_sizes"] == [2]  # one group, batched
    variants = payload["variants"]
    assert set(variants) == {"none", "map:2", "vmap:0"}
    for v in variants.values():
        assert "error" not in v, v.get("error")
        assert v["wall_s"] > 0 and v["compile_s"] > 0 and v["run_s"] > 0
        assert len(v["devices"]) == 2
        assert [i["status"] for i in v["individuals"]] == ["ok", "ok"]
    assert variants["map:2"]["compile_threads"] == 2 and variants["vmap:0"]["batching"] == "vmap"
    assert variants["map:2"]["identical_to_none"] is True
    assert payload["ratios_vs_none"]["map:2"]["speedup_wall"] > 0


def test_compile_time(smoke):
    _, out = smoke
    payload = result(out, "compile_time")
    per = payload["per_signature_s"]
    assert per["fused"]["2"]["mean_s"] > 0 and per["separate"]["2"]["mean_s"] > 0
    assert all("error" not in r for r in payload["results"])


def test_compile_cost(smoke):
    _, out = smoke
    payload = result(out, "compile_cost")
    assert payload["complete"] is True and len(payload["rows"]) == 1
    assert payload["baseline"]["median_compile_seconds"] > 0 and payload["new"]["median_compile_seconds"] > 0
    assert payload["max_abs_difference"]["new"] == 0.0  # the cheaper draws give the same bits
    assert payload["compile_ratio_to_baseline"]["loop_emitters"]["count"] == 1


def test_layer_programs(smoke):
    _, out = smoke
    payload = result(out, "layer_programs")
    assert payload["complete"] is True and len(payload["rows"]) == 2
    assert payload["baseline"]["median_compile_seconds"] > 0 and payload["new"]["median_compile_seconds"] > 0
    # The second architecture reuses programs of the first (the point of the path).
    assert payload["rows"][1]["layer"]["programs_compiled"] < payload["rows"][0]["layer"]["programs_compiled"]
    assert payload["max_abs_difference"] < 1e-5 and payload["accuracy_equal"] == 2


def test_paper_projection(smoke):
    _, out = smoke
    payload = result(out, "paper_projection")
    assert set(payload["projection"]) == {"none", "map:2", "vmap:0"}
    for p in payload["projection"].values():
        for dataset, t in (("mnist", 10), ("fmnist", 25)):
            assert p[dataset]["time_steps"] == t
            assert p[dataset]["hours_200_generations"] > 0
            assert p[dataset]["compile_s_per_new_signature"] > 0
