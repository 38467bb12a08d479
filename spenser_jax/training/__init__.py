"""Training and scoring an individual: the layer between the networks and a generation (``scheduler``).

One core (:mod:`.core`, and :func:`.protocol.walk_plan`), compiled or driven
three ways that compute the same numbers: one fused program per signature
(:func:`.core.train_and_score`), the host calling one jitted epoch after the
other (:class:`.evaluation.Trainer`), and programs per block of layers
(:mod:`.blocks`). Names load their module on first use:
:mod:`spenser_jax.snn.architecture` imports :mod:`.optim`, so importing this
package must not import the core.
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
