"""Where the data files are: the default data directory, the folders searched, file versions.

Shared by the file readers (:mod:`.idx`, :mod:`.cifar`): both search the
same folders (``data_dir``, else ``$SPENSER_DATA_DIR``, else
``../shared/data`` beside the checkout, then a data set's system folders)
and cache what they read per file version (:func:`_file_key`).
"""

from __future__ import annotations

import os
from pathlib import Path

from spenser_jax.data.catalog import _Spec

#: Environment variable that overrides :func:`default_data_dir`.
DATA_DIR_ENV = "SPENSER_DATA_DIR"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]  # spenser_jax/data/locate.py


def _sibling_data_dir() -> Path:
    # CI clones the repo with shared/ beside it; resolve() drops the "..".
    return (_repo_root() / ".." / "shared" / "data").resolve()


def default_data_dir() -> Path | None:
    """The data directory to use when none is given (for ``source="files"``).

    ``$SPENSER_DATA_DIR`` when set, whether or not it exists (so that a typo
    shows up in the error), else ``<repo>/../shared/data`` when it exists, else None.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    sibling = _sibling_data_dir()
    return sibling if sibling.is_dir() else None


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


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)
