"""Image classification data sets: loading, checking, and the paper's splits.

docs/data.md lists the data sets, sources, layouts and checks. Here, the
reasons behind them:

* ``source="idx"``, the old name of ``"files"``, stays an alias: the key
  says *where* the data comes from (files on disk versus tensorflow-datasets),
  the format follows from the data set, and existing configs and recorded
  run identities keep working.
* MNIST / Fashion-MNIST are checked by the MD5 of the *decompressed* IDX
  files, so re-compressed copies still pass. CIFAR-10 is read from the
  official *binary* version, the archive member by member with
  :mod:`tarfile` or the extracted batches; nothing is unpickled.
* The Toronto page publishes no per-file checksums for CIFAR-10's extracted
  batches, so each ``.bin`` must match one of two independent sets pinned by
  libraries that read the official archive: ankane/torchvision-ruby's
  SHA-256s (its archive SHA-256 ``c4a38c50...bca1dd`` is the value
  tensorflow-datasets pins) or Apache MXNet's SHA-1s. Either suffices, so
  that a mistake in one set cannot reject the real files: neither could be
  compared with the real files where this was written.
* TFDS shuffles examples when it builds, so the same seed gives different
  splits than the file source.

Images stay ``uint8 [N, H, W, C]`` (encoded on the device later), labels
``int32 [N]``. Nothing downstream may assume 28x28x1 or ten classes: the
input shape is ``dataset.train_images.shape[1:]``, the number of classes
``dataset.num_classes``. A :class:`Dataset`'s arrays are read-only views of
a per-process cache, shared between calls.

This ``__init__`` holds the public API (:func:`load` and the names it
re-exports); one module per job holds the rest: :mod:`~spenser_jax.data.catalog`
(the data sets, :class:`Dataset`, the shared checks),
:mod:`~spenser_jax.data.locate`, :mod:`~spenser_jax.data.idx`,
:mod:`~spenser_jax.data.cifar`, :mod:`~spenser_jax.data.folder` and its
:mod:`~spenser_jax.data.cache`, :mod:`~spenser_jax.data.tfds` and
:mod:`~spenser_jax.data.splits`.
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
