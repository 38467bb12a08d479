"""Fitness of phenotypes: train on EvoTrain, score on Fitness, never crash.

:class:`Evaluator` turns a generation's phenotypes into
:class:`~spenser_jax.evolution.Evaluation` records. Each individual trains
from scratch for ``epochs`` epochs (one jitted call per epoch) and is scored
by spike-count accuracy on the Fitness split. Any failure of one individual
(non-finite loss, out of memory, a compile error) becomes a recorded failure
with its reason; the generation goes on.

Keys: individual ``i`` of generation ``g`` trains with
``fold_in(fold_in(key(seed), g), i)``; the Fitness split is always rate-coded
with one fixed key per run, so every individual is scored on the same input
spikes (see :mod:`spenser_jax.evolution`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from spenser_jax import network, training
from spenser_jax.data import Arrays, Splits
from spenser_jax.evolution import FAILED_FITNESS, Evaluation
from spenser_jax.phenotype import Phenotype, count_parameters

log = logging.getLogger("spenser_jax")

_FITNESS_STREAM = 0x0F17  # fold_in tag of the fixed Fitness-encoding key
_TRAIN_STREAM = 0x7EA1


def enable_compile_cache(path: str | os.PathLike | None) -> None:
    """Persist compiled XLA programs in ``path`` (None: leave JAX's setting)."""
    if not path:
        return
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    time_steps: int
    epochs: int = 1
    batch_size: int = 64
    correct_rate: float = 1.0
    incorrect_rate: float = 0.0
    eval_batch_size: int = 1000
    mode: str = "auto"
    init: str = "torch"

    @property
    def network_mode(self) -> str | None:
        return None if self.mode == "auto" else self.mode


def on_device(arrays: Arrays) -> Arrays:
    """uint8 images and int32 labels on the default device (once per run)."""
    return Arrays(jnp.asarray(arrays.images, dtype=jnp.uint8), jnp.asarray(arrays.labels, dtype=jnp.int32))


class Trainer:
    """Compiles (once per signature) and runs training and scoring."""

    def __init__(self, settings: TrainingSettings, input_shape: tuple[int, int, int]):
        self.settings = settings
        self.input_shape = tuple(input_shape)
        self._compiled: dict[tuple, Any] = {}

    def _compile(self, kind: str, sig, fn, *args) -> tuple[Any, float]:
        key = (kind, sig, tuple((a.shape, str(a.dtype)) for a in args[2:4]))
        if key in self._compiled:
            return self._compiled[key], 0.0
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        self._compiled[key] = compiled
        return compiled, time.perf_counter() - t0

    def train(self, phenotype: Phenotype, key: jax.Array, data: Arrays, epochs: int,
              params: Any = None, progress=None) -> tuple[Any, dict]:
        """Train ``epochs`` epochs from fresh weights (or ``params``).

        Returns (train state, info) where info has ``compile_seconds``,
        ``train_seconds``, ``losses`` and ``nonfinite``.
        """
        s = self.settings
        sig, genes = network.split(phenotype)
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, sig, genes, self.input_shape, init_scheme=s.init)
        if params is not None:
            state = state.replace(params=jax.tree.map(jnp.asarray, params))
        fn = training.make_train_epoch(sig, time_steps=s.time_steps, batch_size=s.batch_size,
                                       correct_rate=s.correct_rate, incorrect_rate=s.incorrect_rate,
                                       mode=s.network_mode)
        info = {"compile_seconds": 0.0, "train_seconds": 0.0, "losses": [], "nonfinite": False, "steps": 0}
        for epoch in range(epochs):
            key_epoch = jax.random.fold_in(key_epochs, epoch)
            compiled, seconds = self._compile("train", sig, fn, state, genes, data.images, data.labels, key_epoch)
            info["compile_seconds"] += seconds
            t0 = time.perf_counter()
            state, metrics = compiled(state, genes, data.images, data.labels, key_epoch)
            metrics = jax.device_get(metrics)
            info["train_seconds"] += time.perf_counter() - t0
            info["losses"].append(float(metrics["loss"]))
            info["steps"] += int(metrics["steps"])
            if progress is not None:
                progress(epoch, metrics)
            if bool(metrics["nonfinite"]):
                info["nonfinite"] = True
                break
        return state, info

    def score(self, phenotype: Phenotype, params: Any, data: Arrays, key: jax.Array) -> tuple[float, float]:
        """(accuracy, compile seconds) of ``params`` on ``data``."""
        s = self.settings
        sig, genes = network.split(phenotype)
        fn = training.make_evaluate(sig, time_steps=s.time_steps, batch_size=min(s.eval_batch_size, len(data.labels)),
                                    mode=s.network_mode)
        compiled, seconds = self._compile("eval", sig, fn, params, genes, data.images, data.labels, key)
        return float(compiled(params, genes, data.images, data.labels, key)["accuracy"]), seconds


class Evaluator:
    """Evaluates one generation after the other, one individual at a time."""

    def __init__(self, splits: Splits, *, seed: int, input_shape: tuple[int, int, int],
                 progress: bool = True, **settings):
        self.settings = TrainingSettings(**settings)
        self.trainer = Trainer(self.settings, input_shape)
        self.evo_train = on_device(splits.evo_train)
        self.fitness = on_device(splits.fitness)
        root = jax.random.key(seed)
        self.train_root = jax.random.fold_in(root, _TRAIN_STREAM)
        self.fitness_key = jax.random.fold_in(root, _FITNESS_STREAM)
        self.input_shape = tuple(input_shape)
        self.progress = progress

    def individual_key(self, generation: int, index: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.train_root, generation), index)

    def evaluate_one(self, phenotype: Phenotype, key: jax.Array) -> Evaluation:
        parameters = count_parameters(phenotype, self.input_shape)
        try:
            state, info = self.trainer.train(phenotype, key, self.evo_train, self.settings.epochs)
            if info["nonfinite"]:
                return Evaluation(FAILED_FITNESS, "nonfinite_loss",
                                  f"loss or update became non-finite after {info['steps']} steps",
                                  parameters, info["train_seconds"], info["compile_seconds"])
            t0 = time.perf_counter()
            accuracy, compile_seconds = self.trainer.score(phenotype, state.params, self.fitness, self.fitness_key)
            scoring = time.perf_counter() - t0 - compile_seconds
            return Evaluation(accuracy, "ok", "", parameters, info["train_seconds"] + scoring,
                              info["compile_seconds"] + compile_seconds, jax.device_get(state.params))
        except Exception as err:  # one individual must never stop the run
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
            log.warning("individual failed: %s", reason)
            return Evaluation(FAILED_FITNESS, "error", reason, parameters)

    def evaluate(self, phenotypes: Sequence[Phenotype], generation: int) -> list[Evaluation]:
        items = list(enumerate(phenotypes))
        if self.progress:
            from tqdm import tqdm
            items = tqdm(items, desc=f"generation {generation}", unit="ind", leave=False)
        return [self.evaluate_one(p, self.individual_key(generation, i)) for i, p in items]
