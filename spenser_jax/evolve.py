"""The main job: ``python -m spenser_jax.evolve dataset=fmnist``.

Runs the paper's (1+λ) search with Hydra configuration (the package's
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

Only this module reads the configuration; everything else gets plain objects
built by :func:`setup`, with every configuration string (``"auto"``,
``"all"``, ``null``) resolved here, once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from spenser_jax import checkpoint, data, errors, evolution, mutation, population
from spenser_jax.activity import EnergyModel
from spenser_jax.errors import SpenserError
from spenser_jax.genotype import SearchSpace, macro_for, macro_from_config
from spenser_jax.grammar import GrammarError, load_grammar, locate

log = logging.getLogger("spenser_jax")

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"
MODES = ("auto", "stepwise", "scan", "layerwise")
_PAPER_SEARCH = {
    "inherit": False,
    "inherit_partial": False,
    "early_stop": None,
    "fitness_subset": None,
    "min_steps": None,
    "stop_min_steps": 20,
    "time_steps": None,
    "parent_continues": False,
}
_ACCURACY_FITNESS = {
    "objective": "accuracy",
    "synops_reference": 1.0e6,
    "synops_weight": -0.08,
    "max_synops": None,
    "max_parameters": None,
    "objectives": None,
}
STRATEGIES = ("one_plus_lambda", "nsga2")


class ConfigError(SpenserError, ValueError):
    """A configuration value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run needs, built once from the config."""

    seed: int
    generations: int
    offspring: int
    space: SearchSpace
    mutation: mutation.MutationConfig
    splits: data.Splits | None
    protocol: Any  # protocol.Protocol: how every individual trains and is scored
    runtime: dict  # Evaluator keyword arguments, resolved
    identity: dict
    grammar_path: Path
    inherit_partial: bool = False
    objective: Any = None  # evolution.Objective
    parent_continues: bool = False
    executor: dict = dataclasses.field(default_factory=lambda: {"name": "local"})  # where individuals evaluate
    strategy: str = "one_plus_lambda"  # or "nsga2" (spenser_jax.population)
    population: int = 0  # μ, nsga2 only
    objectives: tuple[str, ...] = ()  # nsga2 only


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


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _per_block(rt: dict) -> bool:
    """Whether the run may train through programs per block: known before the backend starts, so
    ``compile_unit=auto`` counts (it resolves to them on a CPU)."""
    return rt.get("compile_unit", "network") in ("layer", "auto")


def _keeps_host_memory(rt: dict) -> bool:
    """``runtime.keep_host_memory`` resolved (:func:`spenser_jax.scheduler.keep_host_memory`)."""
    from spenser_jax import scheduler

    try:
        return scheduler.wants_host_memory_kept(rt.get("keep_host_memory", "auto"), _per_block(rt))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _runtime(rt: dict) -> dict:
    """The Evaluator's runtime options from ``runtime.*``, every default resolved."""
    from spenser_jax import scheduler

    batching = rt.get("batching", "auto")
    _require(
        batching in ("auto",) + scheduler.BATCHING,
        f"runtime.batching must be auto | none | map | vmap, got {batching!r}",
    )
    threads = rt.get("compile_threads")
    _require(threads is None or _is_int(threads, 0), "runtime.compile_threads must be null or an int >= 0")
    devices = rt.get("devices")
    _require(devices in (None, "all") or _is_int(devices, 1), "runtime.devices must be null, all or an int >= 1")
    vmap_group = rt.get("vmap_group")
    _require(vmap_group in (None, "auto") or _is_int(vmap_group, 1), "runtime.vmap_group must be null or an int >= 1")
    level = rt.get("xla_opt_level")
    _require(level in (None, 0, 1, 2, 3), f"runtime.xla_opt_level must be null or 0..3, got {level!r}")
    emitters = rt.get("xla_cpu_fusion_emitters", True)
    _require(isinstance(emitters, bool), f"runtime.xla_cpu_fusion_emitters must be true or false, got {emitters!r}")
    _keeps_host_memory(rt)  # applied by the command line, before anything starts the backend
    unit = rt.get("compile_unit", "network")
    _require(
        unit == "auto" or unit in scheduler.COMPILE_UNITS,
        f"runtime.compile_unit must be one of {['auto', *scheduler.COMPILE_UNITS]}, got {unit!r}",
    )
    try:
        selected = scheduler.select_devices(None if devices in (None, "all") else devices)
    except ValueError as err:
        raise ConfigError(f"runtime.devices: {err}") from None
    if unit == "auto":  # blocks on one CPU, where they were measured to pay; whole programs spread over devices
        single_cpu = len(selected) == 1 and selected[0].platform == "cpu"
        unit = "layer" if single_cpu and batching != "vmap" else "network"
    return {
        "batching": "map" if batching == "auto" else batching,
        "compile_threads": (scheduler.default_compile_threads(selected[0].platform) if threads is None else threads),
        "devices": selected,
        "vmap_group": None if vmap_group in (None, "auto") else vmap_group,
        "compiler_options": scheduler.compiler_options(
            selected[0].platform, opt_level=level, cpu_fusion_emitters=emitters
        ),
        "progress": bool(rt.get("progress", True)),
        "compile_unit": unit,
    }


