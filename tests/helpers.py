"""What test modules share (they never import one another): a deterministic stand-in for training, the
config, records without timings, a tiny generation for the scheduler, CIFAR-10 files made small, tiny run
directories and the hashes of every file in one.

The stand-in's fitness (and SynOps) are hashes of the phenotype text: no JAX,
no data, same in every process, so interrupted and uninterrupted runs can be
compared exactly.
"""

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from hydra import compose, initialize_config_dir

from spenser_jax import scheduler
from spenser_jax.data import Arrays, Splits
from spenser_jax.genome import phenotype
from spenser_jax.scheduler import Evaluator
from spenser_jax.training.evaluation import Evaluation
from spenser_jax.training.protocol import Protocol


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


class BudgetFakeEvaluator(FakeEvaluator):
    """The stand-in with the evaluator's keywords (``search.halving``): half a budget scores half the hash and
    counts 10 samples, the whole 20; a later round (``tag``) adds 0.25 to the fitness it started from."""

    def __init__(self, fail_every: int = 0):
        super().__init__(fail_every=fail_every)
        self.rounds = []  # (indices, budget, tag, inherited) per call

    def evaluate(self, phenotypes, generation, inherited=None, indices=None, *, budget=None, tag=None):
        phenotypes = list(phenotypes)
        self.rounds.append((indices, budget, tag, inherited))
        out = []
        for i, e in enumerate(super().evaluate(phenotypes, generation)):
            if not e.ok:
                out.append(e)
                continue
            start = float(inherited[i][0]["w"][0]) if tag is not None else 0.0
            fitness = start + 0.25 if tag is not None else e.fitness * (budget if budget is not None else 1)
            samples = 10 if budget is not None else 20
            out.append(
                dataclasses.replace(
                    e,
                    fitness=fitness,
                    weights={"w": np.array([fitness], np.float32)},
                    train_samples=samples,
                    train_steps=samples // 10,
                    inherited=None if inherited is None or inherited[i] is None else inherited[i][2],
                )
            )
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


# A tiny generation for the scheduler (tests/test_scheduler.py and its subprocesses).

SHAPE = (10, 10, 1)
# Low thresholds so that the tiny networks spike and learn something.
NET = (
    "layer:conv num-filters:{f} filter-shape:3 stride:1 padding:same bias:True "
    "layer:pool-max kernel-size:2 "
    "layer:act beta:{b} beta-trainable:True threshold:0.5 threshold-trainable:False "
    "surr-grad:atan reset:subtract "
    "layer:dropout rate:{d} layer:fc num-units:10 bias:True "
    "layer:act beta:0.9 beta-trainable:False threshold:0.5 threshold-trainable:True "
    "surr-grad:fast-sigmoid reset:zero "
    "learning:adam lr:{lr} beta1:0.9 beta2:0.999 decay:0.0001 amsgrad:False"
)


def phenotypes():
    """Four individuals: three share a signature (one with a NaN gene), one does not."""
    same = [
        phenotype.parse(NET.format(f=4, b=b, d=d, lr=lr))
        for b, d, lr in [(0.5, 0.1, 0.01), (0.8, 0.3, 0.003), (0.6, 0.0, 0.02)]
    ]
    nan = dataclasses.replace(same[2], learning=dataclasses.replace(same[2].learning, lr=float("nan")))
    other = phenotype.parse(NET.format(f=6, b=0.7, d=0.2, lr=0.01).replace("pool-max", "pool-avg"))
    return [same[0], other, nan, same[1]]


def toy_splits(seed=0, n_train=48, n_fitness=24):
    rng = np.random.default_rng(seed)

    def arrays(n):
        return Arrays(rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))

    train, fitness = arrays(n_train), arrays(n_fitness)
    return Splits(evo_train=train, fitness=fitness, train=train, test=fitness)


SETTINGS = Protocol(time_steps=2, epochs=2, batch_size=16, eval_batch_size=16)


def evaluator(**kwargs):
    kwargs.setdefault("compile_threads", 1)
    if isinstance(kwargs.get("devices"), int):
        kwargs["devices"] = scheduler.select_devices(kwargs["devices"])
    return Evaluator(toy_splits(), seed=3, input_shape=SHAPE, protocol=SETTINGS, **kwargs)


def assert_same(expected, actual):
    assert [e.status for e in actual] == [e.status for e in expected]
    assert [e.fitness for e in actual] == [e.fitness for e in expected]
    assert [e.parameters for e in actual] == [e.parameters for e in expected]
    for e, a in zip(expected, actual):
        assert (e.weights is None) == (a.weights is None)
        if e.weights is not None:
            jax.tree.map(np.testing.assert_array_equal, a.weights, e.weights)


