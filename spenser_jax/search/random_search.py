"""Random search: every candidate a fresh draw from the grammar, the baseline a search must beat.

The question a neural-architecture search answers first (Li & Talwalkar
2019) is whether it finds better networks than drawing as many from the
search space at random, at equal compute. ``evolution.strategy=random``
draws every generation's λ candidates as generation 0 of (1 + λ) does
(:func:`spenser_jax.genome.mutation.sample`), trains and scores them with
the same evaluator, budgets (any ``search.*`` protocol), records and resume,
and keeps the best it has seen as the run's one network (``best.json``).

A fresh draw has no parent, so nothing is inherited and no parent trains on
(``search.parent_continues``, which ``search=fast`` sets for (1 + λ), does
not apply). Its state, selection and checkpoint are (1 + λ)'s: the best so
far replaces the kept one only when strictly better.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

from spenser_jax.errors import require
from spenser_jax.genome import mutation
from spenser_jax.search.objectives import objective_from
from spenser_jax.search.one_plus_lambda import OnePlusLambda, State
from spenser_jax.search.strategy import Candidate

log = logging.getLogger("spenser_jax")


@dataclasses.dataclass(frozen=True)
class RandomSearch(OnePlusLambda):
    """λ fresh random individuals a generation; the best ever seen is kept."""

    name: ClassVar[str] = "random"

    @classmethod
    def from_config(cls, cfg: dict, *, offspring: int, num_classes: int, energy) -> RandomSearch:
        require(
            cfg.get("fitness", {}).get("objectives") is None,
            "fitness.objectives is for evolution.strategy=nsga2; random ranks by fitness.objective",
        )
        if cfg.get("search", {}).get("parent_continues"):  # search=fast sets it for (1 + λ)
            log.info("search.parent_continues does not apply to random search: a fresh draw has no parent")
        return cls(offspring, objective_from(cfg))

    def ask(self, rng, state: State, space, config) -> list[Candidate]:
        return [Candidate(mutation.sample(rng, space, config)) for _ in range(self.offspring)]

    def parent_of(self, state, candidate):
        return None, None  # a fresh draw inherits nothing

    def identity(self) -> dict:
        return {**super().identity(), "strategy": {"name": self.name}}
