"""Evaluating one individual: its record, how a failure becomes one, its keys, and the host loop.

An individual trains from scratch (or from inherited weights) as the run's
:class:`~spenser_jax.training.protocol.Protocol` says, on EvoTrain, and its
fitness is its spike-count accuracy on the Fitness split. Any failure of one
individual (non-finite loss, out of memory, a compile error, an impossible
network) becomes an :class:`Evaluation` with fitness :data:`FAILED_FITNESS`
and its reason; the generation goes on. :func:`record` is the one mapping
from a training's metrics to a record, whichever way it was compiled.

Keys: individual ``i`` of generation ``g`` trains with
:func:`individual_key` ``= fold_in(fold_in(fold_in(key(seed), TRAIN), g), i)``;
the Fitness split is always rate-coded with one fixed key per run
(:func:`fitness_key`), so every individual is scored on the same input
spikes (see :mod:`spenser_jax.search.one_plus_lambda`).

:class:`Trainer` drives the core (:mod:`spenser_jax.training.core`) from the
host, one individual at a time with three programs per signature
(initialisation, one epoch, scoring), as the original code does: the
reference the fused programs of :mod:`spenser_jax.scheduler` equal bit for
bit, and the way retraining and the public ``sj.train`` train.
:func:`evaluate_one` wraps it into a record.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp

from spenser_jax.data import Arrays
from spenser_jax.genome.phenotype import Phenotype, count_parameters
from spenser_jax.snn import architecture
from spenser_jax.training import blocks, core, inheritance
from spenser_jax.training.protocol import Protocol, walk_plan

log = logging.getLogger("spenser_jax")

FAILED_FITNESS = -1.0
STATUSES = ("ok", "stopped", "nonfinite_loss", "error")

_FITNESS_STREAM = 0x0F17  # fold_in tag of the fixed Fitness-encoding key
_TRAIN_STREAM = 0x7EA1

COMPILED_CACHE = 64
"""Compiled programs a :class:`Trainer` keeps (least recently used go first)."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What evaluating one individual produced.

    ``weights`` (the trained parameters, host arrays) are kept for the parent
    only and never logged. ``train_samples`` counts the training samples
    processed (a sample once per pass), the common measure of compute;
    ``train_steps`` the optimizer steps they made.
    A ``"stopped"`` individual was scored after its output stayed silent
    through the early check: its fitness is real (at chance, typically),
    and it trained less.
    """

    fitness: float
    status: str = "ok"  # one of STATUSES
    reason: str = ""
    parameters: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    weights: Any = dataclasses.field(default=None, compare=False, repr=False)
    train_samples: int = 0
    inherited: float | None = None  # share of the parameters that started from the parent's
    activity: dict | None = None  # spikes, SynOps and energy per sample (spenser_jax.snn.activity)
    train_steps: int = 0  # optimizer steps applied

    @property
    def ok(self) -> bool:
        """Trained as planned and scored."""
        return self.status == "ok"

    @property
    def scored(self) -> bool:
        """Has a measured fitness (``ok`` or ``stopped``), not a failure."""
        return self.status in ("ok", "stopped")


def failed(status: str, reason: str, parameters: int = 0, train_seconds: float = 0.0, **fields) -> Evaluation:
    """The record of an individual that could not be scored (``fields``: more of :class:`Evaluation`'s)."""
    return Evaluation(FAILED_FITNESS, status, reason, parameters, train_seconds, **fields)


def reason(err: BaseException) -> str:
    """One line (at most 500 characters) saying what went wrong."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def record(
    metrics: dict,
    *,
    parameters: int,
    train_seconds: float,
    compile_seconds: float,
    weights: Any = None,
    inherited: float | None = None,
    activity: dict | None = None,
) -> Evaluation:
    """The record of a trained individual from its metrics (host values, as :func:`~spenser_jax.training.core.
    evaluation_metrics` names them): ``"nonfinite_loss"``, ``"stopped"`` by the early check, or ``"ok"``."""
    steps = int(metrics["steps"])
    common = dict(
        parameters=parameters,
        train_seconds=train_seconds,
        compile_seconds=compile_seconds,
        train_samples=int(metrics["samples"]),
        train_steps=steps,
    )
    if bool(metrics["nonfinite"]):
        return failed("nonfinite_loss", f"loss or update became non-finite after {steps} steps", **common)
    stopped = bool(metrics["stopped"])
    why = f"output silent and loss flat after {steps} steps: stopped early" if stopped else ""
    status = "stopped" if stopped else "ok"
    return Evaluation(
        float(metrics["accuracy"]), status, why, weights=weights, inherited=inherited, activity=activity, **common
    )


def on_device(arrays: Arrays) -> Arrays:
    """uint8 images and int32 labels on the default device (once per run)."""
    return Arrays(jnp.asarray(arrays.images, dtype=jnp.uint8), jnp.asarray(arrays.labels, dtype=jnp.int32))


def train_root(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), _TRAIN_STREAM)


def fitness_key(seed: int) -> jax.Array:
    """The one key that rate-codes the Fitness split for every individual of a run."""
    return jax.random.fold_in(jax.random.key(seed), _FITNESS_STREAM)


def individual_key(seed: int, generation: int, index: int) -> jax.Array:
    """The training key of individual ``index`` of ``generation``."""
    return jax.random.fold_in(jax.random.fold_in(train_root(seed), generation), index)


class Trainer:
    """Trains and scores as ``protocol`` says from the host, one jitted epoch after the other.

    Compiles once per signature, data shape and epoch budget
    (:func:`~spenser_jax.training.core.make_train_epoch`,
    :func:`~spenser_jax.training.core.make_score`) and keeps the compiled
    programs in an LRU of :data:`COMPILED_CACHE` entries. To train another
    budget, make a trainer of ``dataclasses.replace(protocol, epochs=...)``.
    """

    def __init__(self, protocol: Protocol, input_shape: tuple[int, int, int], compiler_options: dict | None = None):
        self.protocol = protocol
        self.input_shape = tuple(input_shape)
        self.compiler_options = dict(compiler_options or {})
        self._compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def _compile(self, kind: tuple, sig, fn, *args) -> tuple[Any, float]:
        key = (kind, sig, tuple((a.shape, str(a.dtype)) for a in args[2:4]))
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key], 0.0
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile(compiler_options=self.compiler_options or None)
        self._compiled[key] = compiled
        while len(self._compiled) > COMPILED_CACHE:
            self._compiled.popitem(last=False)
        return compiled, time.perf_counter() - t0

    def train(
        self,
        phenotype: Phenotype,
        key: jax.Array,
        data: Arrays,
        *,
        params: Any = None,
        after_epoch=None,
        inherited: tuple[Any, Any] | None = None,
    ) -> tuple[core.TrainState, dict]:
        """Train the protocol's epochs from fresh weights (or ``params``, or ``inherited``).

        The host's walk of :func:`spenser_jax.training.protocol.walk_plan`: the
        same keys, batches, early check and halting as
        :func:`~spenser_jax.training.core.train_and_score`'s.
        ``after_epoch(epoch, metrics, state)`` runs after every epoch that
        neither failed nor stopped; when it returns True training ends there.

        Returns (train state, info) where info has ``compile_seconds``,
        ``train_seconds``, ``losses`` (one per epoch run), ``steps``,
        ``samples``, ``nonfinite`` and ``stopped``.
        """
        s = self.protocol
        sig, hyper = architecture.split(phenotype, s.time_steps)
        key_init, key_epochs = jax.random.split(key)
        state = core.create_train_state(key_init, sig, hyper, self.input_shape, init_scheme=s.init)
        if params is not None:
            state = state.replace(params=jax.tree.map(jnp.asarray, params))
        if inherited is not None:
            state = state.replace(params=inheritance.inherit_params(state.params, inherited))
        info = {"compile_seconds": 0.0, "train_seconds": 0.0}

        def run_epoch(state, epoch, max_steps, stop_check):
            fn = core.make_train_epoch(sig, s, max_steps=max_steps, stop_check=stop_check)
            key_epoch = jax.random.fold_in(key_epochs, epoch)
            args = (state, hyper, data.images, data.labels, key_epoch)
            compiled, seconds = self._compile(("train", max_steps, stop_check), sig, fn, *args)
            info["compile_seconds"] += seconds
            t0 = time.perf_counter()
            state, metrics = compiled(*args)
            metrics = jax.device_get(metrics)
            info["train_seconds"] += time.perf_counter() - t0
            return state, metrics

        state, failed, stopped, per_epoch = walk_plan(
            s, len(data.labels), state, run_epoch, traced=False, after_epoch=after_epoch
        )
        info.update(
            losses=[float(x) for x in per_epoch["loss"]],
            nonfinite=bool(failed),
            stopped=bool(stopped),
            steps=int(per_epoch["steps"].sum()),
            samples=int(per_epoch["samples"].sum()),
        )
        return state, info

    def score(
        self, phenotype: Phenotype, params: Any, data: Arrays, key: jax.Array, activity: bool = False
    ) -> tuple[float, float, dict | None]:
        """(accuracy, compile seconds, activity summary or None) of ``params`` on ``data``."""
        s = self.protocol
        sig, hyper = architecture.split(phenotype, s.time_steps)
        fn = core.make_score(sig, s, activity=activity)
        compiled, seconds = self._compile(("eval", activity), sig, fn, params, hyper, data.images, data.labels, key)
        result = compiled(params, hyper, data.images, data.labels, key)
        summary = s.summarise(sig, self.input_shape, result["activity"], len(data.labels)) if activity else None
        return float(result["accuracy"]), seconds, summary


def evaluate_one(
    trainer: Trainer,
    phenotype: Phenotype,
    key: jax.Array,
    evo_train: Arrays,
    fitness_data: Arrays,
    score_key: jax.Array,
    inherited: tuple[Any, Any, float] | None = None,
) -> Evaluation:
    """Evaluate one individual alone (three programs, blocking: the original's way).

    ``inherited``: ``(values, mask, share)`` from
    :func:`spenser_jax.training.inheritance.inherit`, or None for fresh weights.

    Never raises for a problem of the individual: an impossible network, a
    non-finite loss or any error while compiling or running it becomes a
    failed :class:`Evaluation` with its reason.
    """
    try:
        parameters = count_parameters(phenotype, trainer.input_shape)
    except Exception as err:  # noqa: BLE001 - an impossible network fails alone
        return failed("error", reason(err))
    try:
        start = None if inherited is None else inherited[:2]
        state, info = trainer.train(phenotype, key, evo_train, inherited=start)
        seconds = {"train_seconds": info["train_seconds"], "compile_seconds": info["compile_seconds"]}
        if info["nonfinite"]:
            return record(info, parameters=parameters, **seconds)
        t0 = time.perf_counter()
        accuracy, compile_seconds, measured = trainer.score(
            phenotype, state.params, fitness_data, score_key, activity=trainer.protocol.activity
        )
        return record(
            {**info, "accuracy": accuracy},
            parameters=parameters,
            train_seconds=seconds["train_seconds"] + time.perf_counter() - t0 - compile_seconds,
            compile_seconds=seconds["compile_seconds"] + compile_seconds,
            weights=jax.device_get(state.params),
            inherited=None if inherited is None else inherited[2],
            activity=measured,
        )
    except Exception as err:  # noqa: BLE001 - one individual must never stop the run
        log.warning("individual failed: %s", reason(err))
        return failed("error", reason(err), parameters)


def train_again(run, phenotype: Phenotype, generation: int, index: int, splits=None) -> Any:
    """The weights of individual ``generation:index`` of ``run`` (a :class:`~spenser_jax.run.Run`),
    trained again from its key exactly as the search trained it.

    The run's records keep no weights but the best's, so ``inspect`` and
    ``export`` rebuild any other individual's this way. ``splits``: the run's
    splits when already loaded (``run.splits()``).
    """
    splits = run.splits() if splits is None else splits
    protocol = run.protocol()
    key = individual_key(run.identity["seed"], generation, index)
    train = on_device(splits.evo_train)
    if run.identity.get("runtime", {}).get("compile_unit") == "layer":  # the search's programs, the search's rounding
        sig, hyper = architecture.split(phenotype, protocol.time_steps)
        if blocks.supports(sig, protocol.init):
            one = (train.images[:1], train.labels[:1])  # scoring is not wanted; one sample is cheapest
            params, _ = blocks.train_and_score(
                sig, key, hyper, train.images, train.labels, *one, fitness_key(run.identity["seed"]), protocol
            )
            return params
    state, _ = Trainer(protocol, tuple(splits.evo_train.images.shape[1:])).train(phenotype, key, train)
    return jax.device_get(state.params)
