"""Fitness of phenotypes: train on EvoTrain, score on Fitness, never crash.

:class:`Evaluator` turns a generation's phenotypes into
:class:`~spenser_jax.evolution.Evaluation` records. Each individual trains
from scratch for ``epochs`` epochs and is scored by spike-count accuracy on
the Fitness split. Any failure of one individual (non-finite loss, out of
memory, a compile error) becomes a recorded failure with its reason; the
generation goes on.

Keys: individual ``i`` of generation ``g`` trains with
``fold_in(fold_in(key(seed), g), i)``; the Fitness split is always rate-coded
with one fixed key per run, so every individual is scored on the same input
spikes (see :mod:`spenser_jax.evolution`).

How a generation is evaluated (``batching``)
--------------------------------------------

``"none"``: one individual after the other, as the original code does: three
programs per signature (initialisation, one epoch, scoring), the host waits
for every epoch. Kept as the reference and as the fallback.

``"map"`` (the default, ``"auto"``): the same numbers, with less waiting.

* One program per individual: initialisation, all epochs and the scoring
  fused (:func:`spenser_jax.training.train_and_score`), one dispatch per
  individual, the data resident on the device as uint8 and rate-coded there.
* Offspring that share a :class:`~spenser_jax.network.Signature` (only
  their float genes differ) share that program: one compile per signature,
  per-offspring keys and genes as arguments, so a float gene never
  recompiles. Programs also stay cached across generations (an LRU of
  :data:`PROGRAM_CACHE` entries) and, through the persistent XLA cache,
  across runs.
* Compile cost hidden where it can be: programs are compiled ahead of time
  (``lower().compile()``) in a pool of ``compile_threads`` threads and
  dispatched asynchronously as soon as they are ready, so the device trains
  one group while the host compiles the next (``compile_threads=0``:
  compile, then train, in turn). See :func:`default_compile_threads` for the
  per-backend defaults and what was measured.
* Several devices: the generation's signature groups are placed on the
  devices by estimated cost (longest first, least-loaded devices); a group
  with several members is spread over several devices as one ``shard_map``
  program whose offspring axis is sharded with ``jax.sharding`` (one member
  per device per dispatch, the group padded to a multiple of its devices),
  a single offspring runs on one device. Different groups run on different
  devices at the same time.

  Every member still runs the single-individual computation, so its result
  is bit for bit what ``"none"`` gives (tested on CPU, one and four devices).

``"vmap"``: members of a signature group are ``vmap``-ed, ``vmap_group`` at a
time per device (default: as many as half the free device memory holds, by
an estimate of activations and optimizer state). This is the faster choice
on accelerators where one small network does not fill the device, but it is
**not** bit-identical: a vmapped convolution over per-member kernels is a
different XLA kernel (grouped convolution) with a different summation order,
and spiking thresholds amplify last-bit differences over training (measured
on CPU: parameters differ by up to ~3e-4 after 6 steps of a toy network). A
member's fitness then depends on which siblings shared its program, which
breaks "same seed, same fitness"; hence not the default. On this project's
CPU measurements it also brings no speed (see ``benchmarks/``).

Why not more sharing: with the paper's mutation rates most offspring of a
generation have a signature of their own (measured over 250 sampled
generations: ~88% of offspring are alone in their exact-signature group; see
``benchmarks/generation_throughput.py``). Rounding channel widths up (with
masks) barely changes that (88% -> 88%), because widths rarely mutate alone;
tracing the boolean genes too (trainable flags, surrogate, reset, bias,
optimizer flags) would bring it to ~73%. So the gains come from fewer
programs per individual, programs cached across generations (~20-30% of a
generation's signatures were compiled in an earlier one), compiling while
the device trains, and spreading individuals over devices. On the 2-core
CPU all of this measured within ~10% of one-by-one (compile, not training,
is what a small subset costs there; at paper sizes training dominates).

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
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spenser_jax import network, training
from spenser_jax.data import Arrays, Splits
from spenser_jax.evolution import FAILED_FITNESS, Evaluation
from spenser_jax.phenotype import Conv, Dense, Phenotype, count_parameters

log = logging.getLogger("spenser_jax")

_FITNESS_STREAM = 0x0F17  # fold_in tag of the fixed Fitness-encoding key
_TRAIN_STREAM = 0x7EA1

BATCHING = ("auto", "none", "map", "vmap")
PROGRAM_CACHE = 64
"""Compiled group programs kept in memory (least recently used go first)."""

_AXIS = "offspring"


def enable_compile_cache(path: str | os.PathLike | None) -> None:
    """Persist compiled XLA programs in ``path`` (None: leave JAX's setting)."""
    if not path:
        return
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))


