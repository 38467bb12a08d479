"""A run: its configuration checked once, its directory's files, its checkpoint, and reading it back.

* :mod:`.config`: the typed configuration, :func:`~.config.setup` (what a
  search needs) and :func:`~.config.build` (splits, space and protocol from
  an identity); :mod:`.runtime`: ``runtime.*`` resolved;
* :mod:`.files`: atomic writes, the lock, ``generations.jsonl`` and the
  records, the run directory's rules;
* :mod:`.checkpoint`: the evolutionary checkpoint and weight files;
* :mod:`.runs`: :func:`load_run` and :class:`Run`, for the commands after
  the search.

This package has the names of ``spenser_jax.checkpoint`` (until 0.3).
"""

from __future__ import annotations

from spenser_jax.run.checkpoint import FORMAT, VERSION, load, load_weights, save, save_weights
from spenser_jax.run.files import (
    BEST,
    CHECKPOINT,
    CONFIG,
    FRONT_TEST,
    GENERATIONS,
    LOCK,
    PARETO,
    RETRAINED,
    RUN,
    TEST,
    CheckpointError,
    IndividualError,
    RunLock,
    append_generation,
    atomic_write,
    grammar_sha256,
    pareto_archive,
    read_generations,
    truncate_generations,
    write_pareto,
)
from spenser_jax.run.runs import WEIGHTS, Chosen, Run, load_run

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CONFIG",
    "FORMAT",
    "FRONT_TEST",
    "GENERATIONS",
    "LOCK",
    "PARETO",
    "RETRAINED",
    "RUN",
    "TEST",
    "VERSION",
    "WEIGHTS",
    "CheckpointError",
    "Chosen",
    "IndividualError",
    "Run",
    "RunLock",
    "append_generation",
    "atomic_write",
    "grammar_sha256",
    "load",
    "load_run",
    "load_weights",
    "pareto_archive",
    "read_generations",
    "save",
    "save_weights",
    "truncate_generations",
    "write_pareto",
]
