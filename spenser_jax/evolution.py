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
* **Objective.** Selection ranks by an :class:`Objective`: accuracy alone
  (the paper), or accuracy traded against SynOps in one of the field's two
  usual forms (a scalarised score or a budget). ``fitness`` stays the
  accuracy in every record; ``score`` is what selection compared.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from spenser_jax import mutation
from spenser_jax.fitness import FAILED_FITNESS, Evaluation
from spenser_jax.genotype import Genotype, SearchSpace

OBJECTIVES = ("accuracy", "scalarised", "constrained")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What selection maximises; scores compare as tuples (lexicographically).

    Attributes:
      kind: ``"accuracy"``: the fitness alone (the paper).
        ``"scalarised"``: ``accuracy * (synops / synops_reference) **
        synops_weight`` with ``synops_weight < 0`` (AutoSNN's form, there
        with spikes: λ = -0.08); SynOps below 1 count as 1.
        ``"constrained"``: ``(budget term, accuracy)``: 1 within
        ``max_synops`` and ``max_parameters``, else minus the relative
        excess over the budget it exceeds most (``synops / max_synops -
        1``): a candidate over budget loses to any within it, and among those
        over it the one nearer the budget wins; then accuracy decides.
    """

    kind: str = "accuracy"
    synops_reference: float = 1.0e6
    synops_weight: float = -0.08
    max_synops: float | None = None
    max_parameters: int | None = None

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        if self.kind == "scalarised" and not (self.synops_reference > 0 and self.synops_weight < 0):
            raise ValueError("the scalarised objective needs synops_reference > 0 and synops_weight < 0")
        if self.kind == "constrained" and self.max_synops is None and self.max_parameters is None:
            raise ValueError("the constrained objective needs max_synops or max_parameters")
        for name in ("max_synops", "max_parameters"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be null or a number > 0, got {value!r}")

    def score(self, e: Evaluation) -> tuple[float, ...]:
        """The evaluation's score; a failure's is below every scored one."""
        if not e.scored:
            return (-math.inf,) * (2 if self.kind == "constrained" else 1)
        if self.kind == "accuracy":
            return (e.fitness,)
        synops = (e.activity or {}).get("synops_per_sample")
        if synops is None:
            raise ValueError(f"the {self.kind} objective needs measured activity (training.activity)")
        if self.kind == "scalarised":
            return (e.fitness * (max(synops, 1.0) / self.synops_reference) ** self.synops_weight,)
        excess = max(
            (synops / self.max_synops - 1.0) if self.max_synops is not None else 0.0,
            (e.parameters / self.max_parameters - 1.0) if self.max_parameters is not None else 0.0,
        )
        return (1.0 if excess <= 0 else -excess, e.fitness)


ACCURACY = Objective()


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An individual to evaluate: an offspring (with the mutations that made
    it), a random one, or the parent itself training on (``continued``).
    ``parent``: in a population (:mod:`spenser_jax.population`), the index of
    the member it was mutated from; None in (1 + λ), whose parent is the one."""

    genotype: Genotype
    mutations: tuple[mutation.Event, ...] = ()
    continued: bool = False
    parent: int | None = None


@dataclasses.dataclass(frozen=True)
class State:
    """Evolutionary state after ``generation`` completed generations."""

    seed: int
    generation: int = 0
    parent: Genotype | None = None
    parent_fitness: float = FAILED_FITNESS
    parent_weights: Any = dataclasses.field(default=None, compare=False, repr=False)
    train_samples: int = 0  # training samples processed by every evaluation so far
    parent_score: tuple[float, ...] | None = None  # the objective's score of the parent (None: none yet)


def init(seed: int) -> State:
    return State(seed=int(seed))


def generation_rng(seed: int, generation: int) -> np.random.Generator:
    """The host generator of one generation: a function of (seed, generation) only."""
    return np.random.default_rng([int(seed), int(generation), 0x5E5E])