EXECUTORS = ("local", "ray")


def _executor(rt: dict) -> dict:
    """Where individuals are evaluated (``runtime.executor`` and its ``ray_*`` keys); results do not depend on it."""
    name = rt.get("executor", "local")
    _require(name in EXECUTORS, f"runtime.executor must be one of {list(EXECUTORS)}, got {name!r}")
    if name == "local":
        return {"name": name}
    address = rt.get("ray_address")
    _require(address is None or isinstance(address, str), "runtime.ray_address must be null, auto or host:port")
    cpus, gpus, workers = rt.get("ray_cpus", 1), rt.get("ray_gpus", 0), rt.get("ray_workers")
    for key, value in (("ray_cpus", cpus), ("ray_gpus", gpus)):
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            f"runtime.{key} must be a number >= 0, got {value!r}",
        )
    _require(cpus > 0 or gpus > 0, "runtime.ray_cpus and runtime.ray_gpus cannot both be 0")
    _require(workers is None or _is_int(workers, 1), "runtime.ray_workers must be null or an int >= 1")
    return {
        "name": name,
        "address": address,
        "cpus": float(cpus),
        "gpus": float(gpus),
        "workers": workers,
        "compile_cache": rt.get("compile_cache"),  # each worker opens the same persistent cache
        # Resolved on each worker's host as it starts.
        "keep_host_memory": (rt.get("keep_host_memory", "auto"), _per_block(rt)),
    }


def _check_output(grammar, macro, num_classes: int) -> None:
    """A clear error when the grammar's output layer cannot have one unit per class."""
    import numpy as np

    from spenser_jax.genotype import derive

    names = [m.name for m in macro]
    if "output" not in names:
        return
    rng = np.random.default_rng(0)
    units = set()
    for _ in range(50):
        text = derive(grammar, "output", rng=rng)[1].split()
        units |= {int(t.split(":")[1]) for t in text if t.startswith("num-units:")}
    if units and num_classes not in units:
        raise ConfigError(
            f"{grammar.path}: the output layer has {sorted(units)} units, the data set has "
            f"{num_classes} classes: change num-units in the grammar's output rule"
        )


