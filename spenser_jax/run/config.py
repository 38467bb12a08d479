"""A run's configuration, checked once at the edge, and what a run is built from.

Only this module reads the configuration (Hydra's, or the same as plain
dicts): each section becomes a frozen value that checks itself
(:class:`Dataset`, :class:`Training`, :class:`Evolution`, :class:`Search`;
the strategy checks its own keys, :mod:`spenser_jax.search`), every
configuration string (``"auto"``, ``"all"``, ``null``) is resolved here, and
the run's identity (``run.json``: the settings that determine results) is
written down. :func:`build` makes the splits, the search space and the
protocol from an identity: the search (:func:`setup`) and the commands after
it (:meth:`spenser_jax.run.runs.Run.space`, ``.splits``) call the same one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from spenser_jax import data, search
from spenser_jax.errors import ConfigError, is_int, is_number, require
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace, macro_for, macro_from_config
from spenser_jax.grammar import GrammarError, load_grammar, locate
from spenser_jax.run.files import grammar_sha256
from spenser_jax.run.runtime import executor_options, runtime_options
from spenser_jax.snn.activity import EnergyModel

MODES = ("auto", "stepwise", "scan", "layerwise")


def to_plain(cfg: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core always brings omegaconf
        pass
    return cfg


class _Section:
    @classmethod
    def from_dict(cls, section: dict):
        """The section's known keys (Hydra refuses others; :class:`Search` names them)."""
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section})


@dataclasses.dataclass(frozen=True)
class Dataset(_Section):
    """``dataset.*``: which data, where, and how it is split."""

    name: str
    data_dir: str | None = None
    source: str = "idx"
    tfds_name: str | None = None
    verify: bool = True
    subset: int | None = None
    time_steps: int = 10
    fitness_fraction: float = 0.3
    # An image folder's keys (dataset=folder; spenser_jax.data.folder) and where decoded images are cached.
    path: str | None = None
    image_size: Any = None
    test_fraction: float | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        require(self.source in data.SOURCES, f"dataset.source must be one of {list(data.SOURCES)}, got {self.source!r}")
        try:  # first: a folder's missing time_steps says more than "must be an int"
            data.check_section(self.section())
        except ValueError as err:
            raise ConfigError(str(err)) from None
        require(
            isinstance(self.name, str) and (self.name in data.TIME_STEPS or self.source in ("tfds", "folder")),
            f"dataset.name must be one of {sorted(data.TIME_STEPS)} (or any tensorflow-datasets name with "
            f"dataset.source=tfds), got {self.name!r}",
        )
        require(self.tfds_name is None or self.source == "tfds", "dataset.tfds_name needs dataset.source=tfds")
        require(isinstance(self.verify, bool), "dataset.verify must be true or false")
        require(is_int(self.time_steps, 1), "dataset.time_steps must be an int >= 1")
        require(self.subset is None or is_int(self.subset, 20), "dataset.subset must be null or an int >= 20")
        fraction = self.fitness_fraction
        require(is_number(fraction) and 0.0 < fraction < 1.0, "dataset.fitness_fraction must be in (0, 1)")

    def section(self) -> dict:
        """The section as :func:`spenser_jax.data.from_section` reads it (the folder keys only where set)."""
        unset = {k for k in data.FOLDER_KEYS if getattr(self, k) is None}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unset}

    def identity(self) -> dict:
        return {
            "dataset": self.name,
            "subset": self.subset,
            # "files" reads what "idx" always read: one identity for both.
            "source": "idx" if self.source in ("idx", "files") else self.source,
            "time_steps": self.time_steps,
            "fitness_fraction": self.fitness_fraction,
        }


@dataclasses.dataclass(frozen=True)
class Training(_Section):
    """``training.*``: how every individual trains (:class:`spenser_jax.training.protocol.Protocol`)."""

    epochs: int | float = 1
    batch_size: int = 64
    correct_rate: float = 1.0
    incorrect_rate: float = 0.0
    eval_batch_size: int = 1000
    mode: str = "auto"
    init: str = "torch"
    encoding: str = "rate"

    def __post_init__(self):
        from spenser_jax.training import ENCODINGS

        require(
            self.encoding in ENCODINGS, f"training.encoding must be one of {list(ENCODINGS)}, got {self.encoding!r}"
        )
        epochs = self.epochs
        require(
            is_int(epochs, 1) or (isinstance(epochs, float) and epochs > 0),
            f"training.epochs must be a number > 0 (a fraction trains part of an epoch), got {epochs!r}",
        )
        require(is_int(self.batch_size, 1), "training.batch_size must be an int >= 1")
        require(is_int(self.eval_batch_size, 1), "training.eval_batch_size must be an int >= 1")
        for key in ("correct_rate", "incorrect_rate"):
            require(
                is_number(getattr(self, key)) and 0.0 <= getattr(self, key) <= 1.0, f"training.{key} must be in [0, 1]"
            )
        require(self.mode in MODES, "training.mode must be auto | stepwise | scan | layerwise")
        require(self.init in ("torch", "lecun"), "training.init must be torch | lecun")

    def identity(self) -> dict:
        keys = ("epochs", "batch_size", "correct_rate", "incorrect_rate", "eval_batch_size", "init")
        return {k: getattr(self, k) for k in keys} | ({"encoding": self.encoding} if self.encoding != "rate" else {})


