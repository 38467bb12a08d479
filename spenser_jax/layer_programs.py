"""Training and scoring through small programs per block of layers, shared by every architecture.

:func:`spenser_jax.training.train_and_score` compiles one program per
architecture, and nearly every offspring has an architecture of its own, so
a search that trains briefly spends most of its time compiling. Here the
same computation is a Python loop over small jitted programs keyed by what
each computes, not by the network it belongs to:

* a block (the layers up to and including a LIF layer: a conv, its pooling
  and the LIF update, say) over all time steps, keyed by its layers (types
  and integer genes) and input shape. Its scan runs the steps in the whole
  program's order, so the arithmetic is that of the whole network's step;
  the training forward hands its VJP residuals to the block's backward;
* the loss and its gradient, keyed by the output shape;
* one layer's optimizer update on its weights packed into one vector padded
  to a power of two (the optimizers are elementwise, so updating layer by
  layer is the whole tree's update, and one program serves every layer of
  a padded size);
* the initial weight draws, by padded size (element ``i`` of a draw depends
  only on the key and ``i``), with the keys Flax derives computed by
  ``fold_in`` outside any architecture's program: the same bits as
  :func:`spenser_jax.network.init_params`;
* batching, rate coding, the early check's evidence, keyed by shapes.

An offspring differs from its parent in a layer or two, so most of its
programs were compiled for an ancestor (``runtime.compile_unit=layer``;
``benchmarks/layer_programs.py`` measures it). The results equal the whole
program's up to rounding: XLA fuses differently across program boundaries
(weights within 1e-6 after a few steps; tested). The price is three
dispatches per block and step and the blocks' outputs written out between
programs: an epoch takes about 1.04x the whole program's on a CPU, once
freed memory is kept for the next call
(:func:`spenser_jax.scheduler.keep_host_memory`; without it 1.24x, as
every call faults its buffers in afresh).

Not covered: skip connections (merged inputs), the ``lecun`` initialisation
and ``vmap`` over offspring; :func:`supports` says which signatures run here,
and the evaluator trains the others as whole programs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spenser_jax import activity_sums, architecture, network, optim, training
from spenser_jax.architecture import DropoutSlot, Hyper, LIFSlot, Signature
from spenser_jax.phenotype import Conv, Dense, Pool
from spenser_jax.protocol import Protocol
from spenser_jax.snn import loss
from spenser_jax.snn.lif import lif_step

COMPILE_EVENTS = (  # JAX's monitoring events of tracing, lowering and compiling a program
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compiled = threading.local()
_listening = threading.Lock()


def _heard(event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
        _compiled.seconds = getattr(_compiled, "seconds", 0.0) + duration


def compile_seconds() -> float:
    """Seconds this thread has spent tracing, lowering and compiling with JAX since the first call.

    From JAX's own monitoring events, so the many small programs of a
    network are all counted, whoever compiles them.
    """
    with _listening:
        if not getattr(compile_seconds, "registered", False):
            jax.monitoring.register_event_duration_secs_listener(_heard)
            compile_seconds.registered = True
    return getattr(_compiled, "seconds", 0.0)


def persist_small_programs() -> None:
    """Let the persistent compile cache keep these programs (JAX keeps only those compiling in 1 s or more).

    Most of them compile in a fraction of a second, and they are shared
    across runs too: another seed of a sweep, or a resumed run, loads them.
    Takes effect only where a cache directory is set (``runtime.compile_cache``).
    """
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


Options = tuple[tuple[str, Any], ...]
"""XLA compiler options as a hashable tuple of pairs (the program caches' key)."""


def supports(sig: Signature, init_scheme: str = "torch") -> bool:
    """Whether :func:`train_and_score` can train networks of ``sig`` (no skip connections, torch init)."""
    return sig.inputs is None and init_scheme == "torch"


def _jit(fn, options: Options):
    return jax.jit(fn, compiler_options=dict(options) or None)


# --------------------------------------------------------------------------
# Initialisation


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
    :func:`spenser_jax.network.init_params`), and each owed key is
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
    """:func:`spenser_jax.network.init_params` (torch init), bit for bit, without a program per architecture."""
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


# --------------------------------------------------------------------------
# One layer at one time step


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


# --------------------------------------------------------------------------
# Loss, optimizer, batches