def setup(cfg: Any, *, load_data: bool = True) -> Setup:
    """Validate the config and build the run's objects (grammar, space, data).

    With ``load_data=False`` nothing is read from disk but the grammar (for
    checks, and for runs with an evaluator of their own).
    """
    from spenser_jax import protocol as protocol_lib
    from spenser_jax.training import ENCODINGS

    cfg = to_plain(cfg)
    ds, evo, tr = cfg["dataset"], cfg["evolution"], cfg["training"]
    _require(_is_int(cfg["seed"], 0), f"seed must be an int >= 0, got {cfg['seed']!r}")
    source = ds.get("source", "idx")
    try:  # issue 28: an image folder's keys (dataset=folder)
        data.check_section(ds)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _require(source in data.SOURCES, f"dataset.source must be one of {list(data.SOURCES)}, got {source!r}")
    _require(
        ds["name"] in data.TIME_STEPS or source in ("tfds", "folder"),
        f"dataset.name must be one of {sorted(data.TIME_STEPS)} (or any tensorflow-datasets name with "
        f"dataset.source=tfds), got {ds['name']!r}",
    )
    _require(ds.get("tfds_name") is None or source == "tfds", "dataset.tfds_name needs dataset.source=tfds")
    _require(isinstance(ds.get("verify", True), bool), "dataset.verify must be true or false")
    encoding = tr.get("encoding", "rate")
    _require(encoding in ENCODINGS, f"training.encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    _require(_is_int(evo["generations"], 0), "evolution.generations must be an int >= 0")
    _require(_is_int(evo["offspring"], 1), "evolution.offspring must be an int >= 1")
    _require(_is_int(ds["time_steps"], 1), "dataset.time_steps must be an int >= 1")
    _require(ds["subset"] is None or _is_int(ds["subset"], 20), "dataset.subset must be null or an int >= 20")
    _require(0.0 < ds["fitness_fraction"] < 1.0, "dataset.fitness_fraction must be in (0, 1)")
    epochs = tr["epochs"]
    _require(
        _is_int(epochs, 1) or (isinstance(epochs, float) and epochs > 0),
        f"training.epochs must be a number > 0 (a fraction trains part of an epoch), got {epochs!r}",
    )
    _require(_is_int(tr["batch_size"], 1), "training.batch_size must be an int >= 1")
    _require(_is_int(tr["eval_batch_size"], 1), "training.eval_batch_size must be an int >= 1")
    for key in ("correct_rate", "incorrect_rate"):
        _require(0.0 <= tr[key] <= 1.0, f"training.{key} must be in [0, 1]")
    _require(tr["mode"] in MODES, "training.mode must be auto | stepwise | scan | layerwise")
    _require(tr["init"] in ("torch", "lecun"), "training.init must be torch | lecun")
    sr = {**_PAPER_SEARCH, **cfg.get("search", {})}
    unknown = sorted(set(sr) - set(_PAPER_SEARCH) - {"name"})
    _require(not unknown, f"unknown search keys {unknown} (known: {sorted(_PAPER_SEARCH)})")
    _require(
        isinstance(sr["inherit"], bool) and isinstance(sr["inherit_partial"], bool),
        "search.inherit and search.inherit_partial must be true or false",
    )
    _require(not sr["inherit_partial"] or sr["inherit"], "search.inherit_partial needs search.inherit")
    _require(
        sr["early_stop"] is None or (isinstance(sr["early_stop"], (int, float)) and 0 < sr["early_stop"] < 1),
        "search.early_stop must be null or a fraction in (0, 1)",
    )
    _require(
        sr["fitness_subset"] is None or _is_int(sr["fitness_subset"], 10),
        "search.fitness_subset must be null or an int >= 10",
    )
    _require(sr["min_steps"] is None or _is_int(sr["min_steps"], 1), "search.min_steps must be null or an int >= 1")
    _require(_is_int(sr["stop_min_steps"], 1), "search.stop_min_steps must be an int >= 1")
    _require(
        sr["time_steps"] is None or _is_int(sr["time_steps"], 1),
        "search.time_steps must be null (the data set's T) or an int >= 1 (at most this T while searching)",
    )
    _require(isinstance(sr["parent_continues"], bool), "search.parent_continues must be true or false")
    _require(
        not sr["parent_continues"] or sr["inherit"],
        "search.parent_continues needs search.inherit (the parent trains on from its own weights)",
    )
    _require(
        not sr["parent_continues"] or evo["offspring"] >= 2,
        "search.parent_continues needs evolution.offspring >= 2 (the parent takes one of the places)",
    )
    fit = {**_ACCURACY_FITNESS, **cfg.get("fitness", {})}
    try:
        objective = evolution.Objective(
            kind=fit["objective"],
            synops_reference=float(fit["synops_reference"]),
            synops_weight=float(fit["synops_weight"]),
            max_synops=fit["max_synops"],
            max_parameters=fit["max_parameters"],
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"fitness: {err}") from None
    strategy = evo.get("strategy", "one_plus_lambda")
    _require(strategy in STRATEGIES, f"evolution.strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    objectives, mu = (), 0
    if strategy == "nsga2":
        mu = evo.get("population", 10)
        _require(_is_int(mu, 2), f"evolution.population must be an int >= 2, got {mu!r}")
        _require(
            objective == evolution.ACCURACY,
            "evolution.strategy=nsga2 trades off fitness.objectives itself: leave fitness.objective at accuracy "
            "(scalarised and constrained are for one_plus_lambda)",
        )
        try:
            objectives = population.check_objectives(fit["objectives"] or population.DEFAULT_OBJECTIVES)
        except ValueError as err:
            raise ConfigError(f"fitness.objectives: {err}") from None
        if sr["parent_continues"]:  # search=fast sets it for (1 + λ)
            log.warning(
                "search.parent_continues is a (1 + λ) rule; nsga2 keeps its members with the scores they earned"
            )
    else:
        _require(
            fit["objectives"] is None,
            "fitness.objectives is for evolution.strategy=nsga2; one_plus_lambda ranks by fitness.objective",
        )
    en = cfg.get("energy", {})
    try:
        energy = EnergyModel(**en)
    except TypeError as err:
        raise ConfigError(f"energy: {err}") from None
    _require(isinstance(energy.memory, bool), f"energy.memory must be true or false, got {energy.memory!r}")
    _require(
        all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in dataclasses.asdict(energy).items()
            if k != "memory"
        ),
        "energy.* must be numbers >= 0 (picojoules per operation)",
    )
    try:
        grammar_path = locate(cfg["grammar"])
    except GrammarError as err:
        raise ConfigError(str(err)) from None
    grammar = load_grammar(grammar_path)
    # Skip connections: config keys, else the grammar's options, else none.
    mutation_keys = dict(cfg["mutation"])
    for key, option in (("add_connection", "add-connection"), ("remove_connection", "remove-connection")):
        if mutation_keys.get(key) is None:
            mutation_keys[key] = float(grammar.option(option, 0.0))
    levels_back = evo.get("levels_back")
    levels_back = int(grammar.option("levels-back", 1)) if levels_back is None else levels_back
    _require(_is_int(levels_back, 1), f"evolution.levels_back must be an int >= 1, got {levels_back!r}")
    try:
        mut = mutation.MutationConfig(**mutation_keys)
        macro = macro_for(grammar, macro_from_config(evo["macro"]))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"mutation / evolution.macro: {err}") from None
    if load_data:
        try:
            dataset = data.from_section(ds)  # issue 28: every source, image folders too
        except ValueError as err:
            raise ConfigError(f"dataset: {err}") from None
        try:
            splits = data.split(
                dataset,
                seed=cfg["seed"],
                subset=ds["subset"],
                fitness_fraction=ds["fitness_fraction"],
                fitness_subset=sr["fitness_subset"],
            )
        except ValueError as err:
            raise ConfigError(f"dataset.subset / search.fitness_subset: {err}") from None
        input_shape, num_classes = tuple(splits.train.images.shape[1:]), int(dataset.num_classes)
    else:
        splits, known = None, data.known_shape(ds["name"])
        _require(known is not None, f"dataset {ds['name']!r}: its shape is known only once loaded")
        input_shape, num_classes = known
    _check_output(grammar, macro, num_classes)
    space = SearchSpace(
        grammar,
        macro,
        input_shape=input_shape,
        num_classes=num_classes,
        max_attempts=int(evo["max_attempts"]),
        levels_back=levels_back,
        fixed_modules=tuple(mut.output_modules),
        log_uniform_ratio=mut.log_ratio if mut.log_uniform else None,
    )
    runtime = _runtime(cfg.get("runtime", {}))
    executor = _executor(cfg.get("runtime", {}))
    identity = {
        "seed": cfg["seed"],
        "dataset": ds["name"],
        "subset": ds["subset"],
        # "files" reads what "idx" always read: one identity for both.
        "source": "idx" if source in ("idx", "files") else source,
        "time_steps": ds["time_steps"],
        "fitness_fraction": ds["fitness_fraction"],
        "grammar_sha256": checkpoint.grammar_sha256(grammar_path),
        "offspring": evo["offspring"],
        "macro": [list(dataclasses.astuple(m)) for m in macro],
        # Switches added after the paper's runs join only when set.
        "mutation": {k: v for k, v in dataclasses.asdict(mut).items() if k != "log_uniform" or v},
        "training": {
            k: tr[k] for k in ("epochs", "batch_size", "correct_rate", "incorrect_rate", "eval_batch_size", "init")
        },
    }
    # A search protocol other than the paper's changes the numbers; the
    # paper's leaves the identity as it always was.
    # What the paper's setup leaves at its defaults stays out of the
    # identity, so the paper's runs keep theirs.
    if levels_back != 1:
        identity["levels_back"] = levels_back
    if (tuple(input_shape), num_classes) != ((28, 28, 1), 10):
        identity["input_shape"], identity["num_classes"] = list(input_shape), num_classes
    if ds.get("tfds_name") is not None:
        identity["tfds_name"] = ds["tfds_name"]
    identity.update(data.section_identity(ds))  # issue 28: an image folder's path, size, classes, test split
    if encoding != "rate":
        identity["training"]["encoding"] = encoding
    changed = {k: sr[k] for k in _PAPER_SEARCH if sr[k] != _PAPER_SEARCH[k]}
    if changed:
        identity["search"] = changed
    if objective != evolution.ACCURACY:
        identity["fitness"] = dataclasses.asdict(objective)
    if strategy == "nsga2":
        chance = population.chance_level(num_classes)
        identity["strategy"] = {
            "name": strategy,
            "population": mu,
            "objectives": list(objectives),
            # Networks at or below this accuracy are infeasible (spenser_jax.population).
            "chance": chance,
            # The hypervolume's reference point, in objective space.
            "reference": list(population.reference_point(objectives, chance)),
        }
        if "energy" in objectives:  # the constants then decide selection
            identity["strategy"]["energy"] = dataclasses.asdict(energy)
    if energy.memory and "energy" not in identity.get("strategy", {}):  # records' energy changes meaning
        identity["energy"] = dataclasses.asdict(energy)
    # Runtime settings that change the numbers (not only the speed) belong
    # to the identity too: vmapped groups round differently, and so do
    # another XLA optimisation level and XLA:CPU's loop emitters.
    rt = cfg.get("runtime", {})
    if runtime["batching"] == "vmap" or rt.get("xla_opt_level") is not None:
        identity["runtime"] = {"batching": runtime["batching"], "xla_opt_level": rt.get("xla_opt_level")}
    if not rt.get("xla_cpu_fusion_emitters", True):
        identity.setdefault("runtime", {})["xla_cpu_fusion_emitters"] = False
    if runtime["compile_unit"] != "network":  # separate programs round differently
        identity.setdefault("runtime", {})["compile_unit"] = runtime["compile_unit"]
    # JSON round trip so tuples and lists compare equal after a reload.
    identity = json.loads(json.dumps(identity))
    # The run's one training protocol, from the identity as a finished run
    # rebuilds it (checkpoint.Run.protocol); the execution order changes
    # speed only, so it is not part of the identity.
    protocol = protocol_lib.from_identity(identity, energy, mode=None if tr["mode"] == "auto" else tr["mode"])
    return Setup(
        seed=cfg["seed"],
        generations=evo["generations"],
        offspring=evo["offspring"],
        space=space,
        mutation=mut,
        splits=splits,
        protocol=protocol,
        runtime=runtime,
        identity=identity,
        grammar_path=grammar_path,
        inherit_partial=sr["inherit_partial"],
        objective=objective,
        parent_continues=sr["parent_continues"] and strategy != "nsga2",
        executor=executor,
        strategy=strategy,
        population=mu,
        objectives=objectives,
    )


