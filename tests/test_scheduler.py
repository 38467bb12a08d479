"""Batched evaluation equals one-by-one evaluation, bit for bit, on one and four devices.

Tiny networks (10x10 inputs, T = 2, 48 samples, 2 epochs) written as
phenotype texts: three share a signature (one of them with a NaN learning
rate, which must fail alone), one does not.
"""

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from spenser_jax import scheduler, training
from spenser_jax.scheduler import Evaluator
from spenser_jax.snn import architecture
from spenser_jax.training import blocks, evaluation

from helpers import SETTINGS, SHAPE, assert_same, evaluator, phenotypes, toy_splits


@pytest.fixture(scope="module")
def one_by_one():
    return evaluator(batching="none").evaluate(phenotypes(), generation=2)


@pytest.mark.slow
def test_one_by_one_reference_is_not_trivial(one_by_one):
    statuses = [e.status for e in one_by_one]
    assert statuses == ["ok", "ok", "nonfinite_loss", "ok"]
    assert "after 0 steps" in one_by_one[2].reason
    # Same signature, other genes and key: other weights (the comparison below
    # is between differently trained networks, not copies).
    assert not np.array_equal(one_by_one[0].weights["conv_0"]["kernel"], one_by_one[3].weights["conv_0"]["kernel"])


@pytest.mark.slow
def test_batched_equals_one_by_one(one_by_one):
    batched = evaluator(batching="map", compile_threads=1)
    results = batched.evaluate(phenotypes(), generation=2)
    assert_same(one_by_one, results)
    # One program per signature; the group's compile time is split evenly.
    assert len(batched.programs) == 2
    group = [results[i].compile_seconds for i in (0, 2, 3)]
    assert group[0] > 0 and group == [group[0]] * 3
    # Cached programs: the next generation compiles nothing.
    again = batched.evaluate(phenotypes(), generation=3)
    assert all(e.compile_seconds == 0 for e in again) and len(batched.programs) == 2
    assert [e.fitness for e in again] != [e.fitness for e in results]  # other keys


@pytest.mark.slow
def test_failed_group_falls_back_to_one_by_one(one_by_one, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no program for you")

    monkeypatch.setattr(training, "train_and_score", broken)
    results = evaluator(batching="map", compile_threads=0).evaluate(phenotypes(), generation=2)
    assert_same(one_by_one, results)


@pytest.mark.slow
def test_vmap_is_close_but_optional(one_by_one):
    """vmap computes the same individuals up to float rounding (hence opt-in, in the run identity).

    Measured on these toy networks after 2 epochs: weights within ~1e-6 of
    one-by-one, fitness equal; the bound asserted is 1e-5.
    """
    results = evaluator(batching="vmap", vmap_group=3).evaluate(phenotypes(), generation=2)
    assert [e.status for e in results] == [e.status for e in one_by_one]
    assert [e.fitness for e in results] == [e.fitness for e in one_by_one]
    for e, a in zip(one_by_one, results):
        if e.weights is not None:
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-5), a.weights, e.weights)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="batching"):
        evaluator(batching="parallel")
    with pytest.raises(ValueError, match="compile_threads"):
        evaluator(compile_threads=-1)
    with pytest.raises(ValueError, match="devices"):
        scheduler.select_devices(len(jax.devices()) + 1)


def test_plan_spreads_groups_over_devices():
    ev = evaluator()
    fake = [type("Device", (), {"id": i})() for i in range(4)]
    ev.devices = tuple(fake)
    members = []
    for i, p in enumerate(phenotypes()):
        sig, hyper = architecture.split(p)
        members.append(scheduler._Member(i, p, sig, hyper, None, 0))
    jobs = ev.plan(members)
    assert sorted(len(j.members) for j in jobs) == [1, 3]
    group = next(j for j in jobs if len(j.members) == 3)
    assert len(group.devices) == 3  # one member per device
    # The other signature goes where the group is not: every device works.
    assert {d.id for j in jobs for d in j.devices} == {0, 1, 2, 3}