@functools.cache
def _loss_grad(loss_name: str | None, membrane: bool, correct_rate: float, incorrect_rate: float, options: Options):
    """``(loss, d loss / d output spikes, d loss / d output membranes, output spikes heard)``."""

    def loss_grad(out, membranes, labels, mask, loss_genes):
        # ``membranes``: () unless the loss reads them.
        def value(out, membranes):
            if loss_name is None:
                return loss.mse_count_loss(out, labels, correct_rate, incorrect_rate, mask=mask)
            outputs = membranes if membrane else out
            return training.unit_loss(loss_name, outputs, labels, {"loss": loss_genes}, mask)

        v, (ct_out, ct_membranes) = jax.value_and_grad(value, argnums=(0, 1))(out, membranes)
        heard = jnp.sum(out * jnp.asarray(mask, jnp.float32)[None, :, None])
        return v, ct_out, ct_membranes, heard

    return _jit(loss_grad, options)


@functools.cache
def _update(key: optim.OptimizerKey, options: Options):
    """One block's optimizer step: ``(params, opt_state, finite)``; fixed β/θ (``trainable`` False) get no update."""

    def update_block(params, grads, opt_state, hparams, trainable):
        updates, opt_state = optim.make_optimizer(key, hparams=hparams).update(grads, opt_state, params)
        updates = jnp.where(trainable, updates, 0.0)
        return optax.apply_updates(params, updates), opt_state, jnp.all(jnp.isfinite(updates))

    return _jit(update_block, options)


@functools.cache
def _opt_init(key: optim.OptimizerKey, options: Options):
    return _jit(lambda params, hparams: optim.make_optimizer(key, hparams=hparams).init(params), options)


@functools.cache
def _batches(n: int, batch_size: int, options: Options):
    return _jit(lambda key: training._batches(key, n, batch_size), options)


@functools.cache
def _train_batch(encoding: str, time_steps: int, options: Options):
    def train_batch(images, labels, idx, key_steps, i):
        key_encode, key_dropout = jax.random.split(jax.random.fold_in(key_steps, i))
        return training.encode(encoding, key_encode, images[idx], time_steps), labels[idx], key_dropout

    return _jit(train_batch, options)


@functools.cache
def _score_batch(encoding: str, time_steps: int, options: Options):
    def score_batch(images, labels, idx, mask, key, i):
        spikes = training.encode(encoding, jax.random.fold_in(key, i), images[idx], time_steps)
        weights = mask.astype(jnp.float32)
        summed = spikes.sum(0)  # the input's activity, and that of layers reading the input
        raw = (activity_sums.sample_sums(summed, weights), activity_sums.input_sums(summed, weights))
        return spikes, labels[idx], weights, raw

    return _jit(score_batch, options)


@functools.cache
def _correct(options: Options):
    return _jit(lambda total, out, labels, mask: total + loss.correct_count(out, labels, mask), options)


# --------------------------------------------------------------------------
# The network over time


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


_add = jax.jit(jnp.add)  # the activity sums of a batch to the total's (a cached program per shape)


# --------------------------------------------------------------------------
# A whole evaluation


_SETTLE_EVERY = 16
"""Steps between the host's checks for a non-finite step (one transfer each)."""


class _Ledger:
    """The steps of an epoch since the last check: what undoing each would restore, and what it reported."""

    def __init__(self):
        self.pending: list = []  # (params before, opt states before, loss, output spikes, finite flags)
        self.values: list[np.float32] = []  # losses of the applied steps, in order
        self.heard = 0.0
        self.applied = 0

    def record(self, params, opt_states, value, heard, flags) -> None:
        self.pending.append((params, opt_states, value, heard, flags))

    def settle(self):
        """Reads the pending steps' results; the state before the first non-finite one, else None."""
        reports = jax.device_get([(value, heard, flags) for _, _, value, heard, flags in self.pending])
        pending, self.pending = self.pending, []
        for (params, opt_states, *_), (value, heard, flags) in zip(pending, reports, strict=True):
            if not (np.isfinite(value) and all(flags)):
                return params, opt_states
            self.values.append(np.float32(value))
            self.heard += float(heard)
            self.applied += 1
        return None

    def silent(self) -> bool:
        """The early check's evidence (:func:`spenser_jax.training.train_epoch`): no output spike, a flat loss."""
        low, high = min(self.values), max(self.values)
        return self.heard == 0 and (high - low) <= training.LOSS_FLAT * max(abs(low), 1e-12)

    def mean_loss(self) -> np.float32:
        values = np.asarray(self.values, np.float32)
        return np.float32(values.sum(dtype=np.float32) / max(len(values), 1))


