"""A labelled image folder as a data set: ``DIR/train/<class>/*`` and, optionally, ``DIR/test/<class>/*``.

The layout, formats and size rules are docs/data.md's. Class indices follow
the sorted class folder names under ``train/`` (code point order, byte order
for UTF-8), as torchvision's and tensorflow-datasets' ``ImageFolder`` read
them, so a network's output ``k`` means the same class in every tool.
Resizing uses Pillow's bilinear filter, which antialiases when it shrinks,
as torchvision's ``Resize`` does. A test split carved from ``train/`` is
drawn from :data:`TEST_SEED`, not the run's seed, so every run on a folder
scores on the same test images. Decoded arrays are cached on disk
(:mod:`spenser_jax.data.cache`), so only the first load decodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from spenser_jax.data.cache import read_cache, write_cache
from spenser_jax.data.catalog import DataError, Dataset, _assemble
from spenser_jax.data.splits import _stratified_pick

log = logging.getLogger(__name__)

#: Image files read, by extension (any case).
EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_FORMATS = ("BMP", "GIF", "JPEG", "PNG")  # Pillow's names: a file of any other format is refused
#: Seed of the carved test split's draw (folders without ``test/``).
TEST_SEED = 0
# Bump when decoding changes what the arrays hold: older caches then miss.
_DECODER_VERSION = 1


class Listing(NamedTuple):
    """The files of an image folder, in the order they are decoded."""

    root: Path
    classes: tuple[str, ...]  # sorted; a class's index is its position
    files: tuple[str, ...]  # relative to root: every train/ file, then every test/ file
    labels: np.ndarray  # [len(files)] int32
    num_train: int
    has_test: bool  # False: the test split is carved from train/
    key: str  # SHA-256 of the names, sizes and modification times (the cache's key)


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read {folder}: {exc}") from exc


def _class_folders(split: Path) -> list[str]:
    names = []
    for entry in _entries(split):
        if not entry.is_dir():
            raise DataError(f"{Path(entry.path)}: a file where {split} should hold only class folders")
        names.append(entry.name)
    return names


def _images(folder: Path, stats: list) -> list[str]:
    names = []
    for entry in _entries(folder):
        path = Path(entry.path)
        if entry.is_dir():
            raise DataError(f"{path}: a folder inside the class folder {folder}; nested folders are not read")
        if path.suffix.lower() not in EXTENSIONS:
            raise DataError(
                f"{path}: not an image file (by its extension; read are {', '.join(EXTENSIONS)}); "
                f"move it out of {folder}"
            )
        st = entry.stat()
        stats.append((st.st_size, st.st_mtime_ns))
        names.append(entry.name)
    if not names:
        raise DataError(f"{folder}: an empty class folder (no images); remove it or add its images")
    return names


def scan(root: str | os.PathLike, image_size: tuple[int, int] | None = None) -> Listing:
    """Lists and checks an image folder without decoding anything.

    Raises:
        DataError: ``root`` is not a folder or lacks ``train/``; fewer than two
            classes; an empty class folder; a test class without a training
            folder or a ``test/`` without any; a file that is not an image
            (by its extension) or a folder inside a class folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DataError(f"{root} {what}: dataset.path must be a folder holding train/<class>/<image files>")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root}: no train/ folder; the layout is {root}/train/<class>/<image> (and test/ alike)")
    classes = _class_folders(train)
    if len(classes) < 2:
        raise DataError(
            f"{train}: {len(classes)} class folder{'' if len(classes) == 1 else 's'} {classes}; "
            "a classifier needs at least two"
        )
    test = root / "test"
    has_test = test.is_dir()
    test_classes = _class_folders(test) if has_test else []
    if has_test and not test_classes:
        raise DataError(f"{test}: no class folders; remove it to carve a test split from {train}")
    for name in test_classes:
        if name not in classes:
            raise DataError(f"{test / name}: a test class with no training folder {train / name}")
    files, labels, stats = [], [], []
    for split, names in (("train", classes), ("test", test_classes)):
        for name in names:
            found = _images(root / split / name, stats)
            files += [f"{split}/{name}/{f}" for f in found]
            labels += [classes.index(name)] * len(found)
    num_train = len(files) - sum(f.startswith("test/") for f in files)
    material = [_DECODER_VERSION, list(image_size) if image_size else None, files, stats]
    key = hashlib.sha256(json.dumps(material).encode()).hexdigest()
    return Listing(root, tuple(classes), tuple(files), np.asarray(labels, np.int32), num_train, has_test, key)


