"""The small programs of :mod:`spenser_jax.training.blocks`, keyed by what they compute, not by the network.

A block (the layers up to and including a LIF layer) over all time steps,
keyed by its layers and input shape, its scan in the whole program's step
order, its training forward handing its VJP residuals to its backward; the
initial weight draws by padded size, with Flax's keys computed by
``fold_in`` outside any architecture's program (the same bits as
:func:`spenser_jax.snn.network.init_params`); and a block's parameters
packed into one vector padded to a power of two, so one optimizer program
serves every block of a size. :class:`_Net` is a signature's blocks as
calls of these programs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax.genome.phenotype import Conv, Dense, Pool
from spenser_jax.snn import activity_sums, architecture, network
from spenser_jax.snn.architecture import DropoutSlot, Hyper, LIFSlot, Signature
from spenser_jax.snn.lif import lif_step

Options = tuple[tuple[str, Any], ...]
"""XLA compiler options as a hashable tuple of pairs (the program caches' key)."""


def _jit(fn, options: Options):
    return jax.jit(fn, compiler_options=dict(options) or None)


SMALLEST_BUCKET = 1 << 14
"""Below this, one padded size: a program fewer per size a small block has, at a few microseconds a step."""


def _bucket(size: int) -> int:
    """``size`` rounded up to a power of two (at least :data:`SMALLEST_BUCKET`): the sizes programs are keyed by."""
    return max(1 << max(size - 1, 0).bit_length(), SMALLEST_BUCKET)


@functools.cache
def _draw(size: int, impl: str, options: Options):
    # Traced bounds: the bits of draws.uniform_many's rows (and of draws.uniform). The key comes as its
    # raw data, so the host holds the keys (iterating a device array of keys compiles a program per length).
    def draw(data, lo, hi):
        return jax.random.uniform(jax.random.wrap_key_data(data, impl=impl), (size,), jnp.float32, lo, hi)

    return _jit(draw, options)


@functools.cache
def _fold_in(options: Options):
    return _jit(
        lambda key, data: jax.random.key_data(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, data)), options
    )


@functools.lru_cache(maxsize=256)
def _init_plan(sig: Signature, input_shape: tuple[int, int, int]):
    """Per weight ``(path, shape, low, high, fold_in data)``, from a trace of the network's Flax init.

    The trace runs no XLA compile: the draws are owed (as in
    :func:`spenser_jax.snn.network.init_params`), and each owed key is
    ``fold_in(root key, data)``, read from the traced program.
    """
    model = network.SpikingNetwork(sig, init_scheme="torch")
    dummy = np.zeros((1, 1, *input_shape), np.float32)
    found: dict = {}

    def init(key, hyper):
        network._deferred.draws = []
        try:
            params = model.init(key, dummy, hyper)["params"]
            owed = network._deferred.draws
        finally:
            network._deferred.draws = None
        paths = {id(leaf): path for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
        found["requests"] = [(paths[id(placeholder)], shape, lo, hi) for (_, shape, lo, hi), placeholder in owed]
        return [k for (k, _, _, _), _ in owed]

    abstract_hyper = {
        "beta": jax.ShapeDtypeStruct((sig.num_lif,), jnp.float32),
        "threshold": jax.ShapeDtypeStruct((sig.num_lif,), jnp.float32),
        "dropout": jax.ShapeDtypeStruct((sig.num_dropout,), jnp.float32),
        "optimizer": {k: jax.ShapeDtypeStruct((), jnp.float32) for k in sig.optimizer.float_names},
    }
    closed = jax.make_jaxpr(init)(jax.random.key(0), abstract_hyper)
    root = closed.jaxpr.invars[0]
    made = {}  # key variable -> fold_in data, for keys folded from the root key once
    for eqn in closed.jaxpr.eqns:
        if eqn.primitive.name == "random_fold_in" and eqn.invars[0] is root:
            data = eqn.invars[1]
            if isinstance(data, jax.extend.core.Literal):
                made[eqn.outvars[0]] = int(data.val)
    keys = []
    for var in closed.jaxpr.outvars:
        if var not in made:
            raise NotImplementedError("internal: a weight key that is not fold_in(key, constant)")
        keys.append(made[var])
    return tuple(
        (path, shape, lo, hi, data) for (path, shape, lo, hi), data in zip(found["requests"], keys, strict=True)
    )


def init_params(
    key: jax.Array, sig: Signature, hyper: Hyper, input_shape: tuple[int, int, int], options: Options = ()
) -> dict:
    """:func:`spenser_jax.snn.network.init_params` (torch init), bit for bit, without a program per architecture."""
    return jax.tree.map(jnp.asarray, _host_init_params(key, sig, hyper, input_shape, options))


def _host_init_params(key, sig: Signature, hyper: Hyper, input_shape, options: Options) -> dict:
    """:func:`init_params` as NumPy arrays (the loop packs them on the host before they go to the device)."""
    plan = _init_plan(sig, tuple(input_shape))
    data = np.asarray([d for *_, d in plan], np.uint32)
    keys = np.asarray(_fold_in(options)(key, data)) if len(plan) else []
    impl = str(jax.random.key_impl(key))
    params: dict = {}
    for (path, shape, lo, hi, _), k in zip(plan, keys, strict=True):
        size = math.prod(shape)
        row = _draw(_bucket(size), impl, options)(k, np.float32(lo), np.float32(hi))
        node = params
        for part in path[:-1]:
            node = node.setdefault(part.key, {})
        node[path[-1].key] = np.asarray(row)[:size].reshape(shape)
    betas, thresholds = np.asarray(hyper["beta"], np.float32), np.asarray(hyper["threshold"], np.float32)
    j = 0
    for i, spec in enumerate(sig.layers):
        if isinstance(spec, LIFSlot):
            params[architecture.param_name(i, spec)] = {"beta": betas[j], "threshold": thresholds[j]}
            j += 1
    return params


def apply_step(spec, params, mem, x: jax.Array, dropout: tuple | None):
    """Layer ``spec`` at one time step on ``x`` ``[B, ...]`` (as ``SpikingNetwork._step``): ``(mem, y)``.

    ``dropout``: ``(key, layer index, step, rate)`` while training, None while scoring.
    """
    if isinstance(spec, LIFSlot):
        return lif_step(mem, x, params["beta"], params["threshold"], **network.lif_options(spec))
    if isinstance(spec, DropoutSlot):
        if dropout is None:
            return mem, x
        key, index, t, rate = dropout
        return mem, x * network.dropout_keep(key, index, t, rate, x.shape)
    if isinstance(spec, Pool):
        return mem, network.pool2d(x, spec.kind, spec.kernel)
    if isinstance(spec, Conv):
        module = network.Conv2d(spec.filters, spec.kernel, spec.stride, spec.padding, spec.bias)
        return mem, module.apply({"params": params}, x)
    if isinstance(spec, Dense):
        return mem, network.Linear(spec.units, spec.bias).apply({"params": params}, network._flatten(x))
    raise TypeError(f"unknown layer {spec!r}")


Layout = tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]
"""A block's parameters as one flat vector: per layer, its ``(leaf, shape)`` in order (``()``: none)."""