def train_and_score(
    sig: Signature,
    key: jax.Array,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    score_images: jax.Array,
    score_labels: jax.Array,
    score_key: jax.Array,
    protocol: Protocol,
    *,
    inherited: tuple[Any, Any] | None = None,
    options: Options = (),
) -> tuple[Any, dict[str, Any]]:
    """:func:`spenser_jax.training.train_and_score` through programs per block of layers.

    The same arguments, plan, early check, failure handling and outputs
    (the parameter tree as NumPy arrays, ``metrics`` with the same keys);
    the results equal the whole program's up to rounding. ``options``: XLA
    compiler options of every program. Raises ``NotImplementedError`` for a
    signature that :func:`supports` refuses.
    """
    if not supports(sig, protocol.init):
        raise NotImplementedError("programs per block: no skip connections and torch init only")
    n = images.shape[0]
    plan = protocol.plan(n)
    stop_check = protocol.stop_check(n)
    key_init, key_epochs = jax.random.split(key)
    params = _host_init_params(key_init, sig, hyper, images.shape[1:], options)
    if inherited is not None:  # training.inherit_params, on the host (no program per shape)
        values, mask = inherited
        params = jax.tree.map(
            lambda v, m, f: np.where(np.asarray(m), np.asarray(v).astype(f.dtype), f), values, mask, params
        )
    device = _device_of(images)
    net = _Net(sig, hyper, images.shape[1:], options, device)
    params = net.pack(params)
    hparams = hyper["optimizer"]
    loss_genes = hyper.get("loss", {})
    # device_put: the initial state is a constant, which a jit leaves uncommitted (see _Net).
    opt_states = [jax.device_put(_opt_init(sig.optimizer, options)(p, hparams), device) for p in params]
    loss_grad = _loss_grad(sig.loss, sig.reads_membrane, protocol.correct_rate, protocol.incorrect_rate, options)
    train_batch = _train_batch(protocol.encoding, protocol.time_steps, options)
    update = _update(sig.optimizer, options)
    failed = stopped = False
    losses, steps, samples = [], 0, 0
    for epoch, max_steps in enumerate(plan):
        if failed or stopped:  # the rest is skipped, as the whole program's cond skips it
            losses.append(np.float32(0))
            continue
        key_order, key_steps = jax.random.split(jax.random.fold_in(key_epochs, epoch))
        # On the host: a step's rows go with its call (slicing a device array is an eager program per step).
        order, masks = jax.device_get(_batches(n, protocol.batch_size, options)(key_order))
        real = masks.sum(1)
        count = order.shape[0] if max_steps is None else max_steps
        check = stop_check if epoch == 0 else None
        # Steps are applied at once and checked in groups (one transfer to the host per group): a step
        # that went non-finite rolls the state back to before it and ends training, as the whole
        # program keeps the last finite state and skips the rest.
        ledger = _Ledger()
        for i in range(count):
            spikes, y, key_dropout = train_batch(images, labels, order[i], key_steps, np.int32(i))
            saved: list = []
            out, membrane = net.forward(params, spikes, key_dropout, saved)
            value, ct_out, ct_membrane, heard = loss_grad(out, membrane, y, masks[i], loss_genes)
            grads = net.backward(saved, ct_out, ct_membrane)
            del saved
            new = [update(p, g, s, hparams, t) for p, g, s, t in zip(params, grads, opt_states, net.trainable)]
            ledger.record(params, opt_states, value, heard, [ok for *_, ok in new])
            params, opt_states = [p for p, _, _ in new], [s for _, s, _ in new]
            if i == count - 1 or (check is not None and i == check - 1) or len(ledger.pending) == _SETTLE_EVERY:
                rollback = ledger.settle()
                if rollback is not None:
                    params, opt_states = rollback
                    failed = True
                    break
                if check is not None and i == check - 1 and ledger.silent():
                    stopped = True
                    break
        losses.append(ledger.mean_loss())
        steps += ledger.applied
        samples += int(real[: ledger.applied].sum())
    if failed:  # a failed individual is not scored: zeros, as the whole program's cond gives
        correct, measured = np.int32(0), _no_activity(net, score_images.shape[1:])
    else:
        correct, measured = _score(net, params, score_images, score_labels, score_key, protocol, options)
    m = score_images.shape[0]
    metrics = {
        "losses": np.asarray(losses, np.float32),
        "steps": np.int32(steps),
        "samples": np.int32(samples),
        "nonfinite": np.bool_(failed),
        "stopped": np.bool_(stopped),
        "correct": correct,
        "accuracy": jnp.asarray(correct) / m,
    }
    if protocol.activity:
        metrics["activity"] = measured
    return net.unpack(params), metrics