def default_compile_threads(backend: str | None = None) -> int:
    """Compile threads for ``backend`` (default: JAX's default backend).

    CPU: 1, one program compiling ahead while the previous one trains
    (measured on a shared 2-core host, ``benchmarks/generation_throughput.py``:
    ~7% faster than compiling and training in turn at light load; 2 threads
    were slower, and under heavy load from other processes any overlap can
    lose, since the compiler then steals cores from training's multi-threaded
    ops: set 0 there). Accelerators: the host cores are idle while the
    device trains, so up to 4 programs compile at once.
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1
    return min(4, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    time_steps: int
    epochs: int = 1
    batch_size: int = 64
    correct_rate: float = 1.0
    incorrect_rate: float = 0.0
    eval_batch_size: int = 1000
    mode: str = "auto"
    init: str = "torch"

    @property
    def network_mode(self) -> str | None:
        return None if self.mode == "auto" else self.mode


def on_device(arrays: Arrays) -> Arrays:
    """uint8 images and int32 labels on the default device (once per run)."""
    return Arrays(jnp.asarray(arrays.images, dtype=jnp.uint8), jnp.asarray(arrays.labels, dtype=jnp.int32))


class Trainer:
    """Compiles (once per signature) and runs training and scoring."""

    def __init__(self, settings: TrainingSettings, input_shape: tuple[int, int, int],
                 compiler_options: dict | None = None):
        self.settings = settings
        self.input_shape = tuple(input_shape)
        self.compiler_options = dict(compiler_options or {})
        self._compiled: dict[tuple, Any] = {}

    def _compile(self, kind: str, sig, fn, *args) -> tuple[Any, float]:
        key = (kind, sig, tuple((a.shape, str(a.dtype)) for a in args[2:4]))
        if key in self._compiled:
            return self._compiled[key], 0.0
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile(compiler_options=self.compiler_options or None)
        self._compiled[key] = compiled
        return compiled, time.perf_counter() - t0

    def train(self, phenotype: Phenotype, key: jax.Array, data: Arrays, epochs: int,
              params: Any = None, progress=None) -> tuple[Any, dict]:
        """Train ``epochs`` epochs from fresh weights (or ``params``).

        Returns (train state, info) where info has ``compile_seconds``,
        ``train_seconds``, ``losses`` and ``nonfinite``.
        """
        s = self.settings
        sig, genes = network.split(phenotype)
        key_init, key_epochs = jax.random.split(key)
        state = training.create_train_state(key_init, sig, genes, self.input_shape, init_scheme=s.init)
        if params is not None:
            state = state.replace(params=jax.tree.map(jnp.asarray, params))
        fn = training.make_train_epoch(sig, time_steps=s.time_steps, batch_size=s.batch_size,
                                       correct_rate=s.correct_rate, incorrect_rate=s.incorrect_rate,
                                       mode=s.network_mode)
        info = {"compile_seconds": 0.0, "train_seconds": 0.0, "losses": [], "nonfinite": False, "steps": 0}
        for epoch in range(epochs):
            key_epoch = jax.random.fold_in(key_epochs, epoch)
            compiled, seconds = self._compile("train", sig, fn, state, genes, data.images, data.labels, key_epoch)
            info["compile_seconds"] += seconds
            t0 = time.perf_counter()
            state, metrics = compiled(state, genes, data.images, data.labels, key_epoch)
            metrics = jax.device_get(metrics)
            info["train_seconds"] += time.perf_counter() - t0
            info["losses"].append(float(metrics["loss"]))
            info["steps"] += int(metrics["steps"])
            if progress is not None:
                progress(epoch, metrics)
            if bool(metrics["nonfinite"]):
                info["nonfinite"] = True
                break
        return state, info

    def score(self, phenotype: Phenotype, params: Any, data: Arrays, key: jax.Array) -> tuple[float, float]:
        """(accuracy, compile seconds) of ``params`` on ``data``."""
        s = self.settings
        sig, genes = network.split(phenotype)
        fn = training.make_evaluate(sig, time_steps=s.time_steps, batch_size=min(s.eval_batch_size, len(data.labels)),
                                    mode=s.network_mode)
        compiled, seconds = self._compile("eval", sig, fn, params, genes, data.images, data.labels, key)
        return float(compiled(params, genes, data.images, data.labels, key)["accuracy"]), seconds


# --------------------------------------------------------------------------
# Batched evaluation: plan, compile, dispatch, collect


@dataclasses.dataclass
class _Member:
    index: int  # position in the generation
    phenotype: Phenotype
    sig: network.Signature
    genes: dict
    key: jax.Array
    parameters: int


@dataclasses.dataclass
class _Dispatch:
    members: list[_Member]  # the real members, in slot order (padding excluded)
    args: tuple
    per_device: int  # members computed together on one device
    output: Any = None
    dispatched: float = 0.0  # perf_counter() at dispatch
    done: concurrent.futures.Future | None = None  # -> perf_counter() at completion
    finished: float = 0.0
    host: Any = None  # the output, fetched


@dataclasses.dataclass
class _Job:
    """One signature group (or part of one) on a set of devices."""

    sig: network.Signature
    members: list[_Member]
    devices: tuple
    per_device: int  # vmap: members per device per dispatch; map: 1
    compile_seconds: float = 0.0
    program: Any = None
    dispatches: list[_Dispatch] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


def _reason(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:500]


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _watch(output: Any) -> concurrent.futures.Future:
    """A future that completes (with the end time) when ``output`` is computed."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def wait():
        try:
            jax.block_until_ready(output)
            future.set_result(time.perf_counter())
        except BaseException as err:  # noqa: BLE001 - handed to the collector
            future.set_exception(err)

    threading.Thread(target=wait, daemon=True, name="spenser-wait").start()
    return future


