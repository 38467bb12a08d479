"""A run directory's files: atomic writes, the lock, ``generations.jsonl``, the records.

Order of writes after a generation: the ``generations.jsonl`` line, then
``best.json`` and ``pareto.json``, then the checkpoint
(:mod:`spenser_jax.run.checkpoint`). On resume, lines for generations the
checkpoint does not cover are dropped and recomputed identically, and so is
``best.json``: whatever a kill interrupts, the files agree after a resume.

One run directory, one process: :class:`RunLock` holds an exclusive ``fcntl``
lock on ``.lock`` while a run works there. The OS releases it when its holder
dies, so a killed run never leaves a lock that blocks its resume. A process
that refuses a directory leaves it as it found it (:func:`covered_generations`,
:func:`check_fresh_start` read before anything is written;
:mod:`spenser_jax.run.held_log` keeps Hydra's log closed until then).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from spenser_jax.errors import SpenserError, file_mode
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
        os.fchmod(fd, file_mode())
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


def write_if_changed(path: Path, data: str) -> None:
    """:func:`atomic_write` unless ``path`` holds ``data`` already (its bytes, and its mode, stay then)."""
    try:
        if Path(path).read_bytes() == data.encode():
            return
    except OSError:  # absent (or unreadable: rewritten)
        pass
    atomic_write(path, data)


def read_json(path: Path) -> dict | None:
    """A run directory's JSON object (None when the file is absent), or a :class:`CheckpointError`."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: corrupt (not a JSON object)")
    return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record_problem(r) -> str | None:
    """What keeps ``r`` from being a record the commands can read (None: nothing), so that a line
    damaged into other valid JSON is refused here, not met as a KeyError in a report."""
    if not isinstance(r, dict) or not isinstance(r.get("individuals"), list):
        return "not a generation's record"
    if not (isinstance(r.get("generation"), int) and _number(r.get("generation")) and r["generation"] >= 0):
        return "no generation number"
    if not all(_number(r.get(k)) for k in ("best_fitness", "mean_fitness")) or not isinstance(
        r.get("parent"), (str, type(None))
    ):
        return "no best_fitness or mean_fitness, or a parent that is not a phenotype"
    for i, ind in enumerate(r["individuals"]):
        if not (
            isinstance(ind, dict)
            and isinstance(ind.get("phenotype"), str)
            and isinstance(ind.get("status"), str)
            and _number(ind.get("fitness"))
            and (ind.get("parameters") is None or _number(ind["parameters"]))
        ):
            return f"individual {i} lacks its phenotype, status, fitness or parameters"
        activity = [k for k in ACTIVITY_FIELDS if k in ind]
        values = [v for k in activity for v in (ind[k] if isinstance(ind[k], list) else [ind[k]])]
        if activity and (len(activity) != len(ACTIVITY_FIELDS) or not all(map(_number, values))):
            return f"individual {i} has part of its activity fields"
    return None


def read_generations(run_dir: Path) -> list[dict]:
    """The records of ``generations.jsonl`` (none when absent), without a last line cut mid-write.

    Raises:
      CheckpointError: a line other than the last is not a record.
    """
    path = Path(run_dir) / GENERATIONS
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode())
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A line cut by a kill mid-write can only be the last one.
            if number == len(lines):
                break
            raise CheckpointError(f"{path}:{number}: corrupt line") from None
        problem = _record_problem(record)
        if problem is not None:
            raise CheckpointError(f"{path}:{number}: corrupt line ({problem})")
        records.append(record)
    return records


def generations_torn(run_dir: Path) -> bool:
    """Whether ``generations.jsonl`` ends in a line cut mid-write (a process killed while appending it)."""
    path = Path(run_dir) / GENERATIONS
    if not path.exists():
        return False
    raw = path.read_bytes()
    lines = [line for line in raw.split(b"\n") if line.strip()]
    if not lines:
        return False
    try:
        json.loads(lines[-1].decode())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return not raw.endswith(b"\n")


def covered_generations(run_dir: Path, generations: int) -> list[dict]:
    """The records of generations < ``generations``, or a :class:`CheckpointError` when they are not all there.

    Reads only: a resume checks this before it writes anything, so a refused
    one leaves the directory as it was (:func:`truncate_generations` writes).
    """
    kept = [r for r in read_generations(run_dir) if r["generation"] < generations]
    if [r["generation"] for r in kept] != list(range(len(kept))) or len(kept) != generations:
        raise CheckpointError(
            f"{Path(run_dir) / GENERATIONS} does not hold generations 0..{generations - 1} that the checkpoint "
            f"covers ({len(kept)} readable); put back the {GENERATIONS} this run wrote, or move {CHECKPOINT} "
            f"and {GENERATIONS} away to start over"
        )
    return kept


def truncate_generations(run_dir: Path, generations: int) -> list[dict]:
    """Keep the records of generations < ``generations`` (and drop a torn last line); returns them."""
    kept = covered_generations(run_dir, generations)
    atomic_write(Path(run_dir) / GENERATIONS, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def check_fresh_start(run_dir: Path, identity: dict) -> None:
    """Refuse to start a run anew over records a new run would overwrite (a :class:`CheckpointError`).

    Without a checkpoint, a run starts from generation 0 and rewrites
    ``generations.jsonl``. That loses nothing only where a kill left it: at
    most generation 0's line, written just before the first checkpoint, by a
    run with the same settings (``run.json``), which recomputes it exactly.
    More (the checkpoint was moved away after it was found corrupt) is a
    run's history: the user moves it, not this process.
    """
    run_dir = Path(run_dir)
    records = read_generations(run_dir)
    if not records:
        return
    if len(records) == 1 and records[0].get("generation") == 0 and read_json(run_dir / RUN) == identity:
        return
    raise CheckpointError(
        f"{run_dir / GENERATIONS} holds {len(records)} generation(s) but there is no {CHECKPOINT} to resume "
        f"them from, and a new run would overwrite them: move {GENERATIONS} (with {BEST}, {PARETO} and "
        f"{RUN}) away to start over, or put the run's {CHECKPOINT} back to resume"
    )


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
