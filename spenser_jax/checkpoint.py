"""Run-directory files: atomic writes, the evolutionary checkpoint, resume.

The checkpoint is one msgpack file (``flax.serialization``; no pickles) with
the run's identity (the config that determines results), the generation
count, the parent's genotype, fitness and trained weights. It is written to a
temporary file, flushed to disk and renamed over the old one, so an
interrupted write leaves the last good checkpoint intact.

Order of writes after a generation: ``generations.jsonl`` line first, then
the checkpoint. On resume, lines for generations the checkpoint does not
cover are dropped (they are recomputed identically).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from spenser_jax.evolution import State
from spenser_jax.genotype import Genotype, SearchSpaceError

FORMAT = "spenser_jax.checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.msgpack"
GENERATIONS = "generations.jsonl"
BEST = "best.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; it is left untouched."""


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


def save(run_dir: Path, state: State, identity: dict) -> None:
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
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(err).__name__}: {err}); "
                              f"it was left as is: move it away to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spenser_jax checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')}, "
                              f"this spenser_jax reads version {VERSION}")
    saved = json.loads(payload["identity"])
    if identity is not None and saved != identity:
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in keys)
        raise CheckpointError(
            f"{path}: the run directory holds a run with a different configuration ({detail}); "
            f"resume with the same settings or choose another run directory "
            f"(hydra.run.dir=... or experiment=...)")
    try:
        parent = Genotype.loads(payload["parent"]) if payload["parent"] else None
    except (SearchSpaceError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable parent genotype ({err})") from None
    weights = payload["weights"] or None
    return State(seed=int(payload["seed"]), generation=int(payload["generation"]), parent=parent,
                 parent_fitness=float(payload["parent_fitness"]),
                 parent_weights=_to_numpy(weights))


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
        raise CheckpointError(f"{Path(run_dir) / GENERATIONS} does not hold generations "
                              f"0..{generations - 1} that the checkpoint covers")
    atomic_write(Path(run_dir) / GENERATIONS, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_generation(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / GENERATIONS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
