"""One search's individuals evaluated on a Ray cluster (``runtime.executor=ray``).

The driver (the ``evolve`` process) keeps the evolutionary state, the
checkpoint and the records; only the evaluations move, to Ray actors each
holding an ordinary :class:`~spenser_jax.scheduler.Evaluator` on its own
devices, with the data put once into Ray's object store and the same
persistent compile cache. An individual is evaluated alone, with the
training key of its place in the generation, and the local executor's
grouping changes no bit (tested there), so the results equal the local
executor's and a run may resume on either. A worker (or node) that dies
mid-evaluation is replaced and the lost individual submitted again
(``retries`` counts these per generation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from spenser_jax.data import Splits
from spenser_jax.errors import SpenserError
from spenser_jax.genome.phenotype import Phenotype
from spenser_jax.training.evaluation import Evaluation
from spenser_jax.training.protocol import Protocol

log = logging.getLogger("spenser_jax")

MAX_RETRIES = 3
"""Times one individual is submitted again after losing its worker, before the run stops."""


class RayUnavailable(SpenserError, RuntimeError):
    """``runtime.executor=ray`` without Ray installed, or no cluster to join."""


class WorkerLost(SpenserError, RuntimeError):
    """An individual lost its worker more than :data:`MAX_RETRIES` times."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "runtime.executor=ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"
        ) from None
    return ray


def _lost(ray) -> tuple[type[BaseException], ...]:
    """The errors that mean a worker (not the individual) failed: its process or node died."""
    names = ("RayActorError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class _Worker:
    """A Ray actor's state: one Evaluator on the worker's devices (its class is wrapped by ``ray.remote``)."""

    def __init__(self, splits, seed, input_shape, protocol, evaluator_options, compile_cache, keep_memory):
        from spenser_jax.scheduler import Evaluator, enable_compile_cache, keep_host_memory, wants_host_memory_kept

        if wants_host_memory_kept(*keep_memory):  # this worker's host decides "auto"
            keep_host_memory()
        enable_compile_cache(compile_cache)
        self.evaluator = Evaluator(splits, seed=seed, input_shape=input_shape, protocol=protocol, **evaluator_options)

    def evaluate(self, phenotype, generation: int, index: int, inherited, budget=None, tag=None) -> Evaluation:
        [evaluation] = self.evaluator.evaluate(
            [phenotype], generation, None if inherited is None else [inherited], indices=[index], budget=budget, tag=tag
        )
        return evaluation

    def pid(self) -> int:
        return os.getpid()


class RayEvaluator:
    """Evaluates each generation on Ray actors; the interface of :class:`~spenser_jax.scheduler.Evaluator`.

    ``address`` None starts a local Ray instance, ``"auto"`` or ``"host:port"``
    joins a cluster; each worker holds ``cpus``/``gpus`` and evaluates one at a
    time; ``workers`` None: as many as the cluster allows. ``evaluator_options``
    exclude devices (each worker uses its own). ``compile_cache`` on a shared
    file system lets every node reuse every compile. ``keep_host_memory``'s
    ``"auto"`` is resolved on the worker's host.
    """

    def __init__(
        self,
        splits: Splits,
        *,
        seed: int,
        input_shape: tuple[int, int, int],
        protocol: Protocol,
        address: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
        workers: int | None = None,
        evaluator_options: dict | None = None,
        compile_cache: str | None = None,
        keep_host_memory: tuple[bool | str, bool] = (False, False),
        progress: bool = False,
        init_options: dict | None = None,
    ):
        ray = _ray()
        self.ray = ray
        self.protocol = protocol
        self.progress = progress
        self._started = False
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(**{"include_dashboard": False, "log_to_driver": False, **(init_options or {})})
                else:
                    ray.init(address=address, log_to_driver=False)
            except ConnectionError as err:
                raise RayUnavailable(f"runtime.ray_address={address!r}: {err}") from None
            self._started = True
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 0) // cpus) if cpus > 0 else 1 << 20
        if gpus > 0:
            fits = min(fits, int(resources.get("GPU", 0) // gpus))
        if fits < 1:
            if self._started:  # nothing of this process's Ray is left running
                ray.shutdown()
            raise RayUnavailable(
                f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) "
                f"cannot hold one worker of {cpus} CPUs and {gpus} GPUs (runtime.ray_cpus, runtime.ray_gpus)"
            )
        self.workers_count = fits if workers is None else min(workers, fits)
        options = dict(evaluator_options or {})
        options.pop("devices", None)
        actor = ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1)
        data = ray.put(splits)
        self._new_worker = lambda: actor.remote(
            data, seed, tuple(input_shape), protocol, options, compile_cache, keep_host_memory
        )
        self.actors = [self._new_worker() for _ in range(self.workers_count)]
        self.retries = 0  # in the last generation
        log.info(
            "Ray: %d workers of %s CPUs and %s GPUs on a cluster of %s CPUs and %s GPUs",
            self.workers_count,
            cpus,
            gpus,
            resources.get("CPU", 0),
            resources.get("GPU", 0),
        )

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            self.ray.kill(a)
        self.actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """The workers' process ids (what a test kills to stand for a lost node)."""
        return self.ray.get([a.pid.remote() for a in self.actors])

    def evaluate(
        self,
        phenotypes: Sequence[Phenotype],
        generation: int,
        inherited: Sequence[Any] | None = None,
        indices: Sequence[int] | None = None,
        *,
        budget=None,
        tag: int | None = None,
    ) -> list[Evaluation]:
        """The evaluations of one generation's phenotypes, in order, each on a free worker
        (``indices``, ``budget``, ``tag``: as :meth:`spenser_jax.scheduler.Evaluator.evaluate`'s)."""
        ray = self.ray
        phenotypes = list(phenotypes)
        inherited = list(inherited) if inherited is not None else [None] * len(phenotypes)
        if len(inherited) != len(phenotypes):
            raise ValueError("one inheritance per phenotype")
        places = list(range(len(phenotypes))) if indices is None else list(indices)
        if len(places) != len(phenotypes):
            raise ValueError("one index per phenotype")
        pending = list(range(len(phenotypes)))[::-1]  # popped from the end: in order
        results: list[Evaluation | None] = [None] * len(phenotypes)
        tries = [0] * len(phenotypes)
        running: dict[Any, tuple[int, Any]] = {}  # future -> (index, actor)
        free = list(self.actors)
        self.retries = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(phenotypes), desc=f"generation {generation} (ray)", unit="ind", leave=False)
        try:
            while pending or running:
                while pending and free:
                    i, a = pending.pop(), free.pop()
                    args = (phenotypes[i], generation, places[i], inherited[i], budget, tag)
                    running[a.evaluate.remote(*args)] = (i, a)
                done, _ = ray.wait(list(running), num_returns=1)
                for future in done:
                    i, a = running.pop(future)
                    try:
                        results[i] = ray.get(future)
                        free.append(a)
                    except _lost(ray) as err:
                        # A new worker takes the lost one's place (Ray schedules it where resources are).
                        replacement = self._new_worker()
                        self.actors[self.actors.index(a)] = replacement
                        free.append(replacement)
                        tries[i] += 1
                        self.retries += 1
                        if tries[i] > MAX_RETRIES:
                            raise WorkerLost(
                                f"generation {generation}, individual {i}: lost its worker {tries[i]} times"
                            ) from err
                        log.warning(
                            "generation %d, individual %d: its worker was lost (%s); evaluating it again",
                            generation,
                            i,
                            type(err).__name__,
                        )
                        pending.append(i)
                        continue
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]
