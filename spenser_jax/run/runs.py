"""A run directory as the commands after the search see it: :func:`load_run`, :class:`Run`.

:func:`load_run` reads a finished or running run directory for the commands
that come after the search (retrain, report, inspect, export).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from spenser_jax.genome.phenotype import parse
from spenser_jax.genome.space import SearchSpace
from spenser_jax.grammar import GrammarError, load_grammar, locate
from spenser_jax.run.checkpoint import load, load_weights
from spenser_jax.run.config import Built, build, protocol_of
from spenser_jax.run.files import (
    BEST,
    CONFIG,
    GENERATIONS,
    RETRAINED,
    RUN,
    TEST,
    CheckpointError,
    IndividualError,
    grammar_sha256,
    read_generations,
    read_json,
)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory as the commands after the search see it.

    ``identity`` is ``run.json`` (the settings that determine results);
    ``config`` the resolved ``.hydra/config.yaml`` (empty when absent), for
    what the identity does not hold (data and grammar paths); ``records`` the
    lines of ``generations.jsonl``; ``best``, ``test`` and ``state`` (the
    checkpoint, with the best's trained weights) are None before they are
    written. ``retrained`` (the best's weights after ``retrain``, with the
    phenotype text they belong to) is read on first use: a corrupt file raises
    :class:`CheckpointError` there and blocks nothing that does not need it.
    """

    dir: Path
    identity: dict
    config: dict
    records: list[dict]
    best: dict | None
    test: dict | None
    state: Any  # a strategy's state (spenser_jax.search), or None

    @functools.cached_property
    def retrained(self) -> tuple[str, Any] | None:
        return load_weights(self.dir / RETRAINED)

    @property
    def dataset(self) -> str:
        return self.identity.get("dataset", "?")

    def protocol(self, **overrides):
        """How the search trained and scored its individuals (a :class:`spenser_jax.training.protocol.Protocol`).

        Rebuilt by :func:`spenser_jax.run.config.protocol_of`, as the search's
        setup built it; ``overrides`` replace fields (``epochs``, ...), e.g. for
        retraining. ``time_steps`` is the search's; the data set's is
        ``identity["time_steps"]``.
        """
        return protocol_of(self.identity, self.config, **overrides)

    def training_settings(self, **overrides):
        """The former name of :meth:`protocol`."""
        return self.protocol(**overrides)

    def splits(self, data_dir=None):
        """The run's data splits, drawn again from its seed (``data_dir`` overrides the run's)."""
        return self._built(load_data=True, data_dir=data_dir).splits

    @property
    def grammar_path(self) -> Path:
        try:
            return locate(self.config.get("grammar", "grammars/csnn.grammar"))
        except GrammarError as err:
            raise CheckpointError(f"{self.dir}: {err}") from None

    def space(self) -> SearchSpace:
        """The run's search space, from its grammar file, as the search built it.

        Raises:
          CheckpointError: the grammar file changed since the search (its
            SHA-256 differs from the one in ``run.json``): the genotypes would
            decode to other networks.
        """
        return self._built(load_data=False).space

    def _built(self, load_data: bool, data_dir=None) -> Built:
        path = self.grammar_path
        saved = self.identity.get("grammar_sha256")
        if saved is not None and grammar_sha256(path) != saved:
            raise CheckpointError(
                f"{self.dir}: the grammar {path} changed since this run searched with it "
                f"(sha256 {saved[:12]}... in {RUN}, {grammar_sha256(path)[:12]}... now); restore "
                f"the grammar the run used (grammar=... in its config)"
            )
        return build(self.identity, self.config, load_grammar(path), load_data=load_data, data_dir=data_dir)

    def individual(self, which: str, retrained: bool = False):
        """One individual of the run: ``which`` is ``"best"`` or ``"G:I"``.

        Returns ``(phenotype, weights or None to train again, (generation, index)
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

        ``which``: ``"best"`` or ``"G:I"`` (counted from 0, as in
        ``generations.jsonl``). ``weights``: ``"auto"``, the best's retrained
        weights when ``retrained.msgpack`` exists, is readable and belongs to the
        current best, else the search's (the reason goes into ``notes``);
        ``"retrained"``, those or an error; ``"search"``, the weights the search scored.

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

    ``params`` None: train it again from ``again``, ``(generation, index)``.
    ``source`` is ``"retrained"``, ``"search"`` or ``"again"``; ``text`` says
    which to the user; ``notes`` why ``"auto"`` did not take retrained weights.
    """

    phenotype: Any
    params: Any
    again: tuple[int, int] | None
    source: str
    text: str
    notes: tuple[str, ...] = ()


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
    identity = read_json(run_dir / RUN)
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
        best=read_json(run_dir / BEST),
        test=read_json(run_dir / TEST),
        state=load(run_dir, identity),
    )
