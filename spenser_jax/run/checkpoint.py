"""The evolutionary checkpoint and weight files (msgpack, ``flax.serialization``; no pickles).

The checkpoint is one file with the run's identity (the config that
determines results), and the strategy's state (:meth:`Strategy.payload
<spenser_jax.search.strategy.Strategy.payload>`: the generation count, the
parent's or the population's genotypes, fitness and trained weights). It is
written atomically (:func:`~spenser_jax.run.files.atomic_write`), so an
interrupted write leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flax import serialization

from spenser_jax import search
from spenser_jax.run.files import CHECKPOINT, GENERATIONS, CheckpointError, atomic_write
from spenser_jax.search.strategy import numpy_tree

FORMAT = "spenser_jax.run"
VERSION = 1


def save(run_dir: Path, state: Any, identity: dict) -> None:
    """Write the strategy's ``state`` (the strategy ``identity`` names) with ``identity``, atomically."""
    body = search.of_identity(identity).payload(state)
    # A strategy's tag (nsga2's) precedes the identity, as checkpoints always had it.
    tag = {"strategy": body.pop("strategy")} if "strategy" in body else {}
    payload = {"format": FORMAT, "version": VERSION, **tag, "identity": json.dumps(identity, sort_keys=True), **body}
    atomic_write(Path(run_dir) / CHECKPOINT, serialization.msgpack_serialize(payload))


def load(run_dir: Path, identity: dict | None = None) -> Any:
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
            f"{path}: corrupt checkpoint ({type(err).__name__}: {err}); it was left as is: put a good copy back "
            f"to resume, or move it away together with {GENERATIONS} (the records it covers) to start over"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spenser_jax checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')}, this spenser_jax reads version {VERSION}"
        )
    try:
        saved = json.loads(payload["identity"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint (its identity: {type(err).__name__})") from None
    if identity is not None and saved != identity:
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in keys)
        raise CheckpointError(
            f"{path}: the run directory holds a run with a different configuration ({detail}); "
            f"resume with the same settings or choose another run directory "
            f"(hydra.run.dir=... or experiment=...)"
        )
    try:
        return search.of_identity(saved).restore(payload)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, IndexError, AttributeError) as err:  # a payload damaged into other valid msgpack
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(err).__name__}: {err})") from None


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
    if not isinstance(payload.get("phenotype"), str) or not isinstance(payload.get("weights"), dict):
        raise CheckpointError(f"{path}: corrupt weights file (no phenotype or weights)")
    return payload["phenotype"], numpy_tree(payload["weights"])