def _decode(path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """One image as ``[H, W]`` (grey) or ``[H, W, 3]`` uint8, and the SHA-256 of its file."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        with Image.open(io.BytesIO(raw), formats=_FORMATS) as image:
            mode = image.mode
            if mode in ("1", "LA", "La"):
                image = image.convert("L")
            elif mode in ("P", "PA"):
                image = image.convert("RGBA").convert("RGB")  # via RGBA: transparency in the palette
            elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
                image = image.convert("RGB")
            elif mode not in ("L", "RGB"):
                raise DataError(f"{path}: pixel mode {mode} is not 8-bit grey or colour; save it with 8 bits")
            if size is not None and image.size != (size[1], size[0]):  # Pillow's sizes are (width, height)
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image)
            if mode in ("P", "PA") and (pixels[..., :1] == pixels).all():
                pixels = pixels[..., 0]  # a palette of greys (GIFs store grey images so) is grey
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode it as {', '.join(_FORMATS)} ({exc})") from exc
    return pixels, hashlib.sha256(raw).hexdigest()


def _decode_all(listing: Listing, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """Every image of ``listing`` as ``[N, H, W, C]`` and the folder's digest (see :func:`listing_digest`)."""
    from tqdm import tqdm

    count = len(listing.files)
    log.info("decoding %d images of %s (once: the arrays are cached)", count, listing.root)
    out, first, colour, digests = None, None, False, {}
    for i, rel in enumerate(tqdm(listing.files, desc=f"decoding {listing.root.name}", unit="img", mininterval=1)):
        path = listing.root / rel
        pixels, digests[rel] = _decode(path, size)
        if out is None:
            first = path
            # Three channels from the start (grey ones are repeated), one at
            # the end if every image was grey: no second list of arrays.
            out = np.empty((count, *pixels.shape[:2], 3), np.uint8)
        elif pixels.shape[:2] != out.shape[1:3]:
            (h, w), (fh, fw) = pixels.shape[:2], out.shape[1:3]
            raise DataError(
                f"{path}: {w}x{h} pixels, but {first} is {fw}x{fh}; set dataset.image_size=[H, W] "
                "to resize every image to one size (bilinear)"
            )
        colour |= pixels.ndim == 3
        out[i] = pixels if pixels.ndim == 3 else pixels[..., None]
    images = out if colour else np.ascontiguousarray(out[..., :1])
    return images, listing_digest(digests)


def listing_digest(digests: dict[str, str]) -> str:
    """SHA-256 of ``sha256sum``'s lines for every file, sorted by path.

    The same value as ``find train test -type f | sort | xargs sha256sum | sha256sum``
    run in the folder (byte order; ``LC_ALL=C`` for ``sort``).
    """
    lines = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def carve(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Positions of the carved test split in ``labels`` (stratified, from :data:`TEST_SEED`), sorted."""
    total = round(len(labels) * fraction)
    if not 0 < total < len(labels):
        raise DataError(
            f"test_fraction {fraction} of {len(labels)} training images leaves {total} for the carved test "
            f"split and {len(labels) - total} for training; both must be non-empty"
        )
    return _stratified_pick(np.random.default_rng(TEST_SEED), labels, total)


def load_folder(
    root: str | os.PathLike,
    *,
    name: str = "folder",
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    cache_dir: str | os.PathLike | None = None,
    digest: str | None = None,
) -> Dataset:
    """Reads an image folder (see the module docstring), from the cache where it holds it.

    Raises:
        DataError: bad layout or file (see :func:`scan`), images of different
            sizes without ``image_size``, or a digest that differs.
    """
    listing = scan(root, image_size)
    cached = read_cache(listing.key, len(listing.files), cache_dir)
    if cached is None:
        images, found = _decode_all(listing, image_size)
    else:
        images, found = cached
    if digest is not None and found != digest:
        raise DataError(
            f"{listing.root}: its files' SHA-256 listing is {found}, expected {digest}; some file "
            "differs from the published copy (dataset.verify=false reads it all the same)"
        )
    if cached is None:
        write_cache(listing.key, images, found, cache_dir)
    labels = listing.labels
    train, test = slice(0, listing.num_train), slice(listing.num_train, None)
    parts = [
        (images[train], labels[train], listing.root / "train"),
        (images[test], labels[test], listing.root / "test"),
    ]
    if not listing.has_test:
        picked = carve(labels, test_fraction)
        kept = np.setdiff1d(np.arange(len(labels)), picked, assume_unique=True)
        where = f"{listing.root / 'train'} (carved test split)"
        parts = [(images[kept], labels[kept], listing.root / "train"), (images[picked], labels[picked], where)]
    return _assemble(name, parts, len(listing.classes))
