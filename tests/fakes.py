"""A deterministic stand-in for training, to test the evolutionary loop fast.

Fitness is a hash of the phenotype text: no JAX, no data, same in every
process, so interrupted and uninterrupted runs can be compared exactly.
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
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Evaluation(-1.0, "nonfinite_loss", "loss became nan at step 3"))
            else:
                out.append(Evaluation(fitness, parameters=len(p.layers), train_seconds=0.01,
                                      weights={"w": np.array([fitness], np.float32)}))
        time.sleep(self.delay)
        return out
