"""The search strategies, found by name (``evolution.strategy``).

* ``one_plus_lambda``: the paper's (1 + λ) (:mod:`.one_plus_lambda`);
* ``nsga2``: a population over several objectives (:mod:`.nsga2`);
* ``random``: λ fresh draws a generation, the baseline (:mod:`.random_search`).

A new strategy is one module with a :class:`~.strategy.Strategy` subclass
and one line in :data:`STRATEGIES`. Nothing outside this registry asks a
strategy's name.
"""

from __future__ import annotations

from spenser_jax.errors import ConfigError
from spenser_jax.search import nsga2, one_plus_lambda, random_search
from spenser_jax.search.strategy import Candidate, Strategy, generation_rng

STRATEGIES: dict[str, type[Strategy]] = {
    "one_plus_lambda": one_plus_lambda.OnePlusLambda,
    "nsga2": nsga2.NSGA2,
    "random": random_search.RandomSearch,
}
#: What a run searched with when its identity names no strategy (the paper's, and every run before nsga2).
DEFAULT = "one_plus_lambda"

__all__ = ["DEFAULT", "STRATEGIES", "Candidate", "Strategy", "from_config", "generation_rng", "of_identity"]


def from_config(cfg: dict, **context) -> Strategy:
    """The strategy ``cfg["evolution"]["strategy"]`` names, built (and checked) from ``cfg``."""
    name = cfg["evolution"].get("strategy", DEFAULT)
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ConfigError(f"evolution.strategy must be one of {list(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name].from_config(cfg, **context)


def of_identity(identity: dict) -> type[Strategy]:
    """The strategy that wrote a run, from its identity (``run.json``'s ``strategy`` section).

    Raises:
      ValueError: a strategy this version does not know.
    """
    name = identity.get("strategy", {}).get("name", DEFAULT)
    if name not in STRATEGIES:
        raise ValueError(f"written by the strategy {name!r}, which this spenser_jax does not know")
    return STRATEGIES[name]
