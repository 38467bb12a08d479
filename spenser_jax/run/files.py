"""A run directory's files: atomic writes, the lock, ``generations.jsonl``, the records.

Order of writes after a generation: the ``generations.jsonl`` line, then
``best.json`` and ``pareto.json``, then the checkpoint
(:mod:`spenser_jax.run.checkpoint`). On resume, lines for generations the
checkpoint does not cover are dropped and recomputed identically, and so is
``best.json``: whatever a kill interrupts, the files agree after a resume.

One run directory, one process: :class:`RunLock` holds an exclusive ``fcntl``
lock on ``.lock`` while a run works there. The OS releases it when its holder
dies, so a killed run never leaves a lock that blocks its resume. A process
that refuses a directory leaves it as it found it (:class:`HeldLog`,
:func:`remove_if_empty`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from spenser_jax.errors import SpenserError
from spenser_jax.search.objectives import pareto_front

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CHECKPOINT = "checkpoint.msgpack"
GENERATIONS = "generations.jsonl"
BEST = "best.json"
PARETO = "pareto.json"
RUN = "run.json"
TEST = "test.json"
FRONT_TEST = "front_test.json"
RETRAINED = "retrained.msgpack"
LOCK = ".lock"
CONFIG = Path(".hydra") / "config.yaml"


class CheckpointError(SpenserError, RuntimeError):
    """A checkpoint or run directory that cannot be used; it is left untouched."""


class IndividualError(CheckpointError):
    """The individual asked for does not exist or has no weights to give."""


class RunLock:
    """Exclusive use of a run directory by one process.

    ``with RunLock(run_dir):`` takes an exclusive, non-blocking ``fcntl``
    lock on ``run_dir/.lock`` and writes the holder's pid, host and start
    time into it. A second process fails at once with a
    :class:`CheckpointError` naming the directory and the holder.

    With ``announce=False`` the holder's details are written only by
    :meth:`announce`: a process that takes the lock to look, then refuses
    the directory, leaves ``.lock`` (the last holder's details) as it was.
    """

    def __init__(self, run_dir: Path, announce: bool = True):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None
        self._announce = announce

    def acquire(self) -> None:
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(
                f"{self.path.parent} is in use by {holder}; one run directory takes one process. "
                f"Wait for it to finish (or stop it, then run the same command to resume), or "
                f"choose another directory (experiment=... or hydra.run.dir=...)"
            ) from None
        self._fd = fd
        if self._announce:
            self.announce()

    def announce(self) -> None:
        """Write this process as the holder into ``.lock`` (for the message a second process gets)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(
            self._fd,
            f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
            0,
        )

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt ({err})") from None


def read_generations(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / GENERATIONS
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A line cut by a kill mid-write can only be the last one.
            if number == len(path.read_text().splitlines()):
                break
            raise CheckpointError(f"{path}:{number}: corrupt line") from None
    return records


def truncate_generations(run_dir: Path, generations: int) -> list[dict]:
    """Keep the records of generations < ``generations``; returns them."""
    kept = [r for r in read_generations(run_dir) if r["generation"] < generations]
    if [r["generation"] for r in kept] != list(range(len(kept))) or len(kept) != generations:
        raise CheckpointError(
            f"{Path(run_dir) / GENERATIONS} does not hold generations 0..{generations - 1} that the checkpoint covers"
        )
    atomic_write(Path(run_dir) / GENERATIONS, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def pareto_archive(records: list[dict]) -> dict:
    """Every scored individual of a run's records, and the non-dominated ones.

    Two fronts: accuracy against SynOps per sample, and accuracy against
    parameters. A function of ``generations.jsonl`` alone, so a resumed run
    writes exactly what an uninterrupted one does.
    """
    points = []
    for r in records:
        for i, ind in enumerate(r["individuals"]):
            if ind["status"] in ("ok", "stopped") and "synops_per_sample" in ind:
                points.append(
                    {
                        "generation": r["generation"],
                        "index": i,
                        "phenotype": ind["phenotype"],
                        "accuracy": ind["fitness"],
                        "synops_per_sample": ind["synops_per_sample"],
                        "energy_pj_per_sample": ind["energy_pj_per_sample"],
                        "parameters": ind["parameters"],
                    }
                )

    def front(key: str) -> list[dict]:
        chosen = pareto_front([(p["accuracy"], -p[key]) for p in points]) if points else []
        return sorted((points[i] for i in chosen), key=lambda p: (p[key], -p["accuracy"]))

    return {
        "evaluated": len(points),
        "accuracy_synops": front("synops_per_sample"),
        "accuracy_parameters": front("parameters"),
    }


def write_pareto(run_dir: Path) -> None:
    """Rewrite ``pareto.json`` from the run's ``generations.jsonl``."""
    archive = pareto_archive(read_generations(run_dir))
    atomic_write(Path(run_dir) / PARETO, json.dumps(archive, indent=1))


def append_generation(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / GENERATIONS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def grammar_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


ACTIVITY_FIELDS = (
    "spikes_per_sample",
    "input_spikes_per_sample",
    "synops_per_sample",
    "energy_pj_per_sample",
    "ann_energy_pj_per_sample",
)


def generation_record(
    generation: int,
    space,
    state,
    candidates,
    evaluations,
    metrics: dict,
    strategy,
    rounds=None,
) -> dict:
    """One line of ``generations.jsonl``: the generation's metrics and every individual.

    ``rounds``: with ``search.halving``, each individual's ``{"round", "first_fitness"}``
    (:func:`spenser_jax.search.halving.evaluate`), recorded as its ``"halving"``.
    """
    rounds = [None] * len(candidates) if rounds is None else rounds
    metrics = {k: v for k, v in metrics.items() if k != "best_index"}
    return {
        "generation": generation,
        **metrics,
        "parent": space.text(state.parent) if state.parent is not None else None,
        "individuals": [
            {
                "phenotype": space.text(c.genotype),
                "fitness": e.fitness,
                "status": e.status,
                **({"reason": e.reason} if e.reason else {}),
                "parameters": e.parameters,
                "mutations": [list(m) for m in c.mutations],
                **({"continued": True} if c.continued else {}),
                "train_samples": e.train_samples,
                "train_steps": e.train_steps,
                **({"inherited": e.inherited} if e.inherited is not None else {}),
                **({k: e.activity[k] for k in ACTIVITY_FIELDS} if e.activity else {}),
                **strategy.record_fields(e),
                "train_seconds": e.train_seconds,
                "compile_seconds": e.compile_seconds,
                **({"halving": h} if h is not None else {}),
            }
            for c, e, h in zip(candidates, evaluations, rounds)
        ],
    }


def redrawn_records(space, redrawn: list[dict]) -> list[dict]:
    """``generations.jsonl``'s ``redrawn``: the stopped candidates replaced (:mod:`spenser_jax.search.redraw`)."""
    return [
        {
            "round": x["round"],
            "place": x["place"],
            "phenotype": space.text(x["candidate"].genotype),
            "fitness": x["evaluation"].fitness,
            "status": x["evaluation"].status,
            "parameters": x["evaluation"].parameters,
            "train_samples": x["evaluation"].train_samples,
            "train_steps": x["evaluation"].train_steps,
        }
        for x in redrawn
    ]


def best_record(space, state, verified: list[dict] | None = None) -> dict:
    """``best.json``: the parent after ``state.generation`` generations (and, once the search
    verified it, what it scored trained from scratch: :mod:`spenser_jax.search.verify`)."""
    from spenser_jax.search.verify import label

    text = space.text(state.parent)
    return {
        "generation": state.generation - 1,
        "fitness": state.parent_fitness,
        "phenotype": text,
        "phenotype_json": space.phenotype(state.parent).to_json(),
        "genotype": state.parent.to_json(),
        **label(verified, text),
    }


def write_config(run_dir: Path, cfg: Any, overrides: list[str] | None) -> None:
    from omegaconf import OmegaConf

    conf = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    atomic_write(run_dir / CONFIG, OmegaConf.to_yaml(conf))
    if overrides is not None:
        atomic_write(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))


class HeldLog(logging.Handler):
    """Holds back the log file Hydra opened in the run directory until the run is accepted.

    Hydra opens ``<run dir>/evolve.log`` before the job starts. Until
    :func:`run` accepts the directory, records wait here; :meth:`release`
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

    def release(self) -> None:
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
