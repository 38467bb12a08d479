"""A (μ + λ) population over several objectives (NSGA-II), as pure ask/tell functions (no I/O).

The paper's (1 + λ) strategy (:mod:`spenser_jax.search.one_plus_lambda`) follows one
parent: it explores one neighbourhood of the accuracy/energy trade-off. This
strategy keeps a population of μ networks that trade the objectives off
differently, as the multi-objective SNN searches do (EMO-SNAS, MONAS-ESNN):
each generation draws λ parents by binary tournament on (front rank, crowding
distance), mutates each as the (1 + λ) search does, and keeps the best μ of
the μ + λ by non-dominated sorting and crowding (Deb et al. 2002, NSGA-II).

Rules:

* **Objective space.** Every objective is minimised: accuracy enters as the
  error ``1 - fitness``, a cost (SynOps, energy, parameters, spikes per
  sample) as ``log10(max(cost, 1))``, so crowding and hypervolume count
  decades, not the largest networks' raw numbers. Ranks do not depend on the
  scale (non-dominated sorting is invariant to monotone transforms).
* **Networks at chance** (accuracy at most ``chance``: 1 / classes + 0.02)
  are infeasible, as in NSGA-II's constrained domination: every network that
  learned dominates them, and they rank after all its fronts. A silent
  network costs almost nothing, so on the cost axes alone it would sit on
  the front and fill the population with networks that do not classify.
* **Failures** (a non-finite loss, a network that cannot be built) have no
  objective values: they are dominated by every scored network and rank
  after the last front.
* **Hypervolume** is that of the non-dominated set of every network scored so
  far above chance (the state keeps it), against a fixed reference point
  whose accuracy is the chance level: it never falls, and a network at
  chance adds nothing.
* **Randomness** as every strategy's (:mod:`spenser_jax.search.strategy`).

Non-dominated sorting and hypervolume come from ``moocore`` (the reference C
implementations, used by the EMO community); crowding distance is the few
lines of Deb et al. (2002), tested against its definition.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from flax import serialization

from spenser_jax.errors import ConfigError, is_int, require
from spenser_jax.genome import mutation
from spenser_jax.genome.space import Genotype, SearchSpaceError
from spenser_jax.search.objectives import ACCURACY, objective_from
from spenser_jax.search.strategy import Candidate, Strategy, numpy_tree
from spenser_jax.snn.activity import EnergyModel
from spenser_jax.training.evaluation import FAILED_FITNESS, Evaluation

log = logging.getLogger("spenser_jax")

#: The objectives a search can trade off: the record field each reads, and its
#: reference value (the hypervolume's reference point, in the record's units).
OBJECTIVES: dict[str, tuple[str, float]] = {
    "accuracy": ("fitness", 0.0),
    "synops": ("synops_per_sample", 1e10),
    "energy": ("energy_pj_per_sample", 1e12),
    "parameters": ("parameters", 1e8),
    "spikes": ("spikes_per_sample", 1e7),
}
DEFAULT_OBJECTIVES = ("accuracy", "synops")
CHANCE_MARGIN = 0.02  # above 1 / classes: about 1.6 standard deviations of a guesser's accuracy on 600 images


def chance_level(num_classes: int) -> float:
    """The accuracy a network must exceed to be feasible (to have learned anything)."""
    return 1.0 / num_classes + CHANCE_MARGIN


def check_objectives(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or a ValueError saying what is wrong with them."""
    if isinstance(names, str):  # fitness.objectives=accuracy: one name, not its letters
        raise ValueError(f"must be a list of at least two names, e.g. [accuracy,synops], got the one name {names!r}")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"must be a list of names, e.g. [accuracy,synops], got {names!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objectives {unknown} (known: {sorted(OBJECTIVES)})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} named more than once in {list(names)}: name each objective once")
    if len(names) < 2:
        raise ValueError(f"objectives must be at least two different names, got {list(names)}")
    if "accuracy" not in names:
        raise ValueError(f"objectives must include accuracy (what a network is for), got {list(names)}")
    return names


def minimised(name: str, value: float) -> float:
    """A record's value of objective ``name`` in objective space (see the module docstring)."""
    return 1.0 - value if name == "accuracy" else math.log10(max(value, 1.0))


