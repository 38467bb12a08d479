"""Run-directory files: atomic writes, the evolutionary checkpoint, resume.

The checkpoint is one msgpack file (``flax.serialization``; no pickles) with
the run's identity (the config that determines results), the generation
count, the parent's genotype, fitness and trained weights. It is written to a
temporary file, flushed to disk and renamed over the old one, so an
interrupted write leaves the last good checkpoint intact.

Order of writes after a generation: the ``generations.jsonl`` line, then
``best.json``, then the checkpoint. On resume, lines for generations the
checkpoint does not cover are dropped and recomputed identically, and so is
``best.json``: whatever a kill interrupts, the files agree after a resume.

One run directory, one process: :class:`RunLock` holds an exclusive ``fcntl``
lock on ``.lock`` while a run works there. The OS releases it when its holder
dies, so a killed run never leaves a lock that blocks its resume.

:func:`load_run` reads a finished or running run directory for the commands
that come after the search (retrain, report, inspect, export).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from spenser_jax.errors import SpenserError
from spenser_jax.evolution import State, pareto_front
from spenser_jax.genotype import Genotype, SearchSpace, SearchSpaceError, macro_from_config
from spenser_jax.grammar import GrammarError, load_grammar, locate
from spenser_jax.phenotype import parse
from spenser_jax.population import Member, PopulationState

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

FORMAT = "spenser_jax.checkpoint"
VERSION = 1
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


def save(run_dir: Path, state: State | PopulationState, identity: dict) -> None:
    if isinstance(state, PopulationState):
        payload = _population_payload(state, identity)
        atomic_write(Path(run_dir) / CHECKPOINT, serialization.msgpack_serialize(payload))
        return
    weights = state.parent_weights
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "identity": json.dumps(identity, sort_keys=True),
        "seed": state.seed,
        "generation": state.generation,
        "parent": state.parent.dumps() if state.parent is not None else "",
        "parent_fitness": state.parent_fitness,
        "weights": serialization.to_state_dict(weights) if weights is not None else {},
        "train_samples": state.train_samples,
        "parent_score": list(state.parent_score) if state.parent_score is not None else [],
    }
    atomic_write(Path(run_dir) / CHECKPOINT, serialization.msgpack_serialize(payload))


def load(run_dir: Path, identity: dict | None = None) -> State | None:
    """The saved state, or None when the run directory has no checkpoint.

    Raises:
      CheckpointError: unreadable, not ours, another version, or written by a
        run with a different ``identity`` (the message lists what differs).
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types
        raise CheckpointError(
            f"{path}: corrupt checkpoint ({type(err).__name__}: {err}); it was left as is: move it away to start over"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spenser_jax checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')}, this spenser_jax reads version {VERSION}"
        )
    saved = json.loads(payload["identity"])
    if identity is not None and saved != identity:
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in keys)
        raise CheckpointError(
            f"{path}: the run directory holds a run with a different configuration ({detail}); "
            f"resume with the same settings or choose another run directory "
            f"(hydra.run.dir=... or experiment=...)"
        )
    if payload.get("strategy") == "nsga2":
        return _population_state(payload, path)
    try:
        # Checkpoints written before layers had uids get them here, in order.
        parent = Genotype.loads(payload["parent"]).with_uids() if payload["parent"] else None
    except (SearchSpaceError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable parent genotype ({err})") from None
    weights = payload["weights"] or None
    return State(
        seed=int(payload["seed"]),
        generation=int(payload["generation"]),
        parent=parent,
        parent_fitness=float(payload["parent_fitness"]),
        parent_weights=_to_numpy(weights),
        train_samples=int(payload.get("train_samples", 0)),
        parent_score=tuple(float(x) for x in payload.get("parent_score", ())) or None,
    )


def _population_payload(state: PopulationState, identity: dict) -> dict:
    # msgpack keeps infinite crowding distances and nested lists as they are.
    return {
        "format": FORMAT,
        "version": VERSION,
        "strategy": "nsga2",
        "identity": json.dumps(identity, sort_keys=True),
        "seed": state.seed,
        "generation": state.generation,
        "train_samples": state.train_samples,
        "members": {
            str(k): {
                "genotype": m.genotype.dumps(),
                "fitness": m.fitness,
                "values": list(m.values),
                "born": list(m.born),
                "weights": serialization.to_state_dict(m.weights) if m.weights is not None else {},
            }
            for k, m in enumerate(state.members)
        },
        "ranks": list(state.ranks),
        "crowding": list(state.crowding),
        "archive": {str(k): list(p) for k, p in enumerate(state.archive)},
    }


def _population_state(payload: dict, path: Path) -> PopulationState:
    try:
        members = []
        for k in range(len(payload["members"])):
            m = payload["members"][str(k)]
            members.append(
                Member(
                    genotype=Genotype.loads(m["genotype"]),
                    fitness=float(m["fitness"]),
                    values=tuple(float(v) for v in m["values"]),
                    born=(int(m["born"][0]), int(m["born"][1])),
                    weights=_to_numpy(m["weights"] or None),
                )
            )
        return PopulationState(
            seed=int(payload["seed"]),
            generation=int(payload["generation"]),
            members=tuple(members),
            ranks=tuple(int(r) for r in payload["ranks"]),
            crowding=tuple(float(d) for d in payload["crowding"]),
            archive=tuple(tuple(float(v) for v in payload["archive"][str(k)]) for k in range(len(payload["archive"]))),
            train_samples=int(payload["train_samples"]),
        )
    except (KeyError, TypeError, ValueError, SearchSpaceError) as err:
        raise CheckpointError(f"{path}: unreadable population ({type(err).__name__}: {err})") from None


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree) if tree is not None else None


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


