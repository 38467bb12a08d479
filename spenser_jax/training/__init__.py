"""Training and scoring an individual: the layer between the networks (``snn``) and a generation (``scheduler``).

One core (:mod:`.core`): a pure step, epoch and score that take the run's
:class:`~.protocol.Protocol` whole, and the one walk of the protocol's
epoch plan (budgets, the early check, halting after a failure) with the one
zero score of a failed individual. It is compiled or driven three ways, all
computing the same numbers:

* :func:`.core.train_and_score`: one fused program per signature (the
  scheduler's ``batching=map``/``vmap``);
* :class:`.evaluation.Trainer`: the host calls one jitted epoch after the
  other (``batching=none``, retraining, the public ``sj.train``);
* :mod:`.blocks`: small programs per block of layers shared across
  architectures, driven from the host (``runtime.compile_unit=layer``).

Beside them: :mod:`.protocol` (how a run trains, built once), :mod:`.optim`
(the learning unit as optax), :mod:`.inheritance` (a parent's weights for an
offspring) and :mod:`.evaluation` (an individual's record, its failures and
keys).

The names below load their module on first use: :mod:`spenser_jax.
architecture` imports :mod:`.optim`, so this package must not import the
core (which imports the architecture) when it is itself imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_CORE = (
    "ENCODINGS",
    "batches",
    "LOSS_FLAT",
    "TrainState",
    "create_train_state",
    "encode",
    "keep_if",
    "make_score",
    "make_train_epoch",
    "score",
    "train_and_score",
    "train_epoch",
    "train_step",
    "unit_loss",
    "no_score",
    "evaluation_metrics",
)
_PROTOCOL = ("Protocol", "budget_steps", "epoch_plan", "from_identity", "walk_plan")
_NAMES = {**dict.fromkeys(_CORE, "core"), **dict.fromkeys(_PROTOCOL, "protocol"), "inherit_params": "inheritance"}

__all__ = sorted(_NAMES)


_MODULES = ("block_programs", "blocks", "core", "evaluation", "inheritance", "optim", "protocol")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
