"""The training protocol: how every individual of a run is trained and scored, and the one walk of its plan.

One :class:`Protocol` is built per run from its identity (:func:`from_identity`)
and passed whole to everything that trains or scores (the core, the host
loop, the programs per block, the scheduler, retrain, inspect and export); a
finished run rebuilds it from ``run.json`` (:meth:`spenser_jax.run.Run.protocol`).
Frozen and hashable, so it is a static argument of ``jax.jit`` and a cache key.
The rules of a budget live here once: :func:`epoch_plan`,
:meth:`Protocol.stop_check` and :func:`walk_plan`, which every way of
training calls, inside one program or from the host.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax.snn import activity as activity_lib
from spenser_jax.snn import architecture


def epoch_plan(epochs: int | float, n: int, batch_size: int, min_steps: int | None = None) -> tuple[int | None, ...]:
    """Batches to train in each epoch: None for a whole epoch, else a count.

    ``epochs`` may be fractional: 2.5 is two whole epochs and the first half
    of a third one's shuffle (``ceil(0.5 * batches)`` batches, at least one).

    ``min_steps`` is a floor on a budget of less than one epoch: such a
    budget trains ``max(ceil(epochs * batches), min_steps)`` batches, and
    never more than the whole epoch (where an epoch is shorter than the
    floor, the budget is that epoch). A fraction means different step counts
    at different data set and batch sizes; the floor keeps a small run from
    judging networks after a handful of steps. Budgets of one epoch or more
    are left as they are.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise ValueError(f"epochs must be a number > 0, got {epochs!r}")
    if min_steps is not None and (isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1):
        raise ValueError(f"min_steps must be None or an int >= 1, got {min_steps!r}")
    whole = int(epochs)
    plan: list[int | None] = [None] * whole
    if epochs > whole:
        batches = -(-n // batch_size)
        steps = math.ceil((epochs - whole) * batches - 1e-9)
        if whole == 0 and min_steps is not None:
            steps = max(steps, min_steps)
        steps = max(1, min(batches, steps))
        plan.append(None if whole == 0 and steps == batches and min_steps is not None else steps)
    return tuple(plan)


def budget_steps(plan: tuple[int | None, ...], n: int, batch_size: int) -> int:
    """Optimizer steps an :func:`epoch_plan` trains (a whole epoch: ``ceil(n / batch_size)``)."""
    batches = -(-n // batch_size)
    return sum(batches if p is None else p for p in plan)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How an individual is trained and scored (the paper's: 1 epoch, batch 64).

    ``epochs`` may be a fraction: the first part of an epoch's shuffle
    (:func:`epoch_plan`), with ``min_steps`` a floor of optimizer steps under
    one epoch. ``correct_rate``/``incorrect_rate`` are the spike-count loss's
    targets where the network has no loss unit (Grammar 2). ``mode`` None: the
    backend's default execution order (:func:`spenser_jax.snn.network.default_mode`).
    ``early_stop``: the fraction of the first epoch's budget after which an
    individual whose output never spiked and whose loss has not moved stops
    (scored as it is, status ``"stopped"``); never before ``stop_min_steps``
    steps, no check where that is the whole budget (:meth:`stop_check`).
    ``inherit``: the program takes inherited weights as arguments
    (:mod:`spenser_jax.training.inheritance`). ``activity``: measure spikes,
    SynOps and energy in the scoring pass; ``energy`` (its constants) is host
    side only. ``encoding``: ``"rate"`` spikes (the paper) or ``"direct"``
    currents.
    """

    time_steps: int
    epochs: int | float = 1
    batch_size: int = 64
    correct_rate: float = 1.0
    incorrect_rate: float = 0.0
    eval_batch_size: int = 1000
    mode: str | None = None
    init: str = "torch"
    early_stop: float | None = None
    inherit: bool = False
    min_steps: int | None = None
    stop_min_steps: int = 20
    activity: bool = True
    energy: activity_lib.EnergyModel = activity_lib.EnergyModel()
    encoding: str = "rate"

    def summarise(self, phenotype_or_sig, input_shape, totals, samples: int) -> dict:
        """Per-sample activity and energy (:func:`spenser_jax.snn.activity.summarise`)."""
        sig = (
            phenotype_or_sig
            if isinstance(phenotype_or_sig, architecture.Signature)
            else architecture.signature(phenotype_or_sig)
        )
        totals = jax.tree.map(np.asarray, totals)
        return activity_lib.summarise(
            sig,
            input_shape,
            self.time_steps,
            totals,
            samples,
            energy=self.energy,
            spiking_input=self.encoding == "rate",
        )

    def plan(self, n: int) -> tuple[int | None, ...]:
        """Batches per epoch for ``n`` training samples (:func:`epoch_plan`)."""
        return epoch_plan(self.epochs, n, self.batch_size, self.min_steps)

    def with_steps(self, n: int, steps: int) -> Protocol:
        """This protocol training exactly ``steps`` optimizer steps on ``n`` samples.

        Whole epochs first, then the first ``steps mod batches`` batches of
        one more epoch's shuffle, with no step floor (``min_steps`` would
        lift a short remainder); everything else (the early check's rules
        included) as this protocol. ``self`` when its plan is already
        ``steps`` long, so its programs stay the same.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        batches = -(-n // self.batch_size)
        if budget_steps(self.plan(n), n, self.batch_size) == steps:
            return self
        whole, rest = divmod(steps, batches)
        out = dataclasses.replace(self, epochs=whole + rest / batches if rest else whole, min_steps=None)
        if budget_steps(out.plan(n), n, self.batch_size) != steps:  # a rounding this module did not foresee
            raise ValueError(f"no epoch plan of {steps} steps for {n} samples at batch {self.batch_size}")
        return out

    def part(self, n: int, fraction) -> Protocol:
        """This protocol training ``floor(fraction * B)`` steps (at least one) of its budget of ``B`` steps on ``n``.

        ``fraction``: an int or :class:`fractions.Fraction` (exact: 1/2 of 7
        steps is 3); where that is ``B``, ``self``.
        """
        steps = budget_steps(self.plan(n), n, self.batch_size)
        return self.with_steps(n, max(1, math.floor(steps * fractions.Fraction(fraction))))

    def stop_check(self, n: int) -> int | None:
        """The early check's batch count for ``n`` training samples (None: no check).

        ``early_stop`` of the first epoch's budget, at least
        ``stop_min_steps``; None when that reaches the end of the budget
        (stopping there would save nothing).
        """
        if self.early_stop is None:
            return None
        first = self.plan(n)[0]
        batches = first if first is not None else -(-n // self.batch_size)
        check = max(1, self.stop_min_steps, math.ceil(self.early_stop * batches))
        return check if check < batches else None


def _skipped(state) -> tuple:
    """An epoch that does not run, after a failure or a stop: nothing applied (a program's other branch)."""
    zero = {"loss": jnp.float32(0), "nonfinite": jnp.bool_(False), "steps": jnp.int32(0), "samples": jnp.int32(0)}
    return state, {**zero, "stopped": jnp.bool_(False)}


def walk_plan(
    protocol: Protocol, n: int, state: Any, run_epoch: Callable, *, traced: bool = True, after_epoch=None
) -> tuple[Any, Any, Any, dict]:
    """Train on ``n`` samples as ``protocol.plan(n)`` says: the one walk of the epoch plan, in a program or on the host.

    ``run_epoch(state, epoch, max_steps, stop_check) -> (state, metrics)``
    runs one epoch of the plan (its key ``fold_in(key_epochs, epoch)``, so the
    epochs run are a prefix of the whole), the early check in the first epoch
    only. Training halts after an epoch that went non-finite or stopped:
    traced, each later epoch is a ``lax.cond`` that skips it; on the host it is
    not run. ``after_epoch(epoch, metrics, state)`` (host only) ends training
    when it returns True. Returns ``(state, failed, stopped, per_epoch)``, each
    metric over the epochs walked (traced: all, 0 where skipped).
    """
    plan, check = protocol.plan(n), protocol.stop_check(n)
    no = jnp.bool_(False) if traced else np.bool_(False)

    def advance(carry, epoch, max_steps=None, stop_check=None):
        state, failed, stopped = carry
        run = functools.partial(run_epoch, epoch=epoch, max_steps=max_steps, stop_check=stop_check)
        state, metrics = jax.lax.cond(failed | stopped, _skipped, run, state) if traced else run(state)
        return (state, failed | metrics["nonfinite"], stopped | metrics["stopped"]), metrics

    if traced and check is None and all(p is None for p in plan):
        # Whole epochs (the paper's protocol): one rolled loop, one epoch's program whatever their number.
        carry, per_epoch = jax.lax.scan(lambda c, epoch: advance(c, epoch), (state, no, no), jnp.arange(len(plan)))
        return *carry, per_epoch
    # A budget that ends inside an epoch, or an early check: the epochs differ, so they are unrolled (few).
    carry, walked = (state, no, no), []
    for epoch, max_steps in enumerate(plan):
        if not traced and (carry[1] or carry[2]):
            break
        carry, metrics = advance(carry, epoch, max_steps, check if epoch == 0 else None)
        walked.append(metrics)
        if after_epoch is not None and not (carry[1] or carry[2]) and after_epoch(epoch, metrics, carry[0]):
            break
    stack = jnp.stack if traced else np.stack
    return *carry, {name: stack([m[name] for m in walked]) for name in walked[0]}


def from_identity(identity: Mapping[str, Any], energy: activity_lib.EnergyModel | None = None, **overrides) -> Protocol:
    """The protocol a run's identity (its ``run.json``) describes: the one mapping from it.

    The search's setup builds the run's protocol with it and
    :meth:`spenser_jax.run.Run.protocol` rebuilds it. ``time_steps`` is
    ``search.time_steps`` where set, never above the data set's;
    ``energy`` is not part of the identity (None: the defaults).
    """
    tr, search = identity["training"], identity.get("search", {})
    early_stop = search.get("early_stop")
    fields = dict(
        time_steps=min(search.get("time_steps") or identity["time_steps"], identity["time_steps"]),
        epochs=tr["epochs"],
        batch_size=tr["batch_size"],
        correct_rate=tr["correct_rate"],
        incorrect_rate=tr["incorrect_rate"],
        eval_batch_size=tr["eval_batch_size"],
        init=tr["init"],
        early_stop=None if early_stop is None else float(early_stop),
        min_steps=search.get("min_steps"),
        stop_min_steps=search.get("stop_min_steps", 20),
        inherit=search.get("inherit", False),
        encoding=tr.get("encoding", "rate"),
        energy=activity_lib.EnergyModel() if energy is None else energy,
    )
    fields.update(overrides)
    return Protocol(**fields)
