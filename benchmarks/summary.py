"""Bookkeeping for ``gpu.sh``: one record per step, and the final short table.

``record``: after a step, notes its status in ``<out>/gpu_run_<tag>_<date>.json``
(the run's manifest: every step with ``status`` ok / error, exit code,
seconds, budget, result file, and the error with the end of its log). When a
step failed and left no fresh result file, its result file is written with
the ``error`` instead, so every measurement has one JSON file either way.

``report``: prints the short table of the run from the manifest and the
result files (and stores it in the manifest).

Starts no JAX: it runs even when JAX cannot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def today() -> str:
    return datetime.date.today().isoformat()


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def manifest_path(out: Path, tag: str) -> Path:
    return out / f"gpu_run_{tag}_{today()}.json"


def load_manifest(out: Path, tag: str) -> dict:
    manifest = _read(manifest_path(out, tag)) or {
        "benchmark": "gpu_run",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "steps": {},
    }
    # Versions as they are now (the install step may have changed them).
    manifest.update(tag=tag, host=common.host_info(), versions=common.versions())
    return manifest


def fresh_result(out: Path, stem: str, since: float) -> Path | None:
    """``<stem>_<today>.json`` if it was written at or after ``since`` (epoch seconds)."""
    path = out / f"{stem}_{today()}.json"
    if path.exists() and path.stat().st_mtime >= since - 1:
        return path
    return None


def record(args) -> int:
    out = Path(args.out)
    if args.skipped is not None:
        manifest = load_manifest(out, args.tag)
        manifest["steps"][args.step] = {
            "status": "skipped",
            "note": args.skipped,
            "seconds": 0.0,
            "budget_s": args.budget,
            "result": None,
        }
        _write(manifest_path(out, args.tag), manifest)
        return 0
    log_tail = ""
    if args.log and Path(args.log).exists():
        log_tail = "\n".join(Path(args.log).read_text(errors="replace").splitlines()[-25:])
    result = fresh_result(out, args.stem, args.started) if args.stem else None
    error = None
    if args.rc == 124 or args.rc == 137:
        error = f"timed out: stopped after its budget of {args.budget:g} s"
    elif args.rc != 0:
        error = f"exit status {args.rc}"
    elif args.stem and result is None:
        error = "no result file written"
    if error:
        last = [line for line in log_tail.splitlines() if line.strip()]
        error += f": {last[-1][:300]}" if last else ""
    if error and args.stem:
        if result is None:  # leave one file per measurement, saying what went wrong
            result = out / f"{args.stem}_{today()}.json"
            _write(
                result,
                {
                    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "benchmark": args.stem,
                    "error": error,
                    "log_tail": log_tail,
                    "machine": common.host_info(),
                    "versions": common.versions(),
                },
            )
        else:  # a partial result: keep its figures, add the error
            payload = _read(result) or {}
            payload["error"] = error
            _write(result, payload)
    manifest = load_manifest(out, args.tag)
    manifest["steps"][args.step] = {
        "status": "error" if error else "ok",
        "exit_status": args.rc,
        "seconds": round(args.seconds, 1),
        "budget_s": args.budget,
        "result": result.name if result else None,
        **({"error": error, "log_tail": log_tail} if error else {}),
    }
    _write(manifest_path(out, args.tag), manifest)
    return 0


# --------------------------------------------------------------------------
# The short table


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def report(args) -> int:
    out = Path(args.out)
    manifest = load_manifest(out, args.tag)
    lines = [f"spenser_jax GPU benchmarks ({args.tag}), results in {out}", ""]
    lines.append(f"{'step':<22} {'status':<7} {'seconds':>8} {'budget':>7}  result / error")
    for name, step in manifest["steps"].items():
        what = step.get("error") or step.get("note") or step.get("result") or ""
        lines.append(
            f"{name:<22} {step['status']:<7} {step['seconds']:>8.1f} {_fmt(step.get('budget_s'), 'g'):>7}  {what[:110]}"
        )

    def result(stem):
        path = fresh_result(out, f"{stem}_{args.tag}", 0)
        return _read(path) if path else None

    orig = result("original_engine")
    if orig and orig.get("results"):
        lines += ["", "one generation: the original's engine (torch + snntorch twin) against ours (default settings)"]
        for dataset, r in orig["results"].items():
            twin, ours = r.get("twin") or {}, r.get("ours") or {}
            if "generation_seconds" not in ours:
                lines.append(f"  {dataset}: ours {str(ours.get('error', '-'))[:100]}")
                continue
            lines.append(
                f"  {dataset} T={r['time_steps']}: twin {_fmt(twin.get('generation_seconds'))} s, "
                f"ours {ours['generation_seconds']:.1f} s (compile {ours['compile_seconds']:.1f} s), "
                f"speed-up {_fmt(r.get('speedup'), '.2f')}x; mean accuracy twin "
                f"{_fmt(twin.get('mean_accuracy'), '.3f')}, ours {_fmt(ours.get('mean_accuracy'), '.3f')}"
            )
    train = result("train_throughput")
    if train and train.get("results"):
        lines += ["", "train samples/s (reference CSNN, batch 64); ratio = ours / snntorch"]
        default = train["settings"].get("default_mode")
        for t in train["settings"]["time_steps"]:
            rows = [r for r in train["results"] if r["time_steps"] == t]
            if not rows:
                continue
            ours = " ".join(
                f"{r['label']}{'*' if r['label'] == default else ''} "
                f"{r['samples_per_s']:.0f} ({_fmt(r.get('ratio_vs_snntorch'), '.2f')}x)"
                for r in rows
                if r["framework"] == "spenser_jax"
            )
            theirs = " ".join(f"{r['samples_per_s']:.0f}" for r in rows if r["framework"] == "snntorch")
            lines.append(f"  T={t:<3} ours: {ours}; snntorch: {theirs or train['settings'].get('snntorch')}")
    gen = result("generation_throughput")
    if gen and gen.get("variants"):
        s = gen["settings"]
        lines += [
            "",
            (
                f"one generation (λ={s['offspring']}, {s['dataset']} subset {s['subset']}, "
                f"T={s['time_steps']}, data {s.get('data')}): wall s, speed-up vs none"
            ),
        ]
        ref = gen["variants"].get("none", {}).get("wall_s")
        for name, v in gen["variants"].items():
            if "error" in v:
                lines.append(f"  {name:<8} {v['error'][:100]}")
            else:
                speed = f"{ref / v['wall_s']:.2f}x" if ref else "-"
                lines.append(
                    f"  {name:<8} wall {v['wall_s']:7.1f}  compile {v['compile_s']:7.1f}  "
                    f"run {v['run_s']:7.1f}  {speed:>6}  identical to none: "
                    f"{v.get('identical_to_none')}"
                )
    comp = result("compile_time")
    if comp and comp.get("per_signature_s"):
        lines += ["", "compile s per new signature (mean over signatures)"]
        for path, by_t in comp["per_signature_s"].items():
            lines.append(
                f"  {path:<8} " + ", ".join(f"T={t}: {v['mean_s']:.1f} s (n={v['count']})" for t, v in by_t.items())
            )
    layer = result("layer_programs")
    if layer and layer.get("new"):
        lines += [
            "",
            "compile s per new architecture, one program per network -> programs per block "
            "(runtime.compile_unit=layer)",
            f"  median {layer['baseline']['median_compile_seconds']:.2f}"
            f" -> {layer['new']['median_compile_seconds']:.2f}"
            f" ({layer['compile_ratio']['median']:.2f}x); epoch time {layer['epoch_ratio']['median']:.2f}x;"
            f" largest difference {layer['max_abs_difference']:.1e}",
        ]
    proj = result("paper_projection")
    if proj and proj.get("projection"):
        lines += ["", "projected 200-generation paper run (hours; training only in brackets)"]
        for name, p in proj["projection"].items():
            if "error" in p:
                continue
            lines.append(
                f"  {name:<8} "
                + ", ".join(
                    f"{d} T={p[d]['time_steps']}: {p[d]['hours_200_generations']:.1f} h "
                    f"({p[d]['hours_training_only']:.1f})"
                    for d in ("mnist", "fmnist")
                )
            )
    failed = [n for n, s in manifest["steps"].items() if s["status"] == "error"]
    lines += ["", "all steps ok" if not failed else f"FAILED steps: {', '.join(failed)}"]
    print("\n".join(lines), flush=True)
    manifest["table"] = lines
    _write(manifest_path(out, args.tag), manifest)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="note one step's outcome")
    rec.add_argument("--out", required=True)
    rec.add_argument("--tag", required=True)
    rec.add_argument("--step", required=True)
    rec.add_argument("--rc", type=int, required=True)
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--budget", type=float, default=None)
    rec.add_argument("--started", type=float, required=True, help="epoch seconds at the step's start")
    rec.add_argument("--stem", default=None, help="the step's result stem (<stem>_<date>.json)")
    rec.add_argument("--log", default=None)
    rec.add_argument("--skipped", default=None, help="the step did not run, for this reason")
    rep = sub.add_parser("report", help="print the short table")
    rep.add_argument("--out", required=True)
    rep.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    return record(args) if args.command == "record" else report(args)


if __name__ == "__main__":
    sys.exit(main())
