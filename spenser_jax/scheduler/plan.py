"""Planning a generation: what its work looks like, grouped by signature and placed on devices.

:meth:`_Planning.plan` groups the members of a generation by
:class:`~spenser_jax.snn.architecture.Signature` (one program per group) and
places the groups on the devices by estimated cost; nothing is compiled or
run here (that is :mod:`spenser_jax.scheduler.dispatch`). The work is
described by plain records: a :class:`_Member` per individual, a
:class:`_Job` per group on its devices, a :class:`_Dispatch` per launch of
the job's program (filled in when it runs).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Sequence
from typing import Any

import jax

from spenser_jax.genome.phenotype import Phenotype
from spenser_jax.scheduler.resources import free_bytes
from spenser_jax.snn import architecture


@dataclasses.dataclass
class _Member:
    index: int  # position in the generation
    phenotype: Phenotype
    sig: architecture.Signature
    hyper: dict
    key: jax.Array
    parameters: int
    inherited: tuple | None = None  # (values, mask, share) with protocol.inherit


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


class _Planning:
    """The :class:`~spenser_jax.scheduler.Evaluator`'s planning half.

    Reads ``devices``, ``batching``, ``vmap_group``, ``protocol`` and
    ``input_shape`` of the evaluator.
    """

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
        s = self.protocol
        need = architecture.training_bytes(sig, self.input_shape, time_steps=s.time_steps, batch_size=s.batch_size)
        return max(1, int(0.5 * free_bytes(device) // max(need, 1)))
