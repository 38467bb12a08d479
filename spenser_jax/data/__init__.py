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

This package's ``__init__`` holds the public API (:func:`load` and the names
it re-exports); one module per job holds the rest, so that each reads top to
bottom: :mod:`~spenser_jax.data.catalog` (the data sets known, their specs,
:class:`Dataset` and the checks every source shares),
:mod:`~spenser_jax.data.locate` (where the files are),
:mod:`~spenser_jax.data.idx` (MNIST / Fashion-MNIST files),
:mod:`~spenser_jax.data.cifar` (CIFAR-10 binary files),
:mod:`~spenser_jax.data.tfds` (tensorflow-datasets) and
:mod:`~spenser_jax.data.splits` (the paper's splits).
"""

from __future__ import annotations

import os

from spenser_jax.data.catalog import _ALIASES, _SPECS, TIME_STEPS, Arrays, DataError, Dataset, _canonical, known_shape
from spenser_jax.data.cifar import CIFAR10_URL, _load_cifar
from spenser_jax.data.idx import _load_idx, read_idx
from spenser_jax.data.locate import DATA_DIR_ENV, default_data_dir
from spenser_jax.data.splits import SplitIndices, Splits, split, split_indices, stratified_subset
from spenser_jax.data.tfds import _load_tfds

__all__ = [
    "CIFAR10_URL",
    "DATA_DIR_ENV",
    "SOURCES",
    "TIME_STEPS",
    "Arrays",
    "DataError",
    "Dataset",
    "SplitIndices",
    "Splits",
    "default_data_dir",
    "known_shape",
    "load",
    "read_idx",
    "split",
    "split_indices",
    "stratified_subset",
]

_FORMATS = {"idx": _load_idx, "cifar_bin": _load_cifar}
#: Accepted values of ``source``; "idx" is the old name of "files".
SOURCES = ("files", "idx", "tfds")


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    source: str = "files",
    verify: bool = True,
    *,
    tfds_name: str | None = None,
) -> Dataset:
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
