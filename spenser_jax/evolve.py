"""The main job: ``python -m spenser_jax.evolve dataset=fmnist``.

Runs the paper's (1+λ) search with Hydra configuration (``conf/``). The run
directory (``runs/<experiment>/<dataset>/seed<seed>`` by default) holds:

* ``generations.jsonl``: one JSON object per completed generation;
* ``best.json``: the best individual so far (genotype, phenotype, fitness);
* ``checkpoint.msgpack``: the evolutionary state, written atomically after
  every generation; running the same command again resumes after the last
  completed generation;
* ``run.json``: the run's identity (the settings that determine results);
* ``evolve.log`` and ``.hydra/``: Hydra's log and the resolved config.

Only this module and ``retrain`` read the DictConfig; everything else gets
plain objects built by :func:`setup`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from spenser_jax import checkpoint, data, evolution, mutation
from spenser_jax.genotype import SearchSpace, SearchSpaceError, macro_from_config
from spenser_jax.grammar import GrammarError, load_grammar

log = logging.getLogger("spenser_jax")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run needs, built once from the config."""

    seed: int
    generations: int
    offspring: int
    space: SearchSpace
    mutation: mutation.MutationConfig
    splits: data.Splits
    time_steps: int
    training: dict
    identity: dict
    grammar_path: Path


def resolve_grammar(path: str) -> Path:
    candidate = Path(path).expanduser()
    for p in (candidate, PROJECT_ROOT / candidate):
        if p.exists():
            return p
    raise ConfigError(f"grammar file {path!r} not found (looked in {Path.cwd()} and {PROJECT_ROOT})")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def to_plain(cfg: Any) -> Any:
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core always brings omegaconf
        pass
    return cfg