# CIFAR-10 binary files in the official format, made small.

CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_FILES = CIFAR_TRAIN + ("test_batch.bin",)
CIFAR_META = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"


def cifar_bytes(images, labels):
    """Official records: 1 label byte, then the R, G and B planes, each row-major 32x32."""
    images = np.asarray(images, dtype=np.uint8)
    return b"".join(bytes([int(label)]) + image.transpose(2, 0, 1).tobytes() for image, label in zip(images, labels))


def fake_cifar(directory, n_train=2, n_test=3, seed=0):
    """A cifar-10-batches-bin folder: n_train records per data_batch file, n_test in test_batch.

    Pixel values keep the planes apart (R in 0..79, G in 88..167, B in 176..255),
    so a mix-up of channels shows. Returns {file name: (images [n, 32, 32, 3], labels)}.
    """
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(CIFAR_FILES):
        n = n_test if name == "test_batch.bin" else n_train
        images = rng.integers(0, 80, (n, 32, 32, 3), dtype=np.uint8) + np.array([0, 88, 176], np.uint8)
        labels = (np.arange(n) + n * i) % 10
        (directory / name).write_bytes(cifar_bytes(images, labels))
        arrays[name] = (images, labels)
    (directory / "batches.meta.txt").write_bytes(CIFAR_META)
    return arrays


def drawn_params(ph, input_shape, seed: int = 0, gain: float = 3.0) -> dict:
    """Parameters of ``ph`` named and shaped as ``network.init_params`` makes them, drawn by NumPy.

    The tree comes from ``init_params`` traced with ``jax.eval_shape`` (no
    compile); weights are PyTorch's U(±1/sqrt(fan_in)) times ``gain`` (3:
    every layer of the NIR tests' networks spikes), in the tree's layer
    order; β and θ are the phenotype's genes. benchmarks/nir_readers.py draws
    its networks with it too.
    """
    from spenser_jax.snn import network
    from spenser_jax.snn.architecture import split

    sig, hyper = split(ph)
    tree = jax.eval_shape(lambda key: network.init_params(key, sig, hyper, input_shape), jax.random.key(0))
    rng = np.random.default_rng(seed)
    betas, thetas = iter(np.asarray(hyper["beta"])), iter(np.asarray(hyper["threshold"]))
    params = {}
    for name in sorted(tree, key=lambda n: int(n.rsplit("_", 1)[1])):
        if name.startswith("lif_"):
            params[name] = {"beta": np.float32(next(betas)), "threshold": np.float32(next(thetas))}
        else:
            bound = gain / np.sqrt(np.prod(tree[name]["kernel"].shape[:-1]))
            params[name] = {k: rng.uniform(-bound, bound, s.shape).astype(np.float32) for k, s in tree[name].items()}
    return params


# Run directories: tiny ones made by the stand-in, and what a refusal must leave as it was.


def tiny_config(generations=2, *overrides):
    """A (1 + 2) search of ``generations`` on the stand-in's scale (T = 2): nothing trains, nothing is loaded."""
    return config("dataset.time_steps=2", "evolution.offspring=2", f"evolution.generations={generations}", *overrides)


def tiny_run(run_dir, generations=2, *overrides):
    """A run directory the stand-in made (every file a search writes); returns its config."""
    from spenser_jax import evolve

    cfg = tiny_config(generations, *overrides)
    evolve.run(cfg, Path(run_dir), evaluator=FakeEvaluator(), overrides=list(overrides))
    return cfg


def copy_run(run_dir, to):
    """A copy of a run directory, its lock file included (a refusal must not touch it either)."""
    shutil.copytree(run_dir, to)
    return Path(to)


def hashes(root):
    """Every file under ``root``: its path relative to ``root`` -> SHA-256 of its bytes (and its mode)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def untouched(before, after):
    """Whether a directory's files ``after`` (:func:`hashes`) are those ``before``: every byte and mode kept,
    nothing removed, nothing added but an empty ``.lock`` (taking a directory's lock makes one where a copy
    lacked it; removing it again could let two processes hold one directory)."""
    added = set(after) - set(before)
    empty = hashlib.sha256(b"").hexdigest()
    return (
        all(after.get(k) == v for k, v in before.items())
        and added <= {".lock"}
        and all(after[k][0] == empty for k in added)
    )