def signature_cost(sig: network.Signature, input_shape: tuple[int, int, int]) -> float:
    """Multiply-accumulates per sample and time step (a relative cost estimate)."""
    shape, total = tuple(input_shape), 0.0
    for layer, out in zip(sig.layers, network.layer_shapes(sig, input_shape)):
        if isinstance(layer, Conv):
            total += math.prod(out) * layer.kernel * layer.kernel * shape[-1]
        elif isinstance(layer, Dense):
            total += math.prod(shape) * layer.units
        total += math.prod(out)  # elementwise work (LIF, pooling)
        shape = out
    return total


def member_bytes(sig: network.Signature, input_shape: tuple[int, int, int], *, time_steps: int,
                 batch_size: int) -> int:
    """Rough device memory of one member's training (``vmap_group`` sizing).

    Activations kept for backpropagation through time (each layer's output,
    and membrane and surrogate inputs of LIF layers: ~3 floats per unit and
    step) plus parameters with gradients and two optimizer moments.
    """
    shapes = network.layer_shapes(sig, input_shape)
    units = sum(math.prod(s) for s in shapes) + math.prod(input_shape)
    activations = 3 * 4 * units * time_steps * batch_size
    params, shape = 0, tuple(input_shape)
    for layer, out in zip(sig.layers, shapes):
        if isinstance(layer, Conv):
            params += layer.kernel * layer.kernel * shape[-1] * layer.filters + layer.filters
        elif isinstance(layer, Dense):
            params += math.prod(shape) * layer.units + layer.units
        shape = out
    return activations + 4 * 4 * params


