"""What the tests of a search share: a deterministic stand-in for training, the config, records without timings.

Fitness (and SynOps) are hashes of the phenotype text: no JAX, no data, same
in every process, so interrupted and uninterrupted runs can be compared
exactly.
"""

import hashlib
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from spenser_jax.fitness import Evaluation


class FakeEvaluator:
    def __init__(self, delay: float = 0.0, fail_every: int = 0):
        self.delay = delay
        self.fail_every = fail_every
        self.calls = 0

    def evaluate(self, phenotypes, generation):
        out = []
        for p in phenotypes:
            self.calls += 1
            digest = hashlib.sha256(p.text.encode()).digest()
            fitness = int.from_bytes(digest[:4], "big") / 2**32
            synops = float(int.from_bytes(digest[4:8], "big") % 10**6)
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Evaluation(-1.0, "nonfinite_loss", "loss became nan at step 3"))
            else:
                activity = {
                    "spikes_per_sample": [synops / 100],
                    "input_spikes_per_sample": 100.0,
                    "synops_per_sample": synops,
                    "energy_pj_per_sample": 0.9 * synops,
                    "ann_energy_pj_per_sample": 4.6e6,
                }
                out.append(
                    Evaluation(
                        fitness,
                        parameters=len(p.layers),
                        train_seconds=0.01,
                        weights={"w": np.array([fitness], np.float32)},
                        train_samples=7,
                        activity=activity,
                    )
                )
        time.sleep(self.delay)
        return out


ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_seconds", "evaluations_per_second", "train_seconds", "compile_seconds")


def config(*overrides):
    """The package's configuration with ``overrides`` on a subset of 200 samples."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["dataset.subset=200", *overrides])


def strip_timing(records):
    """Records without their timings (what two runs of one search may differ in)."""

    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if k not in TIMING}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    return clean(records)