MULTI_DEVICE = """
import json, sys
sys.path.insert(0, {tests!r})
import jax, numpy as np
import helpers as t
assert len(jax.devices()) == 4, jax.devices()
# Reference in this process: results depend on the host's device count
# (XLA:CPU splits its threads between devices), not on the sharding.
alone = t.evaluator(batching="none", devices=1).evaluate(t.phenotypes(), generation=2)
ev = t.evaluator(batching="map", devices=4, compile_threads=2)
together = ev.evaluate(t.phenotypes(), generation=2)
t.assert_same(alone, together)
print(json.dumps({{"programs": [[d for d in k[1]] for k in ev.programs.keys()]}}))
"""


@pytest.mark.slow
def test_four_devices_equal_one_by_one():
    # The suite's XLA flags (conftest) plus four host devices.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    tests = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(tests).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE.format(tests=tests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    programs = json.loads(proc.stdout.strip().splitlines()[-1])["programs"]
    # The three-member group ran sharded over three devices, the other alone
    # on the fourth.
    assert sorted(len(d) for d in programs) == [1, 3]
    assert len({d for devices in programs for d in devices}) == 4


HOST_MEMORY = """
import resource
from spenser_jax import scheduler
assert scheduler.keep_host_memory()
import jax, jax.numpy as jnp, numpy as np
double = jax.jit(lambda x: x * 2.0)
x = jnp.asarray(np.ones(1 << 24, np.float32))  # each call's output: 64 MiB, over glibc's largest heap block
faults = []
for _ in range(32):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    double(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_kept_host_memory_is_reused_by_the_next_call():
    """By default glibc maps a block this large afresh at every call, faulting in its 16384 pages again.

    Kept, most calls reuse freed pages. Not all: JAX may free an output after the next call has
    allocated, and the heap then grows (1 to 12 of the 31 later calls faulted, over 20 runs).
    """
    proc = subprocess.run([sys.executable, "-c", HOST_MEMORY], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    faults = json.loads(proc.stdout.strip().splitlines()[-1])
    assert faults[0] >= 1 << 14  # the first call touches its output's pages
    faulted_again = sum(f >= 1 << 13 for f in faults[1:])
    assert faulted_again < len(faults[1:]) * 3 // 4  # glibc's default: every one of them


RELEASED = """
import numpy as np
from spenser_jax.scheduler import resources
assert resources.keep_host_memory()
def rss_mib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) // 1024
chunks = [np.ones(1 << 17) for _ in range(200)]  # 200 MiB from the kept heap, no mapping of their own
pin = np.ones(1 << 10)  # a small live block above them: glibc can no longer shrink the heap from its top
del chunks
held = rss_mib()
resources.release_host_memory()
print(held, rss_mib())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_released_host_memory_goes_back_to_the_kernel_between_candidates():
    """Kept memory freed below a live block stays resident (a random search grew to 13.9 GB); released, it goes."""
    proc = subprocess.run([sys.executable, "-c", RELEASED], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    held, released = map(int, proc.stdout.split())
    assert held - released >= 150  # of the 200 MiB freed


@pytest.mark.slow
def test_runtime_failure_in_a_group_is_recorded_per_individual(one_by_one, monkeypatch):
    """A group that fails on the device (not at compile) is evaluated again member by member.

    The member that fails alone too gets an error record with its reason; the
    others are scored exactly as one by one.
    """
    failing = phenotypes()[1]

    def device_error(output):
        future = concurrent.futures.Future()
        future.set_exception(RuntimeError("RESOURCE_EXHAUSTED: out of memory while running"))
        return future

    train = evaluation.Trainer.train

    def train_or_fail(self, phenotype, *args, **kwargs):
        if phenotype == failing:
            raise RuntimeError("INTERNAL: the device fell over")
        return train(self, phenotype, *args, **kwargs)

    monkeypatch.setattr(scheduler.dispatch, "_watch", device_error)
    monkeypatch.setattr(evaluation.Trainer, "train", train_or_fail)
    results = evaluator(batching="map").evaluate(phenotypes(), generation=2)
    assert [e.status for e in results] == ["ok", "error", "nonfinite_loss", "ok"]
    assert results[1].fitness == evaluation.FAILED_FITNESS and "the device fell over" in results[1].reason
    assert results[1].parameters == one_by_one[1].parameters > 0
    kept = [0, 2, 3]
    assert_same([one_by_one[i] for i in kept], [results[i] for i in kept])


def test_close_stops_the_compile_threads():
    ev = evaluator(batching="map", compile_threads=2)
    ev._pool.submit(lambda: None).result()
    threads = list(ev._pool._threads)
    assert threads and all(t.is_alive() for t in threads)
    ev.close()
    ev.close()  # idempotent
    assert not any(t.is_alive() for t in threads)
    with evaluator(batching="map", compile_threads=1) as ev:
        pool = ev._pool
    assert ev._pool is None and pool._shutdown


@pytest.mark.slow
def test_search_budget_and_inheritance_batched_equal_one_by_one(one_by_one):
    """Half an epoch, an early check and inherited starts: batched still equals one by one."""
    settings = dataclasses.replace(SETTINGS, epochs=0.5, early_stop=0.5, inherit=True)
    trained = one_by_one[0].weights
    values = jax.tree.map(np.asarray, trained)
    mask = jax.tree.map(lambda x: np.zeros(np.shape(x), bool), trained)
    mask["conv_0"]["kernel"][...] = True
    starts = [None, None, None, (values, mask, 0.5)]  # the last shares the first's signature

    def run(batching):
        ev = Evaluator(toy_splits(), seed=3, input_shape=SHAPE, protocol=settings, batching=batching, compile_threads=0)
        return ev.evaluate(phenotypes(), generation=2, inherited=starts)

    alone, together = run("none"), run("map")
    assert_same(alone, together)
    assert [e.train_samples for e in together] == [e.train_samples for e in alone]
    assert [e.train_samples for e in alone] == [32, 32, 0, 32]  # 2 of the 3 batches of 16
    assert [e.inherited for e in together] == [e.inherited for e in alone] == [0.0, 0.0, None, 0.5]
    with pytest.raises(ValueError, match="inherit is off"):
        evaluator().evaluate(phenotypes(), generation=2, inherited=starts)


@pytest.mark.slow
def test_programs_per_layer_evaluate_as_the_whole_program(one_by_one, monkeypatch):
    """runtime.compile_unit=layer: the same statuses and fitness, weights to rounding, nothing compiled twice."""
    ev = evaluator(compile_unit="layer")
    results = ev.evaluate(phenotypes(), generation=2)
    assert [e.status for e in results] == [e.status for e in one_by_one]
    assert [e.fitness for e in results] == [e.fitness for e in one_by_one]
    for e, a in zip(one_by_one, results):
        if e.weights is not None:  # the tolerance of tests/test_layer_programs.py, and its reason
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-6), a.weights, e.weights)
            assert a.activity["spikes_per_sample"] == pytest.approx(e.activity["spikes_per_sample"], rel=1e-6)
    assert results[0].compile_seconds > 0 and len(ev.programs) == 0  # no whole program was built
    # The next member's programs compile while one trains (a compile thread): the same results.
    alone = evaluator(compile_unit="layer", compile_threads=0).evaluate(phenotypes(), generation=2)
    assert_same(alone, results)
    again = ev.evaluate(phenotypes(), generation=2)
    assert all(e.compile_seconds == 0 for e in again)
    assert [e.fitness for e in again] == [e.fitness for e in results]  # same keys, same results
    # inspect and export rebuild an individual's weights the way the search trained them.
    run = types.SimpleNamespace(identity={"seed": 3, "runtime": {"compile_unit": "layer"}}, protocol=lambda: SETTINGS)
    rebuilt = evaluation.train_again(run, phenotypes()[3], 2, 3, toy_splits())
    jax.tree.map(np.testing.assert_array_equal, rebuilt, results[3].weights)

    def broken(*args, **kwargs):
        raise RuntimeError("no programs for you")

    monkeypatch.setattr(blocks, "train_and_score", broken)
    assert_same(one_by_one, evaluator(compile_unit="layer").evaluate(phenotypes(), generation=2))
