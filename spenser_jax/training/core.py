"""The one training core: a train state, a pure step, epoch and score, and the walk of a protocol's plan.

Flax-examples style: :class:`TrainState` holds what changes, the functions
are pure and take the run's :class:`~spenser_jax.training.protocol.Protocol`
whole (frozen and hashable: bind it before ``jit``). One epoch is one
``lax.scan`` over batches, the data set already on the device and rate
coding inside the step, so the host never loops over batches.

The rules that decide an individual's numbers exist once, whichever way it
is compiled: the walk of the plan (:func:`~spenser_jax.training.protocol.walk_plan`),
the zeros of a failed individual (:func:`no_score`) and the metrics
(:func:`evaluation_metrics`). :func:`train_and_score` runs them inside one
program; :class:`~spenser_jax.training.evaluation.Trainer` from the host over
the jitted epochs of :func:`make_train_epoch`; :mod:`spenser_jax.training.blocks`
from the host over programs per block of layers.

Programs depend on the :class:`~spenser_jax.snn.architecture.Signature` and
the protocol only; the float genes are traced arguments, and the builders
are cached, so offspring that share a signature share one compiled program
(and ``vmap`` over their states, floats and keys)::

    sig, hyper = architecture.split(phenotype)
    state = create_train_state(key_init, sig, hyper, (28, 28, 1))
    state, metrics = make_train_epoch(sig, protocol)(state, hyper, images, labels, key_epoch)
    accuracy = make_score(sig, protocol)(state.params, hyper, test_images, test_labels, key_eval)["accuracy"]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from spenser_jax.snn import encoding, loss, network
from spenser_jax.snn.architecture import Hyper, Signature, trainable_mask
from spenser_jax.training import inheritance, optim
from spenser_jax.training import protocol as protocol_lib
from spenser_jax.training.protocol import Protocol


@flax.struct.dataclass
class TrainState:
    params: Any  # network parameters, {"conv_0": {...}, "lif_2": {...}, ...}
    opt_state: Any  # optax state of the learning unit
    step: jax.Array  # shape=(), int32: optimizer steps applied


def _optimizer(sig: Signature, hyper: Hyper) -> optax.GradientTransformation:
    # Every float hyperparameter comes from the (possibly traced) floats: the
    # signature's optimizer key only carries the kind and the booleans.
    return optim.make_optimizer(sig.optimizer, hparams=hyper["optimizer"])


def create_train_state(
    key: jax.Array, sig: Signature, hyper: Hyper, input_shape: tuple[int, int, int], *, init_scheme: str = "torch"
) -> TrainState:
    """Fresh parameters and optimizer state."""
    params = network.init_params(key, sig, hyper, input_shape, init_scheme=init_scheme)
    opt_state = _optimizer(sig, hyper).init(params)
    return TrainState(params=params, opt_state=opt_state, step=jnp.zeros([], jnp.int32))


def batches(key: jax.Array | None, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Sample indices ``[num_batches, batch_size]`` and their 0/1 mask.

    The last batch is padded with sample 0 (mask 0) when ``batch_size`` does
    not divide ``n``: the batch keeps its shape for ``lax.scan`` while the
    masked loss equals that of the smaller batch, as PyTorch's DataLoader
    (``drop_last=False``) trains on it.
    """
    num_batches = -(-n // batch_size)
    order = jnp.arange(n) if key is None else jax.random.permutation(key, n)
    pad = num_batches * batch_size - n
    order = jnp.concatenate([order, jnp.zeros(pad, order.dtype)])
    mask = jnp.arange(num_batches * batch_size) < n
    return order.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def _check_data(images: jax.Array, labels: jax.Array) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be [N] = ({images.shape[0]},), got {labels.shape}")
    if images.shape[0] == 0:
        raise ValueError("no samples")


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def keep_if(ok: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``ok`` (a scalar bool), else ``old``: two pytrees of one structure.

    A cond, not a ``where`` per leaf: the same values, and XLA:CPU generates
    no kernel per parameter and optimizer moment (about a second of a
    network's compile). Under ``vmap`` the cond becomes those selects again.
    """
    return jax.lax.cond(ok, lambda: new, lambda: old)


ENCODINGS = ("rate", "direct")

LOSS_FLAT = 1e-4
"""Relative spread of the batch losses below which a loss "has not moved" (early stop)."""


def encode(name: str, key: jax.Array, images: jax.Array, time_steps: int) -> jax.Array:
    """Images as the network's input over ``time_steps``: ``"rate"`` spikes or ``"direct"`` currents.

    ``"rate"`` (the paper): a Bernoulli(intensity) spike per value and step,
    drawn from ``key`` (colour images: per channel value, as grey levels).
    ``"direct"``: the intensities themselves at every step (no key used).
    """
    if name == "rate":
        return encoding.rate(key, images, time_steps)
    if name == "direct":
        return encoding.direct(images, time_steps)
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {name!r}")


def unit_loss(name: str, outputs: jax.Array, labels: jax.Array, hyper: Hyper, mask: jax.Array | None) -> jax.Array:
    """The loss unit ``name`` (a phenotype's ``loss:``) on the output spikes or membranes.

    Its genes come from ``hyper["loss"]`` (traced): the target counts of
    ``mse-count`` (computed on the host, see
    :func:`spenser_jax.snn.architecture.hyper`) or the target potentials of
    ``mse-membrane``.
    """
    if name == "mse-count":
        return loss.mse_count_loss_targets(outputs, labels, hyper["loss"]["on"], hyper["loss"]["off"], mask=mask)
    if name == "mse-membrane":
        return loss.mse_membrane_loss(outputs, labels, hyper["loss"]["on"], hyper["loss"]["off"], mask=mask)
    return loss.LOSSES[name](outputs, labels, mask=mask)


def train_step(
    sig: Signature,
    protocol: Protocol,
    state: TrainState,
    hyper: Hyper,
    spikes: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    dropout_key: jax.Array | None = None,
    *,
    output_spikes: bool = False,
) -> tuple:
    """One BPTT optimizer step on given input spikes ``[T, B, H, W, C]`` (pure; jit it yourself).

    Without a loss unit (Grammar 2) the loss is the spike-count loss with the
    protocol's rates. Returns ``(new_state, loss, finite)``, plus the batch's
    output spike count (real samples only) when ``output_spikes``, to tell a
    silent network early; ``finite`` False (a loss or update not finite) makes
    ``new_state`` unusable.
    """
    model = network.SpikingNetwork(sig, mode=protocol.mode)

    def loss_fn(params):
        if sig.reads_membrane:  # the loss reads the output membranes, not the spikes
            out, outputs = model.apply(
                {"params": params}, spikes, hyper, dropout_key, method=network.SpikingNetwork.recording, what="membrane"
            )
        else:
            out = outputs = model.apply({"params": params}, spikes, hyper, dropout_key)
        if sig.loss is None:  # the configuration's loss (Grammar 2)
            value = loss.mse_count_loss(out, labels, protocol.correct_rate, protocol.incorrect_rate, mask=mask)
        else:
            value = unit_loss(sig.loss, outputs, labels, hyper, mask)
        if not output_spikes:
            return value
        kept = out if mask is None else out * jnp.asarray(mask, out.dtype)[None, :, None]
        return value, jnp.sum(kept)

    if output_spikes:
        (value, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    else:
        value, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = _optimizer(sig, hyper).update(grads, state.opt_state, state.params)
    # Fixed β/θ are buffers in PyTorch: no update at all, not even decay.
    trainable = trainable_mask(sig, state.params)
    updates = jax.tree.map(lambda u, t: u if t else jnp.zeros_like(u), updates, trainable)
    new_state = TrainState(params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1)
    finite = jnp.isfinite(value) & _all_finite(updates)
    return (new_state, value, finite, count) if output_spikes else (new_state, value, finite)


def train_epoch(
    sig: Signature,
    protocol: Protocol,
    state: TrainState,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    max_steps: int | None = None,
    stop_check: int | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch of BPTT training as ``protocol`` says, pure (see :func:`make_train_epoch`).

    ``images`` (``uint8``) are encoded inside (:func:`encode`); ``key`` draws
    the shuffle, the input spikes and the dropout masks. Traceable under
    ``jit`` and ``vmap`` (over ``state``, ``hyper`` and ``key`` of offspring
    that share ``sig``). ``max_steps``: only the first batches of the shuffle
    (a partial epoch of the plan). ``stop_check``: after this many batches,
    stop if the output has not spiked once and the loss has not moved
    (relative spread at most :data:`LOSS_FLAT`): a silent output layer scores
    at chance.

    ``metrics``: ``loss`` (mean over the applied steps), ``nonfinite`` (the
    state is then the last finite one, the rest skipped), ``steps``,
    ``samples`` (seen by those steps), ``stopped``.
    """
    _check_settings(protocol.time_steps, protocol.batch_size)
    _check_data(images, labels)
    key_order, key_steps = jax.random.split(key)
    del key
    order, masks = batches(key_order, images.shape[0], protocol.batch_size)
    if max_steps is not None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        order, masks = order[:max_steps], masks[:max_steps]
    checking = stop_check is not None
    if checking and (not isinstance(stop_check, int) or stop_check < 1):
        raise ValueError(f"stop_check must be an int >= 1, got {stop_check!r}")

    def body(carry, batch):
        # ``evidence``: (stopped, output spikes heard, lowest and highest
        # batch loss) while checking, else () (the paper's program).
        state, failed, evidence = carry
        idx, mask, i = batch
        key_encode, key_dropout = jax.random.split(jax.random.fold_in(key_steps, i))

        def apply(state):
            spikes = encode(protocol.encoding, key_encode, images[idx], protocol.time_steps)
            new, value, finite, *count = train_step(
                sig, protocol, state, hyper, spikes, labels[idx], mask, key_dropout, output_spikes=checking
            )
            return keep_if(finite, new, state), value, finite, *count  # NaN never reaches params

        def skip(state):
            return state, jnp.float32(0), jnp.bool_(False), *([jnp.float32(0)] if checking else [])

        # After a failure (or a stop) the remaining batches cost nothing
        # (outside vmap, where cond becomes a select).
        halted = (failed | evidence[0]) if checking else failed
        state, value, finite, *count = jax.lax.cond(halted, skip, apply, state)
        if checking:
            stopped, heard, low, high = evidence
            heard = heard + count[0]
            low = jnp.where(finite, jnp.minimum(low, value), low)
            high = jnp.where(finite, jnp.maximum(high, value), high)
            # The evidence that a network cannot learn: its output never
            # spiked and its loss did not move (a silent output's spike-count
            # loss is exactly constant; a membrane loss still moves).
            flat = (high - low) <= LOSS_FLAT * jnp.maximum(jnp.abs(low), 1e-12)
            stopped = stopped | ((i == stop_check - 1) & finite & (heard == 0) & flat)
            failed, evidence = failed | (~finite & ~stopped), (stopped, heard, low, high)
        else:
            failed = failed | ~finite
        return (state, failed, evidence), (jnp.where(finite, value, 0.0), finite)

    evidence = (jnp.bool_(False), jnp.float32(0), jnp.float32(jnp.inf), jnp.float32(-jnp.inf)) if checking else ()
    (state, failed, evidence), (losses, applied) = jax.lax.scan(
        body, (state, jnp.bool_(False), evidence), (order, masks, jnp.arange(order.shape[0]))
    )
    steps = jnp.sum(applied, dtype=jnp.int32)
    samples = jnp.sum(jnp.where(applied[:, None], masks, False), dtype=jnp.int32)
    metrics = {
        "loss": jnp.sum(losses) / jnp.maximum(steps, 1),
        "nonfinite": failed,
        "steps": steps,
        "samples": samples,
        "stopped": evidence[0] if checking else jnp.bool_(False),
    }
    return state, metrics


def score(
    sig: Signature,
    protocol: Protocol,
    params: Any,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    activity: bool = False,
) -> dict[str, jax.Array]:
    """Spike-count accuracy on all ``N`` samples in order, pure (see :func:`make_score`).

    Batches of ``min(protocol.eval_batch_size, N)`` (the padded tail masked
    out); ``key`` draws the input spikes; dropout is off. ``activity`` also
    sums what the network did over the samples, in the same forward pass
    (:func:`spenser_jax.snn.activity_sums.activity_sums`).
    """
    _check_data(images, labels)
    batch_size = min(protocol.eval_batch_size, images.shape[0])
    _check_settings(protocol.time_steps, batch_size)
    model = network.SpikingNetwork(sig, mode=protocol.mode)
    order, masks = batches(None, images.shape[0], batch_size)

    def forward(spikes, mask):
        if not activity:
            return model.apply({"params": params}, spikes, hyper, None), ()
        # The mask weights the sums, so padding never counts.
        weights = mask.astype(jnp.float32)
        recording = network.SpikingNetwork.recording
        return model.apply({"params": params}, spikes, hyper, None, method=recording, what="activity", weights=weights)

    def body(carry, batch):
        total, sums = carry
        idx, mask, i = batch
        out, act = forward(
            encode(protocol.encoding, jax.random.fold_in(key, i), images[idx], protocol.time_steps), mask
        )
        return (total + loss.correct_count(out, labels[idx], mask), jax.tree.map(jnp.add, sums, act)), None

    zeros = ()
    if activity:
        first = encode(protocol.encoding, key, images[order[0]], protocol.time_steps)
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), jax.eval_shape(forward, first, masks[0])[1])
    (correct, sums), _ = jax.lax.scan(body, (jnp.int32(0), zeros), (order, masks, jnp.arange(order.shape[0])))
    result = {"correct": correct, "accuracy": correct / images.shape[0]}
    return {**result, "activity": sums} if activity else result


def no_score(scoring, params) -> dict:
    """What ``scoring(params)`` (a :func:`score` with all but the parameters bound) gives a failed individual.

    A failed individual is not scored: zeros of the score's shapes (accuracy
    0, no activity), whichever way it was trained. Nothing is compiled.
    """
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(scoring, params))


def evaluation_metrics(epochs: int, per_epoch: dict, failed, stopped, result: dict) -> dict:
    """The metrics of :func:`train_and_score` from a walk of ``epochs`` epochs' plan and a (no) score.

    ``losses`` has ``epochs`` entries (0 for epochs skipped or not run on the
    host); a failed individual's score is zeros, a stopped one's is real.
    """
    xp = np if isinstance(per_epoch["loss"], np.ndarray) else jnp
    losses = per_epoch["loss"]
    if losses.shape[0] < epochs:
        losses = np.concatenate([losses, np.zeros(epochs - losses.shape[0], losses.dtype)])
    return {
        "losses": losses,
        "steps": xp.sum(per_epoch["steps"], dtype=xp.int32),
        "samples": xp.sum(per_epoch["samples"], dtype=xp.int32),
        "nonfinite": failed,
        "stopped": stopped,
        **result,
    }


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
) -> tuple[Any, dict[str, jax.Array]]:
    """A whole evaluation of one individual in one program, pure: init, the protocol's epochs, score.

    Fresh weights from the first half of ``key`` (``inherited``, ``(values,
    mask)``, replaces some), the plan's walk over :func:`train_epoch` keyed by
    the second half, then :func:`score` on ``score_images`` or :func:`no_score`
    when training failed. One program instead of three, so one compile per
    signature; traceable under ``vmap``/``lax.map``/``shard_map`` over ``key``,
    ``hyper`` and ``inherited``; ``protocol`` is static. Returns ``(params,
    metrics)`` (:func:`evaluation_metrics`).
    """
    key_init, key_epochs = jax.random.split(key)
    del key
    state = create_train_state(key_init, sig, hyper, images.shape[1:], init_scheme=protocol.init)
    if inherited is not None:
        state = state.replace(params=inheritance.inherit_params(state.params, inherited))

    def run_epoch(state, epoch, max_steps, stop_check):
        key_epoch = jax.random.fold_in(key_epochs, epoch)
        return train_epoch(
            sig, protocol, state, hyper, images, labels, key_epoch, max_steps=max_steps, stop_check=stop_check
        )

    state, failed, stopped, per_epoch = protocol_lib.walk_plan(protocol, images.shape[0], state, run_epoch)
    scoring = functools.partial(
        score,
        sig,
        protocol,
        hyper=hyper,
        images=score_images,
        labels=score_labels,
        key=score_key,
        activity=protocol.activity,
    )
    result = jax.lax.cond(failed, functools.partial(no_score, scoring), scoring, state.params)
    return state.params, evaluation_metrics(len(protocol.plan(images.shape[0])), per_epoch, failed, stopped, result)


