"""Decoded image folders on disk, so that only a folder's first load decodes its images.

One ``.npz`` file per folder content (:attr:`spenser_jax.data.folder.Listing.key`:
the file names, sizes and modification times and the requested size) under
:func:`cache_root` ``/folders/``. A changed file changes the key, so the old
entry is simply never read again. Written to a temporary file in the same
folder and renamed over the target, so a run starting while another writes
reads either nothing or a whole file. A file that cannot be read back is
decoded again, with a warning; a cache that cannot be written costs the next
run the decoding, with a warning, never the run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder (the config's ``dataset.cache_dir`` wins).
CACHE_DIR_ENV = "SPENSER_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/spenser_jax"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SPENSER_CACHE_DIR``, else ``~/.cache/spenser_jax``."""
    return Path(cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def cache_file(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "folders" / f"{key}.npz"


def read_cache(key: str, count: int, cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, str] | None:
    """The cached ``(images [count, H, W, C] uint8, digest)``, or None to decode (absent or unreadable)."""
    path = cache_file(key, cache_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, digest = npz["images"], str(npz["digest"])
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count or images.shape[-1] not in (1, 3):
            raise ValueError(f"holds {images.dtype} {images.shape}, expected uint8 [{count}, H, W, 1 or 3]")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("decoded-image cache %s is unreadable (%s); decoding the images again", path, exc)
        return None
    return images, digest


def write_cache(key: str, images: np.ndarray, digest: str, cache_dir: str | os.PathLike | None = None) -> None:
    path = cache_file(key, cache_dir)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, digest=np.asarray(digest))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the decoded-image cache %s (%s); the next run decodes again", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
