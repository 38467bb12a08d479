"""One generation of a search: ask, evaluate (with what is inherited, or halving), redraw, tell, verify.

The command (:mod:`spenser_jax.evolve`) loops over :func:`step` and writes
what it returns; the rules between ask and tell live here, once for every
strategy: inheritance (:mod:`spenser_jax.training.inheritance`, and
``search.fresh_on_learning_change``), successive halving
(:mod:`spenser_jax.search.halving`), candidates the early check stopped
drawn again (:mod:`spenser_jax.search.redraw`), and the last generation's
best checked from scratch (:mod:`spenser_jax.search.verify`). Whatever
trains counts in ``train_samples_total``, whether selection sees it or not.
"""

from __future__ import annotations

import dataclasses
import functools

from spenser_jax.run import files
from spenser_jax.search import generation_rng, halving, redraw, verify
from spenser_jax.training import inheritance


def step(s, state, evaluator, g: int) -> tuple:
    """Generation ``g`` of setup ``s`` (:class:`~spenser_jax.run.config.Setup`) from ``state``.

    Returns ``(state, candidates, evaluations, metrics, record)``: the
    strategy's next state, what selection saw, its metrics and the
    generation's line of ``generations.jsonl`` (without its timings).
    """
    candidates = s.strategy.ask(generation_rng(s.seed, g), state, s.space, s.mutation)
    rounds = None
    if s.halving:  # replacements drawn for stopped ones (never continued by halving) train the whole budget
        phenotypes = [s.space.phenotype(c.genotype) for c in candidates]
        evaluations, rounds = halving.evaluate(evaluator, phenotypes, g, _inherited(s, state, candidates, phenotypes))
    else:
        evaluations = evaluate(s, state, evaluator, g, candidates)
    redrawn = []
    if s.redraw_stopped:
        candidates, evaluations, redrawn = redraw.replace_stopped(
            candidates,
            evaluations,
            s.redraw_stopped,
            functools.partial(_ask_again, s, state, g),
            functools.partial(evaluate, s, state, evaluator, g),
        )
    state, metrics = s.strategy.tell(state, candidates, evaluations)
    extra = sum(x["evaluation"].train_samples for x in redrawn)
    tried = None
    if s.verify_best and g == s.generations - 1:  # before its checkpoint: a kill repeats the generation
        state, tried = verify.verify_best(
            s.strategy,
            state,
            candidates,
            evaluations,
            tries=s.verify_best,
            chance=s.chance,
            space=s.space,
            train_fresh=functools.partial(_train_fresh, s, evaluator, g),
        )
        extra += sum(t["train_samples"] for t in tried)
        metrics = {**metrics, "best_fitness": state.parent_fitness}
    if extra:  # selection never saw them, but they trained: the run's compute counts them
        state = dataclasses.replace(state, train_samples=state.train_samples + extra)
        metrics = {**metrics, "train_samples_total": state.train_samples}
    if rounds is not None:
        for x in redrawn:
            rounds[x["place"]] = None
    record = files.generation_record(g, s.space, state, candidates, evaluations, metrics, s.strategy, rounds)
    if s.redraw_stopped:
        record["redrawn"] = files.redrawn_records(s.space, redrawn)
    if tried is not None:
        record["verified"] = tried
    return state, candidates, evaluations, metrics, record


def evaluate(s, state, evaluator, generation: int, candidates, indices=None) -> list:
    """The evaluations of ``candidates``, each starting from what it inherits (``indices``: their keys' places)."""
    phenotypes = [s.space.phenotype(c.genotype) for c in candidates]
    more = {} if indices is None else {"indices": indices}
    inherited = _inherited(s, state, candidates, phenotypes)
    if inherited is not None:
        more["inherited"] = inherited
    return evaluator.evaluate(phenotypes, generation=generation, **more)


def _inherited(s, state, candidates, phenotypes) -> list | None:
    if s.protocol.inherit and state.parent is not None and state.parent_weights is not None:
        return _inheritance(s, state, candidates, phenotypes)
    return None


def _inheritance(s, state, candidates, phenotypes) -> list:
    out = []
    for c, p in zip(candidates, phenotypes):
        genotype, weights = s.strategy.parent_of(state, c)
        if weights is None:  # a member that failed has nothing to give
            out.append(None)
            continue
        parent = s.space.phenotype(genotype)
        if s.fresh_on_learning_change and p.learning != parent.learning:
            # Weights trained by another optimizer would credit this offspring's learning genes
            # with what the parent's learned: its fitness must be what its own genes earn.
            out.append(inheritance.fresh(p, s.space.input_shape))
            continue
        out.append(
            inheritance.inherit(
                parent,
                s.space.origins(genotype),
                weights,
                p,
                s.space.origins(c.genotype),
                s.space.input_shape,
                partial=s.inherit_partial,
            )
        )
    return out


def _ask_again(s, state, generation: int, round_: int) -> list:
    return s.strategy.ask(redraw.redraw_rng(s.seed, generation, round_), state, s.space, s.mutation)


def _train_fresh(s, evaluator, generation: int, genotype, place: int):
    (evaluation,) = evaluator.evaluate([s.space.phenotype(genotype)], generation=generation, indices=[place])
    return evaluation
