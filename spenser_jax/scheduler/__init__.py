"""A generation's fitness, scheduled onto compilers and devices.

:class:`Evaluator` turns a generation's phenotypes into
:class:`~spenser_jax.training.evaluation.Evaluation` records, each exactly what
:func:`spenser_jax.training.evaluation.evaluate_one` gives for that individual.

How (``batching``)
------------------

``"none"``: one individual after the other, as the original code does
(:func:`~spenser_jax.training.evaluation.evaluate_one`). Kept as the reference and as the
fallback.

``"map"`` (the default): the same numbers, with less waiting.

* One program per individual: initialisation, all epochs and the scoring
  fused (:func:`spenser_jax.training.core.train_and_score`), one dispatch per
  individual, the data resident on the device as uint8 and rate-coded there.
* Offspring that share a :class:`~spenser_jax.snn.architecture.Signature` (only
  their float genes differ) share that program: one compile per signature,
  per-offspring keys and floats as arguments, so a float gene never
  recompiles. Programs stay cached across generations (an LRU of
  :data:`PROGRAM_CACHE` entries) and, through the persistent XLA cache,
  across runs.
* Compile cost hidden where it can be: programs are compiled ahead of time
  (``lower().compile()``) in a pool of ``compile_threads`` threads and
  dispatched asynchronously as soon as they are ready, so the device trains
  one group while the host compiles the next (``compile_threads=0``:
  compile, then train, in turn). See :func:`default_compile_threads`.
* Several devices: the generation's signature groups are placed on the
  devices by estimated cost (longest first, least-loaded devices); a group
  with several members is spread over several devices as one ``shard_map``
  program whose offspring axis is sharded (one member per device per
  dispatch, the group padded to a multiple of its devices); a single
  offspring runs on one device. Different groups run on different devices at
  the same time.

  Every member still runs the single-individual computation, so its result
  is bit for bit what ``"none"`` gives (tested on CPU, one and four devices).

``"vmap"``: members of a signature group are ``vmap``-ed, ``vmap_group`` at a
time per device (default: as many as half the free device memory holds, by
:func:`~spenser_jax.snn.architecture.training_bytes`). This is the faster choice
on accelerators where one small network does not fill the device, but it is
**not** bit-identical: a vmapped convolution over per-member kernels is a
different XLA kernel (grouped convolution) with a different summation order,
and spiking thresholds amplify last-bit differences over training. A
member's fitness then depends on which siblings shared its program, which
breaks "same seed, same fitness"; hence opt-in, and part of a run's identity.

Failures: a group whose program fails to compile or to run (out of memory,
a runtime error on the device) is evaluated again one member at a time, so
the member at fault fails alone, with its reason, and the rest are scored.

Why not more sharing: with the paper's mutation rates most offspring of a
generation have a signature of their own (~88% are alone in their group;
``benchmarks/generation_throughput.py``), and rounding channel widths up with
masks barely changes that. So the gains come from fewer programs per
individual, programs cached across generations, compiling while the device
trains, and spreading individuals over devices.

Reproducibility: "same seed, same fitness" holds for one machine
configuration. On XLA:CPU the number of host devices
(``--xla_force_host_platform_device_count``) changes how the intra-op threads
split work and so the last bits of results, and ``xla_opt_level`` and
``jax_threefry_partitionable`` change them too; within a configuration,
``"map"`` on any number of devices equals ``"none"`` bit for bit.

Timing fields per individual (``generations.jsonl``): ``compile_seconds`` is
the wall time to lower and compile its group's program, split evenly over
the group's members (0 when the program was cached); ``train_seconds`` is
the wall time its dispatch ran on the device (from the later of its dispatch
and the end of the previous dispatch on the same devices, to its end), split
evenly over the members that ran together on one device (``vmap``). With
overlap, the sums over a generation exceed its wall time.

Layout: :class:`Evaluator` (here) is composed of its planning half,
:mod:`~spenser_jax.scheduler.plan` (the records of a generation's work,
grouping by signature, placement on devices), and its running half,
:mod:`~spenser_jax.scheduler.dispatch` (compile ahead, dispatch, watch,
collect, the timeline of ``train_seconds``);
:mod:`~spenser_jax.scheduler.resources` holds the helpers about the machine
(devices, free memory, compile threads, the compile cache, an LRU).
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
    are resolved by the caller (``spenser_jax.evolve``).

    Args:
      splits: the run's data (EvoTrain and Fitness are used).
      seed: the run's seed.
      input_shape: ``(H, W, C)`` of one image.
      protocol: how each individual trains and is scored.
      batching: ``"none"``, ``"map"`` or ``"vmap"``.
      compile_threads: threads compiling ahead of training; 0: compile, then
        train, one group after the other (no overlap). See
        :func:`default_compile_threads`.
      devices: the devices to use (:func:`select_devices`).
      vmap_group: ``"vmap"`` only: members per device per dispatch (None:
        from free memory).
      compiler_options: XLA compiler options for every program of both paths
        (e.g. ``{"xla_backend_optimization_level": 1}``, which halves XLA:CPU
        compile time but rounds differently).
      progress: show a progress bar per generation.
      compile_unit: ``"network"``: one program per architecture (batched as
        ``batching`` says); ``"layer"``: each individual in turn, on the
        first device, through programs per block of layers shared across
        architectures (:mod:`spenser_jax.training.blocks`; results equal to
        rounding, a fraction of the compile time per new architecture, an
        epoch about as fast where host memory is kept:
        :func:`keep_host_memory`). Signatures those programs do not cover
        (skip connections) go the ``"network"`` way.

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
