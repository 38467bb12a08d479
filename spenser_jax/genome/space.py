"""The search space: a grammar, the macro structure of modules and the problem's shapes.

:class:`SearchSpace` creates random genotypes (:mod:`spenser_jax.genome.genotype`),
decodes them through the grammar (:func:`derive`, pure) into phenotypes and
checks that they are buildable networks. The macro structure
(:class:`MacroModule`) bounds each module's layer count; fresh gene values come
from :func:`sample_gene`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from spenser_jax.genome.genotype import Derivation, Expansion, Genotype, Module, SearchSpaceError, copy_layer
from spenser_jax.genome.phenotype import Phenotype, infer_shapes, parse
from spenser_jax.genome.units import TAGS, InvalidPhenotype
from spenser_jax.grammar import Gene, Grammar, GrammarError, NonTerminal, Terminal

# --------------------------------------------------------------------------
# Macro structure


@dataclasses.dataclass(frozen=True, slots=True)
class MacroModule:
    """GA-level module: a grammar nonterminal with layer-count bounds.

    ``init`` lists the layer counts a random individual starts from (the
    original code: features from {1, 3, 5}, classification {1}); empty means
    ``min_layers``.
    """

    name: str
    min_layers: int
    max_layers: int
    init: tuple[int, ...] = ()

    def __post_init__(self):
        if not 0 <= self.min_layers <= self.max_layers:
            raise ValueError(f"module {self.name}: need 0 <= min ({self.min_layers}) <= max ({self.max_layers})")
        bad = [n for n in self.init if not self.min_layers <= n <= self.max_layers]
        if bad:
            raise ValueError(f"module {self.name}: initial counts {bad} outside [{self.min_layers}, {self.max_layers}]")

    def initial_counts(self) -> tuple[int, ...]:
        return self.init or (self.min_layers,)


DEFAULT_MACRO = (
    MacroModule("features", 1, 6, (1, 3, 5)),
    MacroModule("classification", 1, 4, (1,)),
    MacroModule("output", 1, 1),
    MacroModule("learning", 1, 1),
)


def macro_for(grammar: Grammar, macro: Sequence[MacroModule] = DEFAULT_MACRO) -> tuple[MacroModule, ...]:
    """``macro`` plus the units the grammar defines beyond it: a ``<loss>`` unit (one)."""
    macro = tuple(macro)
    if "loss" in grammar.rules and all(m.name != "loss" for m in macro):
        macro += (MacroModule("loss", 1, 1),)
    return macro


def macro_from_config(entries: Iterable) -> tuple[MacroModule, ...]:
    """``[[name, min, max, [init...]?], ...]`` or mappings -> MacroModules."""
    out = []
    for entry in entries:
        if isinstance(entry, dict) or hasattr(entry, "keys"):
            out.append(
                MacroModule(
                    entry["name"],
                    int(entry["min"]),
                    int(entry["max"]),
                    tuple(int(x) for x in entry.get("init", ()) or ()),
                )
            )
        else:
            name, lo, hi, *rest = entry
            out.append(MacroModule(name, int(lo), int(hi), tuple(int(x) for x in rest[0]) if rest else ()))
    if len({m.name for m in out}) != len(out):
        raise ValueError("macro structure names a module twice")
    return tuple(out)


# --------------------------------------------------------------------------
# Derivation


def sample_gene(rng: np.random.Generator, gene: Gene, log_ratio: float | None = None) -> tuple[int | float, ...]:
    """Fresh values of ``gene``: uniform over its range.

    With ``log_ratio``, a float gene with ``0 < min`` and ``max / min >=
    log_ratio`` (a learning rate in [1e-4, 0.1]) is drawn log-uniformly:
    each decade as likely as another, where the uniform draw puts 90% of
    its mass in the top decade. The generator advances the same either way.
    """
    if gene.is_int:
        return tuple(int(v) for v in rng.integers(gene.low, gene.high, endpoint=True, size=gene.count))
    if log_ratio is not None and gene.low > 0 and gene.high / gene.low >= log_ratio:
        lo, hi = math.log(gene.low), math.log(gene.high)
        return tuple(float(min(max(math.exp(v), gene.low), gene.high)) for v in rng.uniform(lo, hi, size=gene.count))
    return tuple(float(v) for v in rng.uniform(gene.low, gene.high, size=gene.count))


def derive(
    grammar: Grammar,
    start: str,
    existing: Derivation | None = None,
    rng: np.random.Generator | None = None,
    max_depth: int = 32,
    log_ratio: float | None = None,
) -> tuple[Derivation, str]:
    """Derive ``start``, reusing ``existing`` expansions and sampling the rest.

    With ``rng=None`` this is pure decoding: a missing expansion is an error.
    With an ``rng``, missing expansions are drawn at random (how a new layer
    is created, and how a layer is repaired after a production switch;
    ``log_ratio``: see :func:`sample_gene`).
    Unused expansions are dropped, so the returned layer is complete and
    minimal.

    Returns:
      (layer, phenotype text of the layer)
    """
    old = {nt: exps for nt, exps in existing.expansions} if existing else {}
    used: dict[str, list[Expansion]] = {}
    tokens: list[str] = []

    def expand(nt: str, depth: int):
        k = len(used.get(nt, ()))
        exps = old.get(nt, ())
        productions = grammar.rules[nt]
        if k < len(exps):
            expansion = exps[k]
            if not 0 <= expansion.choice < len(productions):
                raise SearchSpaceError(f"<{nt}> has no production {expansion.choice}")
        elif rng is None:
            raise SearchSpaceError(f"incomplete genotype: no expansion #{k} for <{nt}>")
        else:
            choices = grammar.terminating_choices(nt) if depth >= max_depth else range(len(productions))
            choice = int(rng.choice(list(choices)))
            values = tuple(sample_gene(rng, s, log_ratio) for s in productions[choice] if isinstance(s, Gene))
            expansion = Expansion(choice, values)
        used.setdefault(nt, []).append(expansion)
        gene_values = iter(expansion.values)
        for symbol in productions[expansion.choice]:
            if isinstance(symbol, Terminal):
                tokens.append(symbol.text)
            elif isinstance(symbol, NonTerminal):
                expand(symbol.name, depth + 1)
            else:
                values = next(gene_values, None)
                if values is None or len(values) != symbol.count or not all(symbol.contains(v) for v in values):
                    raise SearchSpaceError(f"<{nt}>: gene {symbol.name} has values {values}, outside {symbol}")
                tokens.extend(f"{symbol.name}:{v!r}" for v in values)
        if next(gene_values, None) is not None:
            raise SearchSpaceError(f"<{nt}>: more gene values stored than production {expansion.choice} has genes")

    expand(start, 0)
    layer = Derivation(
        tuple(sorted((nt, tuple(e)) for nt, e in used.items())),
        existing.link if existing else None,
        existing.uid if existing else None,
        existing.inputs if existing else None,
    )
    return layer, " ".join(tokens)


# --------------------------------------------------------------------------
# Search space: grammar + macro structure + the problem's shapes


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Everything needed to create, decode and validate individuals.

    Attributes:
      input_shape: (H, W, C) of one input; individuals whose shapes collapse
        are invalid.
      num_classes: the output layer must have this many units (None: any).
      max_attempts: how many random draws creation and mutation try before
        giving up with :class:`SearchSpaceError`.
      levels_back: a layer may read, besides the layer before it, layers up
        to this many places back (Fast-DENSER's rule; the places count the
        derivations that make layers, across modules; -1, the network
        input, counts as the place before the first). 1: no skip
        connections, as Grammar 2.
      fixed_modules: modules whose layers read only the layer before them
        (the output unit).
      log_uniform_ratio: fresh float values of genes whose range spans
        this ratio or more are drawn log-uniformly (:func:`sample_gene`);
        None: uniformly, as the paper.
    """

    grammar: Grammar
    macro: tuple[MacroModule, ...] = DEFAULT_MACRO
    input_shape: tuple[int, int, int] = (28, 28, 1)
    num_classes: int | None = 10
    max_attempts: int = 1000
    levels_back: int = 1
    fixed_modules: tuple[str, ...] = ("output",)
    log_uniform_ratio: float | None = None

    def __post_init__(self):
        self.grammar.require(m.name for m in self.macro)
        # A layer, optimizer or loss no one knows would only ever make invalid
        # individuals, silently redrawn: say so where the grammar names it.
        for key, known in TAGS.items():
            for value, line in self.grammar.values_of(key):
                if value not in known:
                    raise GrammarError(
                        f"{self.grammar.path}:{line}: unknown {key} type {value!r} (known: {', '.join(known)})"
                    )

    def bounds(self, name: str) -> MacroModule:
        for m in self.macro:
            if m.name == name:
                return m
        raise KeyError(name)

    def new_layer(self, rng: np.random.Generator, module: str) -> Derivation:
        return derive(self.grammar, module, rng=rng, log_ratio=self.log_uniform_ratio)[0]

    def initial_counts(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Layers per module of a new individual, each uniform over the module's ``init``."""
        return tuple(int(rng.choice(m.initial_counts())) for m in self.macro)

    def random_genotype(
        self, rng: np.random.Generator, counts: Sequence[int] | None = None, *, reuse: float = 0.0, linked: bool = False
    ) -> Genotype:
        """A random genotype; it may not be a valid network (see random_individual).

        Args:
          counts: layers per module (default: drawn by :meth:`initial_counts`).
          reuse: each layer after a module's first is, with this probability,
            a copy of an earlier layer of the module, as the original code
            creates individuals (p = .15 there); otherwise a new derivation.
          linked: reused copies share their genotype (the original's
            by-reference reuse; see ``Derivation.link``) instead of being
            independent copies.
        """
        if counts is None:
            counts = self.initial_counts(rng)
        modules = []
        for m, count in zip(self.macro, counts):
            layers: list[Derivation] = []
            for k in range(count):
                if k and reuse and rng.random() < reuse:
                    source = int(rng.integers(k))
                    layers[source], copy = copy_layer(layers, source, linked)
                    layers.append(copy)
                else:
                    layers.append(self.new_layer(rng, m.name))
            modules.append(Module(m.name, tuple(layers)))
        return self.draw_connections(rng, Genotype(tuple(modules)).with_uids())

    def text(self, genotype: Genotype) -> str:
        self.check_structure(genotype)
        parts = []
        for m in genotype.modules:
            parts.extend(derive(self.grammar, m.name, layer)[1] for layer in m.layers)
        text = " ".join(parts)
        if not any(x.inputs for m in genotype.modules for x in m.layers):
            return text
        ph = parse(text)
        return dataclasses.replace(ph, inputs=self._phenotype_inputs(genotype, len(ph.layers))).text

    def blocks(self, genotype: Genotype) -> list[tuple[tuple[str, int], Derivation, int, int]]:
        """The derivations that make layers, in network order.

        Returns:
          ``((module, index in it), derivation, first layer, last layer)``
          per derivation, the layers as indices into the phenotype's.
        """
        out, position = [], 0
        for m in genotype.modules:
            for index, layer in enumerate(m.layers):
                text = derive(self.grammar, m.name, layer)[1]
                count = sum(token.startswith("layer:") for token in text.split())
                if count:
                    out.append(((m.name, index), layer, position, position + count - 1))
                    position += count
        return out

    def with_inputs(self, genotype: Genotype, inputs: dict) -> Genotype:
        """``genotype`` with the layers at ``(module, index)`` reading ``inputs[...]``."""
        return Genotype(
            tuple(
                Module(
                    m.name,
                    tuple(
                        dataclasses.replace(x, inputs=inputs[(m.name, i)]) if (m.name, i) in inputs else x
                        for i, x in enumerate(m.layers)
                    ),
                )
                for m in genotype.modules
            )
        )

    def window(self, place: int) -> list[int]:
        """The places a block at ``place`` may read besides ``place - 1`` (-1: the network input)."""
        low = place - self.levels_back
        return ([-1] if low < 0 and place >= 1 else []) + list(range(max(0, low), place - 1))

    def _phenotype_inputs(self, genotype: Genotype, num_layers: int):
        blocks = self.blocks(genotype)
        place = {b[1].uid: k for k, b in enumerate(blocks) if b[1].uid is not None}
        inputs: list[tuple[int, ...] | None] = [None] * num_layers
        for k, ((module, _), layer, first, _) in enumerate(blocks):
            if not layer.inputs:
                continue
            allowed = self.window(k)
            sources = []
            for uid in layer.inputs:
                q = -1 if uid == -1 else place.get(uid)
                if q is None or q not in allowed or module in self.fixed_modules:
                    raise SearchSpaceError(
                        f"layer {first}: skip connection to {uid} outside levels_back "
                        f"{self.levels_back} (or to a layer that is gone)"
                    )
                sources.append(-1 if q == -1 else blocks[q][3])
            previous = blocks[k - 1][3] if k > 0 else -1
            inputs[first] = tuple(sorted({previous, *sources}))
        return tuple(inputs)

    def repair_connections(self, genotype: Genotype) -> Genotype:
        """Drop skip connections that layers added, removed or moved put out of reach."""
        if not any(x.inputs for m in genotype.modules for x in m.layers):
            return genotype
        blocks = self.blocks(genotype)
        place = {b[1].uid: k for k, b in enumerate(blocks)}
        fixed = {}
        for k, (where, layer, _, _) in enumerate(blocks):
            if layer.inputs:
                allowed = set(self.window(k)) if where[0] not in self.fixed_modules else set()
                kept = tuple(u for u in layer.inputs if (-1 if u == -1 else place.get(u)) in allowed)
                if kept != layer.inputs:
                    fixed[where] = kept or None
        return self.with_inputs(genotype, fixed) if fixed else genotype

    def draw_connections(self, rng: np.random.Generator, genotype: Genotype) -> Genotype:
        """Skip connections for a new genotype, as Fast-DENSER initialises them.

        Every layer reads the one before it; a random number (uniform from 0
        to all) of the other places in its window are added. Draws nothing
        when ``levels_back`` is 1.
        """
        if self.levels_back <= 1:
            return genotype
        blocks = self.blocks(genotype)
        chosen = {}
        for k, (where, _, _, _) in enumerate(blocks):
            window = self.window(k)
            if not window or where[0] in self.fixed_modules:
                continue
            size = int(rng.integers(0, len(window), endpoint=True))
            if size:
                picks = sorted(int(q) for q in rng.choice(window, size, replace=False))
                chosen[where] = tuple(sorted(-1 if q == -1 else blocks[q][1].uid for q in picks))
        return self.with_inputs(genotype, chosen) if chosen else genotype

    def origins(self, genotype: Genotype) -> tuple[tuple[int | None, int], ...]:
        """Where each phenotype layer comes from: ``(uid of its derivation, k-th layer of it)``.

        Aligned with ``self.phenotype(genotype).layers``; weight inheritance
        matches a child's layers to its parent's by these.
        """
        self.check_structure(genotype)
        return tuple((layer.uid, k) for _, layer, first, last in self.blocks(genotype) for k in range(last - first + 1))

    def phenotype(self, genotype: Genotype) -> Phenotype:
        """Decode (pure). Raises SearchSpaceError / InvalidPhenotype if it can't."""
        return parse(self.text(genotype))

    def check_structure(self, genotype: Genotype) -> None:
        names = tuple(m.name for m in genotype.modules)
        if names != tuple(m.name for m in self.macro):
            raise SearchSpaceError(
                f"genotype modules {names} do not match the macro structure {tuple(m.name for m in self.macro)}"
            )
        for module, bounds in zip(genotype.modules, self.macro):
            if not bounds.min_layers <= len(module.layers) <= bounds.max_layers:
                raise SearchSpaceError(
                    f"module {module.name} has {len(module.layers)} layers, "
                    f"outside [{bounds.min_layers}, {bounds.max_layers}]"
                )

    def validate(self, genotype: Genotype) -> Phenotype:
        """Decode and check shapes; raises if the individual is not a valid network."""
        phenotype = self.phenotype(genotype)
        infer_shapes(phenotype, self.input_shape, self.num_classes)
        return phenotype

    def is_valid(self, genotype: Genotype) -> bool:
        try:
            self.validate(genotype)
            return True
        except (SearchSpaceError, InvalidPhenotype):
            return False

    def random_individual(self, rng: np.random.Generator, *, reuse: float = 0.0, linked: bool = False) -> Genotype:
        """A random genotype that decodes to a valid network (bounded retries).

        The layer counts are drawn once and kept; only the layers are drawn
        again until the network is valid. Redrawing the counts too would
        bias generation 0 towards shallow networks: with the paper's grammar
        and 28x28 inputs only ~30% of random 5-layer feature stacks keep a
        positive spatial size, so 1/3/5 layers came out 48/36/16% instead of
        a third each. ``reuse`` and ``linked``: see :meth:`random_genotype`.
        """
        counts = self.initial_counts(rng)
        last = None
        for _ in range(self.max_attempts):
            genotype = self.random_genotype(rng, counts, reuse=reuse, linked=linked)
            try:
                self.validate(genotype)
                return genotype
            except (SearchSpaceError, InvalidPhenotype) as err:
                last = err
        raise SearchSpaceError(
            f"no valid individual with {dict(zip((m.name for m in self.macro), counts))} "
            f"layers in {self.max_attempts} random draws (last problem: {last})"
        )
