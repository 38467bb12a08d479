"""What selection compares: the (1 + λ) search's :class:`Objective`, and Pareto fronts.

Selection ranks by an :class:`Objective`: accuracy alone (the paper), or
accuracy traded against SynOps in one of the field's two usual forms (a
scalarised score or a budget). ``fitness`` stays the accuracy in every
record; ``score`` is what selection compared. A population search trades
several objectives off instead (:mod:`spenser_jax.search.nsga2`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from spenser_jax.errors import ConfigError
from spenser_jax.training.evaluation import Evaluation

KINDS = ("accuracy", "scalarised", "constrained")


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
        if self.kind not in KINDS:
            raise ValueError(f"objective must be one of {KINDS}, got {self.kind!r}")
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


def objective_from(cfg: dict) -> Objective:
    """The :class:`Objective` of a configuration's ``fitness`` section (a ConfigError if unusable)."""
    fit = {**dataclasses.asdict(ACCURACY), **cfg.get("fitness", {})}
    try:
        return Objective(
            kind=fit.get("objective", ACCURACY.kind),
            synops_reference=float(fit["synops_reference"]),
            synops_weight=float(fit["synops_weight"]),
            max_synops=fit["max_synops"],
            max_parameters=fit["max_parameters"],
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"fitness: {err}") from None


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
