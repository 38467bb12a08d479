"""A run: its configuration checked once, its directory's files, its checkpoint, and reading it back.

:mod:`.config` (typed configuration, ``setup`` and ``build``), :mod:`.runtime`,
:mod:`.files` (atomic writes, the lock, the records), :mod:`.checkpoint` and
:mod:`.runs` (:class:`Run`, for the commands after the search). The package
offers the public names of the former ``spenser_jax.checkpoint`` until the
next release.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "checkpoint": "FORMAT VERSION load load_weights save save_weights",
    "files": "BEST CHECKPOINT CONFIG FRONT_TEST GENERATIONS LOCK PARETO RETRAINED RUN TEST CheckpointError "
    "IndividualError RunLock append_generation atomic_write grammar_sha256 pareto_archive read_generations "
    "truncate_generations write_pareto",
    "runs": "WEIGHTS Chosen Run load_run",
}
_NAMES = {name: module for module, names in _HOMES.items() for name in names.split()}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"spenser_jax.run.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'spenser_jax.run' has no attribute {name!r}")
