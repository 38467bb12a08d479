"""runtime.executor=ray: a local Ray instance evaluates a short search exactly as the local executor does."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from spenser_jax import evolve
from spenser_jax.run import checkpoint, files

from helpers import config, strip_timing

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts Ray and trains real (tiny) networks

SEARCH = ("dataset.time_steps=2", "evolution.offspring=3", "evolution.generations=2", "runtime.progress=false")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("local")
    final = evolve.run(config(*SEARCH), run_dir)
    return run_dir, final


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield
    ray.shutdown()


def clean(records):
    return [{k: v for k, v in r.items() if k != "retries"} for r in strip_timing(records)]


def test_a_ray_search_equals_the_local_one(local_run, ray_instance, tmp_path):
    local_dir, local_final = local_run
    final = evolve.run(config(*SEARCH, "runtime.executor=ray"), tmp_path)
    records = files.read_generations(tmp_path)
    assert clean(records) == clean(files.read_generations(local_dir))
    assert all(r["retries"] == 0 for r in records)
    assert final == local_final
    for a, b in zip(
        checkpoint.load(tmp_path).parent_weights.values(), checkpoint.load(local_dir).parent_weights.values()
    ):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # And a run may resume on the other executor: two more generations locally equal two more on Ray.
    more = (*SEARCH[:-2], "evolution.generations=3", "runtime.progress=false")
    evolve.run(config(*more), local_dir)
    evolve.run(config(*more, "runtime.executor=ray"), tmp_path)
    assert clean(files.read_generations(tmp_path)) == clean(files.read_generations(local_dir))


def test_killed_workers_are_replaced_and_the_run_ends_as_the_local_one(local_run, ray_instance, tmp_path):
    from spenser_jax.scheduler.ray_executor import RayEvaluator

    local_dir, _ = local_run
    s = evolve.setup(config(*SEARCH))
    with RayEvaluator(s.splits, seed=s.seed, input_shape=s.space.input_shape, protocol=s.protocol) as evaluator:
        pids = evaluator.worker_pids()
        assert len(pids) == 2
        done = []
        search = threading.Thread(
            target=lambda: done.append(evolve.run(config(*SEARCH), tmp_path, evaluator=evaluator)), daemon=True
        )
        search.start()
        # Kill both workers while generation 1 runs: three individuals on two workers, each busy compiling.
        deadline = time.time() + 120
        while not files.read_generations(tmp_path) and time.time() < deadline:
            time.sleep(0.02)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        search.join(timeout=240)
        assert done, "the search did not finish"
        assert set(evaluator.worker_pids()).isdisjoint(pids)  # new workers took their places
    records = files.read_generations(tmp_path)
    assert records[1]["retries"] >= 1
    assert clean(records) == clean(files.read_generations(local_dir)[:2])
    assert json.loads((tmp_path / files.BEST).read_text())["fitness"] == records[-1]["best_fitness"]


def test_ray_settings_are_checked():
    for override, message in (
        ("runtime.executor=spark", "runtime.executor must be one of"),
        ("runtime.executor=ray runtime.ray_cpus=-1", "runtime.ray_cpus must be a number >= 0"),
        ("runtime.executor=ray runtime.ray_cpus=0 runtime.ray_gpus=0", "cannot both be 0"),
        ("runtime.executor=ray runtime.ray_workers=0", "runtime.ray_workers must be null or an int >= 1"),
    ):
        with pytest.raises(evolve.ConfigError, match=message):
            evolve.setup(config(*override.split()), load_data=False)
    # Where individuals run is not part of what they compute.
    assert (
        evolve.setup(config("runtime.executor=ray"), load_data=False).identity
        == evolve.setup(config(), load_data=False).identity
    )
