"""Running a planned generation: compile ahead, dispatch, watch, collect.

:class:`_Execution` takes the :class:`~spenser_jax.scheduler.plan._Job` s
that planning made, builds each job's arguments and compiles (or fetches)
its program, possibly in a pool of compile threads, dispatches it
asynchronously, watches for its end, and turns its outputs into one
:class:`~spenser_jax.training.evaluation.Evaluation` per member; a job that fails falls
back to evaluating its members one by one. :class:`_Timeline` splits the
wall time between dispatches that share devices (``train_seconds``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spenser_jax.scheduler.plan import _Dispatch, _Job, _Member
from spenser_jax.scheduler.resources import release_host_memory
from spenser_jax.training import blocks, core, evaluation
from spenser_jax.training.evaluation import Evaluation

_AXIS = "offspring"


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


class _Execution:
    """The :class:`~spenser_jax.scheduler.Evaluator`'s compiling, dispatching and collecting half.

    Reads ``protocol``, ``input_shape``, ``batching``, ``compiler_options``,
    the on-device data (``evo_train``, ``fitness_data``, ``fitness_key``), the
    caches ``programs`` and ``_placed``, the compile pool ``_pool``, and
    falls back to ``evaluate_one``, all of the evaluator.
    """

    def _data_on(self, devices: tuple) -> tuple:
        def place():
            target = devices[0] if len(devices) == 1 else NamedSharding(_mesh(devices), PartitionSpec())
            return tuple(
                jax.device_put(x, target)
                for x in (
                    self.evo_train.images,
                    self.evo_train.labels,
                    self.fitness_data.images,
                    self.fitness_data.labels,
                    self.fitness_key,
                )
            )

        return self._placed.get_or_make(tuple(d.id for d in devices), place)

    def _program_fn(self, sig, devices: tuple):
        protocol = self.protocol

        def one(key, hyper, start, *data):
            return core.train_and_score(sig, key, hyper, *data, protocol, inherited=start)

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
        return jax.jit(
            jax.shard_map(
                local,
                mesh=_mesh(devices),
                in_specs=(spec, spec, spec) + (PartitionSpec(),) * 5,
                out_specs=spec,
                check_vma=False,
            )
        )

    def _prepare(self, job: _Job) -> _Job:
        """Build the job's arguments and compile (or fetch) its program."""
        data = self._data_on(job.devices)
        width = len(job.devices) * job.per_device
        if len(job.devices) == 1:
            place = functools.partial(jax.device_put, device=job.devices[0])
        else:
            place = functools.partial(jax.device_put, device=NamedSharding(_mesh(job.devices), PartitionSpec(_AXIS)))
        for start in range(0, len(job.members), width):
            chunk = job.members[start : start + width]
            slots = chunk + [chunk[-1]] * (width - len(chunk))  # padding: results dropped
            start = (
                None if not self.protocol.inherit else place(_stack([(m.inherited[0], m.inherited[1]) for m in slots]))
            )
            args = (place(jnp.stack([m.key for m in slots])), place(_stack([m.hyper for m in slots])), start, *data)
            job.dispatches.append(_Dispatch(chunk, args, job.per_device))
        cache_key = (job.sig, tuple(d.id for d in job.devices), job.per_device, self.batching, self.protocol)
        program = self.programs.get(cache_key)
        if program is None:
            t0 = time.perf_counter()
            program = (
                self._program_fn(job.sig, job.devices)
                .lower(*job.dispatches[0].args)
                .compile(compiler_options=self.compiler_options or None)
            )
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
            evaluation.log.warning(
                "group of %d failed (%s); evaluating its members one by one",
                len(job.members),
                evaluation.reason(job.error),
            )
            return [(m, self.evaluate_one(m.phenotype, m.key, m.inherited)) for m in job.members]
        out = []
        compile_share = job.compile_seconds / len(job.members)
        for d in job.dispatches:
            seconds = timeline.run_seconds(job, d) / d.per_device
            params, metrics = d.host
            for slot, m in enumerate(d.members):
                mine = jax.tree.map(lambda v, i=slot: v[i], metrics)
                weights = jax.tree.map(lambda x, i=slot: np.array(x[i]), params)
                out.append((m, self._evaluation(m, mine, weights, seconds, compile_share)))
        return out

    def _evaluation(
        self, m: _Member, metrics: dict, weights: Any, seconds: float, compile_seconds: float
    ) -> Evaluation:
        """One member's record from its ``train_and_score`` outputs (on the host; :func:`evaluation.record`)."""
        return evaluation.record(
            metrics,
            parameters=m.parameters,
            train_seconds=seconds,
            compile_seconds=compile_seconds,
            weights=weights,
            inherited=None if m.inherited is None else m.inherited[2],
            activity=(
                self.protocol.summarise(m.sig, self.input_shape, metrics["activity"], self.fitness_data.labels.shape[0])
                if "activity" in metrics and not bool(metrics["nonfinite"])
                else None
            ),
        )

    def _evaluate_layered(self, members: list[_Member]):
        """Each member in turn through programs per block (:mod:`spenser_jax.training.blocks`), on the first device.

        With a compile pool, the next member's new programs compile while
        this one trains (:func:`~spenser_jax.blocks.compile_ahead`),
        as whole programs compile ahead of their group. Yields ``(member,
        evaluation)``.
        """
        data = self._data_on(self.devices[:1])
        options = tuple(sorted(self.compiler_options.items()))

        def ahead(m: _Member) -> float:
            images, labels, score_images, score_labels, _ = data
            return blocks.compile_ahead(
                m.sig, m.hyper, images, labels, score_images, score_labels, self.protocol, options=options
            )

        pending = None
        for i, m in enumerate(members):
            compiled = pending.result() if pending is not None else 0.0
            pending = None
            if self._pool is not None and i + 1 < len(members):
                pending = self._pool.submit(ahead, members[i + 1])
            evaluated = self._evaluate_one_layered(m, data, options, compiled)
            release_host_memory()
            yield m, evaluated

    def _evaluate_one_layered(self, m: _Member, data: tuple, options: tuple, compiled_ahead: float) -> Evaluation:
        """One member through programs per block; an error falls back to :meth:`evaluate_one`.

        Its ``compile_seconds`` are those JAX spent compiling the programs
        it was the first to need, ahead (``compiled_ahead``) or now.
        """
        compiled_before = blocks.compile_seconds()
        t0 = time.perf_counter()
        try:
            start = None if m.inherited is None else m.inherited[:2]
            params, metrics = blocks.train_and_score(
                m.sig, m.key, m.hyper, *data, self.protocol, inherited=start, options=options
            )
            metrics = jax.device_get(metrics)
        except Exception as err:  # noqa: BLE001 - the member is evaluated alone, where errors are recorded
            evaluation.log.warning("programs per block failed (%s); evaluating it whole", evaluation.reason(err))
            return self.evaluate_one(m.phenotype, m.key, m.inherited)
        compiling = blocks.compile_seconds() - compiled_before
        seconds = max(0.0, time.perf_counter() - t0 - compiling)
        return self._evaluation(m, metrics, params, seconds, compiling + compiled_ahead)