def values(e: Evaluation, names: Sequence[str]) -> tuple[float, ...]:
    """The evaluation's point in objective space (all minimised); ``()`` for a failure."""
    if not e.scored:
        return ()
    out = []
    for name in names:
        field = OBJECTIVES[name][0]
        if field == "fitness":
            raw = e.fitness
        elif field == "parameters":
            raw = e.parameters
        else:
            raw = (e.activity or {}).get(field)
            if raw is None:
                raise ValueError(f"the {name} objective needs measured activity (training.activity)")
        out.append(minimised(name, float(raw)))
    return tuple(out)


def reference_point(names: Sequence[str], chance: float = 0.0) -> tuple[float, ...]:
    """The hypervolume's reference point in objective space (stated in ``run.json``).

    Its accuracy is ``chance``: a network no better adds nothing.
    """
    return tuple(minimised(n, chance if n == "accuracy" else OBJECTIVES[n][1]) for n in names)


def ranks(points: Sequence[tuple[float, ...]], feasible: Sequence[bool] | None = None) -> list[int]:
    """Front of each point, 0 the non-dominated one.

    Infeasible points (``feasible[i]`` false) rank after every feasible
    front, sorted into fronts of their own; a failure (``()``) after all.
    """
    import moocore

    feasible = [True] * len(points) if feasible is None else list(feasible)
    out = [0] * len(points)
    offset = 0
    for group in (True, False):
        members = [i for i, p in enumerate(points) if p and feasible[i] == group]
        if members:
            found = moocore.pareto_rank(np.asarray([points[i] for i in members], float))
            for i, r in zip(members, found):
                out[i] = offset + int(r)
            offset += int(max(found)) + 1
    for i, p in enumerate(points):
        if not p:
            out[i] = offset
    return out


