"""Successive halving within a generation (``search.halving``): all train half, the better half train on.

A multi-fidelity rule for the strategy's λ candidates of one generation,
opt-in (adopted by a protocol only where a benchmark shows it wins):

* **Round 1.** Every candidate trains ``floor(B / 2)`` optimizer steps of the
  protocol's budget of ``B`` (:meth:`~spenser_jax.training.protocol.Protocol.part`,
  at least one step), from its parent's weights or fresh as it would
  otherwise, with its usual training key (its batches are the first ones
  the whole budget would have drawn), and is scored on the Fitness split.
* **Round 2.** The better ``floor(λ / 2)`` of those that trained as planned
  (status ``"ok"``: a failed or stopped candidate never continues), by
  round-1 fitness, ties to the earlier place (:func:`survivors`), train on
  from their own round-1 weights (the inheritance path, every parameter
  kept: :func:`~spenser_jax.training.inheritance.own`) for ``B`` more steps,
  the run's own protocol (its programs are the ones a run without halving
  compiles), and are scored again. Their training key is their round-1 key
  with :data:`ROUND_TAG` folded in: a function of (seed, generation, place)
  alone, so a resumed run equals an uninterrupted one.

The strategy sees, for a candidate that trained on, its round-2 result with
the compute of both rounds summed (``train_samples``, ``train_steps``,
``train_seconds``, ``compile_seconds``) and the share it inherited from its
parent in round 1 (:func:`combined`); a round-2 failure stands (the network
diverged when trained on). For the others, their round-1 result.

**Compute.** ``λ·floor(B/2) + floor(λ/2)·B``, which is ``λ·B`` (a generation
without halving) when λ and B are even, and otherwise short of it by exactly
``(λ mod 2)·B/2 + (B mod 2)·λ/2`` steps (less than one candidate's budget
plus λ/2 steps). Rounding down both ways means halving never trains more
than the run it is compared with, as long as every candidate trains as
planned. The early check breaks that: it judges at ``search.stop_min_steps``
steps, which a round-1 budget shorter than that never reaches, so silent
candidates that a run without halving stops there train their whole round 1
(and a continued one may stop in round 2). Compare runs by the records'
``train_samples_total``.
"""

from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Sequence

from spenser_jax.training import inheritance
from spenser_jax.training.evaluation import Evaluation

ROUND_TAG = 0x4A1F
"""Folded into a candidate's training key for round 2 (round 1 uses the key itself)."""
HALF = fractions.Fraction(1, 2)
"""Round 1's part of the budget."""


def survivors(first: Sequence[Evaluation]) -> list[int]:
    """The places (ascending) that train on: the better ``floor(λ / 2)`` of ``"ok"`` round-1 results, ties to the
    earlier place; fewer when fewer trained as planned."""
    ok = sorted((i for i, e in enumerate(first) if e.ok), key=lambda i: (-first[i].fitness, i))
    return sorted(ok[: len(first) // 2])


def round_steps(steps: int, candidates: int) -> tuple[int, int, int]:
    """``(round-1 steps each, candidates training on, total steps)`` of a generation of ``candidates`` at a budget of
    ``steps`` when every one trains as planned."""
    first, on = max(1, steps // 2), candidates // 2
    return first, on, candidates * first + on * steps


def combined(first: Evaluation, second: Evaluation) -> Evaluation:
    """What the strategy sees of a candidate that trained on: its round-2 result, the compute of both rounds."""
    return dataclasses.replace(
        second,
        train_samples=first.train_samples + second.train_samples,
        train_steps=first.train_steps + second.train_steps,
        train_seconds=first.train_seconds + second.train_seconds,
        compile_seconds=first.compile_seconds + second.compile_seconds,
        inherited=first.inherited,
    )


def evaluate(evaluator, phenotypes: Sequence, generation: int, inherited: Sequence | None = None):
    """One generation's evaluations under successive halving, and each candidate's ``halving`` record.

    Args:
      evaluator: an :class:`~spenser_jax.scheduler.Evaluator` (or anything
        whose ``evaluate`` takes ``inherited``, ``indices``, ``budget`` and
        ``tag`` as it does); its protocol must inherit.
      phenotypes: the generation's, in order.
      generation: its number (the training keys').
      inherited: per phenotype, what it inherits from its parent (None: all fresh).

    Returns:
      ``(evaluations, rounds)``: what the strategy sees, and per candidate
      ``{"round": 1 | 2, "first_fitness": its round-1 fitness}``.
    """
    phenotypes = list(phenotypes)
    first = evaluator.evaluate(phenotypes, generation=generation, inherited=inherited, budget=HALF)
    on = survivors(first)
    out = list(first)
    if on:
        second = evaluator.evaluate(
            [phenotypes[i] for i in on],
            generation=generation,
            inherited=[inheritance.own(first[i].weights) for i in on],
            indices=on,
            tag=ROUND_TAG,
        )
        for i, e in zip(on, second):
            out[i] = combined(first[i], e)
    rounds = [{"round": 2 if i in on else 1, "first_fitness": e.fitness} for i, e in enumerate(first)]
    return out, rounds
