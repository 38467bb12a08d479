"""Weight inheritance: an offspring starts from its parent's trained weights where it can.

The paper trains every offspring from scratch. With ``search.inherit`` an
offspring instead starts each of its layers from the parent's trained
parameters when that layer survived the mutation with its parameters'
shapes unchanged, and trains from there (then the usual fitness).

Layers are matched by identity, never by position: every layer of a
genotype carries a ``uid`` (:class:`spenser_jax.genome.space.Derivation`) that an
offspring keeps for each layer it got from its parent, whatever was added,
removed or moved around it; added layers and copies of layers get new uids.
A derivation may stand for several phenotype layers (a convolution block
is conv, pool and LIF), so a phenotype layer is matched by ``(uid, k)``, its
derivation and its place in it (:meth:`SearchSpace.origins`).

What a matched layer inherits:

* conv: its kernel and bias when their shapes are equal (same kernel size,
  input channels and filters; a new stride or padding keeps the weights);
* fc: its weights and bias when its input shape and units are equal (a
  flattened input of another spatial size would feed other features to the
  same weights, even when the count happens to agree);
* LIF: its trained β and θ when its genes are unchanged; a mutated β or θ
  gene starts from the new value, as the mutation asked;
* with ``partial=True`` a conv of the same kernel size whose channel counts
  changed, or an fc after an fc whose sizes changed, keeps the overlapping
  slice ``[:min, :min]`` of its parent's weights, the rest drawn fresh.

Everything else (new layers, copies, reshaped layers) starts as the paper's
offspring do. The result is ``(values, mask, share)``: two trees shaped like
the child's parameters (the mask elementwise) for
:func:`inherit_params`, and the share of parameters
inherited, for the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax.genome.phenotype import LIF, Conv, Dense, NoOp, Phenotype, layer_inputs
from spenser_jax.snn import architecture

Origins = Sequence[tuple[int | None, int]]


def _network_layers(phenotype: Phenotype, origins: Origins, input_shape):
    """(layer, origin, input shape, parameter name) per signature layer (no-op dropped)."""
    kept = [(layer, origin) for layer, origin in zip(phenotype.layers, origins) if not isinstance(layer, NoOp)]
    if len(origins) != len(phenotype.layers):
        raise ValueError(f"{len(origins)} origins for {len(phenotype.layers)} layers")
    sig = architecture.signature(phenotype)
    ins = layer_inputs(sig.layers, input_shape, sig.inputs)
    return [
        (layer, origin, shape_in, architecture.param_name(i, spec))
        for i, ((layer, origin), spec, shape_in) in enumerate(zip(kept, sig.layers, ins))
    ]


def _partial_ok(child, parent, child_in, parent_in) -> bool:
    if isinstance(child, Conv):
        return child.kernel == parent.kernel and child.bias == parent.bias
    if isinstance(child, Dense):
        return len(child_in) == len(parent_in) == 1 and child.bias == parent.bias
    return False


def inherit(
    parent: Phenotype,
    parent_origins: Origins,
    parent_params: Mapping[str, Any],
    child: Phenotype,
    child_origins: Origins,
    input_shape: tuple[int, int, int],
    *,
    partial: bool = False,
) -> tuple[dict, dict, float]:
    """What ``child`` inherits from its parent's trained ``parent_params``.

    Args:
      parent, child: the two phenotypes.
      parent_origins, child_origins: ``SearchSpace.origins`` of their genotypes.
      parent_params: the parent's trained parameters (host arrays).
      input_shape: ``(H, W, C)`` of one image.
      partial: also inherit the overlapping slice of reshaped conv/fc layers.

    Returns:
      ``(values, mask, share)``: ``values`` and ``mask`` are trees like the
      child's parameters (float32 values, zero where not inherited; a bool
      mask per element); ``share`` the fraction of the child's parameters
      that start inherited.
    """
    sig = architecture.signature(child)
    shapes = architecture.param_shapes(sig, input_shape)
    parents = {
        origin: (layer, shape_in, name)
        for layer, origin, shape_in, name in _network_layers(parent, parent_origins, input_shape)
        if name is not None and origin[0] is not None
    }
    values = {
        name: {leaf: np.zeros(shape, np.float32) for leaf, shape in leaves.items()} for name, leaves in shapes.items()
    }
    mask = {name: {leaf: np.zeros(shape, bool) for leaf, shape in leaves.items()} for name, leaves in shapes.items()}
    for layer, origin, shape_in, name in _network_layers(child, child_origins, input_shape):
        match = parents.get(origin) if name is not None else None
        if match is None or type(match[0]) is not type(layer):
            continue
        old, old_in, old_name = match
        source = parent_params.get(old_name)
        if source is None:
            continue
        if isinstance(layer, LIF):
            if layer == old:
                for leaf in values[name]:
                    values[name][leaf][...] = np.asarray(source[leaf])
                    mask[name][leaf][...] = True
            continue
        same = (
            set(source) == set(shapes[name])
            and all(np.shape(source[leaf]) == shapes[name][leaf] for leaf in shapes[name])
            and (not isinstance(layer, Dense) or tuple(shape_in) == tuple(old_in))
        )
        if same:
            for leaf in values[name]:
                values[name][leaf][...] = np.asarray(source[leaf])
                mask[name][leaf][...] = True
        elif partial and _partial_ok(layer, old, shape_in, old_in):
            for leaf in values[name]:
                src = np.asarray(source[leaf])
                overlap = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, values[name][leaf].shape))
                values[name][leaf][overlap] = src[overlap]
                mask[name][leaf][overlap] = True
    total = sum(m.size for leaves in mask.values() for m in leaves.values())
    share = float(sum(m.sum() for leaves in mask.values() for m in leaves.values()) / max(total, 1))
    return values, mask, share


def fresh(child: Phenotype, input_shape: tuple[int, int, int]) -> tuple[dict, dict, float]:
    """Nothing inherited (generation 0, or a parent without weights), in :func:`inherit`'s form."""
    shapes = architecture.param_shapes(architecture.signature(child), input_shape)
    values = {n: {leaf: np.zeros(s, np.float32) for leaf, s in leaves.items()} for n, leaves in shapes.items()}
    mask = {n: {leaf: np.zeros(s, bool) for leaf, s in leaves.items()} for n, leaves in shapes.items()}
    return values, mask, 0.0


def inherit_params(fresh: Any, inherited: tuple[Any, Any] | None) -> Any:
    """``fresh`` parameters where ``mask`` is False, the inherited ``values`` where it is True.

    ``inherited`` is ``(values, mask)``: two pytrees like ``fresh``, the
    mask elementwise, so a layer can inherit all, part (a slice) or none of
    its parent's weights (:func:`inherit`).
    """
    if inherited is None:
        return fresh
    values, mask = inherited
    xp = jnp if any(isinstance(x, jax.Array) for x in jax.tree.leaves((fresh, values, mask))) else np
    return jax.tree.map(lambda v, m, f: xp.where(m, v.astype(f.dtype), f), values, mask, fresh)


def own(weights: Mapping[str, Any]) -> tuple[dict, dict, float]:
    """An individual training on from its own trained ``weights`` (all of them kept), in :func:`inherit`'s form."""
    values = jax.tree.map(lambda w: np.asarray(w, np.float32), dict(weights))
    mask = jax.tree.map(lambda w: np.ones(np.shape(w), bool), dict(weights))
    return values, mask, 1.0