@dataclasses.dataclass(frozen=True)
class Evolution(_Section):
    """``evolution.*`` that every strategy reads (a strategy checks its own keys, e.g. ``population``)."""

    generations: int
    offspring: int
    macro: Any = ()
    max_attempts: int = 1000
    levels_back: int | None = None

    def __post_init__(self):
        require(is_int(self.generations, 0), "evolution.generations must be an int >= 0")
        require(is_int(self.offspring, 1), "evolution.offspring must be an int >= 1")
        require(is_int(self.max_attempts, 1), "evolution.max_attempts must be an int >= 1")


@dataclasses.dataclass(frozen=True)
class Search(_Section):
    """``search.*``: what a candidate costs (``search=paper``: these defaults; ``search=fast``)."""

    inherit: bool = False
    inherit_partial: bool = False
    early_stop: float | None = None
    fitness_subset: int | None = None
    min_steps: int | None = None
    stop_min_steps: int = 20
    time_steps: int | None = None
    parent_continues: bool = False
    fresh_on_learning_change: bool = False
    redraw_stopped: int = 0
    verify_best: int = 0
    halving: bool = False

    @classmethod
    def from_dict(cls, section: dict) -> Search:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(known) - {"name"})
        require(not unknown, f"unknown search keys {unknown} (known: {sorted(known)})")
        return super().from_dict(section)

    def __post_init__(self):
        require(
            isinstance(self.inherit, bool) and isinstance(self.inherit_partial, bool),
            "search.inherit and search.inherit_partial must be true or false",
        )
        require(not self.inherit_partial or self.inherit, "search.inherit_partial needs search.inherit")
        early = self.early_stop
        require(
            early is None or (isinstance(early, (int, float)) and 0 < early < 1),
            "search.early_stop must be null or a fraction in (0, 1)",
        )
        require(
            self.fitness_subset is None or is_int(self.fitness_subset, 10),
            "search.fitness_subset must be null or an int >= 10",
        )
        require(self.min_steps is None or is_int(self.min_steps, 1), "search.min_steps must be null or an int >= 1")
        require(is_int(self.stop_min_steps, 1), "search.stop_min_steps must be an int >= 1")
        require(
            self.time_steps is None or is_int(self.time_steps, 1),
            "search.time_steps must be null (the data set's T) or an int >= 1 (at most this T while searching)",
        )
        for key in ("parent_continues", "fresh_on_learning_change"):  # two rules about what an offspring inherits
            require(isinstance(getattr(self, key), bool), f"search.{key} must be true or false")
            require(not getattr(self, key) or self.inherit, f"search.{key} needs search.inherit")
        require(is_int(self.redraw_stopped, 0), "search.redraw_stopped must be an int >= 0 (rounds a generation)")
        require(is_int(self.verify_best, 0), "search.verify_best must be an int >= 0 (networks tried at the end)")
        require(
            not self.redraw_stopped or self.early_stop is not None,
            "search.redraw_stopped needs search.early_stop (it redraws what the early check stopped)",
        )
        require(isinstance(self.halving, bool), "search.halving must be true or false")
        require(
            not self.halving or self.inherit,
            "search.halving needs search.inherit (the better half trains on from its own round-1 weights)",
        )

    def identity(self) -> dict:
        """The settings other than the paper's (none: the paper's runs keep their identity)."""
        paper = Search()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(paper, f.name)
        }


def energy_model(section: dict) -> EnergyModel:
    """``energy.*`` as an :class:`~spenser_jax.snn.activity.EnergyModel`, checked."""
    try:
        energy = EnergyModel(**section)
    except TypeError as err:
        raise ConfigError(f"energy: {err}") from None
    require(isinstance(energy.memory, bool), f"energy.memory must be true or false, got {energy.memory!r}")
    require(
        all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in dataclasses.asdict(energy).items()
            if k != "memory"
        ),
        "energy.* must be numbers >= 0 (picojoules per operation)",
    )
    return energy


