"""The paper's splits: EvoTrain / Fitness drawn stratified from the train split, and Test.

Pure numpy on arrays already loaded; every draw comes from the run's seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spenser_jax.data.catalog import Arrays, Dataset


class SplitIndices(NamedTuple):
    """Indices into the official train split, each sorted ascending."""

    evo_train: np.ndarray  # [n - n_fitness] int64
    fitness: np.ndarray  # [n_fitness] int64
    train: np.ndarray  # [n] int64: evo_train and fitness together


class Splits(NamedTuple):
    """The paper's splits of one data set for one run."""

    evo_train: Arrays  # trains each offspring (70% of `train`)
    fitness: Arrays  # scores each offspring (30% of `train`)
    train: Arrays  # every train sample in use: retraining after evolution
    test: Arrays  # the official test split


def _allocate(rng: np.random.Generator, counts: np.ndarray, total: int) -> np.ndarray:
    """Splits ``total`` over classes in proportion to ``counts`` (largest remainder).

    Each class gets the floor or the ceiling of its exact share; integer
    arithmetic so that exact shares are never rounded the wrong way.
    """
    n = int(counts.sum())
    alloc = counts * total // n
    remainder = counts * total % n
    short = total - int(alloc.sum())
    if short:
        # Shuffle first so that equal remainders are broken by the seed, not
        # always in favour of the lowest class index.
        order = rng.permutation(len(counts))
        ranked = order[np.argsort(-remainder[order], kind="stable")]
        alloc[ranked[:short]] += 1
    return alloc


def _stratified_pick(rng: np.random.Generator, labels: np.ndarray, total: int) -> np.ndarray:
    """Positions (into ``labels``) of ``total`` samples drawn stratified by class."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(rng, counts.astype(np.int64), total)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, alloc)]
    return np.sort(np.concatenate(picked))


def split_indices(
    labels: np.ndarray, seed: int, subset: int | None = None, fitness_fraction: float = 0.3
) -> SplitIndices:
    """Draws the EvoTrain / Fitness partition of a train split's labels.

    Both draws are stratified by class: first ``subset`` samples of the
    whole split (when given), then ``fitness_fraction`` of those for Fitness.
    Each class gets the floor or ceiling of its exact share, and Fitness gets
    ``round(n * fitness_fraction)`` samples in all.

    Raises:
        ValueError: bad ``subset`` or ``fitness_fraction``, or a split that
            would leave EvoTrain or Fitness empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if not 0.0 < fitness_fraction < 1.0:
        raise ValueError(f"fitness_fraction must be in (0, 1), got {fitness_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        # default_rng(None) would silently draw a fresh, unrecorded seed.
        raise ValueError(f"seed must be an int, got {seed!r}")
    rng = np.random.default_rng(seed)
    if subset is None:
        kept = np.arange(len(labels))
    else:
        if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)):
            raise ValueError(f"subset must be an int or None, got {subset!r}")
        if not 0 < subset <= len(labels):
            raise ValueError(f"subset must be in [1, {len(labels)}], got {subset}")
        kept = _stratified_pick(rng, labels, int(subset))
    n = len(kept)
    n_fitness = round(n * fitness_fraction)
    if not 0 < n_fitness < n:
        raise ValueError(
            f"{n} samples with fitness_fraction={fitness_fraction} leave "
            f"{n_fitness} for Fitness and {n - n_fitness} for EvoTrain; both "
            "must be non-empty"
        )
    fitness = kept[_stratified_pick(rng, labels[kept], n_fitness)]
    evo_train = np.setdiff1d(kept, fitness, assume_unique=True)
    return SplitIndices(evo_train=evo_train, fitness=fitness, train=kept)


def split(
    dataset: Dataset,
    seed: int,
    subset: int | None = None,
    fitness_fraction: float = 0.3,
    fitness_subset: int | None = None,
) -> Splits:
    """The paper's splits of ``dataset`` for the run with ``seed``.

    See :func:`split_indices` for how EvoTrain and Fitness are drawn. Test is
    the official test split, whole.

    Raises:
        ValueError: a size that the train split cannot give.
    """
    idx = split_indices(dataset.train_labels, seed, subset, fitness_fraction)

    def take(indices: np.ndarray) -> Arrays:
        return Arrays(dataset.train_images[indices], dataset.train_labels[indices])

    full = len(idx.train) == len(dataset.train_labels)
    train = Arrays(dataset.train_images, dataset.train_labels) if full else take(idx.train)
    fitness = take(idx.fitness)
    if fitness_subset is not None:
        fitness = stratified_subset(fitness, fitness_subset, seed)
    return Splits(
        evo_train=take(idx.evo_train),
        fitness=fitness,
        train=train,
        test=Arrays(dataset.test_images, dataset.test_labels),
    )


def stratified_subset(arrays: Arrays, total: int, seed: int) -> Arrays:
    """``total`` samples of ``arrays`` drawn stratified by class, in their original order.

    The draw depends on ``seed`` alone (a stream of its own, apart from the
    EvoTrain/Fitness split's), so every individual of a run sees the same
    subset (e.g. a smaller Fitness split for cheaper scoring).

    Raises:
        ValueError: ``total`` not in ``[1, len(arrays.labels)]``.
    """
    n = len(arrays.labels)
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or not 0 < total <= n:
        raise ValueError(f"subset size must be an int in [1, {n}], got {total!r}")
    if total == n:
        return arrays
    picked = _stratified_pick(np.random.default_rng([seed, 0x5B5E]), np.asarray(arrays.labels), int(total))
    return Arrays(arrays.images[picked], arrays.labels[picked])
