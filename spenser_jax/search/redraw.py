"""Candidates the early check stopped are drawn again (``search.redraw_stopped``).

Most networks drawn from Grammar 2 never learn in a cheap budget
(``benchmarks/chance_causes.py``: 72 % of random draws end at chance on an
MNIST subset, and the early check stopped 77 % of those after 20 steps).
A stopped candidate's fitness is the share of one class: selection learns
nothing from it, and NSGA-II even keeps it, a silent network being the
cheapest there is. With ``search.redraw_stopped = k`` the strategy is asked
again for each stopped place, up to ``k`` rounds a generation, and the
replacement trains in its place: the generation still scores λ candidates,
and the stopped ones cost what the early check let them train. They are
recorded under the generation's ``redrawn`` and their training counts in
``train_samples_total``.

A replacement is the candidate in the same place of a whole new ask (a
fresh draw, a new mutant of the same parent, another tournament), from a
generator of its own (:func:`redraw_rng`), and trains with the key of place
``λ · (round + 1) + i`` of the generation: a resumed run draws and trains
the same replacements. The parent training on (``continued``) is never
replaced: it has learned before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spenser_jax.search.strategy import Candidate
from spenser_jax.training.evaluation import Evaluation


def redraw_rng(seed: int, generation: int, round_: int) -> np.random.Generator:
    """The host generator of one redraw round (a stream apart from :func:`~.strategy.generation_rng`'s)."""
    return np.random.default_rng([int(seed), int(generation), 0x4ED4, int(round_)])


def replace_stopped(
    candidates: Sequence[Candidate],
    evaluations: Sequence[Evaluation],
    rounds: int,
    ask: Callable[[int], list[Candidate]],
    evaluate: Callable[[list[Candidate], list[int]], list[Evaluation]],
) -> tuple[list[Candidate], list[Evaluation], list[dict]]:
    """Replace stopped candidates by new ones, ``rounds`` times at most.

    Args:
      ask: ``ask(round)``, a whole new ask of the strategy for that round.
      evaluate: ``evaluate(candidates, indices)``, their evaluations, trained
        with the keys of those places of the generation.

    Returns:
      ``(candidates, evaluations, redrawn)``: the generation as selection
      sees it, and one entry per replaced candidate (``round``, ``place``,
      the ``candidate`` and its ``evaluation``), in the order replaced.
    """
    candidates, evaluations = list(candidates), list(evaluations)
    redrawn = []
    for r in range(rounds):
        stopped = [
            i for i, (c, e) in enumerate(zip(candidates, evaluations)) if e.status == "stopped" and not c.continued
        ]
        if not stopped:
            break
        fresh = ask(r)
        new = [fresh[i] for i in stopped]
        scored = evaluate(new, [len(candidates) * (r + 1) + i for i in stopped])
        for i, c, e in zip(stopped, new, scored, strict=True):
            redrawn.append({"round": r, "place": i, "candidate": candidates[i], "evaluation": evaluations[i]})
            candidates[i], evaluations[i] = c, e
    return candidates, evaluations, redrawn
