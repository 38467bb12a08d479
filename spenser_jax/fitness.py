"""What the fitness of an individual is, and how a failure becomes a record.

An individual trains from scratch for ``epochs`` epochs on EvoTrain and its
fitness is its spike-count accuracy on the Fitness split. Any failure of one
individual (non-finite loss, out of memory, a compile error, an impossible
network) becomes an :class:`Evaluation` with fitness :data:`FAILED_FITNESS`
and its reason; the generation goes on.

Keys: individual ``i`` of generation ``g`` trains with
:func:`individual_key` ``= fold_in(fold_in(fold_in(key(seed), TRAIN), g), i)``;
the Fitness split is always rate-coded with one fixed key per run
(:func:`fitness_key`), so every individual is scored on the same input
spikes (see :mod:`spenser_jax.evolution`).

:class:`Trainer` is the reference way to compute it, one individual at a
time with three programs per signature (initialisation, one epoch, scoring),
as the original code does; :func:`evaluate_one` wraps it into a record.
:mod:`spenser_jax.scheduler` computes the same numbers for a whole
generation with fused programs spread over devices.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp

from spenser_jax import architecture, training
from spenser_jax.data import Arrays
from spenser_jax.phenotype import Phenotype, count_parameters
from spenser_jax.protocol import Protocol

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
    activity: dict | None = None  # spikes, SynOps and energy per sample (spenser_jax.activity)
    train_steps: int = 0  # optimizer steps applied

    @property
    def ok(self) -> bool:
        """Trained as planned and scored."""
        return self.status == "ok"

    @property
    def scored(self) -> bool:
        """Has a measured fitness (``ok`` or ``stopped``), not a failure."""
        return self.status in ("ok", "stopped")


def failed(
    status: str,
    reason: str,
    parameters: int = 0,
    train_seconds: float = 0.0,
    compile_seconds: float = 0.0,
    train_samples: int = 0,
    train_steps: int = 0,
) -> Evaluation:
    """The record of an individual that could not be scored."""
    return Evaluation(
        FAILED_FITNESS,
        status,
        reason,
        parameters,
        train_seconds,
        compile_seconds,
        train_samples=train_samples,
        train_steps=train_steps,
    )


def reason(err: BaseException) -> str:
    """One line (at most 500 characters) saying what went wrong."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def nonfinite(
    steps: int, parameters: int, train_seconds: float = 0.0, compile_seconds: float = 0.0, train_samples: int = 0
) -> Evaluation:
    return failed(
        "nonfinite_loss",
        f"loss or update became non-finite after {steps} steps",
        parameters,
        train_seconds,
        compile_seconds,
        train_samples,
        steps,
    )


def scored(
    accuracy: float,
    *,
    stopped: bool,
    steps: int,
    parameters: int,
    train_seconds: float,
    compile_seconds: float,
    weights: Any,
    train_samples: int,
    inherited: float | None = None,
    activity: dict | None = None,
) -> Evaluation:
    """The record of a scored individual (``"stopped"`` when the early check stopped it)."""
    reason = f"output silent and loss flat after {steps} steps: stopped early" if stopped else ""
    return Evaluation(
        accuracy,
        "stopped" if stopped else "ok",
        reason,
        parameters,
        train_seconds,
        compile_seconds,
        weights,
        train_samples,
        inherited,
        activity,
        steps,
    )


