"""Training and evaluation of a spiking network: a train state and jitted loops.

Flax-examples style: :class:`TrainState` holds what changes, and the jitted
functions are pure. One epoch is one call, one ``lax.scan`` over batches, with
the whole data set already on device and rate coding inside the step, so the
host never loops over batches.

The compiled programs depend on the network's :class:`~spenser_jax.architecture.
Signature` and the static :class:`~spenser_jax.protocol.Protocol` only; the
float genes (β/θ initial values, dropout rates, optimizer hyperparameters) are
traced arguments. Builders are cached (:func:`make_train_epoch`,
:func:`make_score`), so offspring that share a signature share one compiled
program::

    sig, hyper = architecture.split(phenotype)
    protocol = Protocol(time_steps=10, batch_size=64, eval_batch_size=256)
    state = create_train_state(key_init, sig, hyper, (28, 28, 1))
    run_epoch = make_train_epoch(sig, protocol)
    state, metrics = run_epoch(state, hyper, images, labels, key_epoch)
    score = make_score(sig, protocol)
    accuracy = score(state.params, hyper, test_images, test_labels, key_eval)["accuracy"]

The pure functions behind them (:func:`train_step`, :func:`train_epoch`,
:func:`score`) also ``vmap`` over the states, hyper and keys of offspring
that share a signature.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from spenser_jax import network, optim
from spenser_jax.architecture import Hyper, Signature, trainable_mask
from spenser_jax.protocol import Protocol, budget_steps, epoch_plan  # noqa: F401 - the plan's functions, re-exported
from spenser_jax.snn import encoding, loss


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
    """Fresh parameters and optimizer state.

    Args:
      key: PRNG key for the weights and biases.
      sig: the network's signature.
      hyper: its float genes (β/θ start at their values).
      input_shape: ``(H, W, C)`` of one image.
      init_scheme: ``"torch"`` or ``"lecun"`` (see
        :class:`~spenser_jax.network.SpikingNetwork`).
    """
    params = network.init_params(key, sig, hyper, input_shape, init_scheme=init_scheme)
    opt_state = _optimizer(sig, hyper).init(params)
    return TrainState(params=params, opt_state=opt_state, step=jnp.zeros([], jnp.int32))


def _batches(key: jax.Array | None, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
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
    :func:`spenser_jax.architecture.hyper`) or the target potentials of
    ``mse-membrane``.
    """
    if name == "mse-count":
        return loss.mse_count_loss_targets(outputs, labels, hyper["loss"]["on"], hyper["loss"]["off"], mask=mask)
    if name == "mse-membrane":
        return loss.mse_membrane_loss(outputs, labels, hyper["loss"]["on"], hyper["loss"]["off"], mask=mask)
    return loss.LOSSES[name](outputs, labels, mask=mask)