def pack(values: tuple, layout: Layout) -> np.ndarray:
    """A block's parameters (per layer a dict of leaves) as one float32 vector, zero-padded to a power of two.

    The optimizers are elementwise, so one update program per padded size
    serves every block of that size (the padding stays 0: zero gradient,
    zero moments, zero update).
    """
    parts = [
        np.asarray(layer[name], np.float32).reshape(-1) for layer, names in zip(values, layout) for name, _ in names
    ]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.pad(flat, (0, _bucket(flat.size) - flat.size))


def unpack(flat, layout: Layout) -> tuple:
    """The per-layer parameters :func:`pack` packed (NumPy or traced)."""
    out, start = [], 0
    for names in layout:
        layer = {}
        for name, shape in names:
            size = math.prod(shape)
            layer[name] = flat[start : start + size].reshape(shape)
            start += size
        out.append(layer)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Block:
    """Consecutive layers up to and including a LIF layer (or the network's last layers): one program.

    Within a block XLA fuses a conv, its pooling and the LIF update as the
    whole program's scan body does; a block is keyed by its layers and
    their input shape, so a mutation recompiles the blocks it touched.
    ``raw``: per layer, whether it reads the network input itself (its
    activity comes from the input's sums, as in :func:`spenser_jax.
    activity_sums.activity_sums`).
    """

    specs: tuple
    layout: Layout
    raw: tuple[bool, ...]
    mem_shape: tuple[int, ...] | None  # a LIF block's membrane per sample


def _run_block(block: Block, params: tuple, mem, x, drops: tuple, activity=None):
    """One time step of ``block``: ``(mem, y)``, and with ``activity = (weights, sums)`` the new sums.

    ``sums``: per layer, what its activity adds up to so far (a conv or
    dense layer's input sums, a LIF layer's spike sums, None elsewhere).
    """
    sums = list(activity[1]) if activity is not None else None
    for j, (spec, p, drop) in enumerate(zip(block.specs, params, drops, strict=True)):
        if activity is not None and isinstance(spec, (Conv, Dense)) and not block.raw[j]:
            sums[j] = sums[j] + activity_sums.input_sums(x, activity[0])
        mem, x = apply_step(spec, p, mem, x, drop)
        if activity is not None and isinstance(spec, LIFSlot):
            sums[j] = sums[j] + activity_sums.sample_sums(x, activity[0])
    if activity is not None:
        return mem, x, tuple(sums)
    return mem, x


