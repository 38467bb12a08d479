"""Training and scoring through small programs per block of layers, shared by every architecture.

:func:`spenser_jax.training.core.train_and_score` compiles one program per
architecture, and nearly every offspring has an architecture of its own, so
a search that trains briefly spends most of its time compiling. Here the
same computation is a host loop (the core's
:func:`~spenser_jax.training.protocol.walk_plan`) over small jitted programs
keyed by what each computes, not by the network: a block of layers over all
time steps and the initial draws (:mod:`spenser_jax.training.block_programs`),
and here one optimizer update per padded size, the loss and its gradient,
batching, rate coding and the early check's evidence, keyed by shapes.

An offspring differs from its parent in a layer or two, so most of its
programs were compiled for an ancestor (``benchmarks/layer_programs.py``).
Results equal the whole program's up to rounding (XLA fuses differently
across program boundaries; weights within 1e-6 after a few steps, tested).
The price, three dispatches per block and step and the blocks' outputs
written out between programs, makes an epoch about 1.04x the whole
program's on a CPU once freed memory is kept
(:func:`spenser_jax.scheduler.keep_host_memory`; 1.24x without, as every
call faults its buffers in afresh).

Not covered (:func:`supports`; the evaluator trains those as whole
programs): skip connections, the ``lecun`` initialisation, ``vmap``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spenser_jax.genome.phenotype import Conv, Dense
from spenser_jax.snn import activity_sums, architecture, loss
from spenser_jax.snn.architecture import Hyper, LIFSlot, Signature
from spenser_jax.training import core, inheritance, optim
from spenser_jax.training import protocol as protocol_lib
from spenser_jax.training.block_programs import BLOCKS_KEPT, Options, _device_of, _host_init_params, _jit, _Net
from spenser_jax.training.protocol import Protocol

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


def supports(sig: Signature, init_scheme: str = "torch") -> bool:
    """Whether :func:`train_and_score` can train networks of ``sig`` (no skip connections, torch init)."""
    return sig.inputs is None and init_scheme == "torch"


@functools.cache
def _loss_grad(loss_name: str | None, membrane: bool, correct_rate: float, incorrect_rate: float, options: Options):
    """``(loss, d loss / d output spikes, d loss / d output membranes, output spikes heard)``."""

    def loss_grad(out, membranes, labels, mask, loss_genes):
        # ``membranes``: () unless the loss reads them.
        def value(out, membranes):
            if loss_name is None:
                return loss.mse_count_loss(out, labels, correct_rate, incorrect_rate, mask=mask)
            outputs = membranes if membrane else out
            return core.unit_loss(loss_name, outputs, labels, {"loss": loss_genes}, mask)

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
    return _jit(lambda key: core.batches(key, n, batch_size), options)


@functools.cache
def _train_batch(encoding: str, time_steps: int, options: Options):
    def train_batch(images, labels, idx, key_steps, i):
        key_encode, key_dropout = jax.random.split(jax.random.fold_in(key_steps, i))
        return core.encode(encoding, key_encode, images[idx], time_steps), labels[idx], key_dropout

    return _jit(train_batch, options)


@functools.cache
def _score_batch(encoding: str, time_steps: int, options: Options):
    def score_batch(images, labels, idx, mask, key, i):
        spikes = core.encode(encoding, jax.random.fold_in(key, i), images[idx], time_steps)
        weights = mask.astype(jnp.float32)
        summed = spikes.sum(0)  # the input's activity, and that of layers reading the input
        raw = (activity_sums.sample_sums(summed, weights), activity_sums.input_sums(summed, weights))
        return spikes, labels[idx], weights, raw

    return _jit(score_batch, options)


@functools.cache
def _correct(options: Options):
    return _jit(lambda total, out, labels, mask: total + loss.correct_count(out, labels, mask), options)


_add = jax.jit(jnp.add)  # the activity sums of a batch to the total's (a cached program per shape)


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
        """The early check's evidence (:func:`spenser_jax.training.core.train_epoch`): no output spike, a flat loss."""
        low, high = min(self.values), max(self.values)
        return self.heard == 0 and (high - low) <= core.LOSS_FLAT * max(abs(low), 1e-12)

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
    """:func:`spenser_jax.training.core.train_and_score` through programs per block of layers.

    The same arguments, keys, and the core's walk of the plan
    (:func:`~spenser_jax.training.protocol.walk_plan`, from the host), zero
    score and metrics; the parameter tree comes as NumPy arrays, and the
    results equal the whole program's up to rounding. ``options``: XLA
    compiler options of every program. Raises ``NotImplementedError`` for a
    signature that :func:`supports` refuses.
    """
    if not supports(sig, protocol.init):
        raise NotImplementedError("programs per block: no skip connections and torch init only")
    n = images.shape[0]
    key_init, key_epochs = jax.random.split(key)
    params = _host_init_params(key_init, sig, hyper, images.shape[1:], options)
    if inherited is not None:  # on the host: no program per shape
        params = inheritance.inherit_params(params, jax.tree.map(np.asarray, inherited))
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

    def run_epoch(state, epoch, max_steps, stop_check):
        params, opt_states = state
        key_order, key_steps = jax.random.split(jax.random.fold_in(key_epochs, epoch))
        # On the host: a step's rows go with its call (slicing a device array is an eager program per step).
        order, masks = jax.device_get(_batches(n, protocol.batch_size, options)(key_order))
        count = order.shape[0] if max_steps is None else max_steps
        # Steps are applied at once and checked in groups (one transfer to the host per group): a step
        # that went non-finite rolls the state back to before it and ends training, as the whole
        # program keeps the last finite state and skips the rest.
        ledger, failed, stopped = _Ledger(), False, False
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
            checking = stop_check is not None and i == stop_check - 1
            if i == count - 1 or checking or len(ledger.pending) == _SETTLE_EVERY:
                rollback = ledger.settle()
                if rollback is not None:
                    (params, opt_states), failed = rollback, True
                    break
                if checking and ledger.silent():
                    stopped = True
                    break
        metrics = {
            "loss": ledger.mean_loss(),
            "nonfinite": np.bool_(failed),
            "steps": np.int32(ledger.applied),
            "samples": np.int32(masks.sum(1)[: ledger.applied].sum()),
            "stopped": np.bool_(stopped),
        }
        return (params, opt_states), metrics

    (params, _), failed, stopped, per_epoch = protocol_lib.walk_plan(
        protocol, n, (params, opt_states), run_epoch, traced=False
    )
    if failed:
        result = _no_score(sig, protocol, net.unpack(params), hyper, score_images, score_labels, score_key)
    else:
        result = _score(net, params, score_images, score_labels, score_key, protocol, options)
    metrics = core.evaluation_metrics(len(protocol.plan(n)), per_epoch, failed, stopped, result)
    return net.unpack(params), metrics


