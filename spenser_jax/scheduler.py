"""A generation's fitness, scheduled onto compilers and devices.

:class:`Evaluator` turns a generation's phenotypes into
:class:`~spenser_jax.fitness.Evaluation` records, each exactly what
:func:`spenser_jax.fitness.evaluate_one` gives for that individual.

How (``batching``)
------------------

``"none"``: one individual after the other, as the original code does
(:func:`~spenser_jax.fitness.evaluate_one`). Kept as the reference and as the
fallback.

``"map"`` (the default): the same numbers, with less waiting.

* One program per individual: initialisation, all epochs and the scoring
  fused (:func:`spenser_jax.training.train_and_score`), one dispatch per
  individual, the data resident on the device as uint8 and rate-coded there.
* Offspring that share a :class:`~spenser_jax.architecture.Signature` (only
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
:func:`~spenser_jax.architecture.training_bytes`). This is the faster choice
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
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spenser_jax import architecture, fitness, inheritance, training
from spenser_jax.data import Splits
from spenser_jax.fitness import Evaluation, TrainingSettings
from spenser_jax.phenotype import Phenotype, count_parameters

BATCHING = ("none", "map", "vmap")
PROGRAM_CACHE = 64
"""Compiled group programs kept in memory (least recently used go first)."""
PLACEMENTS = 8
"""Device combinations whose copy of the data is kept (least recently used go first)."""

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
    device trains, so up to 4 programs compile at once (not measured yet).
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1
    return min(4, os.cpu_count() or 1)


def select_devices(devices: int | Sequence[Any] | None) -> tuple:
    """This process's devices to use: all (None), the first ``n``, or the ones given.

    With several hosts (``jax.distributed``), each process evaluates on its
    own devices (see the README).
    """
    available = jax.local_devices()
    if devices is None:
        return tuple(available)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices must be in [1, {len(available)}], got {devices}")
        return tuple(available[:devices])
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return devices


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


class LRU:
    """A small thread-safe least-recently-used map with a bound."""

    def __init__(self, size: int):
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_make(self, key, make: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------
# What one generation's work looks like


@dataclasses.dataclass
class _Member:
    index: int  # position in the generation
    phenotype: Phenotype
    sig: architecture.Signature
    hyper: dict
    key: jax.Array
    parameters: int
    inherited: tuple | None = None  # (values, mask, share) with settings.inherit


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
    """One signature group on a set of devices."""

    sig: architecture.Signature
    members: list[_Member]
    devices: tuple
    per_device: int  # vmap: members per device per dispatch; map: 1
    compile_seconds: float = 0.0
    program: Any = None
    dispatches: list[_Dispatch] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


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


class _Timeline:
    """When each device last finished, within one generation (for train_seconds)."""

    def __init__(self):
        self.ends: dict[int, float] = {}

    def run_seconds(self, job: _Job, d: _Dispatch) -> float:
        # Dispatches on the same devices run in order: one starts at the later
        # of its dispatch and the end of the previous one there.
        start = max([d.dispatched] + [self.ends.get(dev.id, 0.0) for dev in job.devices])
        for dev in job.devices:
            self.ends[dev.id] = max(self.ends.get(dev.id, 0.0), d.finished)
        return max(0.0, d.finished - start)


@functools.lru_cache(maxsize=64)
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices), (_AXIS,))


# --------------------------------------------------------------------------
# The evaluator


class Evaluator:
    """Evaluates one generation after the other (see the module docstring).

    Every argument is a concrete value: configuration strings (``"auto"``)
    are resolved by the caller (``spenser_jax.evolve``).

    Args:
      splits: the run's data (EvoTrain and Fitness are used).
      seed: the run's seed.
      input_shape: ``(H, W, C)`` of one image.
      settings: how each individual trains and is scored.
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

    Call :meth:`close` (or use it as a context manager) to stop its compile
    threads.
    """

    def __init__(self, splits: Splits, *, seed: int, input_shape: tuple[int, int, int],
                 settings: TrainingSettings, batching: str = "map", compile_threads: int = 0,
                 devices: Sequence[Any] | None = None, vmap_group: int | None = None,
                 compiler_options: dict | None = None, progress: bool = False):
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        if not isinstance(compile_threads, int) or isinstance(compile_threads, bool) or compile_threads < 0:
            raise ValueError(f"compile_threads must be an int >= 0, got {compile_threads!r}")
        if vmap_group is not None and (not isinstance(vmap_group, int) or vmap_group < 1):
            raise ValueError(f"vmap_group must be an int >= 1 or None, got {vmap_group!r}")
        self.settings = settings
        self.input_shape = tuple(input_shape)
        self.batching = batching
        self.compile_threads = compile_threads
        self.devices = tuple(devices) if devices is not None else select_devices(None)
        self.vmap_group = vmap_group
        self.compiler_options = dict(compiler_options or {})
        self.progress = progress
        self.seed = seed
        self.trainer = fitness.Trainer(settings, self.input_shape, self.compiler_options)
        self.evo_train = fitness.on_device(splits.evo_train)
        self.fitness = fitness.on_device(splits.fitness)
        self.fitness_key = fitness.fitness_key(seed)
        self.programs = LRU(PROGRAM_CACHE)
        self._placed = LRU(PLACEMENTS)
        self._pool = (concurrent.futures.ThreadPoolExecutor(compile_threads, thread_name_prefix="spenser-compile")
                      if compile_threads and batching != "none" else None)

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
        return fitness.evaluate_one(self.trainer, phenotype, key, self.evo_train, self.fitness,
                                    self.fitness_key, inherited)

    def evaluate(self, phenotypes: Sequence[Phenotype], generation: int,
                 inherited: Sequence[tuple | None] | None = None) -> list[Evaluation]:
        """The evaluations of one generation's phenotypes, in order.

        ``inherited``: per phenotype, ``(values, mask, share)`` from
        :func:`spenser_jax.inheritance.inherit` or None (fresh weights); only
        with ``settings.inherit``.
        """
        phenotypes = list(phenotypes)
        inherited = list(inherited) if inherited is not None else [None] * len(phenotypes)
        if len(inherited) != len(phenotypes):
            raise ValueError("one inheritance per phenotype")
        if any(x is not None for x in inherited) and not self.settings.inherit:
            raise ValueError("inherited weights given, but settings.inherit is off")
        if self.settings.inherit:  # one program shape for all: nothing inherited is an all-False mask
            inherited = [self._fresh(p) if x is None else x for p, x in zip(phenotypes, inherited)]
        keys = [fitness.individual_key(self.seed, generation, i) for i in range(len(phenotypes))]
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=len(phenotypes), desc=f"generation {generation}", unit="ind", leave=False)
        tick = bar.update if bar is not None else (lambda n: None)
        try:
            if self.batching == "none":
                results = []
                for p, k, inh in zip(phenotypes, keys, inherited):
                    results.append(self.evaluate_one(p, k, inh))
                    tick(1)
                return results
            return self._evaluate_batched(phenotypes, keys, inherited, tick)
        finally:
            if bar is not None:
                bar.close()

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
                sig, hyper = architecture.split(p, self.settings.time_steps)
                architecture.layer_shapes(sig, self.input_shape)
                members.append(_Member(i, p, sig, hyper, k, count_parameters(p, self.input_shape), inh))
            except Exception:  # noqa: BLE001 - evaluate_one records the reason
                results[i] = self.evaluate_one(p, k, inh)
                tick(1)
        jobs = self.plan(members)
        self._dispatch(jobs)
        timeline = _Timeline()
        for job in jobs:
            for member, evaluation in self._collect(job, timeline):
                results[member.index] = evaluation
                tick(1)
        return results  # type: ignore[return-value]

    # Planning -----------------------------------------------------------

    def plan(self, members: Sequence[_Member]) -> list[_Job]:
        """Group members by signature and place the groups on the devices."""
        groups: dict[architecture.Signature, list[_Member]] = {}
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
        costs = {id(job): architecture.cost(job.sig, self.input_shape) for job in jobs}
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
        need = architecture.training_bytes(sig, self.input_shape, time_steps=s.time_steps,
                                           batch_size=s.batch_size)
        return max(1, int(0.5 * free_bytes(device) // max(need, 1)))

    # Compiling and dispatching -------------------------------------------

    def _data_on(self, devices: tuple) -> tuple:
        def place():
            target = devices[0] if len(devices) == 1 else NamedSharding(_mesh(devices), PartitionSpec())
            return tuple(jax.device_put(x, target) for x in (
                self.evo_train.images, self.evo_train.labels, self.fitness.images,
                self.fitness.labels, self.fitness_key))
        return self._placed.get_or_make(tuple(d.id for d in devices), place)

    def _program_fn(self, sig, devices: tuple):
        s = self.settings
        options = dict(epochs=s.epochs, time_steps=s.time_steps, batch_size=s.batch_size,
                       eval_batch_size=s.eval_batch_size, correct_rate=s.correct_rate,
                       incorrect_rate=s.incorrect_rate, mode=s.mode, init_scheme=s.init)
        if s.early_stop is not None:
            options["stop_check"] = s.stop_check(self.evo_train.labels.shape[0])
        if s.min_steps is not None:
            options["min_steps"] = s.min_steps
        if s.activity:
            options["activity"] = True
        if s.encoding != "rate":
            options["input_encoding"] = s.encoding

        def one(key, hyper, start, *data):
            return training.train_and_score(sig, key, hyper, *data, inherited=start, **options)

        vmapped = self.batching == "vmap"

        def local(keys, hyper, start, images, labels, score_images, score_labels, score_key):
            data = (images, labels, score_images, score_labels, score_key)
            if vmapped:
                return jax.vmap(lambda k, h, st: one(k, h, st, *data))(keys, hyper, start)
            # One member per device: exactly the single-individual program.
            first = functools.partial(jax.tree.map, lambda x: x[0])
            out = one(keys[0], first(hyper), first(start), *data)
            return jax.tree.map(lambda x: x[None], out)

        if len(devices) == 1:
            return jax.jit(local)
        spec = PartitionSpec(_AXIS)
        # check_vma=False: the training loops' carries start replicated
        # (constants) and become per-member; every output is per-member.
        return jax.jit(jax.shard_map(local, mesh=_mesh(devices), in_specs=(spec, spec, spec) + (PartitionSpec(),) * 5,
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
            start = (None if not self.settings.inherit
                     else place(_stack([(m.inherited[0], m.inherited[1]) for m in slots])))
            args = (place(jnp.stack([m.key for m in slots])), place(_stack([m.hyper for m in slots])), start, *data)
            job.dispatches.append(_Dispatch(chunk, args, job.per_device))
        cache_key = (job.sig, tuple(d.id for d in job.devices), job.per_device, self.batching)
        program = self.programs.get(cache_key)
        if program is None:
            t0 = time.perf_counter()
            program = self._program_fn(job.sig, job.devices).lower(
                *job.dispatches[0].args).compile(compiler_options=self.compiler_options or None)
            job.compile_seconds = time.perf_counter() - t0
            self.programs.put(cache_key, program)
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

    def _collect(self, job: _Job, timeline: _Timeline) -> list[tuple[_Member, Evaluation]]:
        """Per-member evaluations of a dispatched job (one by one if the job failed)."""
        if job.error is None:
            try:
                for d in job.dispatches:
                    d.finished = d.done.result()
                    d.host = jax.device_get(d.output)
                    d.output = d.args = None  # free device buffers early
            except Exception as err:  # noqa: BLE001 - e.g. out of memory while running
                job.error = err
        if job.error is not None:
            fitness.log.warning("group of %d failed (%s); evaluating its members one by one",
                                len(job.members), fitness.reason(job.error))
            return [(m, self.evaluate_one(m.phenotype, m.key, m.inherited)) for m in job.members]
        out = []
        compile_share = job.compile_seconds / len(job.members)
        for d in job.dispatches:
            seconds = timeline.run_seconds(job, d) / d.per_device
            params, metrics = d.host
            for slot, m in enumerate(d.members):
                mine = jax.tree.map(lambda v, i=slot: v[i], metrics)
                if bool(mine["nonfinite"]):
                    ev = fitness.nonfinite(int(mine["steps"]), m.parameters, seconds, compile_share,
                                           int(mine["samples"]))
                else:
                    ev = fitness.scored(
                        float(mine["accuracy"]), stopped=bool(mine["stopped"]), steps=int(mine["steps"]),
                        parameters=m.parameters, train_seconds=seconds, compile_seconds=compile_share,
                        weights=jax.tree.map(lambda x, i=slot: np.array(x[i]), params),
                        train_samples=int(mine["samples"]),
                        inherited=None if m.inherited is None else m.inherited[2],
                        activity=(self.settings.summarise(m.sig, self.input_shape, mine["activity"],
                                                          self.fitness.labels.shape[0])
                                  if "activity" in mine else None))
                out.append((m, ev))
        return out
