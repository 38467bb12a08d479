"""A generation's fitness, scheduled onto compilers and devices.

:class:`Evaluator` turns a generation's phenotypes into
:class:`~spenser_jax.training.evaluation.Evaluation` records, each exactly what
:func:`spenser_jax.training.evaluation.evaluate_one` gives for that individual.

``batching="none"``: one individual after the other, as the original code
does; the reference and the fallback. ``"map"`` (the default): the same
numbers with less waiting. One fused program per individual
(:func:`spenser_jax.training.core.train_and_score`), shared by offspring of
one :class:`~spenser_jax.snn.architecture.Signature` (keys and float genes
are arguments, so a float gene never recompiles), cached across generations
(an LRU of :data:`PROGRAM_CACHE`) and runs (the persistent XLA cache),
compiled ahead in ``compile_threads`` threads while the device trains the
previous group. Groups are placed on devices longest first; a group spans
several devices as one ``shard_map`` program over a sharded offspring axis.
Every member still runs the single-individual computation, so its result is
bit for bit what ``"none"`` gives (tested on CPU, one and four devices).

``"vmap"`` runs ``vmap_group`` members per device (default: as many as half
the free memory holds, by :func:`~spenser_jax.snn.architecture.training_bytes`).
Faster where one small network does not fill an accelerator, but **not**
bit-identical: a vmapped convolution over per-member kernels is a grouped
convolution with another summation order, and thresholds amplify last-bit
differences, so a member's fitness depends on its siblings; hence opt-in,
and part of a run's identity.

A group whose program fails to compile or run is evaluated again one member
at a time, so the member at fault fails alone and the rest are scored.

Why not more sharing: with the paper's mutation rates ~88% of offspring are
alone in their signature group (``benchmarks/generation_throughput.py``), and
rounding channel widths up with masks barely changes that.

"Same seed, same fitness" holds for one machine configuration: on XLA:CPU
the number of host devices, ``xla_opt_level`` and
``jax_threefry_partitionable`` change the last bits of results.

Timing fields: ``compile_seconds`` is a group's compile wall time split over
its members (0 when cached); ``train_seconds`` runs from the later of its
dispatch and the end of the previous dispatch on the same devices to its
end, split over members that ran together (``vmap``). With overlap, a
generation's sums exceed its wall time.

:class:`Evaluator` is composed of its planning half
(:mod:`~spenser_jax.scheduler.plan`) and its running half
(:mod:`~spenser_jax.scheduler.dispatch`); :mod:`~spenser_jax.scheduler.resources`
holds the helpers about the machine.
"""

from __future__ import annotations

import concurrent.futures
import copy
from collections.abc import Sequence
from typing import Any

import jax

from spenser_jax.data import Splits
from spenser_jax.genome.phenotype import Phenotype, count_parameters
from spenser_jax.scheduler.dispatch import _Execution, _Timeline
from spenser_jax.scheduler.plan import _Member, _Planning
from spenser_jax.scheduler.resources import (
    LRU,
    compiler_options,
    default_compile_threads,
    enable_compile_cache,
    free_bytes,
    keep_host_memory,
    select_devices,
    wants_host_memory_kept,
)
from spenser_jax.snn import architecture
from spenser_jax.training import blocks, evaluation, inheritance
from spenser_jax.training.evaluation import Evaluation
from spenser_jax.training.protocol import Protocol

__all__ = [
    "BATCHING",
    "COMPILE_UNITS",
    "LRU",
    "PLACEMENTS",
    "PROGRAM_CACHE",
    "Evaluator",
    "compiler_options",
    "default_compile_threads",
    "enable_compile_cache",
    "free_bytes",
    "keep_host_memory",
    "select_devices",
    "wants_host_memory_kept",
]

BATCHING = ("none", "map", "vmap")
COMPILE_UNITS = ("network", "layer")
PROGRAM_CACHE = 64
"""Compiled group programs kept in memory (least recently used go first)."""
PLACEMENTS = 8
"""Device combinations whose copy of the data is kept (least recently used go first)."""