@functools.lru_cache(maxsize=256)
def make_train_epoch(
    sig: Signature, protocol: Protocol, *, max_steps: int | None = None, stop_check: int | None = None
):
    """The jitted :func:`train_epoch` for ``sig``: ``(state, hyper, images, labels, key) -> (state, metrics)``.

    ``state`` is donated: do not reuse the one passed in. Equal arguments
    return the same function, so offspring that share a signature share its
    compiled program (float genes are traced).
    """
    _check_settings(protocol.time_steps, protocol.batch_size)
    fn = functools.partial(train_epoch, sig, protocol, max_steps=max_steps, stop_check=stop_check)
    return jax.jit(fn, donate_argnums=(0,))


@functools.lru_cache(maxsize=256)
def make_score(sig: Signature, protocol: Protocol, *, batch_size: int | None = None, activity: bool = False):
    """The jitted :func:`score` for signature ``sig``: ``(params, hyper, images, labels, key)``, cached alike.

    ``batch_size`` replaces the protocol's ``eval_batch_size``; ``activity``,
    not the protocol's, says whether activity is summed.
    """
    if batch_size is not None:
        protocol = dataclasses.replace(protocol, eval_batch_size=batch_size)
    _check_settings(protocol.time_steps, protocol.eval_batch_size)
    return jax.jit(functools.partial(score, sig, protocol, activity=activity))


def _check_settings(time_steps: int, batch_size: int) -> None:
    if not (isinstance(time_steps, int) and isinstance(batch_size, int)):
        raise TypeError(f"time_steps and batch_size must be Python ints, got {time_steps!r}, {batch_size!r}")
    if batch_size < 1 or time_steps < 1:
        raise ValueError(f"time_steps and batch_size must be >= 1, got {time_steps}, {batch_size}")