# --------------------------------------------------------------------------
# Records and messages


ACTIVITY_FIELDS = (
    "spikes_per_sample",
    "input_spikes_per_sample",
    "synops_per_sample",
    "energy_pj_per_sample",
    "ann_energy_pj_per_sample",
)


def generation_record(
    generation: int,
    space: SearchSpace,
    state: evolution.State,
    candidates,
    evaluations,
    metrics: dict,
    objective: evolution.Objective = evolution.ACCURACY,
) -> dict:
    """One line of ``generations.jsonl``: the generation's metrics and every individual."""
    metrics = {k: v for k, v in metrics.items() if k != "best_index"}
    return {
        "generation": generation,
        **metrics,
        "parent": space.text(state.parent) if state.parent is not None else None,
        "individuals": [
            {
                "phenotype": space.text(c.genotype),
                "fitness": e.fitness,
                "status": e.status,
                **({"reason": e.reason} if e.reason else {}),
                "parameters": e.parameters,
                "mutations": [list(m) for m in c.mutations],
                **({"continued": True} if c.continued else {}),
                "train_samples": e.train_samples,
                "train_steps": e.train_steps,
                **({"inherited": e.inherited} if e.inherited is not None else {}),
                **({k: e.activity[k] for k in ACTIVITY_FIELDS} if e.activity else {}),
                **({"score": list(objective.score(e))} if objective.kind != "accuracy" and e.scored else {}),
                "train_seconds": e.train_seconds,
                "compile_seconds": e.compile_seconds,
            }
            for c, e in zip(candidates, evaluations)
        ],
    }


