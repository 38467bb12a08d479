"""The log file Hydra opens in a run directory, held back until the run is accepted there.

Hydra makes the run directory and opens ``evolve.log`` before the job
starts; a process that then refuses the directory (a bad config, a directory
in use, records it cannot resume) must leave it as it found it. :class:`HeldLog`
keeps the log's records in memory until :func:`spenser_jax.evolve.run`
accepts the directory; :func:`discard` closes it unwritten and takes away what
opening it made.
"""

from __future__ import annotations

import logging
from pathlib import Path


class HeldLog(logging.Handler):
    """Holds back the log file Hydra opened in the run directory until the run is accepted.

    Hydra opens ``<run dir>/evolve.log`` before the job starts. Until
    :func:`run` accepts the directory, records wait here; :meth:`accept`
    writes them to the file and puts its handler back, :meth:`discard`
    closes it: a refused process writes nothing into another run's log.
    """

    def __init__(self, run_dir: Path):
        super().__init__(logging.DEBUG)
        inside = Path(run_dir).resolve()
        self.root = logging.getLogger()
        self.files = [
            h
            for h in self.root.handlers
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == inside
        ]
        self.records: list[logging.LogRecord] = []
        self.accepted = False
        for h in self.files:
            self.root.removeHandler(h)
        self.root.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def accept(self) -> None:
        # Not ``release``: logging.Handler.handle calls release() (its lock's) after every record.
        self.root.removeHandler(self)
        for h in self.files:
            for record in self.records:
                if record.levelno >= h.level:
                    h.handle(record)
            self.root.addHandler(h)
        self.records, self.accepted = [], True

    def discard(self) -> None:
        self.root.removeHandler(self)
        for h in self.files:
            h.close()
        self.records = []


def remove_if_empty(run_dir: Path, logs: list[Path]) -> None:
    """Remove ``run_dir`` when it holds nothing but the empty ``logs`` Hydra opened in it.

    Hydra makes the run directory before the job starts; a process that
    refuses it (a bad config) takes it away again, with nothing in it to
    lose. Parent directories stay: whether this process made them cannot be
    told from the file system.
    """
    own = {p.resolve() for p in logs}
    try:
        entries = list(Path(run_dir).iterdir())
        if any(e.resolve() not in own or not e.is_file() or e.stat().st_size for e in entries):
            return
        for e in entries:
            e.unlink()
        Path(run_dir).rmdir()
    except OSError:  # gone already, or someone else's now: leave it
        return


def discard(held: HeldLog, run_dir: Path) -> None:
    """Close the log Hydra opened without writing to it, and take away what opening it made: the run
    directory when it holds nothing else, an empty log it created."""
    held.discard()
    logs = [Path(h.baseFilename) for h in held.files]
    remove_if_empty(run_dir, logs)
    for path in logs:  # an empty log holds nothing to keep
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
