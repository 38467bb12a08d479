"""Mutation operators of SPENSER (paper Table 2), and what we do better.

Per offspring, for each GA module (in macro order):

1. *add layer*: 1 or 2 tries (uniform); each, if the module is below its
   maximum, inserts with probability ``add_layer`` a layer at a uniform
   position: with probability ``reuse_layer`` a copy of an existing layer of
   the module, otherwise a new random one;
2. *remove layer*: 1 or 2 tries; each, if above the minimum, removes a
   uniformly chosen layer with probability ``remove_layer``;
3. *DSGE*: each layer mutates with probability ``layer_dsge``
   (``learning_dsge`` for the learning module): pick a nonterminal that can
   change, one of its expansions, then either switch its production
   (re-deriving what hangs below it) or mutate one numeric value (int:
   uniform resample; float: + N(0, σ) clipped to the range).

Switches for the original's weak points (defaults in :class:`MutationConfig`,
also stated in docs/search-space.md): independent copies on reuse, a mutable output
unit, re-mutating offspring whose phenotype equals the parent's, and log-scale
steps for genes whose range spans decades.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from spenser_jax.genome.genotype import Derivation, Expansion, Genotype, SearchSpaceError, copy_layer
from spenser_jax.genome.space import SearchSpace, derive, sample_gene
from spenser_jax.genome.units import InvalidPhenotype
from spenser_jax.grammar import Gene


@dataclasses.dataclass(frozen=True)
class MutationConfig:
    """Rates and switches. Defaults: the paper's rates, our improvements on.

    Attributes:
      add_layer, reuse_layer, remove_layer, layer_dsge, learning_dsge, gaussian_sigma: the paper's Table 2.
      max_tries: add/remove tries per module are uniform in 1..max_tries.
      independent_copies: a reused layer is an independent copy (True), or
        stays linked to its source so that later DSGE mutations change every
        copy, as the original's by-reference reuse did (False).
      mutate_output: the output module's genes mutate (True, with the
        ``layer_dsge`` rate) or stay as first drawn, as in the original (False).
      remutate_neutral: an offspring whose phenotype equals its parent's is
        mutated again (True) or kept (False, original).
      log_scale: float genes with ``0 < min`` and ``max / min >= log_ratio``
        (lr, decay) take Gaussian steps on the log of their range,
        normalised to [0, 1], instead of absolute steps.
      log_uniform: such genes are also *drawn* log-uniformly wherever a
        value is drawn afresh (generation 0, new layers, production
        switches; the search space's ``log_uniform_ratio``); the paper draws
        uniformly, which puts most learning rates above 0.01.
      reuse_at_creation: generation 0 is created as the original creates it:
        each layer after a module's first is, with probability
        ``reuse_layer``, a copy of an earlier layer (linked unless
        ``independent_copies``); False draws every layer anew.
      add_connection, remove_connection: per layer that may have skip
        connections, the probability of adding one (to a random place of its
        window it does not read yet) and of removing one (Fast-DENSER's
        connection mutations; 0 with Grammar 2).
      loss_dsge: DSGE rate of the loss unit (grammars with one).
      learning_modules: modules mutated with ``learning_dsge``.
      output_modules: modules frozen when ``mutate_output`` is False.
    """

    add_layer: float = 0.25
    reuse_layer: float = 0.15
    remove_layer: float = 0.25
    layer_dsge: float = 0.15
    learning_dsge: float = 0.30
    gaussian_sigma: float = 0.15
    max_tries: int = 2
    independent_copies: bool = True
    mutate_output: bool = True
    remutate_neutral: bool = True
    log_scale: bool = False
    log_ratio: float = 100.0
    log_uniform: bool = False
    reuse_at_creation: bool = True
    add_connection: float = 0.0
    remove_connection: float = 0.0
    loss_dsge: float = 0.30
    learning_modules: tuple[str, ...] = ("learning",)
    output_modules: tuple[str, ...] = ("output",)
    loss_modules: tuple[str, ...] = ("loss",)

    def __post_init__(self):
        for name in (
            "add_layer",
            "reuse_layer",
            "remove_layer",
            "layer_dsge",
            "learning_dsge",
            "add_connection",
            "remove_connection",
            "loss_dsge",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"mutation.{name} must be a probability in [0, 1], got {value}")
        if self.gaussian_sigma < 0 or self.max_tries < 1 or self.log_ratio <= 1:
            raise ValueError("mutation: need gaussian_sigma >= 0, max_tries >= 1, log_ratio > 1")


class Event(NamedTuple):
    """One applied mutation, for logs and rate tests."""

    op: str  # "add" | "reuse" | "remove" | "dsge" | "connect" | "disconnect"
    module: str
    index: int
    detail: str = ""


# --------------------------------------------------------------------------
# DSGE level


def _mutable_sites(space: SearchSpace, layer: Derivation) -> list[tuple[str, int]]:
    rules = space.grammar.rules
    return [(nt, k) for nt, exps in layer.expansions for k, e in enumerate(exps) if len(rules[nt]) > 1 or e.values]


def _float_step(rng: np.random.Generator, value: float, gene: Gene, config: MutationConfig) -> float:
    lo, hi = gene.low, gene.high
    if config.log_scale and lo > 0 and hi / lo >= config.log_ratio:
        span = math.log(hi) - math.log(lo)
        u = (math.log(value) - math.log(lo)) / span + rng.normal(0.0, config.gaussian_sigma)
        return float(np.clip(math.exp(math.log(lo) + float(np.clip(u, 0.0, 1.0)) * span), lo, hi))
    return float(np.clip(value + rng.normal(0.0, config.gaussian_sigma), lo, hi))


def dsge_mutation(
    rng: np.random.Generator, layer: Derivation, space: SearchSpace, start: str, config: MutationConfig
) -> tuple[Derivation, str]:
    """Mutate one site of a layer's derivation. Returns (layer, description)."""
    sites = _mutable_sites(space, layer)
    if not sites:
        return layer, "nothing to mutate"
    nt, k = sites[int(rng.integers(len(sites)))]
    expansion = layer.get(nt)[k]
    productions = space.grammar.rules[nt]
    # As the original: a production switch and a value change are chosen
    # 1 : 2 when both are possible.
    kinds = (["switch"] if len(productions) > 1 else []) + (["value", "value"] if expansion.values else [])
    if kinds[int(rng.integers(len(kinds)))] == "switch":
        others = [i for i in range(len(productions)) if i != expansion.choice]
        choice = others[int(rng.integers(len(others)))]
        genes_of = [s for s in productions[choice] if isinstance(s, Gene)]
        switched = layer.replace(
            nt, k, Expansion(choice, tuple(sample_gene(rng, g, space.log_uniform_ratio) for g in genes_of))
        )
        repaired, _ = derive(space.grammar, start, switched, rng=rng, log_ratio=space.log_uniform_ratio)
        return repaired, f"<{nt}>#{k} production {expansion.choice}->{choice}"
    genes_of = [s for s in productions[expansion.choice] if isinstance(s, Gene)]
    g = int(rng.integers(len(genes_of)))
    gene = genes_of[g]
    values = list(expansion.values[g])
    v = int(rng.integers(len(values)))
    old = values[v]
    if gene.is_int:
        values[v] = int(rng.integers(gene.low, gene.high, endpoint=True))
    else:
        values[v] = _float_step(rng, old, gene, config)
    all_values = list(expansion.values)
    all_values[g] = tuple(values)
    mutated = layer.replace(nt, k, Expansion(expansion.choice, tuple(all_values)))
    return mutated, f"<{nt}>#{k} {gene.name} {old!r}->{values[v]!r}"


# --------------------------------------------------------------------------
# GA level


def mutation_round(
    rng: np.random.Generator,
    genotype: Genotype,
    space: SearchSpace,
    config: MutationConfig,
    uid_start: int | None = None,
) -> tuple[Genotype, list[Event]]:
    """Apply the operators once. The result may be an invalid network.

    Surviving layers keep their uid; added and copied layers get new ones,
    from ``uid_start`` (default: above every uid of ``genotype``) up, so a
    new layer never takes the identity of one its parent had.
    """
    if uid_start is None:
        uid_start = genotype.max_uid + 1
    events: list[Event] = []
    out = genotype
    for bounds in space.macro:
        name = bounds.name
        layers = list(out.module(name).layers)
        for _ in range(int(rng.integers(1, config.max_tries, endpoint=True))):
            if len(layers) < bounds.max_layers and rng.random() < config.add_layer:
                position = int(rng.integers(len(layers) + 1))
                if layers and rng.random() < config.reuse_layer:
                    source = int(rng.integers(len(layers)))
                    layers[source], new = copy_layer(layers, source, not config.independent_copies)
                    layers.insert(position, new)
                    events.append(Event("reuse", name, position, f"copy of layer {source}"))
                else:
                    layers.insert(position, space.new_layer(rng, name))
                    events.append(Event("add", name, position))
        for _ in range(int(rng.integers(1, config.max_tries, endpoint=True))):
            if len(layers) > bounds.min_layers and rng.random() < config.remove_layer:
                position = int(rng.integers(len(layers)))
                del layers[position]
                events.append(Event("remove", name, position))
        if name in config.output_modules and not config.mutate_output:
            rate = 0.0
        elif name in config.learning_modules:
            rate = config.learning_dsge
        elif name in config.loss_modules:
            rate = config.loss_dsge
        else:
            rate = config.layer_dsge
        for i in range(len(layers)):
            if rng.random() < rate:
                new, detail = dsge_mutation(rng, layers[i], space, name, config)
                link = layers[i].link
                if link is None:
                    layers[i] = new
                else:  # the original's shared reference: every copy changes
                    layers = [dataclasses.replace(new, uid=x.uid) if x.link == link else x for x in layers]
                events.append(Event("dsge", name, i, detail))
        out = out.replace_module(name, layers)
    out = out.with_uids(uid_start)
    if config.add_connection or config.remove_connection:
        out = _mutate_connections(rng, space.repair_connections(out), space, config, events)
    return space.repair_connections(out), events


def _mutate_connections(
    rng: np.random.Generator, genotype: Genotype, space: SearchSpace, config: MutationConfig, events: list[Event]
) -> Genotype:
    """Add and remove skip connections, each layer within its window (Fast-DENSER's operators)."""
    blocks = space.blocks(genotype)
    changed = {}
    for k, (where, layer, first, _) in enumerate(blocks):
        module = where[0]
        window = space.window(k)
        if module in space.fixed_modules or not window:
            continue
        current = list(layer.inputs or ())
        uid_at = {q: (-1 if q == -1 else blocks[q][1].uid) for q in window}
        if config.add_connection and rng.random() < config.add_connection:
            free = [q for q in window if uid_at[q] not in current]
            if free:
                q = free[int(rng.integers(len(free)))]
                current.append(uid_at[q])
                events.append(Event("connect", module, first, f"reads place {q}"))
        if config.remove_connection and current and rng.random() < config.remove_connection:
            gone = current.pop(int(rng.integers(len(current))))
            events.append(Event("disconnect", module, first, f"no longer reads uid {gone}"))
        if tuple(current) != tuple(layer.inputs or ()):
            changed[where] = tuple(sorted(current)) or None
    return space.with_inputs(genotype, changed) if changed else genotype


def sample(rng: np.random.Generator, space: SearchSpace, config: MutationConfig) -> Genotype:
    """A valid random individual of generation 0 (see ``reuse_at_creation``)."""
    reuse = config.reuse_layer if config.reuse_at_creation else 0.0
    return space.random_individual(rng, reuse=reuse, linked=not config.independent_copies)


def offspring(
    rng: np.random.Generator, parent: Genotype, space: SearchSpace, config: MutationConfig
) -> tuple[Genotype, list[Event]]:
    """A valid child of ``parent``.

    Invalid children (shapes collapse, output size wrong) are discarded and
    the parent is mutated afresh. With ``remutate_neutral``, a child whose
    phenotype equals the parent's is mutated again. Bounded by
    ``space.max_attempts``; then :class:`SearchSpaceError`.
    """
    parent_text = space.text(parent)
    child, events = parent, []
    last = "no mutation applied"
    for _ in range(space.max_attempts):
        candidate, new_events = mutation_round(rng, child, space, config, uid_start=parent.max_uid + 1)
        try:
            space.validate(candidate)
        except (SearchSpaceError, InvalidPhenotype) as err:
            child, events, last = parent, [], str(err)
            continue
        child, events = candidate, events + new_events
        if not config.remutate_neutral or space.text(child) != parent_text:
            return child, events
        last = "every mutation was neutral"
    raise SearchSpaceError(f"no valid offspring in {space.max_attempts} attempts ({last})")