def compile_ahead(
    sig: Signature,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    score_images: jax.Array,
    score_labels: jax.Array,
    protocol: Protocol,
    *,
    options: Options = (),
) -> float:
    """Compile what :func:`train_and_score` of ``sig`` will need, by running one step and one scoring batch.

    Meant for a thread of its own while another individual trains (the
    evaluator's compile threads): the programs are then in the caches when
    this one's turn comes. Returns the seconds this thread spent compiling.
    Errors are left to the evaluation itself.
    """
    before = compile_seconds()
    try:
        one_step = dataclasses.replace(protocol, epochs=1e-9, min_steps=None, early_stop=None)
        m = min(protocol.eval_batch_size, score_images.shape[0])
        key = jax.random.key(0)
        jax.block_until_ready(
            train_and_score(
                sig, key, hyper, images, labels, score_images[:m], score_labels[:m], key, one_step, options=options
            )
        )
    except Exception:  # noqa: BLE001, S110 - the evaluation meets and records the same error
        pass
    return compile_seconds() - before


def _input_sums_shape(net: _Net, image_shape) -> Callable[[int], tuple]:
    """What :func:`~spenser_jax.activity_sums.input_sums` gives for layer ``k``'s input: ``[H, W]`` or a scalar."""
    out_shapes = architecture.layer_shapes(net.sig, image_shape)

    def shape_of(k: int) -> tuple:
        shape = tuple(image_shape) if k == 0 else out_shapes[k - 1]
        return tuple(shape[:2]) if len(shape) == 3 else ()

    return shape_of


def _no_activity(net: _Net, image_shape) -> dict:
    """The activity sums of nothing scored, in :func:`_score`'s layout."""
    shape_of = _input_sums_shape(net, image_shape)
    layers = list(enumerate(net.sig.layers))
    return {
        "input": np.float32(0),
        "lif": tuple(np.float32(0) for _, spec in layers if isinstance(spec, LIFSlot)),
        "inputs": tuple(np.zeros(shape_of(k), np.float32) for k, spec in layers if isinstance(spec, (Conv, Dense))),
    }


def _score(net: _Net, params, images, labels, key, protocol: Protocol, options: Options):
    """Correct count and (with ``protocol.activity``) the activity sums, as :func:`training.score`."""
    m = images.shape[0]
    batch_size = min(protocol.eval_batch_size, m)
    order, masks = jax.device_get(_batches(m, batch_size, options)(None))
    score_batch = _score_batch(protocol.encoding, protocol.time_steps, options)
    input_shape_of = _input_sums_shape(net, images.shape[1:])
    correct, totals = jax.device_put(np.int32(0), net.device), None
    for i in range(order.shape[0]):
        spikes, y, weights, (input_sum, raw_sums) = score_batch(images, labels, order[i], masks[i], key, np.int32(i))
        out, sums = net.score(params, spikes, weights if protocol.activity else None, input_shape_of)
        correct = _correct(options)(correct, out, y, masks[i])
        if protocol.activity:
            lif, inputs = [], []
            for (_, block), block_sums in zip(net.blocks, sums, strict=True):
                for spec, raw, value in zip(block.specs, block.raw, block_sums, strict=True):
                    if isinstance(spec, LIFSlot):
                        lif.append(value)
                    elif isinstance(spec, (Conv, Dense)):
                        inputs.append(raw_sums if raw else value)
            batch = {"input": input_sum, "lif": tuple(lif), "inputs": tuple(inputs)}
            totals = batch if totals is None else jax.tree.map(_add, totals, batch)
    return correct, totals