class Evaluator(_Planning, _Execution):
    """Evaluates one generation after the other (see the module docstring).

    Every argument is a concrete value: configuration strings (``"auto"``)
    are resolved by the caller (``spenser_jax.evolve``). ``compile_threads=0``
    compiles, then trains, one group after the other.
    ``compile_unit="layer"`` trains each individual in turn, on the first
    device, through programs per block of layers shared across architectures
    (:mod:`spenser_jax.training.blocks`): results equal to rounding, a fraction
    of the compile time per new architecture, an epoch about as fast where host
    memory is kept (:func:`keep_host_memory`); skip connections go the
    ``"network"`` way. ``compiler_options`` apply to every program
    (``{"xla_backend_optimization_level": 1}`` halves XLA:CPU compile time but
    rounds differently).

    Call :meth:`close` (or use it as a context manager) to stop its compile
    threads.
    """

    def __init__(
        self,
        splits: Splits,
        *,
        seed: int,
        input_shape: tuple[int, int, int],
        protocol: Protocol,
        batching: str = "map",
        compile_threads: int = 0,
        devices: Sequence[Any] | None = None,
        vmap_group: int | None = None,
        compiler_options: dict | None = None,
        progress: bool = False,
        compile_unit: str = "network",
    ):
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        if not isinstance(compile_threads, int) or isinstance(compile_threads, bool) or compile_threads < 0:
            raise ValueError(f"compile_threads must be an int >= 0, got {compile_threads!r}")
        if compile_unit not in COMPILE_UNITS:
            raise ValueError(f"compile_unit must be one of {COMPILE_UNITS}, got {compile_unit!r}")
        if vmap_group is not None and (not isinstance(vmap_group, int) or vmap_group < 1):
            raise ValueError(f"vmap_group must be an int >= 1 or None, got {vmap_group!r}")
        self.protocol = protocol
        self.input_shape = tuple(input_shape)
        self.batching = batching
        self.compile_unit = compile_unit
        if compile_unit == "layer":
            blocks.persist_small_programs()
        self.compile_threads = compile_threads
        self.devices = tuple(devices) if devices is not None else select_devices(None)
        self.vmap_group = vmap_group
        self.compiler_options = dict(compiler_options or {})
        self.progress = progress
        self.seed = seed
        self.trainer = evaluation.Trainer(protocol, self.input_shape, self.compiler_options)
        self.evo_train = evaluation.on_device(splits.evo_train)
        self.fitness_data = evaluation.on_device(splits.fitness)
        self.fitness_key = evaluation.fitness_key(seed)
        self.programs = LRU(PROGRAM_CACHE)
        self._placed = LRU(PLACEMENTS)
        self._views: dict[Protocol, Evaluator] = {}  # other budgets (evaluate's budget)
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(compile_threads, thread_name_prefix="spenser-compile")
            if compile_threads and batching != "none"
            else None
        )

    def close(self) -> None:
        """Stop the compile threads (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def evaluate_one(self, phenotype: Phenotype, key: jax.Array, inherited=None) -> Evaluation:
        return evaluation.evaluate_one(
            self.trainer, phenotype, key, self.evo_train, self.fitness_data, self.fitness_key, inherited
        )

    def evaluate(
        self,
        phenotypes: Sequence[Phenotype],
        generation: int,
        inherited: Sequence[tuple | None] | None = None,
        indices: Sequence[int] | None = None,
        *,
        budget=None,
        tag: int | None = None,
    ) -> list[Evaluation]:
        """The evaluations of one generation's phenotypes, in order.

        ``inherited``: per phenotype, ``(values, mask, share)`` from
        :func:`spenser_jax.training.inheritance.inherit` or None (fresh weights); only
        with ``protocol.inherit``. ``indices``: each phenotype's place in its
        generation, which makes its training key (default ``0, 1, ...``; a
        worker evaluating part of a generation passes them).
        ``budget``: None (the protocol's), or the part of the protocol's
        budget to train (:meth:`~spenser_jax.training.protocol.Protocol.part`;
        its programs are cached beside the protocol's). ``tag``: None, or
        folded into every training key (a later round of training the same
        individuals: :mod:`spenser_jax.search.halving`).
        """
        if budget is not None:
            part = self.protocol.part(int(self.evo_train.labels.shape[0]), budget)
            if part != self.protocol:
                return self._training(part).evaluate(phenotypes, generation, inherited, indices, tag=tag)
        phenotypes = list(phenotypes)
        inherited = list(inherited) if inherited is not None else [None] * len(phenotypes)
        if len(inherited) != len(phenotypes):
            raise ValueError("one inheritance per phenotype")
        if any(x is not None for x in inherited) and not self.protocol.inherit:
            raise ValueError("inherited weights given, but protocol.inherit is off")
        if self.protocol.inherit:  # one program shape for all: nothing inherited is an all-False mask
            inherited = [self._fresh(p) if x is None else x for p, x in zip(phenotypes, inherited)]
        indices = range(len(phenotypes)) if indices is None else list(indices)
        if len(indices) != len(phenotypes):
            raise ValueError("one index per phenotype")
        keys = [evaluation.individual_key(self.seed, generation, i) for i in indices]
        if tag is not None:
            keys = [jax.random.fold_in(k, tag) for k in keys]
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(phenotypes), desc=f"generation {generation}", unit="ind", leave=False)
        tick = bar.update if bar is not None else (lambda n: None)
        try:
            if self.batching == "none" and self.compile_unit == "network":
                results = []
                for p, k, inh in zip(phenotypes, keys, inherited):
                    results.append(self.evaluate_one(p, k, inh))
                    tick(1)
                return results
            return self._evaluate_batched(phenotypes, keys, inherited, tick)
        finally:
            if bar is not None:
                bar.close()

    def _training(self, protocol: Protocol) -> Evaluator:
        """This evaluator training as ``protocol`` says (made once per protocol).

        It shares this one's data on the devices, compile threads and
        program cache (keyed by protocol), with a host trainer of its own.
        """
        view = self._views.get(protocol)
        if view is None:
            view = copy.copy(self)
            view.protocol = protocol
            view.trainer = evaluation.Trainer(protocol, self.input_shape, self.compiler_options)
            self._views[protocol] = view
        return view

    def _fresh(self, phenotype: Phenotype):
        try:
            return inheritance.fresh(phenotype, self.input_shape)
        except Exception:  # noqa: BLE001 - an impossible network fails alone, in evaluate_one
            return None

    def _evaluate_batched(self, phenotypes, keys, inherited, tick) -> list[Evaluation]:
        results: list[Evaluation | None] = [None] * len(phenotypes)
        members = []
        for i, (p, k, inh) in enumerate(zip(phenotypes, keys, inherited)):
            try:
                sig, hyper = architecture.split(p, self.protocol.time_steps)
                architecture.layer_shapes(sig, self.input_shape)
                members.append(_Member(i, p, sig, hyper, k, count_parameters(p, self.input_shape), inh))
            except Exception:  # noqa: BLE001 - evaluate_one records the reason
                results[i] = self.evaluate_one(p, k, inh)
                tick(1)
        if self.compile_unit == "layer":
            layered = [m for m in members if blocks.supports(m.sig, self.protocol.init)]
            for m, evaluation in self._evaluate_layered(layered):
                results[m.index] = evaluation
                tick(1)
            done = {m.index for m in layered}
            members = [m for m in members if m.index not in done]  # the usual way
        jobs = self.plan(members)
        self._dispatch(jobs)
        timeline = _Timeline()
        for job in jobs:
            for member, evaluation in self._collect(job, timeline):
                results[member.index] = evaluation
                tick(1)
        return results  # type: ignore[return-value]