def _check_output(grammar, macro, num_classes: int) -> None:
    """A clear error when the grammar's output layer cannot have one unit per class."""
    import numpy as np

    from spenser_jax.genome.space import derive

    grammar.require(m.name for m in macro)  # a macro module without its rule: a GrammarError, not a KeyError
    if "output" not in [m.name for m in macro]:
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


# --------------------------------------------------------------------------
# What a run is built from its identity


@dataclasses.dataclass(frozen=True)
class Built:
    """A run's data splits (None when not loaded), search space and protocol (made when first asked for)."""

    splits: data.Splits | None
    space: SearchSpace
    identity: dict
    config: dict

    @functools.cached_property
    def protocol(self):
        return protocol_of(self.identity, self.config)


def load_dataset(identity: dict, config: dict, data_dir=None) -> data.Dataset:
    """The run's whole data set (``data_dir`` overrides the config's ``dataset.data_dir``)."""
    try:
        return data.from_identity(identity, config.get("dataset", {}), data_dir)
    except ValueError as err:
        raise ConfigError(f"dataset: {err}") from None


def protocol_of(identity: dict, config: dict, **overrides):
    """The run's :class:`~spenser_jax.training.protocol.Protocol`: its identity's, with the config's energy
    constants."""
    from spenser_jax.training.protocol import from_identity

    return from_identity(identity, EnergyModel(**config.get("energy", {})), **overrides)


def build(identity: dict, config: dict, grammar, *, dataset=None, load_data: bool = True, data_dir=None) -> Built:
    """The splits, the search space and the protocol a run's identity describes.

    Args:
      identity: ``run.json``: what determines results.
      config: the resolved configuration, for what the identity does not
        hold (where the data is, ``evolution.max_attempts``, the energy
        constants).
      grammar: the run's grammar, loaded (its SHA-256 is the identity's).
      dataset: the data set, already loaded; else it is loaded here when
        ``load_data`` (``data_dir`` overrides the config's).
    """
    splits = None
    if dataset is not None or load_data:
        dataset = dataset if dataset is not None else load_dataset(identity, config, data_dir)
        try:
            splits = data.split(
                dataset,
                seed=identity["seed"],
                subset=identity["subset"],
                fitness_fraction=identity["fitness_fraction"],
                fitness_subset=identity.get("search", {}).get("fitness_subset"),
            )
        except ValueError as err:
            raise ConfigError(f"dataset.subset / search.fitness_subset: {err}") from None
    switches = {**dataclasses.asdict(mutation.MutationConfig()), **identity.get("mutation", {})}
    space = SearchSpace(
        grammar,
        macro_from_config(identity["macro"]),
        input_shape=tuple(identity.get("input_shape", (28, 28, 1))),
        num_classes=identity.get("num_classes", 10),
        max_attempts=int(config.get("evolution", {}).get("max_attempts", 1000)),
        levels_back=identity.get("levels_back", 1),
        fixed_modules=tuple(switches["output_modules"]),
        log_uniform_ratio=switches["log_ratio"] if switches["log_uniform"] else None,
    )
    return Built(splits, space, identity, config)