_UNSCORED: collections.OrderedDict = collections.OrderedDict()
"""The zero scores of failed signatures (least recently used go first), as :data:`BLOCKS_KEPT` programs."""
_unscoring = threading.Lock()


def _no_score(sig: Signature, protocol: Protocol, params, hyper, images, labels, key) -> dict:
    """:func:`spenser_jax.training.core.no_score`, traced once per signature and split shape.

    Its trace of the whole network's scoring would count as compiling
    (:func:`compile_seconds`) at every failure of a signature seen before.
    """
    cache_key = (sig, protocol, images.shape)
    with _unscoring:  # the compile threads evaluate too
        if cache_key not in _UNSCORED:
            scoring = functools.partial(
                core.score,
                sig,
                protocol,
                hyper=hyper,
                images=images,
                labels=labels,
                key=key,
                activity=protocol.activity,
            )
            _UNSCORED[cache_key] = core.no_score(scoring, params)
            while len(_UNSCORED) > BLOCKS_KEPT:
                _UNSCORED.popitem(last=False)
        _UNSCORED.move_to_end(cache_key)
        return jax.tree.map(np.copy, _UNSCORED[cache_key])


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
    """What :func:`~spenser_jax.snn.activity_sums.input_sums` gives for layer ``k``'s input: ``[H, W]`` or a scalar."""
    out_shapes = architecture.layer_shapes(net.sig, image_shape)

    def shape_of(k: int) -> tuple:
        shape = tuple(image_shape) if k == 0 else out_shapes[k - 1]
        return tuple(shape[:2]) if len(shape) == 3 else ()

    return shape_of


def _score(net: _Net, params, images, labels, key, protocol: Protocol, options: Options):
    """:func:`spenser_jax.training.core.score`'s result (with ``protocol.activity``, activity too)."""
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
    result = {"correct": correct, "accuracy": jnp.asarray(correct) / m}
    return {**result, "activity": totals} if protocol.activity else result
