"""A deterministic stand-in for training, to test the evolutionary loop fast.

Fitness (and SynOps) are hashes of the phenotype text: no JAX, no data, same
in every process, so interrupted and uninterrupted runs can be compared
exactly.
"""

import hashlib
import time

import numpy as np

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