def train_step(
    sig: Signature,
    state: TrainState,
    hyper: Hyper,
    spikes: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    dropout_key: jax.Array | None = None,
    *,
    correct_rate: float = 1.0,
    incorrect_rate: float = 0.0,
    mode: str | None = None,
    output_spikes: bool = False,
) -> tuple:
    """One BPTT optimizer step on given input spikes (pure; jit it yourself).

    Args:
      sig: the network's signature.
      state: the current state.
      hyper: the float genes (dropout rates and optimizer hyperparameters are
        read from them).
      spikes: input spikes ``[T, B, H, W, C]``.
      labels: ``int [B]``.
      mask: optional ``[B]`` 0/1 sample weights (padding has 0).
      dropout_key: key of the dropout masks (``None``: no dropout).
      correct_rate, incorrect_rate: ``mse_count_loss`` targets when the
        signature has no loss unit (Grammar 2); else :func:`unit_loss`.
      mode: the network's execution order.
      output_spikes: also return the output spikes of the batch's real
        samples (summed), to tell a silent network early.

    Returns:
      ``(new_state, loss, finite)``, and the output spike count last when
      ``output_spikes``: ``finite`` is False when the loss or an update is
      not finite (``new_state`` is then unusable).
    """
    model = network.SpikingNetwork(sig, mode=mode)

    def loss_fn(params):
        if sig.reads_membrane:  # the loss reads the output membranes, not the spikes
            out, outputs = model.apply(
                {"params": params}, spikes, hyper, dropout_key, method=network.SpikingNetwork.recording, what="membrane"
            )
        else:
            out = outputs = model.apply({"params": params}, spikes, hyper, dropout_key)
        if sig.loss is None:  # the configuration's loss (Grammar 2)
            value = loss.mse_count_loss(out, labels, correct_rate, incorrect_rate, mask=mask)
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
    state: TrainState,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    time_steps: int,
    batch_size: int,
    correct_rate: float = 1.0,
    incorrect_rate: float = 0.0,
    mode: str | None = None,
    max_steps: int | None = None,
    stop_check: int | None = None,
    input_encoding: str = "rate",
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch of BPTT training, pure (see :func:`make_train_epoch`).

    Traceable under ``jit`` and ``vmap`` (e.g. over ``state``, ``hyper`` and
    ``key`` of offspring that share ``sig``).

    Args:
      sig: the network's signature.
      state: the state to train from.
      hyper: the float genes.
      images: ``uint8 [N, H, W, C]`` (rate-coded inside, ``p = x / 255``).
      labels: ``int [N]``.
      key: PRNG key of the shuffle, the input spikes and the dropout masks.
      time_steps: rate-coding steps ``T``.
      batch_size: samples per optimizer step; the last batch has the
        remaining ``N mod batch_size`` samples when that is not 0.
      correct_rate, incorrect_rate: ``mse_count_loss`` targets.
      mode: the network's execution order (``None``: backend default).
      max_steps: train on the first ``max_steps`` batches of the epoch's
        shuffle only (a partial epoch; None: all of them).
      stop_check: after this many batches, stop if the output has not
        spiked once and the loss has not moved (relative spread of the
        batch losses at most :data:`LOSS_FLAT`): a silent output layer
        scores at chance; see ``metrics["stopped"]``. None: never.
      input_encoding: how images enter the network (:func:`encode`).

    Returns:
      ``(state, metrics)``; ``metrics``: ``loss`` (mean batch loss over the
      applied steps), ``nonfinite`` (bool), ``steps`` (optimizer steps
      applied), ``samples`` (training samples those steps saw), and with
      ``stop_check`` ``stopped`` (bool).
    """
    _check_settings(time_steps, batch_size)
    _check_data(images, labels)
    key_order, key_steps = jax.random.split(key)
    del key
    order, masks = _batches(key_order, images.shape[0], batch_size)
    if max_steps is not None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        order, masks = order[:max_steps], masks[:max_steps]
    step = functools.partial(train_step, sig, correct_rate=correct_rate, incorrect_rate=incorrect_rate, mode=mode)

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
            spikes = encode(input_encoding, key_encode, images[idx], time_steps)
            new, value, finite, *count = step(
                state, hyper, spikes, labels[idx], mask, key_dropout, output_spikes=checking
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
    extra = {"stopped": evidence[0]} if checking else {}
    steps = jnp.sum(applied, dtype=jnp.int32)
    samples = jnp.sum(jnp.where(applied[:, None], masks, False), dtype=jnp.int32)
    metrics = {
        "loss": jnp.sum(losses) / jnp.maximum(steps, 1),
        "nonfinite": failed,
        "steps": steps,
        "samples": samples,
        **extra,
    }
    return state, metrics


def score(
    sig: Signature,
    params: Any,
    hyper: Hyper,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    time_steps: int,
    batch_size: int,
    mode: str | None = None,
    activity: bool = False,
    input_encoding: str = "rate",
) -> dict[str, jax.Array]:
    """Spike-count accuracy on all ``N`` samples, pure (see :func:`make_score`).

    Samples are taken in order, in batches of ``batch_size`` (the padded tail
    of the last one masked out); ``key`` draws the input spikes; dropout is
    off.

    Args:
      activity: also sum, over the samples, what the network did (the same
        forward pass; see :func:`spenser_jax.activity_sums.activity_sums`).

    Returns:
      ``{"correct": int32, "accuracy": float32}``, and with ``activity``
      ``"activity"``: ``{"input": total input spikes, "lif": (total spikes
      per LIF layer), "inputs": (per conv/fc layer what entered it: [H, W]
      or a scalar)}``, summed over the N samples.
    """
    _check_settings(time_steps, batch_size)
    _check_data(images, labels)
    model = network.SpikingNetwork(sig, mode=mode)
    order, masks = _batches(None, images.shape[0], batch_size)

    def body(carry, batch):
        total, sums = carry
        idx, mask, i = batch
        spikes = encode(input_encoding, jax.random.fold_in(key, i), images[idx], time_steps)
        if activity:
            # The mask weights the sums, so padding never counts.
            out, act = model.apply(
                {"params": params},
                spikes,
                hyper,
                None,
                method=network.SpikingNetwork.recording,
                what="activity",
                weights=mask.astype(jnp.float32),
            )
            sums = jax.tree.map(jnp.add, sums, act)
        else:
            out = model.apply({"params": params}, spikes, hyper, None)
        return (total + loss.correct_count(out, labels[idx], mask), sums), None

    zeros = ()
    if activity:
        spec = jax.eval_shape(
            lambda: model.apply(
                {"params": params},
                encode(input_encoding, key, images[order[0]], time_steps),
                hyper,
                None,
                method=network.SpikingNetwork.recording,
                what="activity",
                weights=masks[0].astype(jnp.float32),
            )[1]
        )
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), spec)
    (correct, sums), _ = jax.lax.scan(body, (jnp.int32(0), zeros), (order, masks, jnp.arange(order.shape[0])))
    result = {"correct": correct, "accuracy": correct / images.shape[0]}
    return {**result, "activity": sums} if activity else result


def inherit_params(fresh: Any, inherited: tuple[Any, Any] | None) -> Any:
    """``fresh`` parameters where ``mask`` is False, the inherited ``values`` where it is True.

    ``inherited`` is ``(values, mask)``: two pytrees like ``fresh``, the
    mask elementwise, so a layer can inherit all, part (a slice) or none of
    its parent's weights (:mod:`spenser_jax.inheritance`).
    """
    if inherited is None:
        return fresh
    values, mask = inherited
    return jax.tree.map(lambda v, m, f: jnp.where(m, v.astype(f.dtype), f), values, mask, fresh)


def _epoch_options(protocol: Protocol) -> dict:
    """The keyword arguments of :func:`train_epoch` that ``protocol`` fixes."""
    return dict(
        time_steps=protocol.time_steps,
        batch_size=protocol.batch_size,
        correct_rate=protocol.correct_rate,
        incorrect_rate=protocol.incorrect_rate,
        mode=protocol.mode,
        input_encoding=protocol.encoding,
    )


def _score_options(protocol: Protocol) -> dict:
    """The keyword arguments of :func:`score` that ``protocol`` fixes (all but the batch size)."""
    return dict(time_steps=protocol.time_steps, mode=protocol.mode, input_encoding=protocol.encoding)


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
    """A whole evaluation of one individual, pure: init, the protocol's epochs, score.

    The same computation as the host loop ``key_init, key_epochs =
    split(key)``; :func:`create_train_state` from ``key_init`` (then
    :func:`inherit_params`); epoch ``e`` of :func:`train_epoch` with
    ``fold_in(key_epochs, e)`` and the batches of ``protocol.plan(N)``
    (:func:`~spenser_jax.protocol.epoch_plan`), stopping after an epoch that
    went non-finite or stopped; then :func:`score` of the final
    parameters on ``score_images`` with ``score_key`` and batches of
    ``min(protocol.eval_batch_size, N)``. One program instead of three, so
    one compile per signature; traceable under ``vmap``/``lax.map``/
    ``shard_map`` over ``key``, ``hyper`` and ``inherited``.

    Args:
      protocol: how to train and score (static: bind it before ``jit``).
        Its ``epochs`` and ``min_steps`` make the plan; its early check
        (:meth:`~spenser_jax.protocol.Protocol.stop_check` of the ``N =
        images.shape[0]`` training samples) applies in the first epoch (see
        :func:`train_epoch`); with ``activity`` the scoring also measures
        activity (``metrics["activity"]``, see :func:`score`; zeros for
        a failed individual).
      inherited: ``(values, mask)`` to start from (see
        :func:`inherit_params`); None: fresh weights.

    Returns:
      ``(params, metrics)``; ``metrics``: ``losses`` ``[epochs]`` (0 for
      epochs skipped), ``steps`` (optimizer steps applied), ``samples``
      (training samples seen), ``nonfinite`` (bool), ``stopped`` (bool),
      ``correct`` and ``accuracy`` (0 when ``nonfinite``: a failed
      individual is not scored; a stopped one is).
    """
    plan = protocol.plan(images.shape[0])
    stop_check = protocol.stop_check(images.shape[0])
    activity = protocol.activity
    key_init, key_epochs = jax.random.split(key)
    del key
    state = create_train_state(key_init, sig, hyper, images.shape[1:], init_scheme=protocol.init)
    if inherited is not None:
        state = state.replace(params=inherit_params(state.params, inherited))
    epoch_fn = functools.partial(train_epoch, sig, **_epoch_options(protocol))

    if all(p is None for p in plan) and stop_check is None:
        # Whole epochs: one rolled loop (the paper's protocol).
        def body(carry, epoch):
            state, failed = carry

            def run(state):
                state, metrics = epoch_fn(state, hyper, images, labels, jax.random.fold_in(key_epochs, epoch))
                return state, (metrics["loss"], metrics["steps"], metrics["samples"], metrics["nonfinite"])

            def skip(state):
                return state, (jnp.float32(0), jnp.int32(0), jnp.int32(0), jnp.bool_(True))

            state, (value, steps, samples, nonfinite) = jax.lax.cond(failed, skip, run, state)
            return (state, failed | nonfinite), (value, steps, samples)

        (state, failed), (losses, steps, samples) = jax.lax.scan(body, (state, jnp.bool_(False)), jnp.arange(len(plan)))
        stopped = jnp.bool_(False)
    else:
        # A budget that ends inside an epoch, or an early check: the epochs
        # differ, so they are unrolled (there are few).
        failed = stopped = jnp.bool_(False)
        losses, steps, samples = [], [], []
        for epoch, max_steps in enumerate(plan):
            check = stop_check if epoch == 0 else None

            def run(state, max_steps=max_steps, check=check, epoch=epoch):
                state, metrics = epoch_fn(
                    state,
                    hyper,
                    images,
                    labels,
                    jax.random.fold_in(key_epochs, epoch),
                    max_steps=max_steps,
                    stop_check=check,
                )
                return state, (
                    metrics["loss"],
                    metrics["steps"],
                    metrics["samples"],
                    metrics["nonfinite"],
                    metrics.get("stopped", jnp.bool_(False)),
                )

            def skip(state):
                return state, (jnp.float32(0), jnp.int32(0), jnp.int32(0), jnp.bool_(False), jnp.bool_(False))

            state, (value, n_steps, n_samples, nonfinite, halted) = jax.lax.cond(failed | stopped, skip, run, state)
            failed, stopped = failed | nonfinite, stopped | halted
            losses.append(value)
            steps.append(n_steps)
            samples.append(n_samples)
        losses, steps, samples = jnp.stack(losses), jnp.stack(steps), jnp.stack(samples)
    n = score_images.shape[0]
    score_fn = functools.partial(score, sig, batch_size=min(protocol.eval_batch_size, n), **_score_options(protocol))

    def scored(params):
        result = score_fn(params, hyper, score_images, score_labels, score_key, activity=activity)
        return result["correct"], result.get("activity", ())

    # A failed individual scores 0 (and no activity) without being scored.
    shape = jax.eval_shape(scored, state.params)
    correct, measured = jax.lax.cond(
        failed, lambda params: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shape), scored, state.params
    )
    extra = {"activity": measured} if activity else {}
    metrics = {
        "losses": losses,
        "steps": jnp.sum(steps, dtype=jnp.int32),
        "samples": jnp.sum(samples, dtype=jnp.int32),
        "nonfinite": failed,
        "stopped": stopped,
        "correct": correct,
        "accuracy": correct / n,
        **extra,
    }
    return state.params, metrics


@functools.lru_cache(maxsize=256)
def make_train_epoch(
    sig: Signature, protocol: Protocol, *, max_steps: int | None = None, stop_check: int | None = None
):
    """The jitted :func:`train_epoch` for networks with signature ``sig``, trained as ``protocol`` says.

    Returns ``train_epoch(state, hyper, images, labels, key) -> (state,
    metrics)``. One ``lax.scan`` over the batches of a shuffle drawn from
    ``key``, data already on device, rate coding inside; a non-finite loss or
    update freezes the state from that batch on (the remaining batches are
    skipped) and sets ``metrics["nonfinite"]``. ``max_steps`` and
    ``stop_check`` are those of :func:`train_epoch` (the epoch's share of
    the protocol's plan and early check; the protocol's ``epochs`` are not
    read here).

    ``state`` is donated: do not reuse the one passed in. Equal arguments
    return the same function, so offspring that share a signature share its
    compiled program (float genes are traced).
    """
    _check_settings(protocol.time_steps, protocol.batch_size)
    fn = functools.partial(train_epoch, sig, **_epoch_options(protocol), max_steps=max_steps, stop_check=stop_check)
    return jax.jit(fn, donate_argnums=(0,))


@functools.lru_cache(maxsize=256)
def make_score(sig: Signature, protocol: Protocol, *, batch_size: int | None = None, activity: bool = False):
    """The jitted :func:`score` for networks with signature ``sig``, scored as ``protocol`` says.

    Returns ``score(params, hyper, images, labels, key) -> {"correct",
    "accuracy"}``; cached like :func:`make_train_epoch`. ``batch_size``:
    samples per batch (None: the protocol's ``eval_batch_size``; pass
    ``min(eval_batch_size, N)`` for a split of ``N`` samples, as
    :func:`train_and_score` scores). ``activity``: also sum what the network
    did (:func:`score`); the protocol's ``activity`` is not read here.
    """
    batch_size = protocol.eval_batch_size if batch_size is None else batch_size
    _check_settings(protocol.time_steps, batch_size)
    fn = functools.partial(score, sig, batch_size=batch_size, activity=activity, **_score_options(protocol))
    return jax.jit(fn)


def _check_settings(time_steps: int, batch_size: int) -> None:
    if not (isinstance(time_steps, int) and isinstance(batch_size, int)):
        raise TypeError(f"time_steps and batch_size must be Python ints, got {time_steps!r}, {batch_size!r}")
    if batch_size < 1 or time_steps < 1:
        raise ValueError(f"time_steps and batch_size must be >= 1, got {time_steps}, {batch_size}")
