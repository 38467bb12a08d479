"""The main job: ``python -m spenser_jax.evolve dataset=fmnist``.

Runs the search (the paper's (1+λ), or another ``evolution.strategy``:
:mod:`spenser_jax.search`) with Hydra configuration (the package's
``conf/``). The run directory (``runs/<experiment>/<dataset>/seed<seed>`` by
default) holds:

* ``generations.jsonl``: one JSON object per completed generation;
* ``best.json``: the best individual so far (genotype, phenotype, fitness);
* ``checkpoint.msgpack``: the evolutionary state, written atomically after
  every generation; running the same command again resumes after the last
  completed generation;
* ``run.json``: the run's identity (the settings that determine results);
* ``evolve.log`` and ``.hydra/``: the log, the resolved config and the
  command-line overrides;
* ``.lock``: held while a process works in the directory.

This module holds the command and the generation loop; the configuration is
checked and the run built once, by :func:`spenser_jax.run.config.setup`, and
the run directory's files are :mod:`spenser_jax.run`'s.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from spenser_jax import data, errors
from spenser_jax.errors import ConfigError
from spenser_jax.run import checkpoint, files, generation, held_log
from spenser_jax.run.config import Setup, setup, to_plain
from spenser_jax.run.runtime import keeps_host_memory

# Names other modules and scripts reach through this one (data: its DataError).
__all__ = ["CONFIG_DIR", "ConfigError", "Setup", "data", "run", "setup", "to_plain"]

log = logging.getLogger("spenser_jax")

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"
#: Reported as one line ``error: ...`` (every command line's :data:`spenser_jax.errors.REPORTED`).
KNOWN_ERRORS = errors.REPORTED


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(cfg: Any, run_dir: Path, *, evaluator=None, overrides: list[str] | None = None, on_accept=None) -> Any:
    """Run (or resume) the search in ``run_dir``; returns the strategy's final state.

    A process that refuses the run directory (a bad config, another run's
    settings or grammar, a corrupt checkpoint, records it cannot resume or
    would overwrite, a directory in use) leaves it as it found it: the config
    is checked before the directory is made, and ``.hydra/`` and ``.lock`` are
    written only once the checkpoint and the records were accepted. A run
    asked for no more generations than it has done writes nothing.

    Args:
      cfg: the configuration (a DictConfig or the same as plain dicts).
      run_dir: the run directory; one process at a time (a second one stops
        with a :class:`~spenser_jax.run.files.CheckpointError`).
      evaluator: anything with ``evaluate(phenotypes, generation) ->
        [Evaluation]`` (and the keywords ``inherited`` with ``search.inherit``,
        ``indices`` with ``search.redraw_stopped`` or ``verify_best``);
        default: a :class:`spenser_jax.scheduler.Evaluator` on the configured data. With one given, no data is loaded.
      overrides: the command line's overrides, saved beside the config.
      on_accept: called (no arguments) once this process holds ``run_dir``
        and accepted its checkpoint, before anything is written or logged
        there (the command line starts its log file then).
    """
    run_dir = Path(run_dir)
    s = setup(cfg, load_data=evaluator is None)  # before mkdir: a bad config leaves no directory
    run_dir.mkdir(parents=True, exist_ok=True)
    with files.RunLock(run_dir, announce=False) as lock:
        # Every refusal comes before the first write (the lock's holder, the
        # config, the log): a refused process leaves every byte as it was.
        state = checkpoint.load(run_dir, s.identity)  # refuses another run's checkpoint, untouched
        if state is None:
            files.check_fresh_start(run_dir, s.identity)  # no checkpoint: a new run, unless it would lose records
        else:
            kept = files.covered_generations(run_dir, state.generation)
            if state.generation >= s.generations:  # no config, log or lock written: only what a kill left, mended
                _mend(run_dir, s, state, kept)
                log.info("nothing to do: %d of %d generations done in %s", state.generation, s.generations, run_dir)
                return state
        lock.announce()
        files.write_config(run_dir, cfg, overrides)
        if on_accept is not None:
            on_accept()
        if state is None:
            state = s.strategy.init(s.seed)
            if (run_dir / files.GENERATIONS).exists():
                # Generation 0 finished its log line (or part of it) but not its checkpoint.
                files.truncate_generations(run_dir, 0)
            files.atomic_write(run_dir / files.RUN, json.dumps(s.identity, indent=1))
            log.info("new run in %s", run_dir)
        else:
            _mend(run_dir, s, state, kept)
            log.info(
                "resuming %s after generation %d (best fitness %.4f)",
                run_dir,
                state.generation - 1,
                state.parent_fitness,
            )
        if state.generation >= s.generations:  # a new run of 0 generations
            return state
        if evaluator is None and s.executor["name"] == "ray":
            from spenser_jax.scheduler.ray_executor import RayEvaluator

            with RayEvaluator(
                s.splits,
                seed=s.seed,
                input_shape=s.space.input_shape,
                protocol=s.protocol,
                evaluator_options={k: v for k, v in s.runtime.items() if k != "progress"},
                progress=s.runtime["progress"],
                **{k: v for k, v in s.executor.items() if k != "name"},  # address, cpus, gpus, workers, ...
            ) as owned:
                return _loop(s, state, run_dir, owned)
        if evaluator is None:
            from spenser_jax.scheduler import Evaluator

            with Evaluator(
                s.splits, seed=s.seed, input_shape=s.space.input_shape, protocol=s.protocol, **s.runtime
            ) as owned:
                return _loop(s, state, run_dir, owned)
        return _loop(s, state, run_dir, evaluator)


def _mend(run_dir: Path, s: Setup, state, kept: list[dict]) -> None:
    """Make ``generations.jsonl``, ``pareto.json`` and ``best.json`` what the checkpoint says, whatever a kill
    left of them: ``kept`` (:func:`~spenser_jax.run.files.covered_generations`) are the records it covers, lines
    after them dropped. A file that already agrees is not written (a finished run asked again changes no byte)."""
    files.write_if_changed(run_dir / files.GENERATIONS, "".join(json.dumps(r) + "\n" for r in kept))
    files.write_if_changed(run_dir / files.PARETO, json.dumps(files.pareto_archive(kept), indent=1))
    if state.parent is not None:
        best = files.best_record(s.space, state, (kept[-1:] or [{}])[0].get("verified"))
        files.write_if_changed(run_dir / files.BEST, json.dumps(best, indent=1))


def _loop(s: Setup, state, run_dir: Path, evaluator):
    started, done_here = time.perf_counter(), 0
    while state.generation < s.generations:
        g = state.generation
        t0 = time.perf_counter()
        state, candidates, evaluations, metrics, record = generation.step(s, state, evaluator, g)
        for i, e in enumerate(evaluations):
            if e.status == "stopped":  # by design (search.early_stop), not a failure
                log.info("generation %d, individual %d: %s", g, i, e.reason)
            elif not e.ok:
                log.warning("generation %d, individual %d failed (%s): %s", g, i, e.status, e.reason)
        wall = time.perf_counter() - t0
        record["wall_seconds"] = wall
        record["evaluations_per_second"] = len(candidates) / wall if wall > 0 else 0.0
        if hasattr(evaluator, "retries"):  # a distributed executor: individuals evaluated again after a lost worker
            record["retries"] = evaluator.retries
        files.append_generation(run_dir, record)
        files.write_pareto(run_dir)
        if state.parent is not None:
            best = files.best_record(s.space, state, record.get("verified"))
            files.atomic_write(run_dir / files.BEST, json.dumps(best, indent=1))
        checkpoint.save(run_dir, state, s.identity)
        done_here += 1
        per_generation = (time.perf_counter() - started) / done_here
        remaining = per_generation * (s.generations - g - 1)
        # Generations count from 0 here as in generations.jsonl and --individual G:I.
        log.info(
            "generation %d done (%d of %d) | best %.4f | mean %.4f | failed %d | %.2f eval/s | ETA %s",
            g,
            g + 1,
            s.generations,
            record["best_fitness"],
            record["mean_fitness"],
            record["failed"],
            record["evaluations_per_second"],
            duration(remaining),
        )
        if done_here == 1 and s.generations - g > 1:
            log.info(
                "projected: %d generations at %s each -> %s for the whole run (a rough figure: "
                "later generations reuse compiled programs, larger networks train longer)",
                s.generations - g,
                duration(wall),
                duration(wall * (s.generations - g)),
            )
    return state


def check_output_dirs(argv: list[str]) -> None:
    """A :class:`ConfigError` when ``hydra.run.dir=`` or ``hydra.sweep.dir=`` in ``argv`` names a file or a
    path under one: Hydra makes the directory before the job starts, and would end in a traceback."""
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        path = Path(value.strip("'\"")).expanduser()
        for place in (path, *path.parents):
            if place.exists() or place.is_symlink():
                if not place.is_dir():
                    where = "" if place == path else f" (in the way of {path})"
                    raise ConfigError(
                        f"{key}={value}: {place} is a file, not a folder{where}; give a run directory that is a "
                        f"folder or does not exist yet"
                    )
                break


def _hydra_main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def main(cfg) -> None:
        from spenser_jax import scheduler

        # Hydra logs INFO; JAX's backend probing ("Unable to initialize
        # backend 'tpu'") is noise to a user.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        held = held_log.HeldLog(run_dir)
        try:
            rt = to_plain(cfg).get("runtime", {})
            # First: the allocator's settings reach only threads that start after them (the backend's).
            if keeps_host_memory(rt):
                scheduler.keep_host_memory()
            scheduler.enable_compile_cache(rt.get("compile_cache"))
            run(cfg, run_dir, overrides=list(hc.overrides.task), on_accept=held.accept)
            if not held.accepted:  # nothing to do: nothing written, the log included
                held_log.discard(held, run_dir)
        except KNOWN_ERRORS as err:
            if held.accepted:  # the run's own error: its log keeps it
                log.error("error: %s", err)
            else:  # refused: the directory stays as it was (gone, if Hydra made it for this process)
                held_log.discard(held, run_dir)
            sys.exit(errors.fail(err))

    try:
        check_output_dirs(sys.argv[1:])
    except ConfigError as err:
        sys.exit(errors.fail(err))
    main()


if __name__ == "__main__":
    _hydra_main()