# --------------------------------------------------------------------------
# The search's setup


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a search needs, built once from the config (:func:`setup`)."""

    seed: int
    generations: int
    strategy: search.Strategy
    space: SearchSpace
    mutation: mutation.MutationConfig
    splits: data.Splits | None
    protocol: Any  # protocol.Protocol: how every individual trains and is scored
    runtime: dict  # Evaluator keyword arguments, resolved
    executor: dict  # where individuals evaluate (results do not depend on it)
    identity: dict
    grammar_path: Path
    inherit_partial: bool = False
    fresh_on_learning_change: bool = False
    redraw_stopped: int = 0
    verify_best: int = 0
    chance: float = 0.1  # what a network that learned nothing scores on the Fitness split
    halving: bool = False


def setup(cfg: Any, *, load_data: bool = True) -> Setup:
    """Check the config and build the run's objects (grammar, space, data, strategy, identity).

    With ``load_data=False`` nothing is read from disk but the grammar (for
    checks, and for runs with an evaluator of their own).
    """
    cfg = to_plain(cfg)
    require(is_int(cfg["seed"], 0), f"seed must be an int >= 0, got {cfg['seed']!r}")
    ds = Dataset.from_dict(cfg["dataset"])
    tr = Training.from_dict(cfg["training"])
    evo = Evolution.from_dict(cfg["evolution"])
    sr = Search.from_dict(cfg.get("search", {}))
    require(
        not sr.parent_continues or evo.offspring >= 2,
        "search.parent_continues needs evolution.offspring >= 2 (the parent takes one of the places)",
    )
    require(not sr.halving or evo.offspring >= 2, "search.halving needs evolution.offspring >= 2 (half train on)")
    energy = energy_model(cfg.get("energy", {}))
    rt = cfg.get("runtime", {})
    executor = executor_options(rt)  # before any data is read: Ray missing is a config error, found at once
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
    levels_back = int(grammar.option("levels-back", 1)) if evo.levels_back is None else evo.levels_back
    require(is_int(levels_back, 1), f"evolution.levels_back must be an int >= 1, got {levels_back!r}")
    try:
        mut = mutation.MutationConfig(**mutation_keys)
        macro = macro_for(grammar, macro_from_config(evo.macro))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"mutation / evolution.macro: {err}") from None
    try:
        dataset = data.from_section(ds.section()) if load_data else None
    except ValueError as err:
        raise ConfigError(f"dataset: {err}") from None
    if dataset is not None:
        input_shape, num_classes = tuple(dataset.train_images.shape[1:]), int(dataset.num_classes)
    else:
        known = data.known_shape(ds.name)
        require(known is not None, f"dataset {ds.name!r}: its shape is known only once loaded")
        input_shape, num_classes = known
    _check_output(grammar, macro, num_classes)
    runtime = runtime_options(rt)
    strategy = search.from_config(cfg, offspring=evo.offspring, num_classes=num_classes, energy=energy)
    identity = {
        "seed": cfg["seed"],
        **ds.identity(),
        "grammar_sha256": grammar_sha256(grammar_path),
        "offspring": evo.offspring,
        "macro": [list(dataclasses.astuple(m)) for m in macro],
        # Switches added after the paper's runs join only when set.
        "mutation": {k: v for k, v in dataclasses.asdict(mut).items() if k != "log_uniform" or v},
        "training": tr.identity(),
    }
    # What the paper's setup leaves at its defaults stays out of the
    # identity, so the paper's runs keep theirs.
    if levels_back != 1:
        identity["levels_back"] = levels_back
    if (tuple(input_shape), num_classes) != ((28, 28, 1), 10):
        identity["input_shape"], identity["num_classes"] = list(input_shape), num_classes
    if ds.tfds_name is not None:
        identity["tfds_name"] = ds.tfds_name
    identity.update(data.section_identity(ds.section()))  # an image folder's path, size, classes and test split
    if sr.identity():  # a search protocol other than the paper's changes the numbers
        identity["search"] = sr.identity()
    identity.update(strategy.identity())
    if energy.memory and "energy" not in identity.get("strategy", {}):  # records' energy changes meaning
        identity["energy"] = dataclasses.asdict(energy)
    # Runtime settings that change the numbers (not only the speed) belong
    # to the identity too: vmapped groups round differently, and so do
    # another XLA optimisation level and XLA:CPU's loop emitters.
    if runtime["batching"] == "vmap" or rt.get("xla_opt_level") is not None:
        identity["runtime"] = {"batching": runtime["batching"], "xla_opt_level": rt.get("xla_opt_level")}
    if not rt.get("xla_cpu_fusion_emitters", True):
        identity.setdefault("runtime", {})["xla_cpu_fusion_emitters"] = False
    if runtime["compile_unit"] != "network":  # separate programs round differently
        identity.setdefault("runtime", {})["compile_unit"] = runtime["compile_unit"]
    # JSON round trip so tuples and lists compare equal after a reload.
    identity = json.loads(json.dumps(identity))
    built = build(identity, cfg, grammar, dataset=dataset, load_data=False)
    # The execution order changes speed only, so it is not part of the identity.
    protocol = dataclasses.replace(built.protocol, mode=None if tr.mode == "auto" else tr.mode)
    return Setup(
        seed=cfg["seed"],
        generations=evo.generations,
        strategy=strategy,
        space=built.space,
        mutation=mut,
        splits=built.splits,
        protocol=protocol,
        runtime=runtime,
        executor=executor,
        identity=identity,
        grammar_path=grammar_path,
        inherit_partial=sr.inherit_partial,
        fresh_on_learning_change=sr.fresh_on_learning_change,
        redraw_stopped=sr.redraw_stopped,
        verify_best=sr.verify_best,
        chance=_chance(built.splits, num_classes),
        halving=sr.halving,
    )


def _chance(splits, num_classes: int) -> float:
    """The most frequent class's share of the Fitness split (1 / classes before data is loaded)."""
    if splits is None:
        return 1.0 / num_classes
    return float(np.bincount(np.asarray(splits.fitness.labels)).max() / len(splits.fitness.labels))
