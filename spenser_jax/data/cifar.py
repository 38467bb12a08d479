"""CIFAR-10, binary version: the extracted batches or the archive, checked and decoded.

Nothing is unpickled and nothing is extracted to disk; record sizes are
always checked. Which checksums apply and where they come from is told in
the package docstring (:mod:`spenser_jax.data`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

import numpy as np

from spenser_jax.data.catalog import _CIFAR_FOLDER, _SPECS, DataError, Dataset, _assemble, _Spec
from spenser_jax.data.locate import DATA_DIR_ENV, _candidate_dirs, _file_key

# CIFAR-10, binary version (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
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
    # The second, independent pin (see the package docstring).
    sha1 = _file_digest(key, "sha1")
    if sha1 == _CIFAR_SHA1[filename]:
        return
    other = next((f for f in _CIFAR_FILES if sha256 == _CIFAR_SHA256[f] or sha1 == _CIFAR_SHA1[f]), None)
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
        raise DataError(
            f"{path}: the archive lacks {', '.join(missing)} (the official one holds "
            f"{_CIFAR_FOLDER}/{{data_batch_1..5,test_batch}}.bin)"
        )
    return _cifar_dataset(name, decoded)


def _load_cifar(name: str, data_dir: str | os.PathLike | None, verify: bool) -> Dataset:
    found = _locate_cifar(_SPECS[name], data_dir)
    if isinstance(found, Path):
        key = _file_key(found)
        if verify:
            actual = _file_digest(key, "md5")
            if actual != _CIFAR_ARCHIVE_MD5:
                size = (
                    ""
                    if key[2] == _CIFAR_ARCHIVE_SIZE
                    else f" (it has {key[2]:,} bytes, the official one {_CIFAR_ARCHIVE_SIZE:,})"
                )
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
