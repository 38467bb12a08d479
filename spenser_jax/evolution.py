"""The (1+λ) evolution strategy as pure ask/tell functions (no I/O).

Rules we chose, where the paper is silent or the original is biased:

* **Randomness.** Generation ``g`` of a run with seed ``s`` draws everything
  (offspring genotypes, training keys) from ``(s, g)`` alone. A resumed run
  therefore needs no saved generator state and equals an uninterrupted one.
* **Comparable fitness.** Every individual of a run is scored on the same
  Fitness split with the *same* rate-coded input spikes (one fixed encoding
  key per run: common random numbers). The parent keeps the fitness it earned
  when it was evaluated; it is never re-scored with fresh noise, which in the
  original biased the parent's fitness upward every generation.
* **Selection.** The best offspring replaces the parent only if strictly
  better; ties go to the parent. Generation 0 is λ random individuals and its
  best becomes the parent.
* **Failures** (non-finite loss, out of memory, a compile error) get fitness
  :data:`FAILED_FITNESS` and never become parents. Individuals stopped early
  for a silent output keep their measured fitness and compete with it (a
  silent output scores at chance, so one becomes parent only when nothing
  better exists).
* **Compute.** The state counts the training samples every evaluation
  processed, so runs of different protocols compare by the compute spent.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from spenser_jax import mutation
from spenser_jax.fitness import FAILED_FITNESS, Evaluation
from spenser_jax.genotype import Genotype, SearchSpace


@dataclasses.dataclass(frozen=True)
class Candidate:
    genotype: Genotype
    mutations: tuple[mutation.Event, ...] = ()


@dataclasses.dataclass(frozen=True)
class State:
    """Evolutionary state after ``generation`` completed generations."""

    seed: int
    generation: int = 0
    parent: Genotype | None = None
    parent_fitness: float = FAILED_FITNESS
    parent_weights: Any = dataclasses.field(default=None, compare=False, repr=False)
    train_samples: int = 0  # training samples processed by every evaluation so far


def init(seed: int) -> State:
    return State(seed=int(seed))


def generation_rng(seed: int, generation: int) -> np.random.Generator:
    """The host generator of one generation: a function of (seed, generation) only."""
    return np.random.default_rng([int(seed), int(generation), 0x5E5E])


def ask(rng: np.random.Generator, state: State, space: SearchSpace, config: mutation.MutationConfig,
        offspring: int) -> list[Candidate]:
    """The λ individuals to evaluate next, drawn from ``rng``.

    Generation 0 (or any generation before a first success) is λ random
    individuals (:func:`spenser_jax.mutation.sample`); later ones are λ
    mutated offspring of the parent. The search passes
    ``generation_rng(state.seed, state.generation)``.
    """
    if state.parent is None:
        return [Candidate(mutation.sample(rng, space, config)) for _ in range(offspring)]
    out = []
    for _ in range(offspring):
        child, events = mutation.offspring(rng, state.parent, space, config)
        out.append(Candidate(child, tuple(events)))
    return out


def tell(state: State, candidates: Sequence[Candidate],
         evaluations: Sequence[Evaluation]) -> tuple[State, dict]:
    """Select the next parent.

    Returns:
      ``(state, metrics)``: the state after this generation, and
      ``best_fitness`` (the parent's after selection), ``mean_fitness`` (over
      offspring that were scored; :data:`FAILED_FITNESS` when all failed),
      ``generation_best_fitness``, ``best_index`` (the best offspring, -1 if
      none), ``parent_replaced``,
      ``failed`` and ``train_samples_total`` (the run's compute so far).
    """
    if len(candidates) != len(evaluations):
        raise ValueError("one evaluation per candidate")
    fitness = [e.fitness if e.scored else FAILED_FITNESS for e in evaluations]
    best = int(np.argmax(fitness)) if fitness else -1
    new = state
    replaced = best >= 0 and evaluations[best].scored and fitness[best] > state.parent_fitness
    if replaced:
        new = dataclasses.replace(state, parent=candidates[best].genotype,
                                  parent_fitness=fitness[best],
                                  parent_weights=evaluations[best].weights)
    new = dataclasses.replace(new, generation=state.generation + 1,
                              train_samples=state.train_samples + sum(e.train_samples for e in evaluations))
    scored = [f for f, e in zip(fitness, evaluations) if e.scored]
    metrics = {
        "best_fitness": new.parent_fitness,
        "mean_fitness": float(np.mean(scored)) if scored else FAILED_FITNESS,
        "generation_best_fitness": max(fitness) if fitness else FAILED_FITNESS,
        "best_index": best,
        "parent_replaced": bool(replaced),
        "failed": len(fitness) - len(scored),
        "train_samples_total": new.train_samples,
    }
    return new, metrics
