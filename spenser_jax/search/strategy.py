"""What every search strategy is: settings checked when built, and init / ask / tell over a state.

The loop (:func:`spenser_jax.evolve.run`) knows only this interface; the
registry (:mod:`spenser_jax.search`) finds a strategy by the name in
``evolution.strategy``. A strategy owns everything that differs between
strategies: its configuration keys and their checks, its entries in the
run's identity, its state and that state's checkpoint payload, and the
fields it adds to each individual's record.

Rules every strategy keeps:

* **Randomness.** Generation ``g`` of a run with seed ``s`` draws everything
  from :func:`generation_rng` ``(s, g)`` alone, and the state holds
  everything else, so a resumed run equals an uninterrupted one.
* **Pure.** ``ask`` and ``tell`` do no I/O and return new states.
* **One network per command.** A state has ``parent``, ``parent_fitness``
  and ``parent_weights``: the individual ``best.json``, retrain, inspect and
  export take.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from spenser_jax.genome import mutation
from spenser_jax.genome.space import Genotype, SearchSpace


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An individual to evaluate: an offspring (with the mutations that made
    it), a random one, or the parent itself training on (``continued``).
    ``parent``: in a population (:mod:`spenser_jax.search.nsga2`), the index of
    the member it was mutated from; None in (1 + λ), whose parent is the one."""

    genotype: Genotype
    mutations: tuple[mutation.Event, ...] = ()
    continued: bool = False
    parent: int | None = None


def generation_rng(seed: int, generation: int) -> np.random.Generator:
    """The host generator of one generation: a function of (seed, generation) only."""
    return np.random.default_rng([int(seed), int(generation), 0x5E5E])


def numpy_tree(tree: Any) -> Any:
    """A msgpack-restored tree of weights with numpy arrays at its leaves."""
    if isinstance(tree, dict):
        return {k: numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree) if tree is not None else None


class Strategy(abc.ABC):
    """A search strategy: a frozen dataclass of its own settings, and init / ask / tell over its state.

    The state is the strategy's own frozen value; every state has ``seed``,
    ``generation``, ``train_samples`` and the one network a command takes
    (``parent``, ``parent_fitness``, ``parent_weights``).
    """

    name: ClassVar[str]  # in evolution.strategy and the registry
    swaps_best: ClassVar[bool] = False  # its best is one network that name_best can replace

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: dict, *, offspring: int, num_classes: int, energy) -> Strategy:
        """Built from a plain configuration; a ConfigError names the key it cannot use."""

    @abc.abstractmethod
    def init(self, seed: int) -> Any: ...

    @abc.abstractmethod
    def ask(
        self, rng: np.random.Generator, state: Any, space: SearchSpace, config: mutation.MutationConfig
    ) -> list[Candidate]:
        """The candidates to evaluate next, drawn from ``rng`` alone."""

    @abc.abstractmethod
    def tell(self, state: Any, candidates: Sequence[Candidate], evaluations: Sequence) -> tuple[Any, dict]:
        """The next state, and the generation's metrics (``best_fitness``, ``best_index``, ...)."""

    @abc.abstractmethod
    def parent_of(self, state: Any, candidate: Candidate) -> tuple[Genotype | None, Any]:
        """``(genotype, weights)`` the candidate inherits from (weights None: nothing to give)."""

    def name_best(self, state: Any, candidate: Candidate, evaluation) -> Any:
        """The state with ``candidate`` (scored ``evaluation``) as its best (:mod:`spenser_jax.search.verify`)."""
        raise NotImplementedError(f"{self.name} cannot name another best")

    def identity(self) -> dict:
        """Its entries in ``run.json``: a strategy other than the default names itself in a
        ``strategy`` section (``{"strategy": {"name": ...}}``), which is how a checkpoint finds
        the strategy that reads it (:func:`spenser_jax.search.of_identity`); the paper's adds none."""
        return {}

    def record_fields(self, evaluation) -> dict:
        """Its fields in an individual's line of ``generations.jsonl``."""
        return {}

    @staticmethod
    @abc.abstractmethod
    def payload(state: Any) -> dict:
        """The state as checkpoint fields (msgpack), after ``format``, ``version`` and ``identity``."""

    @staticmethod
    @abc.abstractmethod
    def restore(payload: dict) -> Any:
        """The state of :meth:`payload`'s fields; a ValueError says what is unreadable."""