def _run_sequence(block: Block, flat, xs, dropout, membranes: bool = False, activity=None):
    """``block`` over every time step of ``xs`` ``[T, B, ...]`` from a zero membrane: ``(ys, mems, sums)``.

    The scan runs the steps in the whole program's order (a step of each
    block after the step of the block before it is the same arithmetic as
    the whole network's step). ``dropout``: ``(key, layer indices, rates)``
    (one entry per layer of the block; None while scoring). ``mems``: the
    membrane after each step when ``membranes`` (the loss reads it), else
    ``()``; ``sums``: with ``activity = (weights, sums)`` the new sums, else ``()``.
    """
    params = unpack(flat, block.layout)
    batch = xs.shape[1]
    mem0 = None if block.mem_shape is None else jnp.zeros((batch, *block.mem_shape), jnp.float32)
    sums0 = () if activity is None else activity[1]

    def step(carry, inputs):
        mem, sums = carry
        x, t = inputs
        drops = tuple(
            (dropout[0], dropout[1][j], t, dropout[2][j])
            if dropout is not None and isinstance(spec, DropoutSlot)
            else None
            for j, spec in enumerate(block.specs)
        )
        if activity is None:
            mem, y = _run_block(block, params, mem, x, drops)
        else:
            mem, y, sums = _run_block(block, params, mem, x, drops, (activity[0], sums))
        return (mem, sums), (y, mem if membranes else ())

    (_, sums), (ys, mems) = jax.lax.scan(step, (mem0, sums0), (xs, jnp.arange(xs.shape[0])))
    return ys, mems, sums


BLOCKS_KEPT = 512
"""Blocks whose programs stay compiled in memory (least recently used go first); a long search meets thousands."""


@functools.lru_cache(maxsize=BLOCKS_KEPT)
def _forward(block: Block, activity: bool, options: Options):
    """Scoring: ``(ys, (), sums)`` (no dropout)."""
    if activity:
        return _jit(
            lambda params, xs, weights, sums: _run_sequence(block, params, xs, None, activity=(weights, sums)), options
        )
    return _jit(lambda params, xs: _run_sequence(block, params, xs, None), options)


@functools.lru_cache(maxsize=BLOCKS_KEPT)
def _forward_saving(block: Block, input_grad: bool, membranes: bool, options: Options):
    """Training: ``(ys, mems, vjp)``; ``vjp`` holds the block's residuals for :func:`_backward`.

    ``jax.vjp``'s function is a pytree (a ``Partial`` over its residuals), so
    it leaves one program and enters another; its structure is fixed per
    compiled forward, so the block's :func:`_backward` compiles once.
    """

    def forward_saving(params, xs, dropout):
        if input_grad:
            (ys, mems), vjp = jax.vjp(lambda p, xs: _run_sequence(block, p, xs, dropout, membranes)[:2], params, xs)
        else:  # the first block: the input spikes need no gradient
            (ys, mems), vjp = jax.vjp(lambda p: _run_sequence(block, p, xs, dropout, membranes)[:2], params)
        return ys, mems, vjp

    return _jit(forward_saving, options)


@functools.lru_cache(maxsize=BLOCKS_KEPT)
def _backward(block: Block, input_grad: bool, membranes: bool, options: Options):
    del block, input_grad, membranes  # the key: one program per block, dropped with its forward

    def backward_block(vjp, ct_ys, ct_mems):
        """``(parameter gradients, cotangent of the input or None)``."""
        g, *ct_xs = vjp((ct_ys, ct_mems))
        return g, (ct_xs[0] if ct_xs else None)

    return _jit(backward_block, options)


@functools.lru_cache(maxsize=64)
def _zeros(shape: tuple, device) -> jax.Array:
    return jax.device_put(np.zeros(shape, np.float32), device)


def _device_of(images) -> jax.Device:
    """The device the data lives on, where every program of an evaluation runs."""
    if isinstance(images, jax.Array) and len(images.devices()) == 1:
        return next(iter(images.devices()))
    return jax.devices()[0]