def setup(cfg: Any, *, load_data: bool = True) -> Setup:
    """Validate the config and build the run's objects (grammar, space, data)."""
    cfg = to_plain(cfg)
    ds, evo, tr = cfg["dataset"], cfg["evolution"], cfg["training"]
    _require(isinstance(cfg["seed"], int) and cfg["seed"] >= 0, f"seed must be an int >= 0, got {cfg['seed']!r}")
    _require(ds["name"] in data.TIME_STEPS, f"dataset.name must be one of {sorted(data.TIME_STEPS)}, got {ds['name']!r}")
    _require(isinstance(evo["generations"], int) and evo["generations"] >= 0, "evolution.generations must be an int >= 0")
    _require(isinstance(evo["offspring"], int) and evo["offspring"] >= 1, "evolution.offspring must be an int >= 1")
    _require(isinstance(ds["time_steps"], int) and ds["time_steps"] >= 1, "dataset.time_steps must be an int >= 1")
    _require(ds["subset"] is None or (isinstance(ds["subset"], int) and ds["subset"] >= 20),
             "dataset.subset must be null or an int >= 20")
    _require(0.0 < ds["fitness_fraction"] < 1.0, "dataset.fitness_fraction must be in (0, 1)")
    _require(isinstance(tr["epochs"], int) and tr["epochs"] >= 1, "training.epochs must be an int >= 1")
    _require(isinstance(tr["batch_size"], int) and tr["batch_size"] >= 1, "training.batch_size must be an int >= 1")
    _require(isinstance(tr["eval_batch_size"], int) and tr["eval_batch_size"] >= 1,
             "training.eval_batch_size must be an int >= 1")
    for key in ("correct_rate", "incorrect_rate"):
        _require(0.0 <= tr[key] <= 1.0, f"training.{key} must be in [0, 1]")
    _require(tr["mode"] in ("auto", "stepwise", "scan", "layerwise"),
             "training.mode must be auto | stepwise | scan | layerwise")
    _require(tr["init"] in ("torch", "lecun"), "training.init must be torch | lecun")
    try:
        mut = mutation.MutationConfig(**cfg["mutation"])
        macro = macro_from_config(evo["macro"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"mutation / evolution.macro: {err}") from None
    grammar_path = resolve_grammar(cfg["grammar"])
    grammar = load_grammar(grammar_path)
    splits = data.split(data.load(ds["name"], ds["data_dir"], source=ds["source"]), seed=cfg["seed"],
                        subset=ds["subset"], fitness_fraction=ds["fitness_fraction"]) if load_data else None
    input_shape = tuple(splits.train.images.shape[1:]) if splits is not None else (28, 28, 1)
    space = SearchSpace(grammar, macro, input_shape=input_shape, num_classes=10,
                        max_attempts=int(evo["max_attempts"]))
    identity = {
        "seed": cfg["seed"],
        "dataset": ds["name"],
        "subset": ds["subset"],
        "source": ds["source"],
        "time_steps": ds["time_steps"],
        "fitness_fraction": ds["fitness_fraction"],
        "grammar_sha256": hashlib.sha256(grammar_path.read_bytes()).hexdigest(),
        "offspring": evo["offspring"],
        "macro": [list(dataclasses.astuple(m)) for m in macro],
        "mutation": dataclasses.asdict(mut),
        "training": {k: tr[k] for k in ("epochs", "batch_size", "correct_rate", "incorrect_rate",
                                        "eval_batch_size", "init")},
    }
    # Runtime settings that change the numbers (not only the speed) belong
    # to the identity too: vmapped groups round differently, and so does
    # another XLA optimisation level.
    rt = cfg.get("runtime", {})
    if rt.get("batching") == "vmap" or rt.get("xla_opt_level") is not None:
        identity["runtime"] = {"batching": rt.get("batching"), "xla_opt_level": rt.get("xla_opt_level")}
    # JSON round trip so tuples and lists compare equal after a reload.
    identity = json.loads(json.dumps(identity))
    return Setup(seed=cfg["seed"], generations=evo["generations"], offspring=evo["offspring"], space=space,
                 mutation=mut, splits=splits, time_steps=ds["time_steps"], training=dict(tr),
                 identity=identity, grammar_path=grammar_path)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(cfg: Any, run_dir: Path, *, evaluator=None) -> evolution.State:
    """Run (or resume) the search in ``run_dir``; returns the final state."""
    from spenser_jax import evaluation

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    s = setup(cfg)
    state = checkpoint.load(run_dir, s.identity)
    if state is None:
        state = evolution.init(s.seed)
        if checkpoint.read_generations(run_dir):
            # Generation 0 finished its log line but not its checkpoint.
            checkpoint.truncate_generations(run_dir, 0)
        checkpoint.atomic_write(run_dir / "run.json", json.dumps(s.identity, indent=1))
        log.info("new run in %s", run_dir)
    else:
        checkpoint.truncate_generations(run_dir, state.generation)
        log.info("resuming %s after generation %d (best fitness %.4f)", run_dir,
                 state.generation - 1, state.parent_fitness)
    if state.generation >= s.generations:
        log.info("nothing to do: %d of %d generations done", state.generation, s.generations)
        return state
    plain = to_plain(cfg)
    rt = plain.get("runtime", {})
    evaluator = evaluator or evaluation.Evaluator(
        s.splits, time_steps=s.time_steps, seed=s.seed, input_shape=s.space.input_shape,
        progress=bool(rt.get("progress", True)), batching=rt.get("batching", "auto"),
        compile_threads=rt.get("compile_threads"), devices=rt.get("devices"),
        vmap_group=rt.get("vmap_group"), xla_opt_level=rt.get("xla_opt_level"), **{
            k: s.training[k] for k in ("epochs", "batch_size", "correct_rate", "incorrect_rate",
                                       "eval_batch_size", "mode", "init")})
    started, done_here = time.perf_counter(), 0
    while state.generation < s.generations:
        g = state.generation
        t0 = time.perf_counter()
        candidates = evolution.ask(state, s.space, s.mutation, s.offspring)
        phenotypes = [s.space.phenotype(c.genotype) for c in candidates]
        evaluations = evaluator.evaluate(phenotypes, generation=g)
        state, record = evolution.tell(state, s.space, candidates, evaluations)
        for i, e in enumerate(evaluations):
            if not e.ok:
                log.warning("generation %d, individual %d failed (%s): %s", g, i, e.status, e.reason)
        wall = time.perf_counter() - t0
        record["wall_seconds"] = wall
        record["evaluations_per_second"] = len(candidates) / wall if wall > 0 else 0.0
        checkpoint.append_generation(run_dir, record)
        checkpoint.save(run_dir, state, s.identity)
        if state.parent is not None:
            checkpoint.atomic_write(run_dir / checkpoint.BEST, json.dumps({
                "generation": g, "fitness": state.parent_fitness,
                "phenotype": s.space.text(state.parent),
                "phenotype_json": s.space.phenotype(state.parent).to_json(),
                "genotype": state.parent.to_json()}, indent=1))
        done_here += 1
        per_generation = (time.perf_counter() - started) / done_here
        log.info("generation %d/%d | best %.4f | mean %.4f | failed %d | %.2f eval/s | ETA %s",
                 g + 1, s.generations, record["best_fitness"], record["mean_fitness"], record["failed"],
                 record["evaluations_per_second"], _duration(per_generation * (s.generations - g - 1)))
    return state


KNOWN_ERRORS = (ConfigError, GrammarError, SearchSpaceError, data.DataError, checkpoint.CheckpointError)


def _hydra_main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
    def main(cfg) -> None:
        from spenser_jax import evaluation
        # Hydra logs INFO; JAX's backend probing ("Unable to initialize
        # backend 'tpu'") is noise to a user.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        try:
            evaluation.enable_compile_cache(to_plain(cfg).get("runtime", {}).get("compile_cache"))
            run(cfg, Path(HydraConfig.get().runtime.output_dir))
        except KNOWN_ERRORS as err:
            log.error("error: %s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    main()


if __name__ == "__main__":
    _hydra_main()
