"""Image classification data sets: loading, checking, and the paper's splits.

Data sets: ``"mnist"``, ``"fmnist"`` (Fashion-MNIST), ``"cifar10"`` and
``"cifar10_jpeg"``; with ``source="tfds"`` also any tensorflow-datasets image
classification data set, by its TFDS name; with ``source="folder"`` any
labelled image folder. Sources:

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
* ``source="folder"``: any labelled image folder, ``DIR/train/<class>/*``
  and optionally ``DIR/test/<class>/*`` (:mod:`~spenser_jax.data.folder`;
  config ``dataset=folder dataset.path=DIR``). ``"cifar10_jpeg"``, the JPEG
  copy of CIFAR-10 on these machines, is such a folder found by the same
  search as the files above (``cifar10_jpeg/``) and checked against the
  SHA-256 listing of its files; it is "CIFAR-10 (JPEG copy)", never the
  official CIFAR-10.
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

This package's ``__init__`` holds the public API (:func:`load` and the names
it re-exports); one module per job holds the rest, so that each reads top to
bottom: :mod:`~spenser_jax.data.catalog` (the data sets known, their specs,
:class:`Dataset` and the checks every source shares),
:mod:`~spenser_jax.data.locate` (where the files are),
:mod:`~spenser_jax.data.idx` (MNIST / Fashion-MNIST files),
:mod:`~spenser_jax.data.cifar` (CIFAR-10 binary files),
:mod:`~spenser_jax.data.folder` (image folders) and its decoded-array cache
:mod:`~spenser_jax.data.cache`,
:mod:`~spenser_jax.data.tfds` (tensorflow-datasets) and
:mod:`~spenser_jax.data.splits` (the paper's splits).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from spenser_jax.data.cache import CACHE_DIR_ENV
from spenser_jax.data.catalog import _ALIASES, _SPECS, TIME_STEPS, Arrays, DataError, Dataset, _canonical, known_shape
from spenser_jax.data.cifar import CIFAR10_URL, _load_cifar
from spenser_jax.data.folder import TEST_SEED, load_folder, scan
from spenser_jax.data.idx import _load_idx, read_idx
from spenser_jax.data.locate import DATA_DIR_ENV, _candidate_dirs, default_data_dir
from spenser_jax.data.splits import SplitIndices, Splits, split, split_indices, stratified_subset
from spenser_jax.data.tfds import _load_tfds

__all__ = [
    "CACHE_DIR_ENV",
    "CIFAR10_URL",
    "DATA_DIR_ENV",
    "SOURCES",
    "TIME_STEPS",
    "Arrays",
    "DataError",
    "Dataset",
    "SplitIndices",
    "Splits",
    "check_section",
    "default_data_dir",
    "from_identity",
    "from_section",
    "known_shape",
    "load",
    "load_folder",
    "read_idx",
    "section_identity",
    "split",
    "split_indices",
    "stratified_subset",
]

_FORMATS = {"idx": _load_idx, "cifar_bin": _load_cifar}
#: Accepted values of ``source``; "idx" is the old name of "files".
SOURCES = ("files", "idx", "tfds", "folder")
#: The config keys only ``source="folder"`` reads.
FOLDER_KEYS = ("path", "image_size", "test_fraction")


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    source: str = "files",
    verify: bool = True,
    *,
    tfds_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a whole data set (official train and test splits), images ``uint8 [N, H, W, C]``, read-only.

    ``name``: ``"mnist"``, ``"fmnist"`` or ``"cifar10"``, or with
    ``source="tfds"`` any tensorflow-datasets image classification name
    (``tfds_name`` picks the builder). ``data_dir`` None searches
    ``$SPENSER_DATA_DIR``, else ``../shared/data`` beside the checkout (and,
    for Fashion-MNIST, Debian's install location); it may also be a parent
    holding the data sets' folders or CIFAR-10's archive itself.
    ``verify=False`` reads one's own files in the same format (sizes and
    records still checked). ``cache_dir``: where an image folder's decoded
    arrays are cached.

    Raises:
        DataError: the data is missing, unreadable, or fails its checksum.
        ValueError: unknown ``name`` (for the files) or ``source``, or a
            ``tfds_name`` without ``source="tfds"``.
    """
    if source not in SOURCES or source == "folder":
        known = [s for s in SOURCES if s != "folder"]
        raise ValueError(f"unknown source {source!r} (known: {known}; an image folder: load_folder)")
    if source == "tfds":
        key = _ALIASES.get(name, name)
        if key in _SPECS and not _SPECS[key].tfds_name:
            raise ValueError(f"{name!r} is read from its files only; tensorflow-datasets has no such data set")
        if key not in _SPECS:
            key = name  # any TFDS name; it keeps its own spelling
        default = _SPECS[key].tfds_name if key in _SPECS else name
        return _load_tfds(key, tfds_name or default, data_dir)
    if tfds_name is not None:
        raise ValueError(f"tfds_name={tfds_name!r} applies only to source='tfds', not {source!r}")
    name = _canonical(name)
    spec = _SPECS[name]
    if spec.format == "folder":
        digest = spec.digest if verify else None
        return load_folder(_locate_folder(name, data_dir), name=name, cache_dir=cache_dir, digest=digest)
    return _FORMATS[spec.format](name, data_dir, verify)


