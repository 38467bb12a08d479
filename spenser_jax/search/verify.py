"""The network a search names must learn on its own (``search.verify_best``).

With inheritance a candidate's fitness measures its lineage's weights: a
genotype can be named best although, trained from scratch, it never leaves
chance (issue 29's seed B). After the last generation, and before its
checkpoint is written, the best is trained from fresh weights with the
search's own protocol and scored; if that ends at chance, the next of the
last generation's candidates (by fitness) is tried, up to
``search.verify_best`` networks, and the first that learns becomes the run's
best (its search fitness and weights, as selection saw them). The tries are
recorded in the last generation's ``verified`` and their training counts in
``train_samples_total``; ``best.json`` carries its ``from_scratch_fitness``.
If none of them learns, the best stays and ``best.json`` says
``"learns_from_scratch": false``. A strategy whose best cannot be swapped
(NSGA-II's most accurate member is its population's) is checked, not swapped.

"At chance" is at most the Fitness split's most frequent class share
(what a silent output scores, or less) plus :data:`MARGIN`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spenser_jax.search.strategy import Candidate
from spenser_jax.training.evaluation import Evaluation

MARGIN = 0.02
PLACE = 1_000_000
"""Verification ``k`` of a generation trains with the key of place ``PLACE + k`` (apart from candidates and redraws)."""


def order(best, candidates: Sequence[Candidate], evaluations: Sequence[Evaluation], space) -> list[tuple]:
    """``(genotype, evaluation or None)``: the best first, then the generation's scored candidates by fitness."""
    seen = {space.text(best)}
    out = [(best, None)]
    ranked = sorted(range(len(candidates)), key=lambda i: (-evaluations[i].fitness, i))
    for i in ranked:
        text = space.text(candidates[i].genotype)
        if evaluations[i].scored and text not in seen:
            seen.add(text)
            out.append((candidates[i].genotype, evaluations[i]))
    return out


def verify_best(
    strategy,
    state,
    candidates: Sequence[Candidate],
    evaluations: Sequence[Evaluation],
    *,
    tries: int,
    chance: float,
    space,
    train_fresh: Callable[[object, int], Evaluation],
) -> tuple[object, list[dict]]:
    """Train the best (then the next ones) from scratch until one learns.

    Args:
      train_fresh: ``train_fresh(genotype, k)``, its evaluation from fresh
        weights with the key of place ``PLACE + k``.

    Returns:
      ``(state, tries)``: the state naming the network that learned (or the
      one before, if none did or it cannot be swapped), and one entry per
      network trained.
    """
    entries = []
    tries = tries if strategy.swaps_best else 1  # only its best can be named: check that one
    for k, (genotype, evaluation) in enumerate(order(state.parent, candidates, evaluations, space)[:tries]):
        fresh = train_fresh(genotype, PLACE + k)
        learns = fresh.scored and fresh.fitness > chance + MARGIN
        entries.append(
            {
                "phenotype": space.text(genotype),
                "search_fitness": state.parent_fitness if evaluation is None else evaluation.fitness,
                "from_scratch_fitness": fresh.fitness,
                "status": fresh.status,
                "train_samples": fresh.train_samples,
                "learns": bool(learns),
            }
        )
        if learns:
            if evaluation is not None:
                state = strategy.name_best(state, Candidate(genotype), evaluation)
            break
    return state, entries


def label(entries: Sequence[dict] | None, phenotype: str) -> dict:
    """``best.json``'s fields: what training ``phenotype`` from scratch gave, if it was tried."""
    for entry in entries or ():
        if entry["phenotype"] == phenotype:
            return {"from_scratch_fitness": entry["from_scratch_fitness"], "learns_from_scratch": entry["learns"]}
    return {}