TrainingSettings = Protocol
"""The former name of :class:`spenser_jax.protocol.Protocol` (kept for existing imports)."""


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
    """Compiles (once per signature and data shape) and runs training and scoring, as ``protocol`` says.

    ``protocol`` (a :class:`~spenser_jax.protocol.Protocol`) goes whole to
    :func:`~spenser_jax.training.make_train_epoch` and
    :func:`~spenser_jax.training.make_score`. Compiled programs are kept
    in an LRU of :data:`COMPILED_CACHE` entries.
    """

    def __init__(self, protocol: Protocol, input_shape: tuple[int, int, int], compiler_options: dict | None = None):
        self.protocol = protocol
        self.input_shape = tuple(input_shape)
        self.compiler_options = dict(compiler_options or {})
        self._compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def _compile(self, kind: str, sig, fn, *args) -> tuple[Any, float]:
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
        epochs: int | float,
        params: Any = None,
        after_epoch=None,
        inherited: tuple[Any, Any] | None = None,
    ) -> tuple[training.TrainState, dict]:
        """Train ``epochs`` epochs from fresh weights (or ``params``, or ``inherited``).

        The host-side twin of :func:`spenser_jax.training.train_and_score`'s
        training: the same keys, the same batches, the same early check.
        ``after_epoch(epoch, metrics, state)`` runs after every epoch; when it
        returns True training ends there (the epochs run are a prefix of the
        whole: epoch ``e``'s key does not depend on how many follow).

        Returns (train state, info) where info has ``compile_seconds``,
        ``train_seconds``, ``losses``, ``steps``, ``samples``, ``nonfinite``
        and ``stopped``.
        """
        s = self.protocol
        sig, hyper = architecture.split(phenotype, s.time_steps)
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, sig, hyper, self.input_shape, init_scheme=s.init)
        if params is not None:
            state = state.replace(params=jax.tree.map(jnp.asarray, params))
        if inherited is not None:
            state = state.replace(params=training.inherit_params(state.params, inherited))
        info = {
            "compile_seconds": 0.0,
            "train_seconds": 0.0,
            "losses": [],
            "nonfinite": False,
            "stopped": False,
            "steps": 0,
            "samples": 0,
        }
        n = len(data.labels)
        for epoch, max_steps in enumerate(training.epoch_plan(epochs, n, s.batch_size, s.min_steps)):
            fn = training.make_train_epoch(
                sig, s, max_steps=max_steps, stop_check=s.stop_check(n) if epoch == 0 else None
            )
            key_epoch = jax.random.fold_in(key_epochs, epoch)
            compiled, seconds = self._compile(
                ("train", max_steps, epoch == 0 and s.stop_check(n)),
                sig,
                fn,
                state,
                hyper,
                data.images,
                data.labels,
                key_epoch,
            )
            info["compile_seconds"] += seconds
            t0 = time.perf_counter()
            state, metrics = compiled(state, hyper, data.images, data.labels, key_epoch)
            metrics = jax.device_get(metrics)
            info["train_seconds"] += time.perf_counter() - t0
            info["losses"].append(float(metrics["loss"]))
            info["steps"] += int(metrics["steps"])
            info["samples"] += int(metrics["samples"])
            if bool(metrics["nonfinite"]):
                info["nonfinite"] = True
                break
            if bool(metrics.get("stopped", False)):
                info["stopped"] = True
                break
            if after_epoch is not None and after_epoch(epoch, metrics, state):
                break
        return state, info

    def score(
        self, phenotype: Phenotype, params: Any, data: Arrays, key: jax.Array, activity: bool = False
    ) -> tuple[float, float, dict | None]:
        """(accuracy, compile seconds, activity summary or None) of ``params`` on ``data``."""
        s = self.protocol
        sig, hyper = architecture.split(phenotype, s.time_steps)
        fn = training.make_score(sig, s, batch_size=min(s.eval_batch_size, len(data.labels)), activity=activity)
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
    :func:`spenser_jax.inheritance.inherit`, or None for fresh weights.

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
        state, info = trainer.train(phenotype, key, evo_train, trainer.protocol.epochs, inherited=start)
        if info["nonfinite"]:
            return nonfinite(info["steps"], parameters, info["train_seconds"], info["compile_seconds"], info["samples"])
        t0 = time.perf_counter()
        accuracy, compile_seconds, measured = trainer.score(
            phenotype, state.params, fitness_data, score_key, activity=trainer.protocol.activity
        )
        scoring = time.perf_counter() - t0 - compile_seconds
        return scored(
            accuracy,
            stopped=info["stopped"],
            steps=info["steps"],
            parameters=parameters,
            train_seconds=info["train_seconds"] + scoring,
            compile_seconds=info["compile_seconds"] + compile_seconds,
            weights=jax.device_get(state.params),
            train_samples=info["samples"],
            inherited=None if inherited is None else inherited[2],
            activity=measured,
        )
    except Exception as err:  # noqa: BLE001 - one individual must never stop the run
        log.warning("individual failed: %s", reason(err))
        return failed("error", reason(err), parameters)


def train_again(run, phenotype: Phenotype, generation: int, index: int, splits=None) -> Any:
    """The weights of individual ``generation:index`` of ``run`` (a :class:`~spenser_jax.checkpoint.Run`),
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
        from spenser_jax import architecture, layer_programs

        sig, hyper = architecture.split(phenotype, protocol.time_steps)
        if layer_programs.supports(sig, protocol.init):
            one = (train.images[:1], train.labels[:1])  # scoring is not wanted; one sample is cheapest
            params, _ = layer_programs.train_and_score(
                sig, key, hyper, train.images, train.labels, *one, fitness_key(run.identity["seed"]), protocol
            )
            return params
    trainer = Trainer(protocol, tuple(splits.evo_train.images.shape[1:]))
    state, _ = trainer.train(phenotype, key, train, protocol.epochs)
    return jax.device_get(state.params)
