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
* **Objective.** Selection ranks by an :class:`~spenser_jax.search.objectives.Objective`
  (``fitness.objective``): accuracy alone (the paper), or accuracy traded
  against SynOps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from flax import serialization

from spenser_jax.errors import require
from spenser_jax.genome import mutation
from spenser_jax.genome.space import Genotype, SearchSpaceError
from spenser_jax.search.objectives import ACCURACY, KINDS, Objective, objective_from, pareto_front
from spenser_jax.search.strategy import Candidate, Strategy, generation_rng, numpy_tree
from spenser_jax.training.evaluation import FAILED_FITNESS

# With the names it had as spenser_jax.evolution (until the next release), its OBJECTIVES now objectives.KINDS.
__all__ = ["ACCURACY", "Candidate", "Objective", "OnePlusLambda", "State", "ask", "generation_rng", "init", "tell"]
__all__ += ["OBJECTIVES", "pareto_front"]
OBJECTIVES = KINDS


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


@dataclasses.dataclass(frozen=True)
class OnePlusLambda(Strategy):
    """The paper's (1 + λ): λ offspring of one parent, the best replaces it if strictly better.

    Attributes:
      offspring: λ (``evolution.offspring``).
      objective: what selection ranks by (``fitness.objective`` and its constants).
      parent_continues: the parent takes the last of the λ places and trains
        on (``search.parent_continues``; see :meth:`tell`).
    """

    name: ClassVar[str] = "one_plus_lambda"
    swaps_best: ClassVar[bool] = True
    offspring: int
    objective: Objective = ACCURACY
    parent_continues: bool = False

    @classmethod
    def from_config(cls, cfg: dict, *, offspring: int, num_classes: int, energy) -> OnePlusLambda:
        objective = objective_from(cfg)
        require(
            cfg.get("fitness", {}).get("objectives") is None,
            "fitness.objectives is for evolution.strategy=nsga2; one_plus_lambda ranks by fitness.objective",
        )
        return cls(offspring, objective, bool(cfg.get("search", {}).get("parent_continues", False)))

    def init(self, seed: int) -> State:
        return State(seed=int(seed))

    def ask(self, rng, state: State, space, config) -> list[Candidate]:
        """The λ individuals to evaluate next, drawn from ``rng``.

        Generation 0 (or any generation before a first success) is λ random
        individuals (:func:`spenser_jax.genome.mutation.sample`); later ones are λ
        mutated offspring of the parent. With ``parent_continues`` the parent
        itself takes the last of the λ places (it trains on from its weights and
        must earn its place again; see :func:`tell`), so a generation costs what
        it costs without. The search passes
        ``generation_rng(state.seed, state.generation)``.
        """
        if state.parent is None:
            return [Candidate(mutation.sample(rng, space, config)) for _ in range(self.offspring)]
        if self.parent_continues and self.offspring < 2:
            raise ValueError("parent_continues needs at least 2 offspring places (one is the parent's)")
        out = []
        for _ in range(self.offspring - 1 if self.parent_continues else self.offspring):
            child, events = mutation.offspring(rng, state.parent, space, config)
            out.append(Candidate(child, tuple(events)))
        if self.parent_continues:
            out.append(Candidate(state.parent, continued=True))
        return out

    def tell(self, state: State, candidates, evaluations) -> tuple[State, dict]:
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
        scores = [self.objective.score(e) for e in evaluations]
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
        if self.objective.kind != "accuracy":
            metrics["best_score"] = list(new.parent_score) if new.parent_score is not None else None
        return new, metrics

    def parent_of(self, state, candidate):
        return state.parent, state.parent_weights

    def name_best(self, state, candidate, evaluation):
        return dataclasses.replace(
            state,
            parent=candidate.genotype,
            parent_fitness=evaluation.fitness,
            parent_weights=evaluation.weights,
            parent_score=self.objective.score(evaluation),
        )

    def identity(self) -> dict:
        return {"fitness": dataclasses.asdict(self.objective)} if self.objective != ACCURACY else {}

    def record_fields(self, evaluation) -> dict:
        if self.objective.kind == "accuracy" or not evaluation.scored:
            return {}
        return {"score": list(self.objective.score(evaluation))}

    @staticmethod
    def payload(state: State) -> dict:
        weights = state.parent_weights
        return {
            "seed": state.seed,
            "generation": state.generation,
            "parent": state.parent.dumps() if state.parent is not None else "",
            "parent_fitness": state.parent_fitness,
            "weights": serialization.to_state_dict(weights) if weights is not None else {},
            "train_samples": state.train_samples,
            "parent_score": list(state.parent_score) if state.parent_score is not None else [],
        }

    @staticmethod
    def restore(payload: dict) -> State:
        try:
            # Checkpoints written before layers had uids get them here, in order.
            parent = Genotype.loads(payload["parent"]).with_uids() if payload["parent"] else None
        except (SearchSpaceError, ValueError) as err:
            raise ValueError(f"unreadable parent genotype ({err})") from None
        return State(
            seed=int(payload["seed"]),
            generation=int(payload["generation"]),
            parent=parent,
            parent_fitness=float(payload["parent_fitness"]),
            parent_weights=numpy_tree(payload["weights"] or None),
            train_samples=int(payload.get("train_samples", 0)),
            parent_score=tuple(float(x) for x in payload.get("parent_score", ())) or None,
        )


# The functions of spenser_jax.evolution, kept until the next release.
def init(seed: int) -> State:
    return State(seed=int(seed))


def ask(rng, state: State, space, config, offspring: int, parent_continues: bool = False) -> list[Candidate]:
    return OnePlusLambda(offspring, parent_continues=parent_continues).ask(rng, state, space, config)


def tell(state: State, candidates, evaluations, objective: Objective = ACCURACY) -> tuple[State, dict]:
    return OnePlusLambda(len(candidates), objective).tell(state, candidates, evaluations)