def _locate_folder(name: str, data_dir: str | os.PathLike | None) -> Path:
    spec, looked = _SPECS[name], []
    for directory in _candidate_dirs(spec, data_dir):
        if (directory / "train").is_dir():
            return directory
        looked.append(f"  {directory}  ({'no train/ folder' if directory.is_dir() else 'no such directory'})")
    raise DataError(
        f"no {spec.title} found (a folder {spec.subdirs[0]}/ holding train/<class>/*). Looked in:\n"
        + "\n".join(looked)
        + f"\n{spec.how_to_get}. Point dataset.data_dir (or ${DATA_DIR_ENV}) at it or at its parent."
    )


# The dataset section of a run's config (evolve's ``setup``) and of its
# identity (``run.json``, which retrain / inspect / report read back).

_MISSING = (None, "???")  # OmegaConf leaves a mandatory value it was not given as "???"


def _image_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"dataset.image_size must be null, an int N (N x N) or [H, W] of ints >= 1, got {value!r}")


def check_section(section: Mapping) -> None:
    """Checks the config keys an image folder adds (``dataset=folder``); other data sets pass untouched.

    Raises:
        ValueError: a folder key missing or malformed, or given to another source.
    """
    if section.get("source", "idx") != "folder":
        given = [k for k in FOLDER_KEYS if k in section]
        if given:
            raise ValueError(f"dataset.{given[0]} applies to dataset=folder (dataset.source=folder) only")
        return
    if section.get("path") in _MISSING:
        raise ValueError("dataset.path is required for dataset=folder: the folder holding train/<class>/<images>")
    if section.get("time_steps") in _MISSING:
        raise ValueError(
            "dataset.time_steps is required for dataset=folder: no default suits unknown images "
            "(the paper: 10 for MNIST, 25 for Fashion-MNIST, 50 for CIFAR-10); set dataset.time_steps=T"
        )
    _image_size(section.get("image_size"))
    fraction = section.get("test_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"dataset.test_fraction must be in (0, 1), got {fraction!r}")
    if not isinstance(section.get("name"), str) or not section["name"] or "/" in section["name"]:
        raise ValueError(
            f"dataset.name must be a name without '/' (runs are filed under it), got {section.get('name')!r}"
        )


def from_section(section: Mapping) -> Dataset:
    """The :class:`Dataset` a run's ``dataset`` config section names (every source)."""
    if section.get("source", "idx") == "folder":
        return load_folder(
            section["path"],
            name=section["name"],
            image_size=_image_size(section.get("image_size")),
            test_fraction=section.get("test_fraction", 0.2),
            cache_dir=section.get("cache_dir"),
        )
    return load(
        section["name"],
        section.get("data_dir"),
        source=section.get("source", "idx"),
        verify=section.get("verify", True),
        tfds_name=section.get("tfds_name"),
        cache_dir=section.get("cache_dir"),
    )


def section_identity(section: Mapping) -> dict:
    """What an image folder adds to a run's identity (``{}`` for every other source).

    ``{"folder": {"path", "image_size", "classes", "test"}}``: the folder (absolute),
    the size images were resized to (None: not resized), the classes in index
    order, and ``"test/"`` or, where the test split was carved from ``train/``,
    ``{"carved": test_fraction, "seed": TEST_SEED}``.
    """
    if section.get("source", "idx") != "folder":
        return {}
    listing = scan(section["path"])
    size = _image_size(section.get("image_size"))
    test = "test/" if listing.has_test else {"carved": section.get("test_fraction", 0.2), "seed": TEST_SEED}
    return {
        "folder": {
            "path": str(listing.root.resolve()),
            "image_size": list(size) if size else None,
            "classes": list(listing.classes),
            "test": test,
        }
    }


def from_identity(identity: Mapping, section: Mapping, data_dir: str | os.PathLike | None = None) -> Dataset:
    """The :class:`Dataset` of a finished run, from its identity and its config's ``dataset`` section.

    ``data_dir`` overrides where the data is: the config's ``data_dir``, or an
    image folder's path.

    Raises:
        DataError: an image folder whose classes or test split differ from the run's.
    """
    if identity.get("source") != "folder":
        return load(
            identity["dataset"],
            data_dir if data_dir is not None else section.get("data_dir"),
            source=identity["source"],
            verify=section.get("verify", True),
            tfds_name=identity.get("tfds_name"),
            cache_dir=section.get("cache_dir"),
        )
    saved = identity["folder"]
    carved = saved["test"] if isinstance(saved["test"], dict) else {}
    again = {
        "name": identity["dataset"],
        "source": "folder",
        "path": data_dir if data_dir is not None else saved["path"],
        "image_size": saved["image_size"],
        "test_fraction": carved.get("carved", 0.2),
        "cache_dir": section.get("cache_dir"),
    }
    now = section_identity(again)["folder"]
    for key in ("classes", "test"):
        if now[key] != saved[key]:
            raise DataError(f"{now['path']}: its {key} are now {now[key]}, the run's were {saved[key]}")
    return from_section(again)