def crowding_distances(points: Sequence[tuple[float, ...]], front_of: Sequence[int]) -> list[float]:
    """Crowding distance of each point within its front (Deb et al. 2002).

    Per objective, a front's points sorted by value: the two extremes get
    infinity, every other point the gap between its neighbours over the
    front's range; the distances add over objectives. A front's failures
    (no values) get 0.
    """
    out = [0.0] * len(points)
    for front in sorted(set(front_of)):
        members = [i for i, r in enumerate(front_of) if r == front and points[i]]
        if not members:
            continue
        if len(members) <= 2:
            for i in members:
                out[i] = math.inf
            continue
        for m in range(len(points[members[0]])):
            order = sorted(members, key=lambda i: (points[i][m], i))  # noqa: B023 (used at once)
            low, high = points[order[0]][m], points[order[-1]][m]
            out[order[0]] = out[order[-1]] = math.inf
            if high == low:
                continue
            for k in range(1, len(order) - 1):
                out[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (high - low)
    return out


def nondominated(points: Sequence[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The distinct non-dominated points of ``points`` (failures left out), sorted."""
    import moocore

    unique = sorted({tuple(p) for p in points if p})
    if not unique:
        return []
    keep = moocore.is_nondominated(np.asarray(unique, float))
    return [p for p, k in zip(unique, keep) if k]


def hypervolume(points: Sequence[tuple[float, ...]], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (points beyond it add nothing)."""
    import moocore

    inside = [p for p in points if p and all(v < r for v, r in zip(p, reference))]
    if not inside:
        return 0.0
    return float(moocore.hypervolume(np.asarray(inside, float), ref=np.asarray(reference, float)))


@dataclasses.dataclass(frozen=True)
class Member:
    """A network of the population: where it was evaluated, what it scored, its trained weights."""

    genotype: Genotype
    fitness: float
    values: tuple[float, ...]  # its point in objective space; () for a failure
    born: tuple[int, int]  # (generation, index) of the evaluation that made it
    weights: Any = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class PopulationState:
    """The population after ``generation`` completed generations.

    ``ranks`` and ``crowding`` are the members' front ranks and crowding
    distances from the sorting that selected them (over the μ + λ);
    ``archive`` is the non-dominated set of every network scored so far.
    """

    seed: int
    generation: int = 0
    members: tuple[Member, ...] = ()
    ranks: tuple[int, ...] = ()
    crowding: tuple[float, ...] = ()
    archive: tuple[tuple[float, ...], ...] = ()
    train_samples: int = 0

    # The commands that take one network (retrain, inspect, export, best.json)
    # take the most accurate member.
    @property
    def best(self) -> int:
        if not self.members:
            return -1
        return max(range(len(self.members)), key=lambda i: (self.members[i].fitness, -i))

    @property
    def parent(self) -> Genotype | None:
        return self.members[self.best].genotype if self.members else None

    @property
    def parent_fitness(self) -> float:
        return self.members[self.best].fitness if self.members else FAILED_FITNESS

    @property
    def parent_weights(self) -> Any:
        return self.members[self.best].weights if self.members else None


def _better(state: PopulationState, a: int, b: int) -> bool:
    """Binary tournament: the lower front, then the larger crowding distance; ties to ``a``."""
    return (state.ranks[a], -state.crowding[a]) <= (state.ranks[b], -state.crowding[b])


@dataclasses.dataclass(frozen=True)
class NSGA2(Strategy):
    """μ networks over several objectives (the module docstring's rules).

    Attributes:
      offspring: λ (``evolution.offspring``).
      population: μ (``evolution.population``).
      objectives: what the population trades off (``fitness.objectives``).
      chance: the accuracy a network must exceed to be feasible (:func:`chance_level`).
      energy: the energy constants; they decide selection when ``energy`` is an objective.
    """

    name: ClassVar[str] = "nsga2"
    offspring: int
    population: int = 10
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    chance: float = 0.0
    energy: EnergyModel = EnergyModel()

    @classmethod
    def from_config(cls, cfg: dict, *, offspring: int, num_classes: int, energy) -> NSGA2:
        mu = cfg["evolution"].get("population", 10)
        require(is_int(mu, 2), f"evolution.population must be an int >= 2, got {mu!r}")
        require(
            objective_from(cfg) == ACCURACY,
            "evolution.strategy=nsga2 trades off fitness.objectives itself: leave fitness.objective at accuracy "
            "(scalarised and constrained are for one_plus_lambda)",
        )
        try:
            objectives = check_objectives(cfg.get("fitness", {}).get("objectives") or DEFAULT_OBJECTIVES)
        except ValueError as err:
            raise ConfigError(f"fitness.objectives: {err}") from None
        if cfg.get("search", {}).get("parent_continues"):  # search=fast sets it for (1 + λ)
            log.warning(
                "search.parent_continues is a (1 + λ) rule; nsga2 keeps its members with the scores they earned"
            )
        return cls(offspring, mu, objectives, chance_level(num_classes), energy)

    def init(self, seed: int) -> PopulationState:
        return PopulationState(seed=int(seed))

    def ask(self, rng, state: PopulationState, space, config) -> list[Candidate]:
        """The individuals to evaluate next: μ random ones first, then λ offspring of tournament winners.

        Each offspring's ``parent`` is the index of the member it was mutated
        from (its weights are what it inherits with ``search.inherit``).
        """
        if not state.members:
            return [Candidate(mutation.sample(rng, space, config)) for _ in range(self.population)]
        out = []
        for _ in range(self.offspring):
            a, b = (int(x) for x in rng.integers(len(state.members), size=2))
            winner = a if _better(state, a, b) else b
            child, events = mutation.offspring(rng, state.members[winner].genotype, space, config)
            out.append(Candidate(child, tuple(events), parent=winner))
        return out

    def tell(self, state: PopulationState, candidates, evaluations) -> tuple[PopulationState, dict]:
        """Keep the best μ of members and candidates: whole fronts first, the last one cut by crowding.

        Returns ``(state, metrics)``: ``best_fitness`` (the most accurate
        member's), ``mean_fitness`` and ``generation_best_fitness`` (over this
        generation's scored candidates), ``best_index`` (the most accurate
        candidate, -1 if none scored), ``failed``, ``train_samples_total``,
        ``hypervolume`` (of the archive), ``front_size`` (the archive's size) and
        ``population``: each member's ``generation``, ``index``, ``rank`` and
        ``crowding`` (null for an extreme of its front).
        """
        if len(candidates) != len(evaluations):
            raise ValueError("one evaluation per candidate")
        g = state.generation
        new = [
            Member(c.genotype, e.fitness if e.scored else FAILED_FITNESS, values(e, self.objectives), (g, i), e.weights)
            for i, (c, e) in enumerate(zip(candidates, evaluations))
        ]
        pool = list(state.members) + new
        points = [m.values for m in pool]
        front_of = ranks(points, [m.fitness > self.chance for m in pool])
        distance = crowding_distances(points, front_of)
        # Whole fronts while they fit, then the most isolated of the front that
        # does not; equal keys keep the older member (pool order).
        order = sorted(range(len(pool)), key=lambda i: (front_of[i], -distance[i], i))
        kept = order[: self.population]
        archive = tuple(nondominated(list(state.archive) + [m.values for m in new if m.fitness > self.chance]))
        new_state = PopulationState(
            seed=state.seed,
            generation=g + 1,
            members=tuple(pool[i] for i in kept),
            ranks=tuple(front_of[i] for i in kept),
            crowding=tuple(distance[i] for i in kept),
            archive=archive,
            train_samples=state.train_samples + sum(e.train_samples for e in evaluations),
        )
        scored = [e.fitness for e in evaluations if e.scored]
        best = max((i for i, e in enumerate(evaluations) if e.scored), key=lambda i: evaluations[i].fitness, default=-1)
        metrics = {
            "best_fitness": new_state.parent_fitness,
            "mean_fitness": float(np.mean(scored)) if scored else FAILED_FITNESS,
            "generation_best_fitness": max(scored) if scored else FAILED_FITNESS,
            "best_index": best,
            "failed": len(evaluations) - len(scored),
            "train_samples_total": new_state.train_samples,
            "hypervolume": hypervolume(archive, reference_point(self.objectives, self.chance)),
            "front_size": len(archive),
            "population": [
                {
                    "generation": m.born[0],
                    "index": m.born[1],
                    "rank": r,
                    "crowding": None if math.isinf(d) else d,
                }
                for m, r, d in zip(new_state.members, new_state.ranks, new_state.crowding)
            ],
        }
        return new_state, metrics

    def parent_of(self, state, candidate):
        if candidate.parent is None:
            return state.parent, state.parent_weights
        member = state.members[candidate.parent]
        return member.genotype, member.weights

    def identity(self) -> dict:
        section = {
            "name": self.name,
            "population": self.population,
            "objectives": list(self.objectives),
            # Networks at or below this accuracy are infeasible.
            "chance": self.chance,
            # The hypervolume's reference point, in objective space.
            "reference": list(reference_point(self.objectives, self.chance)),
        }
        if "energy" in self.objectives:  # the constants then decide selection
            section["energy"] = dataclasses.asdict(self.energy)
        return {"strategy": section}

    @staticmethod
    def payload(state: PopulationState) -> dict:
        # msgpack keeps infinite crowding distances and nested lists as they are.
        return {
            "strategy": NSGA2.name,
            "seed": state.seed,
            "generation": state.generation,
            "train_samples": state.train_samples,
            "members": {
                str(k): {
                    "genotype": m.genotype.dumps(),
                    "fitness": m.fitness,
                    "values": list(m.values),
                    "born": list(m.born),
                    "weights": serialization.to_state_dict(m.weights) if m.weights is not None else {},
                }
                for k, m in enumerate(state.members)
            },
            "ranks": list(state.ranks),
            "crowding": list(state.crowding),
            "archive": {str(k): list(p) for k, p in enumerate(state.archive)},
        }

    @staticmethod
    def restore(payload: dict) -> PopulationState:
        try:
            members = []
            for k in range(len(payload["members"])):
                m = payload["members"][str(k)]
                members.append(
                    Member(
                        genotype=Genotype.loads(m["genotype"]),
                        fitness=float(m["fitness"]),
                        values=tuple(float(v) for v in m["values"]),
                        born=(int(m["born"][0]), int(m["born"][1])),
                        weights=numpy_tree(m["weights"] or None),
                    )
                )
            archive = payload["archive"]
            return PopulationState(
                seed=int(payload["seed"]),
                generation=int(payload["generation"]),
                members=tuple(members),
                ranks=tuple(int(r) for r in payload["ranks"]),
                crowding=tuple(float(d) for d in payload["crowding"]),
                archive=tuple(tuple(float(v) for v in archive[str(k)]) for k in range(len(archive))),
                train_samples=int(payload["train_samples"]),
            )
        except (KeyError, TypeError, ValueError, SearchSpaceError) as err:
            raise ValueError(f"unreadable population ({type(err).__name__}: {err})") from None


# The functions of spenser_jax.population, kept until the next release.
def init(seed: int) -> PopulationState:
    return PopulationState(seed=int(seed))


def ask(rng, state: PopulationState, space, config, offspring: int, population: int) -> list[Candidate]:
    return NSGA2(offspring, population).ask(rng, state, space, config)


def tell(state, candidates, evaluations, objectives, population: int, chance: float = 0.0):
    return NSGA2(len(candidates), population, tuple(objectives), chance).tell(state, candidates, evaluations)