# --------------------------------------------------------------------------
# Reading a run after (or during) the search


def grammar_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory as the commands after the search see it.

    Attributes:
      dir: the run directory.
      identity: ``run.json``, the settings that determine results.
      config: the resolved configuration (``.hydra/config.yaml``; empty when
        absent), for what the identity does not hold (data and grammar paths).
      records: ``generations.jsonl``, one dict per completed generation.
      best: ``best.json`` (None before the first generation completes).
      test: ``test.json`` written by retrain (None before).
      state: the checkpoint's evolutionary state (None before the first
        generation), with the best individual's trained weights.
      retrained: the best individual's weights after ``retrain`` (None
        before), with the phenotype text they belong to; read on first use
        (a corrupt file raises :class:`CheckpointError` there, and blocks
        nothing that does not need it).
    """

    dir: Path
    identity: dict
    config: dict
    records: list[dict]
    best: dict | None
    test: dict | None
    state: State | PopulationState | None

    @functools.cached_property
    def retrained(self) -> tuple[str, Any] | None:
        return load_weights(self.dir / RETRAINED)

    @property
    def dataset(self) -> str:
        return self.identity.get("dataset", "?")

    def protocol(self, **overrides):
        """How the search trained and scored its individuals (a :class:`spenser_jax.protocol.Protocol`).

        Rebuilt from the identity (:func:`spenser_jax.protocol.from_identity`,
        the mapping :func:`spenser_jax.evolve.setup` used) and the config's
        energy constants. ``overrides`` replace fields (``epochs``,
        ``batch_size``, ...), e.g. for retraining. ``time_steps`` is the
        search's (``search.time_steps`` where set); the data set's is
        ``identity["time_steps"]``.
        """
        from spenser_jax.activity import EnergyModel
        from spenser_jax.protocol import from_identity

        return from_identity(self.identity, EnergyModel(**self.config.get("energy", {})), **overrides)

    def training_settings(self, **overrides):
        """The former name of :meth:`protocol`."""
        return self.protocol(**overrides)

    def splits(self, data_dir=None):
        """The run's data splits, drawn again from its seed (``data_dir`` overrides the run's)."""
        from spenser_jax import data

        ds_cfg = self.config.get("dataset", {})
        dataset = data.from_identity(self.identity, ds_cfg, data_dir)  # issue 28: image folders too
        return data.split(
            dataset,
            seed=self.identity["seed"],
            subset=self.identity["subset"],
            fitness_fraction=self.identity["fitness_fraction"],
            fitness_subset=self.identity.get("search", {}).get("fitness_subset"),
        )

    @property
    def grammar_path(self) -> Path:
        try:
            return locate(self.config.get("grammar", "grammars/csnn.grammar"))
        except GrammarError as err:
            raise CheckpointError(f"{self.dir}: {err}") from None

    def space(self) -> SearchSpace:
        """The run's search space, from its grammar file.

        Raises:
          CheckpointError: the grammar file changed since the search (its
            SHA-256 differs from the one in ``run.json``): the genotypes would
            decode to other networks.
        """
        path = self.grammar_path
        saved = self.identity.get("grammar_sha256")
        if saved is not None and grammar_sha256(path) != saved:
            raise CheckpointError(
                f"{self.dir}: the grammar {path} changed since this run searched with it "
                f"(sha256 {saved[:12]}... in {RUN}, {grammar_sha256(path)[:12]}... now); restore "
                f"the grammar the run used (grammar=... in its config)"
            )
        grammar = load_grammar(path)
        shape = tuple(self.identity.get("input_shape", (28, 28, 1)))
        return SearchSpace(
            grammar,
            macro_from_config(self.identity["macro"]),
            input_shape=shape,
            num_classes=self.identity.get("num_classes", 10),
            levels_back=self.identity.get("levels_back", 1),
        )

    def individual(self, which: str, retrained: bool = False):
        """One individual of the run: ``which`` is ``"best"`` or ``"G:I"``.

        Returns:
          ``(phenotype, weights or None to train again, (generation, index)
          or None)``; ``retrained`` asks for the best's weights after retrain.

        Raises:
          IndividualError: no such individual, or no weights to give for it.
        """
        state = self.state
        space = self.space()
        if which == "best":
            if state is None or state.parent is None:
                raise IndividualError(f"{self.dir}: no best individual yet (no completed generation)")
            phenotype = space.phenotype(state.parent)
            if retrained:
                if self.retrained is None:
                    raise IndividualError(f"{self.dir}: no retrained weights (run python -m spenser_jax.retrain first)")
                text, weights = self.retrained
                if text != phenotype.text:
                    raise IndividualError(f"{self.dir}: the retrained weights belong to another phenotype")
                return phenotype, weights, None
            return phenotype, state.parent_weights, None
        try:
            g, i = (int(x) for x in which.split(":"))
        except ValueError:
            raise IndividualError(
                f"--individual must be best or G:I (generation:index, both counted from 0 "
                f"as in {GENERATIONS}), got {which!r}"
            ) from None
        if not 0 <= g < len(self.records) or not 0 <= i < len(self.records[g]["individuals"]):
            detail = (
                f"G is 0..{len(self.records) - 1} and I 0..{len(self.records[g]['individuals']) - 1}, "
                if 0 <= g < len(self.records)
                else f"G is 0..{len(self.records) - 1}, "
                if self.records
                else ""
            )
            raise IndividualError(
                f"{self.dir}: no individual {g}:{i} ({len(self.records)} generations "
                f"recorded; {detail}counted from 0 as in {GENERATIONS}: the log's "
                f"'generation 2 done' is G = 2)"
            )
        record = self.records[g]["individuals"][i]
        phenotype = parse(record["phenotype"])
        if (
            state is not None
            and state.parent is not None
            and space.text(state.parent) == phenotype.text
            and self.best
            and self.best.get("generation") == g
        ):
            return phenotype, state.parent_weights, None
        if record["status"] not in ("ok", "stopped"):
            raise IndividualError(
                f"individual {g}:{i} has no trained network ({record['status']}: {record.get('reason', '')})"
            )
        if self.identity.get("search", {}).get("inherit"):
            raise IndividualError(
                f"individual {g}:{i}: this run inherits weights, so an offspring cannot be "
                f"trained again alone; inspect the best (--individual best)"
            )
        return phenotype, None, (g, i)

    def choose(self, which: str = "best", weights: str = "auto") -> Chosen:
        """One individual and the weights a command uses for it (inspect and export alike).

        Args:
          which: ``"best"`` or ``"G:I"`` (both counted from 0, as in
            ``generations.jsonl``).
          weights: ``"auto"``: the best's retrained weights when
            ``retrained.msgpack`` exists, is readable and belongs to the
            current best, else the search's (the reason goes into
            ``notes``); ``"retrained"``: the retrained ones or an error;
            ``"search"``: the weights the search scored.

        Raises:
          IndividualError: no such individual, no weights to give for it,
            or ``"retrained"`` for another than the best.
          CheckpointError: ``"retrained"`` with a corrupt ``retrained.msgpack``.
        """
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        best = which == "best"
        if weights == "retrained" and not best:
            raise IndividualError(
                f"--retrained is for --individual best only (individual {which} has no retrained weights)"
            )
        phenotype, params, again = self.individual(which, retrained=weights == "retrained")
        source = "retrained" if weights == "retrained" else "search" if again is None else "again"
        notes = []
        if best and weights == "auto":
            try:
                retrained = self.retrained
            except CheckpointError as err:
                retrained = None
                notes.append(f"note: {err}; using the search's weights")
            if retrained is not None and retrained[0] == phenotype.text:
                params, source = retrained[1], "retrained"
            elif retrained is not None:
                notes.append(
                    "note: retrain ran for an earlier best individual; using the search's weights of the current best"
                )
            elif self.test is not None and not notes:
                notes.append(f"note: {TEST} exists but {RETRAINED} does not; using the search's weights")
        if params is None and again is None:
            raise IndividualError(f"{self.dir}: the checkpoint holds no weights for individual {which}")
        if source == "retrained":
            text = "retrained weights"
            if self.test is not None and "accuracy" in self.test:
                text += f" (test accuracy {self.test['accuracy']:.4f}"
                text += ", --search-weights for the search's)" if weights == "auto" else ")"
        elif source == "again":
            text = "weights trained again from its key"
        else:
            text = "the search's weights"
        return Chosen(phenotype, params, again, source, text, tuple(notes))


#: What :meth:`Run.choose` takes as ``weights``.
WEIGHTS = ("auto", "retrained", "search")


@dataclasses.dataclass(frozen=True)
class Chosen:
    """An individual of a run and the weights chosen for it (:meth:`Run.choose`).

    Attributes:
      phenotype: the individual's phenotype.
      params: its weights; None: train it again from ``again``.
      again: ``(generation, index)`` to train it again from its key, or None.
      source: ``"retrained"``, ``"search"`` or ``"again"``.
      text: which weights, as said to the user.
      notes: why ``"auto"`` did not take retrained weights that retrain left.
    """

    phenotype: Any
    params: Any
    again: tuple[int, int] | None
    source: str
    text: str
    notes: tuple[str, ...] = ()


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt ({err})") from None


def load_run(run_dir: Path) -> Run:
    """Read a run directory (finished or still running).

    Raises:
      CheckpointError: not a run directory, or a corrupt checkpoint (or
        run.json, best.json, test.json). ``retrained.msgpack`` is read only
        where asked for (:attr:`Run.retrained`).
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN).exists():
        raise CheckpointError(f"{run_dir}: not a spenser_jax run directory (no {RUN})")
    identity = _read_json(run_dir / RUN)
    config = {}
    if (run_dir / CONFIG).exists():
        from omegaconf import OmegaConf

        try:
            config = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=False)
        except Exception as err:  # noqa: BLE001 - yaml and omegaconf raise several unrelated types
            raise CheckpointError(f"{run_dir / CONFIG}: unreadable ({type(err).__name__}: {err})") from None
    return Run(
        dir=run_dir,
        identity=identity,
        config=config,
        records=read_generations(run_dir),
        best=_read_json(run_dir / BEST),
        test=_read_json(run_dir / TEST),
        state=load(run_dir, identity),
    )


def save_weights(path: Path, phenotype_text: str, weights: Any) -> None:
    """Trained weights with the phenotype they belong to, as one atomic msgpack file."""
    payload = {
        "format": FORMAT + ".weights",
        "version": VERSION,
        "phenotype": phenotype_text,
        "weights": serialization.to_state_dict(weights),
    }
    atomic_write(Path(path), serialization.msgpack_serialize(payload))


def load_weights(path: Path) -> tuple[str, Any] | None:
    """``(phenotype text, weights)`` from :func:`save_weights` (None when the file is absent).

    Raises:
      CheckpointError: the file is corrupt or not such a file.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types
        raise CheckpointError(f"{path}: corrupt weights file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT + ".weights":
        raise CheckpointError(f"{path}: not a spenser_jax weights file")
    return payload["phenotype"], _to_numpy(payload["weights"])