def ask(
    rng: np.random.Generator,
    state: State,
    space: SearchSpace,
    config: mutation.MutationConfig,
    offspring: int,
    parent_continues: bool = False,
) -> list[Candidate]:
    """The λ individuals to evaluate next, drawn from ``rng``.

    Generation 0 (or any generation before a first success) is λ random
    individuals (:func:`spenser_jax.mutation.sample`); later ones are λ
    mutated offspring of the parent. With ``parent_continues`` the parent
    itself takes the last of the λ places (it trains on from its weights and
    must earn its place again; see :func:`tell`), so a generation costs what
    it costs without. The search passes
    ``generation_rng(state.seed, state.generation)``.
    """
    if state.parent is None:
        return [Candidate(mutation.sample(rng, space, config)) for _ in range(offspring)]
    if parent_continues and offspring < 2:
        raise ValueError("parent_continues needs at least 2 offspring places (one is the parent's)")
    out = []
    for _ in range(offspring - 1 if parent_continues else offspring):
        child, events = mutation.offspring(rng, state.parent, space, config)
        out.append(Candidate(child, tuple(events)))
    if parent_continues:
        out.append(Candidate(state.parent, continued=True))
    return out


def tell(
    state: State, candidates: Sequence[Candidate], evaluations: Sequence[Evaluation], objective: Objective = ACCURACY
) -> tuple[State, dict]:
    """Select the next parent: the best-scoring offspring if strictly better than the parent.

    With a candidate that is the parent training on (``continued``) and
    scored, the best of this generation's candidates becomes the parent,
    whatever score the parent had before: a lineage is judged by what it is
    now, not by one lucky measurement (the winner's curse of (1+λ) with
    noisy scores). Otherwise the parent keeps its place on ties.

    Returns:
      ``(state, metrics)``: the state after this generation, and
      ``best_fitness`` (the parent's after selection), ``mean_fitness`` (over
      offspring that were scored; :data:`FAILED_FITNESS` when all failed),
      ``generation_best_fitness``, ``best_index`` (the best-scoring
      offspring, -1 if none), ``parent_replaced``, ``failed``,
      ``train_samples_total`` (the run's compute so far), and with an
      objective other than accuracy ``best_score`` (the parent's).
    """
    if len(candidates) != len(evaluations):
        raise ValueError("one evaluation per candidate")
    fitness = [e.fitness if e.scored else FAILED_FITNESS for e in evaluations]
    scores = [objective.score(e) for e in evaluations]
    # First of equals, and the parent training on before any offspring.
    best = max(range(len(scores)), key=lambda i: (scores[i], candidates[i].continued, -i)) if scores else -1
    parent_score = state.parent_score
    if parent_score is None and state.parent is not None:  # a state from before scores were kept
        parent_score = (state.parent_fitness,)
    continued = [i for i, c in enumerate(candidates) if c.continued]
    if continued and evaluations[continued[0]].scored:
        # The parent trained on with its offspring: everyone competes on the
        # scores of this generation, and the score the parent earned once (the
        # best of λ + 1 noisy draws) is forgotten.
        parent_score = None
    new = state
    replaced = best >= 0 and evaluations[best].scored and (parent_score is None or scores[best] > parent_score)
    if replaced:
        new = dataclasses.replace(
            state,
            parent=candidates[best].genotype,
            parent_fitness=fitness[best],
            parent_weights=evaluations[best].weights,
            parent_score=scores[best],
        )
    new = dataclasses.replace(
        new,
        generation=state.generation + 1,
        train_samples=state.train_samples + sum(e.train_samples for e in evaluations),
    )
    scored = [f for f, e in zip(fitness, evaluations) if e.scored]
    metrics = {
        "best_fitness": new.parent_fitness,
        "mean_fitness": float(np.mean(scored)) if scored else FAILED_FITNESS,
        "generation_best_fitness": max(fitness) if fitness else FAILED_FITNESS,
        "best_index": best,
        # A new architecture took over (the parent training on is not one).
        "parent_replaced": bool(replaced) and not candidates[best].continued,
        "failed": len(fitness) - len(scored),
        "train_samples_total": new.train_samples,
    }
    if objective.kind != "accuracy":
        metrics["best_score"] = list(new.parent_score) if new.parent_score is not None else None
    return new, metrics


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points, each point maximised in every coordinate.

    A point is dominated when another is at least as good everywhere and
    better somewhere; equal points are all kept. Negate a coordinate to
    minimise it (SynOps, parameters).
    """
    pts = np.asarray(points, float)
    keep = []
    for i, p in enumerate(pts):
        dominated = np.any(np.all(pts >= p, axis=1) & np.any(pts > p, axis=1))
        if not dominated:
            keep.append(i)
    return keep
