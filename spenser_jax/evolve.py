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
from spenser_jax.run import checkpoint, files
from spenser_jax.run.config import Setup, setup, to_plain
from spenser_jax.run.runtime import keeps_host_memory
from spenser_jax.search import generation_rng, halving

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
    settings or grammar, a corrupt checkpoint, a directory in use) leaves it
    as it found it: the config is checked before the directory is made, and
    ``.hydra/`` and ``.lock`` are written only once the checkpoint (if any)
    was accepted.

    Args:
      cfg: the configuration (a DictConfig or the same as plain dicts).
      run_dir: the run directory; one process at a time (a second one stops
        with a :class:`~spenser_jax.run.files.CheckpointError`).
      evaluator: anything with ``evaluate(phenotypes, generation) ->
        [Evaluation]``; default: a :class:`spenser_jax.scheduler.Evaluator`
        on the configured data. With one given, no data is loaded.
      overrides: the command line's overrides, saved beside the config.
      on_accept: called (no arguments) once this process holds ``run_dir``
        and accepted its checkpoint, before anything is written or logged
        there (the command line starts its log file then).
    """
    run_dir = Path(run_dir)
    s = setup(cfg, load_data=evaluator is None)  # before mkdir: a bad config leaves no directory
    run_dir.mkdir(parents=True, exist_ok=True)
    with files.RunLock(run_dir, announce=False) as lock:
        state = checkpoint.load(run_dir, s.identity)  # refuses another run's checkpoint, untouched
        lock.announce()
        files.write_config(run_dir, cfg, overrides)
        if on_accept is not None:
            on_accept()
        if state is None:
            state = s.strategy.init(s.seed)
            if files.read_generations(run_dir):
                # Generation 0 finished its log line but not its checkpoint.
                files.truncate_generations(run_dir, 0)
            files.atomic_write(run_dir / files.RUN, json.dumps(s.identity, indent=1))
            log.info("new run in %s", run_dir)
        else:
            files.truncate_generations(run_dir, state.generation)
            files.write_pareto(run_dir)
            if state.parent is not None:  # whatever a kill left of it
                files.atomic_write(run_dir / files.BEST, json.dumps(files.best_record(s.space, state), indent=1))
            log.info(
                "resuming %s after generation %d (best fitness %.4f)",
                run_dir,
                state.generation - 1,
                state.parent_fitness,
            )
        if state.generation >= s.generations:
            log.info("nothing to do: %d of %d generations done", state.generation, s.generations)
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


def _inheritance(s: Setup, state, candidates, phenotypes) -> list:
    """What each candidate inherits from its parent (see :mod:`spenser_jax.training.inheritance`)."""
    from spenser_jax.training import inheritance

    out = []
    for c, p in zip(candidates, phenotypes):
        genotype, weights = s.strategy.parent_of(state, c)
        if weights is None:  # a member that failed has nothing to give
            out.append(None)
            continue
        out.append(
            inheritance.inherit(
                s.space.phenotype(genotype),
                s.space.origins(genotype),
                weights,
                p,
                s.space.origins(c.genotype),
                s.space.input_shape,
                partial=s.inherit_partial,
            )
        )
    return out


def _loop(s: Setup, state, run_dir: Path, evaluator):
    started, done_here = time.perf_counter(), 0
    while state.generation < s.generations:
        g = state.generation
        t0 = time.perf_counter()
        candidates = s.strategy.ask(generation_rng(s.seed, g), state, s.space, s.mutation)
        phenotypes = [s.space.phenotype(c.genotype) for c in candidates]
        inherited, rounds = None, None
        if s.protocol.inherit and state.parent is not None and state.parent_weights is not None:
            inherited = _inheritance(s, state, candidates, phenotypes)
        if s.halving:
            evaluations, rounds = halving.evaluate(evaluator, phenotypes, g, inherited)
        elif inherited is not None:
            evaluations = evaluator.evaluate(phenotypes, generation=g, inherited=inherited)
        else:
            evaluations = evaluator.evaluate(phenotypes, generation=g)
        state, metrics = s.strategy.tell(state, candidates, evaluations)
        for i, e in enumerate(evaluations):
            if e.status == "stopped":  # by design (search.early_stop), not a failure
                log.info("generation %d, individual %d: %s", g, i, e.reason)
            elif not e.ok:
                log.warning("generation %d, individual %d failed (%s): %s", g, i, e.status, e.reason)
        record = files.generation_record(g, s.space, state, candidates, evaluations, metrics, s.strategy, rounds)
        wall = time.perf_counter() - t0
        record["wall_seconds"] = wall
        record["evaluations_per_second"] = len(candidates) / wall if wall > 0 else 0.0
        if hasattr(evaluator, "retries"):  # a distributed executor: individuals evaluated again after a lost worker
            record["retries"] = evaluator.retries
        files.append_generation(run_dir, record)
        files.write_pareto(run_dir)
        if state.parent is not None:
            files.atomic_write(run_dir / files.BEST, json.dumps(files.best_record(s.space, state), indent=1))
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
        held = files.HeldLog(run_dir)
        try:
            rt = to_plain(cfg).get("runtime", {})
            # First: the allocator's settings reach only threads that start after them (the backend's).
            if keeps_host_memory(rt):
                scheduler.keep_host_memory()
            scheduler.enable_compile_cache(rt.get("compile_cache"))
            run(cfg, run_dir, overrides=list(hc.overrides.task), on_accept=held.release)
        except KNOWN_ERRORS as err:
            if held.accepted:  # the run's own error: its log keeps it
                log.error("error: %s", err)
            else:  # refused: the directory stays as it was (gone, if Hydra made it for this process)
                held.discard()
                files.remove_if_empty(run_dir, [Path(h.baseFilename) for h in held.files])
            sys.exit(errors.fail(err))

    main()


if __name__ == "__main__":
    _hydra_main()
