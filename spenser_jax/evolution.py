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
  :data:`FAILED_FITNESS` and never become parents.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from spenser_jax import mutation
from spenser_jax.genotype import Genotype, SearchSpace

FAILED_FITNESS = -1.0


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What evaluating one individual produced.

    ``weights`` (the trained parameters, host arrays) are kept for the parent
    only and never logged.
    """

    fitness: float
    status: str = "ok"  # "ok" | "nonfinite_loss" | "error"
    reason: str = ""
    parameters: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    weights: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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


def init(seed: int) -> State:
    return State(seed=int(seed))


def generation_rng(seed: int, generation: int) -> np.random.Generator:
    """The host generator of one generation: a function of (seed, generation) only."""
    return np.random.default_rng([int(seed), int(generation), 0x5E5E])


def ask(state: State, space: SearchSpace, config: mutation.MutationConfig,
        offspring: int) -> list[Candidate]:
    """The λ individuals to evaluate in generation ``state.generation``."""
    rng = generation_rng(state.seed, state.generation)
    if state.parent is None:  # generation 0, or every earlier one failed
        return [Candidate(space.random_individual(rng)) for _ in range(offspring)]
    out = []
    for _ in range(offspring):
        child, events = mutation.offspring(rng, state.parent, space, config)
        out.append(Candidate(child, tuple(events)))
    return out


def tell(state: State, space: SearchSpace, candidates: Sequence[Candidate],
         evaluations: Sequence[Evaluation]) -> tuple[State, dict]:
    """Select the next parent. Returns the new state and the generation's record."""
    if len(candidates) != len(evaluations):
        raise ValueError("one evaluation per candidate")
    fitness = [e.fitness if e.ok else FAILED_FITNESS for e in evaluations]
    best = int(np.argmax(fitness)) if fitness else -1
    new = state
    replaced = best >= 0 and evaluations[best].ok and fitness[best] > state.parent_fitness
    if replaced:
        new = dataclasses.replace(state, parent=candidates[best].genotype,
                                  parent_fitness=fitness[best],
                                  parent_weights=evaluations[best].weights)
    new = dataclasses.replace(new, generation=state.generation + 1)
    ok = [f for f, e in zip(fitness, evaluations) if e.ok]
    record = {
        "generation": state.generation,
        "best_fitness": new.parent_fitness,
        "mean_fitness": float(np.mean(ok)) if ok else FAILED_FITNESS,
        "generation_best_fitness": max(fitness) if fitness else FAILED_FITNESS,
        "parent_replaced": bool(replaced),
        "failed": len(fitness) - len(ok),
        "parent": space.text(new.parent) if new.parent is not None else None,
        "individuals": [
            {"phenotype": space.text(c.genotype),
             "fitness": f,
             "status": e.status,
             **({"reason": e.reason} if e.reason else {}),
             "parameters": e.parameters,
             "mutations": [list(m) for m in c.mutations],
             "train_seconds": e.train_seconds,
             "compile_seconds": e.compile_seconds}
            for c, e, f in zip(candidates, evaluations, fitness)],
    }
    return new, record