def best_record(space: SearchSpace, state: evolution.State) -> dict:
    """``best.json``: the parent after ``state.generation`` generations."""
    return {
        "generation": state.generation - 1,
        "fitness": state.parent_fitness,
        "phenotype": space.text(state.parent),
        "phenotype_json": space.phenotype(state.parent).to_json(),
        "genotype": state.parent.to_json(),
    }


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _write_config(run_dir: Path, cfg: Any, overrides: list[str] | None) -> None:
    from omegaconf import OmegaConf

    conf = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    checkpoint.atomic_write(run_dir / checkpoint.CONFIG, OmegaConf.to_yaml(conf))
    if overrides is not None:
        checkpoint.atomic_write(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))


# --------------------------------------------------------------------------
# The run


def run(
    cfg: Any, run_dir: Path, *, evaluator=None, overrides: list[str] | None = None, on_accept=None
) -> evolution.State:
    """Run (or resume) the search in ``run_dir``; returns the final state.

    A process that refuses the run directory (a bad config, another run's
    settings or grammar, a corrupt checkpoint, a directory in use) leaves it
    as it found it: the config is checked before the directory is made, and
    ``.hydra/`` and ``.lock`` are written only once the checkpoint (if any)
    was accepted.

    Args:
      cfg: the configuration (a DictConfig or the same as plain dicts).
      run_dir: the run directory; one process at a time (a second one stops
        with a :class:`~spenser_jax.checkpoint.CheckpointError`).
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
    with checkpoint.RunLock(run_dir, announce=False) as lock:
        state = checkpoint.load(run_dir, s.identity)  # refuses another run's checkpoint, untouched
        lock.announce()
        _write_config(run_dir, cfg, overrides)
        if on_accept is not None:
            on_accept()
        if state is None:
            state = (population.init if s.strategy == "nsga2" else evolution.init)(s.seed)
            if checkpoint.read_generations(run_dir):
                # Generation 0 finished its log line but not its checkpoint.
                checkpoint.truncate_generations(run_dir, 0)
            checkpoint.atomic_write(run_dir / checkpoint.RUN, json.dumps(s.identity, indent=1))
            log.info("new run in %s", run_dir)
        else:
            checkpoint.truncate_generations(run_dir, state.generation)
            checkpoint.write_pareto(run_dir)
            if state.parent is not None:  # whatever a kill left of it
                checkpoint.atomic_write(run_dir / checkpoint.BEST, json.dumps(best_record(s.space, state), indent=1))
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
                address=s.executor["address"],
                cpus=s.executor["cpus"],
                gpus=s.executor["gpus"],
                workers=s.executor["workers"],
                evaluator_options={k: v for k, v in s.runtime.items() if k != "progress"},
                compile_cache=s.executor["compile_cache"],
                keep_host_memory=s.executor["keep_host_memory"],
                progress=s.runtime["progress"],
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
    """What each candidate inherits from its parent (see :mod:`spenser_jax.inheritance`)."""
    from spenser_jax import inheritance

    def parent_of(c):  # (genotype, weights): the one parent, or the population's member it came from
        if c.parent is None:
            return state.parent, state.parent_weights
        member = state.members[c.parent]
        return member.genotype, member.weights

    out = []
    for c, p in zip(candidates, phenotypes):
        genotype, weights = parent_of(c)
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


def _loop(s: Setup, state: evolution.State, run_dir: Path, evaluator) -> evolution.State:
    started, done_here = time.perf_counter(), 0
    while state.generation < s.generations:
        g = state.generation
        t0 = time.perf_counter()
        rng = evolution.generation_rng(s.seed, g)
        if s.strategy == "nsga2":
            candidates = population.ask(rng, state, s.space, s.mutation, s.offspring, s.population)
        else:
            candidates = evolution.ask(
                rng, state, s.space, s.mutation, s.offspring, parent_continues=s.parent_continues
            )
        phenotypes = [s.space.phenotype(c.genotype) for c in candidates]
        if s.protocol.inherit and state.parent is not None and state.parent_weights is not None:
            evaluations = evaluator.evaluate(
                phenotypes, generation=g, inherited=_inheritance(s, state, candidates, phenotypes)
            )
        else:
            evaluations = evaluator.evaluate(phenotypes, generation=g)
        if s.strategy == "nsga2":
            state, metrics = population.tell(
                state, candidates, evaluations, s.objectives, s.population, s.identity["strategy"]["chance"]
            )
        else:
            state, metrics = evolution.tell(state, candidates, evaluations, s.objective)
        for i, e in enumerate(evaluations):
            if e.status == "stopped":  # by design (search.early_stop), not a failure
                log.info("generation %d, individual %d: %s", g, i, e.reason)
            elif not e.ok:
                log.warning("generation %d, individual %d failed (%s): %s", g, i, e.status, e.reason)
        record = generation_record(g, s.space, state, candidates, evaluations, metrics, s.objective)
        wall = time.perf_counter() - t0
        record["wall_seconds"] = wall
        record["evaluations_per_second"] = len(candidates) / wall if wall > 0 else 0.0
        if hasattr(evaluator, "retries"):  # a distributed executor: individuals evaluated again after a lost worker
            record["retries"] = evaluator.retries
        checkpoint.append_generation(run_dir, record)
        checkpoint.write_pareto(run_dir)
        if state.parent is not None:
            checkpoint.atomic_write(run_dir / checkpoint.BEST, json.dumps(best_record(s.space, state), indent=1))
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


#: Reported as one line ``error: ...`` (every command line's :data:`spenser_jax.errors.REPORTED`).
KNOWN_ERRORS = errors.REPORTED


class _HeldLog(logging.Handler):
    """Holds back the log file Hydra opened in the run directory until the run is accepted.

    Hydra opens ``<run dir>/evolve.log`` before the job starts. Until
    :func:`run` accepts the directory, records wait here; :meth:`release`
    writes them to the file and puts its handler back, :meth:`discard`
    closes it: a refused process writes nothing into another run's log.
    """

    def __init__(self, run_dir: Path):
        super().__init__(logging.DEBUG)
        inside = Path(run_dir).resolve()
        self.root = logging.getLogger()
        self.files = [
            h
            for h in self.root.handlers
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == inside
        ]
        self.records: list[logging.LogRecord] = []
        self.accepted = False
        for h in self.files:
            self.root.removeHandler(h)
        self.root.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def release(self) -> None:
        self.root.removeHandler(self)
        for h in self.files:
            for record in self.records:
                if record.levelno >= h.level:
                    h.handle(record)
            self.root.addHandler(h)
        self.records, self.accepted = [], True

    def discard(self) -> None:
        self.root.removeHandler(self)
        for h in self.files:
            h.close()
        self.records = []


def _remove_if_empty(run_dir: Path, logs: list[Path]) -> None:
    """Remove ``run_dir`` when it holds nothing but the empty ``logs`` Hydra opened in it.

    Hydra makes the run directory before the job starts; a process that
    refuses it (a bad config) takes it away again, with nothing in it to
    lose. Parent directories stay: whether this process made them cannot be
    told from the file system.
    """
    own = {p.resolve() for p in logs}
    try:
        entries = list(Path(run_dir).iterdir())
        if any(e.resolve() not in own or not e.is_file() or e.stat().st_size for e in entries):
            return
        for e in entries:
            e.unlink()
        Path(run_dir).rmdir()
    except OSError:  # gone already, or someone else's now: leave it
        return


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
        held = _HeldLog(run_dir)
        try:
            rt = to_plain(cfg).get("runtime", {})
            # First: the allocator's settings reach only threads that start after them (the backend's).
            if _keeps_host_memory(rt):
                scheduler.keep_host_memory()
            scheduler.enable_compile_cache(rt.get("compile_cache"))
            run(cfg, run_dir, overrides=list(hc.overrides.task), on_accept=held.release)
        except KNOWN_ERRORS as err:
            if held.accepted:  # the run's own error: its log keeps it
                log.error("error: %s", err)
            else:  # refused: the directory stays as it was (gone, if Hydra made it for this process)
                held.discard()
                _remove_if_empty(run_dir, [Path(h.baseFilename) for h in held.files])
            sys.exit(errors.fail(err))

    main()


if __name__ == "__main__":
    _hydra_main()