class _Net:
    """A signature's blocks as program calls; the host loops over blocks, each over all time steps."""

    def __init__(self, sig: Signature, hyper: Hyper, input_shape, options: Options, device: jax.Device):
        # Every array a program reads is placed on ``device`` by ``jax.device_put`` (committed): a jit
        # compiles anew when an argument changes from uncommitted (``jnp.asarray``, which also compiles
        # a small program per shape) to committed (another program's output) between steps.
        self.sig, self.options, self.device = sig, options, device
        self.names = [architecture.param_name(i, spec) for i, spec in enumerate(sig.layers)]
        shapes = architecture.param_shapes(sig, input_shape)
        genes = np.asarray(hyper["dropout"], np.float32)
        drops = [i for i, spec in enumerate(sig.layers) if isinstance(spec, DropoutSlot)]
        rates = dict(zip(drops, genes, strict=True))
        self.dropouts: list[tuple] = []  # per block: layer indices and rates (0 where no dropout)
        out_shapes = architecture.layer_shapes(sig, input_shape)
        # Blocks end at each LIF layer; layers after the last one make a block of their own.
        self.blocks: list[tuple[range, Block]] = []
        self.trainable: list[jax.Array] = []  # per block, per packed value: may training change it
        start, raw = 0, True
        raws = []
        for i, spec in enumerate(sig.layers):
            raws.append(raw and isinstance(spec, (Conv, Dense)))
            if not isinstance(spec, DropoutSlot):
                raw = False
            if isinstance(spec, LIFSlot) or i == len(sig.layers) - 1:
                members = range(start, i + 1)
                layout = tuple(
                    tuple((leaf, tuple(shape)) for leaf, shape in shapes[self.names[k]].items())
                    if self.names[k] is not None
                    else ()
                    for k in members
                )
                block = Block(
                    tuple(sig.layers[k] for k in members),
                    layout,
                    tuple(raws[k] for k in members),
                    tuple(out_shapes[i]) if isinstance(spec, LIFSlot) else None,
                )
                self.blocks.append((members, block))
                self.dropouts.append(
                    (
                        np.asarray(list(members), np.int32),
                        jax.device_put(np.asarray([rates.get(k, 0.0) for k in members], np.float32), device),
                    )
                )
                # Fixed β/θ are buffers in PyTorch: no update at all (architecture.trainable_mask).
                flags = tuple(
                    {
                        "beta": np.asarray(sig.layers[k].beta_trainable),
                        "threshold": np.asarray(sig.layers[k].threshold_trainable),
                    }
                    if isinstance(sig.layers[k], LIFSlot)
                    else {leaf: np.ones(shape, bool) for leaf, shape in names}
                    for k, names in zip(members, layout, strict=True)
                )
                self.trainable.append(jax.device_put(pack(flags, layout) > 0, device))
                start = i + 1

    def pack(self, params: dict) -> list:
        """The network's parameter tree -> one packed vector per block (:func:`pack`), on device."""
        return [
            jax.device_put(
                pack(tuple(params[self.names[k]] if self.names[k] else {} for k in members), block.layout), self.device
            )
            for members, block in self.blocks
        ]

    def unpack(self, params: list) -> dict:
        """One packed vector per block -> the network's parameter tree (NumPy)."""
        out = {}
        for (members, block), flat in zip(self.blocks, jax.device_get(params), strict=True):
            for k, layer in zip(members, unpack(np.asarray(flat), block.layout), strict=True):
                if self.names[k] is not None:
                    out[self.names[k]] = layer
        return out

    def forward(self, params, spikes, dropout_key, saved: list):
        """Training: output spikes ``[T, B, K]`` and the last block's membranes (or ``()``).

        ``saved`` receives each block's VJP (its residuals), for :meth:`backward`.
        """
        x, mems = spikes, ()
        for b, (_, block) in enumerate(self.blocks):
            membranes = b == len(self.blocks) - 1 and self.sig.reads_membrane
            forward = _forward_saving(block, b > 0, membranes, self.options)
            x, mems, vjp = forward(params[b], x, (dropout_key, *self.dropouts[b]))
            saved.append(vjp)
        return x, mems

    def backward(self, saved: list, ct_out, ct_membrane) -> list:
        """Each block's gradient, packed (BPTT within each block, block after block)."""
        grads, ct = [None] * len(self.blocks), ct_out
        for b in reversed(range(len(self.blocks))):
            last = b == len(self.blocks) - 1
            backward = _backward(self.blocks[b][1], b > 0, last and self.sig.reads_membrane, self.options)
            grads[b], ct = backward(saved[b], ct, ct_membrane if last else ())
        return grads

    def score(self, params, spikes, weights, input_shape_of):
        """Scoring: output spikes, and with ``weights`` each block's activity sums (see :func:`_run_block`)."""
        x, all_sums = spikes, []
        for (members, block), p in zip(self.blocks, params, strict=True):
            if weights is None:
                x, _, _ = _forward(block, False, self.options)(p, x)
                continue
            zeros = tuple(
                _zeros((), self.device)
                if isinstance(spec, LIFSlot)
                else _zeros(input_shape_of(k), self.device)
                if isinstance(spec, (Conv, Dense)) and not raw
                else None
                for k, spec, raw in zip(members, block.specs, block.raw, strict=True)
            )
            x, _, sums = _forward(block, True, self.options)(p, x, weights, zeros)
            all_sums.append(sums)
        return x, all_sums