def free_bytes(device) -> int:
    """Free memory of ``device`` (host RAM for CPU devices)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class Evaluator:
    """Evaluates one generation after the other (see the module docstring).

    Args:
      splits: the run's data (EvoTrain and Fitness are used).
      seed: the run's seed.
      input_shape: ``(H, W, C)`` of one image.
      progress: show a progress bar per generation.
      batching: ``"auto"`` (= ``"map"``), ``"none"``, ``"map"`` or ``"vmap"``.
      compile_threads: threads compiling ahead of training; None: per
        backend (:func:`default_compile_threads`); 0: compile, then train,
        one group after the other (no overlap).
      devices: how many of ``jax.local_devices()`` to use (None: all), or a
        sequence of devices.
      vmap_group: ``"vmap"`` only: members per device per dispatch (None:
        from free memory).
      xla_opt_level: XLA's ``xla_backend_optimization_level`` for every
        program of both paths (None: XLA's default, 2). 1 halves XLA:CPU
        compile time at equal run time (measured), but the generated code
        rounds differently in the last bits, so fitness values change
        slightly: keep it fixed within a run.
      **settings: :class:`TrainingSettings` fields (``time_steps``,
        ``epochs``, ``batch_size``, ...).
    """

    def __init__(self, splits: Splits, *, seed: int, input_shape: tuple[int, int, int],
                 progress: bool = True, batching: str = "auto", compile_threads: int | None = None,
                 devices: int | Sequence[Any] | None = None, vmap_group: int | None = None,
                 xla_opt_level: int | None = None, **settings):
        self.settings = TrainingSettings(**settings)
        self.input_shape = tuple(input_shape)
        if xla_opt_level is not None and xla_opt_level not in (0, 1, 2, 3):
            raise ValueError(f"xla_opt_level must be 0..3 or None, got {xla_opt_level!r}")
        self.compiler_options = ({} if xla_opt_level is None
                                 else {"xla_backend_optimization_level": xla_opt_level})
        self.trainer = Trainer(self.settings, self.input_shape, self.compiler_options)
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.batching = "map" if batching == "auto" else batching
        self.devices = _select_devices(devices)
        if compile_threads in (None, "auto"):
            compile_threads = default_compile_threads(self.devices[0].platform)
        if not isinstance(compile_threads, int) or compile_threads < 0:
            raise ValueError(f"compile_threads must be an int >= 0 or None, got {compile_threads!r}")
        self.compile_threads = compile_threads
        if vmap_group in ("auto",):
            vmap_group = None
        if vmap_group is not None and (not isinstance(vmap_group, int) or vmap_group < 1):
            raise ValueError(f"vmap_group must be an int >= 1 or None, got {vmap_group!r}")
        self.vmap_group = vmap_group
        self.evo_train = on_device(splits.evo_train)
        self.fitness = on_device(splits.fitness)
        root = jax.random.key(seed)
        self.train_root = jax.random.fold_in(root, _TRAIN_STREAM)
        self.fitness_key = jax.random.fold_in(root, _FITNESS_STREAM)
        self.progress = progress
        self._programs: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._placed: dict[tuple, tuple] = {}
        self._pool = (concurrent.futures.ThreadPoolExecutor(compile_threads, thread_name_prefix="spenser-compile")
                      if compile_threads and self.batching != "none" else None)

    def individual_key(self, generation: int, index: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.train_root, generation), index)

    # One by one ---------------------------------------------------------

    def evaluate_one(self, phenotype: Phenotype, key: jax.Array) -> Evaluation:
        """Evaluate one individual alone (three programs, blocking: the original's way)."""
        try:
            parameters = count_parameters(phenotype, self.input_shape)
        except Exception as err:  # noqa: BLE001 - an impossible network fails alone
            return Evaluation(FAILED_FITNESS, "error", _reason(err))
        try:
            state, info = self.trainer.train(phenotype, key, self.evo_train, self.settings.epochs)
            if info["nonfinite"]:
                return Evaluation(FAILED_FITNESS, "nonfinite_loss",
                                  f"loss or update became non-finite after {info['steps']} steps",
                                  parameters, info["train_seconds"], info["compile_seconds"])
            t0 = time.perf_counter()
            accuracy, compile_seconds = self.trainer.score(phenotype, state.params, self.fitness, self.fitness_key)
            scoring = time.perf_counter() - t0 - compile_seconds
            return Evaluation(accuracy, "ok", "", parameters, info["train_seconds"] + scoring,
                              info["compile_seconds"] + compile_seconds, jax.device_get(state.params))
        except Exception as err:  # noqa: BLE001 - one individual must never stop the run
            reason = _reason(err)
            log.warning("individual failed: %s", reason)
            return Evaluation(FAILED_FITNESS, "error", reason, parameters)

    # A generation -------------------------------------------------------

    def evaluate(self, phenotypes: Sequence[Phenotype], generation: int) -> list[Evaluation]:
        phenotypes = list(phenotypes)
        keys = [self.individual_key(generation, i) for i in range(len(phenotypes))]
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=len(phenotypes), desc=f"generation {generation}", unit="ind", leave=False)
        try:
            if self.batching == "none":
                results = []
                for p, k in zip(phenotypes, keys):
                    results.append(self.evaluate_one(p, k))
                    if bar is not None:
                        bar.update(1)
                return results
            return self._evaluate_batched(phenotypes, keys, bar)
        finally:
            if bar is not None:
                bar.close()

    def _evaluate_batched(self, phenotypes, keys, bar) -> list[Evaluation]:
        results: list[Evaluation | None] = [None] * len(phenotypes)
        self._device_ends: dict[int, float] = {}
        members = []
        for i, (p, k) in enumerate(zip(phenotypes, keys)):
            try:
                sig, genes = network.split(p)
                network.layer_shapes(sig, self.input_shape)
                members.append(_Member(i, p, sig, genes, k, count_parameters(p, self.input_shape)))
            except Exception:  # noqa: BLE001 - evaluate_one records the reason
                results[i] = self.evaluate_one(p, k)
                if bar is not None:
                    bar.update(1)
        jobs = self.plan(members)
        self._dispatch(jobs)
        for job in jobs:
            for member, evaluation in self._collect(job):
                results[member.index] = evaluation
                if bar is not None:
                    bar.update(1)
        return results  # type: ignore[return-value]

    # Planning -----------------------------------------------------------

    def plan(self, members: Sequence[_Member]) -> list[_Job]:
        """Group members by signature and place the groups on the devices."""
        groups: dict[network.Signature, list[_Member]] = {}
        for m in members:
            groups.setdefault(m.sig, []).append(m)
        jobs = []
        for sig, group in groups.items():
            per_device = 1
            if self.batching == "vmap":
                per_device = self.vmap_group or self._vmap_fit(sig, self.devices[0])
                per_device = max(1, min(per_device, len(group)))
            jobs.append(_Job(sig, group, (), per_device))
        if len(self.devices) == 1:
            for job in jobs:
                job.devices = (self.devices[0],)
            return jobs
        # Longest first onto the least-loaded devices.
        load = {d.id: 0.0 for d in self.devices}
        costs = {id(job): signature_cost(job.sig, self.input_shape) for job in jobs}
        jobs.sort(key=lambda job: -costs[id(job)] * len(job.members))
        for job in jobs:
            k = min(len(self.devices), -(-len(job.members) // job.per_device))
            chosen = sorted(self.devices, key=lambda d: (load[d.id], d.id))[:k]
            rounds = -(-len(job.members) // (k * job.per_device))
            for d in chosen:
                load[d.id] += costs[id(job)] * rounds * job.per_device
            job.devices = tuple(sorted(chosen, key=lambda d: d.id))
        return jobs

    def _vmap_fit(self, sig, device) -> int:
        s = self.settings
        need = member_bytes(sig, self.input_shape, time_steps=s.time_steps, batch_size=s.batch_size)
        return max(1, int(0.5 * free_bytes(device) // max(need, 1)))

    # Compiling and dispatching -------------------------------------------

    def _data_on(self, devices: tuple) -> tuple:
        key = tuple(d.id for d in devices)
        with self._lock:
            if key not in self._placed:
                target = devices[0] if len(devices) == 1 else NamedSharding(_mesh(devices), PartitionSpec())
                self._placed[key] = tuple(jax.device_put(x, target) for x in (
                    self.evo_train.images, self.evo_train.labels, self.fitness.images,
                    self.fitness.labels, self.fitness_key))
            return self._placed[key]

    def _program_fn(self, sig, devices: tuple, per_device: int):
        s = self.settings
        one = functools.partial(
            training.train_and_score, sig, epochs=s.epochs, time_steps=s.time_steps,
            batch_size=s.batch_size, eval_batch_size=s.eval_batch_size, correct_rate=s.correct_rate,
            incorrect_rate=s.incorrect_rate, mode=s.network_mode, init_scheme=s.init)
        vmapped = self.batching == "vmap"

        def local(keys, genes, images, labels, score_images, score_labels, score_key):
            data = (images, labels, score_images, score_labels, score_key)
            if vmapped:
                return jax.vmap(lambda k, g: one(k, g, *data))(keys, genes)
            # One member per device: exactly the single-individual program.
            out = one(keys[0], jax.tree.map(lambda x: x[0], genes), *data)
            return jax.tree.map(lambda x: x[None], out)

        if len(devices) == 1:
            return jax.jit(local)
        spec = PartitionSpec(_AXIS)
        # check_vma=False: the training loops' carries start replicated
        # (constants) and become per-member; every output is per-member.
        return jax.jit(jax.shard_map(local, mesh=_mesh(devices), in_specs=(spec, spec) + (PartitionSpec(),) * 5,
                                     out_specs=spec, check_vma=False))

    def _prepare(self, job: _Job) -> _Job:
        """Build the job's arguments and compile (or fetch) its program."""
        data = self._data_on(job.devices)
        width = len(job.devices) * job.per_device
        if len(job.devices) == 1:
            place = functools.partial(jax.device_put, device=job.devices[0])
        else:
            place = functools.partial(jax.device_put, device=NamedSharding(_mesh(job.devices),
                                                                           PartitionSpec(_AXIS)))
        for start in range(0, len(job.members), width):
            chunk = job.members[start:start + width]
            slots = chunk + [chunk[-1]] * (width - len(chunk))  # padding: results dropped
            args = (place(jnp.stack([m.key for m in slots])), place(_stack([m.genes for m in slots])), *data)
            job.dispatches.append(_Dispatch(chunk, args, job.per_device))
        cache_key = (job.sig, tuple(d.id for d in job.devices), job.per_device, self.batching)
        with self._lock:
            program = self._programs.get(cache_key)
            if program is not None:
                self._programs.move_to_end(cache_key)
        if program is None:
            t0 = time.perf_counter()
            program = self._program_fn(job.sig, job.devices, job.per_device).lower(
                *job.dispatches[0].args).compile(compiler_options=self.compiler_options or None)
            job.compile_seconds = time.perf_counter() - t0
            with self._lock:
                self._programs[cache_key] = program
                while len(self._programs) > PROGRAM_CACHE:
                    self._programs.popitem(last=False)
        job.program = program
        return job

    def _dispatch(self, jobs: list[_Job]) -> None:
        """Compile and launch every job.

        With a compile pool, every program compiles ahead and each job is
        dispatched asynchronously as soon as its program is ready (the device
        trains while the host compiles). Without one, each job compiles and
        then runs to its end before the next compiles: on a CPU backend the
        compiler would otherwise steal cores from training's parallel ops.
        """
        futures = [self._pool.submit(self._prepare, job) for job in jobs] if self._pool else None
        for i, job in enumerate(jobs):
            try:
                if futures is not None:
                    futures[i].result()
                else:
                    self._prepare(job)
                for d in job.dispatches:
                    d.dispatched = time.perf_counter()
                    d.output = job.program(*d.args)
                    d.done = _watch(d.output)
                if futures is None:
                    for d in job.dispatches:
                        d.done.exception()  # wait; errors are collected below
            except Exception as err:  # noqa: BLE001 - the job falls back below
                job.error = err

    def _collect(self, job: _Job) -> list[tuple[_Member, Evaluation]]:
        """Per-member evaluations of a dispatched job (one by one if the job failed)."""
        out = []
        if job.error is None:
            try:
                for d in job.dispatches:
                    d.finished = d.done.result()
                    d.host = jax.device_get(d.output)
                    d.output = d.args = None  # free device buffers early
            except Exception as err:  # noqa: BLE001 - e.g. out of memory while running
                job.error = err
        if job.error is not None:
            log.warning("group of %d failed (%s); evaluating its members one by one",
                        len(job.members), _reason(job.error))
            return [(m, self.evaluate_one(m.phenotype, m.key)) for m in job.members]
        compile_share = job.compile_seconds / len(job.members)
        for d in job.dispatches:
            seconds = self._run_seconds(job, d) / d.per_device
            params, metrics = d.host
            for slot, m in enumerate(d.members):
                mine = {k: v[slot] for k, v in metrics.items()}
                if bool(mine["nonfinite"]):
                    ev = Evaluation(FAILED_FITNESS, "nonfinite_loss",
                                    f"loss or update became non-finite after {int(mine['steps'])} steps",
                                    m.parameters, seconds, compile_share)
                else:
                    weights = jax.tree.map(lambda x, i=slot: np.array(x[i]), params)
                    ev = Evaluation(float(mine["accuracy"]), "ok", "", m.parameters, seconds,
                                    compile_share, weights)
                out.append((m, ev))
        return out

    def _run_seconds(self, job: _Job, d: _Dispatch) -> float:
        # Dispatches on the same devices run in order: one starts at the later
        # of its dispatch and the end of the previous one there.
        ends = self._device_ends
        start = max([d.dispatched] + [ends.get(dev.id, 0.0) for dev in job.devices])
        for dev in job.devices:
            ends[dev.id] = max(ends.get(dev.id, 0.0), d.finished)
        return max(0.0, d.finished - start)


@functools.lru_cache(maxsize=64)
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices), (_AXIS,))


def _select_devices(devices) -> tuple:
    # This process's devices: with several hosts (jax.distributed), each
    # process evaluates on its own devices (see the README).
    available = jax.local_devices()
    if devices is None or devices == "all":
        return tuple(available)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices must be in [1, {len(available)}], got {devices}")
        return tuple(available[:devices])
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return devices
