"""Two-level genotypes: a GA list of modules, a DSGE derivation per layer.

A :class:`Genotype` is complete and immutable: every production choice and
every numeric value its phenotype uses is stored in it, and nothing else.
Decoding (:meth:`~spenser_jax.genome.space.SearchSpace.phenotype`) is a pure function of the genotype;
all randomness comes from a ``numpy.random.Generator`` passed in explicitly.

DSGE bookkeeping: a layer's :class:`Derivation` stores, per nonterminal, the
list of expansions in the order the derivation meets that nonterminal; the
k-th occurrence of ``<nt>`` uses ``expansions[nt][k]``. An :class:`Expansion`
is the index of the chosen production and, for each numeric gene symbol
(:class:`~spenser_jax.grammar.Gene`) in it, a tuple of values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from spenser_jax.errors import SpenserError


class SearchSpaceError(SpenserError, RuntimeError):
    """No valid individual could be produced (or a genotype does not fit)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Expansion:
    """One expansion of a nonterminal: its production and its genes' values.

    Attributes:
      choice: index of the chosen production.
      values: per numeric gene of that production (in order), its values.
    """

    choice: int
    values: tuple[tuple[int | float, ...], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Derivation:
    """One layer of a module: a DSGE derivation of the module's nonterminal.

    ``expansions``: (nonterminal, expansions in derivation order) pairs, sorted
    by nonterminal so equal layers compare and hash equal. ``link``: layers of
    one module with the same link share their genotype, reproducing the
    original's by-reference "reuse" (``MutationConfig.independent_copies=False``).
    ``uid``: the layer's identity within its genotype, kept by an offspring for
    every layer it inherits (also when it moves or mutates), new for added and
    copied layers; weight inheritance matches layers by it, never by position
    (None until :meth:`Genotype.with_uids`). ``inputs``: the uids of earlier
    layers it reads besides the one before it (-1: the network input); None:
    that one alone.
    """

    expansions: tuple[tuple[str, tuple[Expansion, ...]], ...]
    link: int | None = None
    uid: int | None = None
    inputs: tuple[int, ...] | None = None

    def get(self, nt: str) -> tuple[Expansion, ...]:
        for name, exps in self.expansions:
            if name == nt:
                return exps
        return ()

    def replace(self, nt: str, index: int, expansion: Expansion) -> Derivation:
        table = dict(self.expansions)
        exps = list(table[nt])
        exps[index] = expansion
        table[nt] = tuple(exps)
        return dataclasses.replace(self, expansions=tuple(sorted(table.items())))


@dataclasses.dataclass(frozen=True, slots=True)
class Module:
    name: str
    layers: tuple[Derivation, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Genotype:
    modules: tuple[Module, ...]

    def module(self, name: str) -> Module:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)

    def replace_module(self, name: str, layers: Sequence[Derivation]) -> Genotype:
        return Genotype(tuple(Module(m.name, tuple(layers)) if m.name == name else m for m in self.modules))

    @property
    def max_uid(self) -> int:
        """The largest layer uid (-1 when none is assigned)."""
        return max((x.uid for m in self.modules for x in m.layers if x.uid is not None), default=-1)

    def with_uids(self, start: int = 0) -> Genotype:
        """Every layer without a uid gets a new one, above ``start - 1`` and every uid in use."""
        nxt = max(start, self.max_uid + 1)
        modules = []
        for m in self.modules:
            layers = []
            for x in m.layers:
                if x.uid is None:
                    x = dataclasses.replace(x, uid=nxt)
                    nxt += 1
                layers.append(x)
            modules.append(Module(m.name, tuple(layers)))
        return Genotype(tuple(modules))

    # JSON: plain lists; ints stay ints and floats stay floats (json writes
    # floats with repr, so values round-trip exactly).
    def to_json(self) -> dict:
        return {
            "modules": [
                {
                    "name": m.name,
                    "layers": [
                        {
                            "expansions": {
                                nt: [[e.choice, [list(v) for v in e.values]] for e in exps]
                                for nt, exps in layer.expansions
                            },
                            **({"link": layer.link} if layer.link is not None else {}),
                            **({"uid": layer.uid} if layer.uid is not None else {}),
                            **({"inputs": list(layer.inputs)} if layer.inputs is not None else {}),
                        }
                        for layer in m.layers
                    ],
                }
                for m in self.modules
            ]
        }

    @classmethod
    def from_json(cls, obj: dict) -> Genotype:
        try:
            return cls(
                tuple(
                    Module(
                        m["name"],
                        tuple(
                            Derivation(
                                tuple(
                                    sorted(
                                        (
                                            nt,
                                            tuple(
                                                Expansion(int(c), tuple(tuple(v) for v in genes)) for c, genes in exps
                                            ),
                                        )
                                        for nt, exps in layer["expansions"].items()
                                    )
                                ),
                                layer.get("link"),
                                layer.get("uid"),
                                tuple(int(x) for x in layer["inputs"]) if layer.get("inputs") is not None else None,
                            )
                            for layer in m["layers"]
                        ),
                    )
                    for m in obj["modules"]
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            raise SearchSpaceError(f"malformed genotype JSON: {err!r}") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Genotype:
        return cls.from_json(json.loads(text))


def copy_layer(layers: Sequence[Derivation], source: int, linked: bool) -> tuple[Derivation, Derivation]:
    """``(layers[source] as it stays, a copy of it)``; the copy is a new layer (no uid yet).

    ``linked``: the two share one genotype from now on (``Derivation.link``:
    the original's by-reference reuse), under the source's link or a new one.
    """
    copy = dataclasses.replace(layers[source], uid=None)
    if not linked:
        return layers[source], copy
    link = copy.link if copy.link is not None else 1 + max((x.link for x in layers if x.link is not None), default=-1)
    return dataclasses.replace(layers[source], link=link), dataclasses.replace(copy, link=link)
