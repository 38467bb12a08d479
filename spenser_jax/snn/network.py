"""The spiking network a signature describes, as a Flax linen module.

Built from an :class:`~spenser_jax.snn.architecture.Signature` (static), it
reads its float genes (β/θ initial values, dropout rates) as traced inputs,
so offspring that differ only in float genes share one compiled program.
Images and feature maps are NHWC, spike trains time-major ``[T, B, ...]``;
layers follow the phenotype module's shape rules.

Three execution orders over time give the same outputs (they draw the same
dropout masks; :func:`dropout_keep`) at different speeds: ``"stepwise"``
(the time loop unrolled in Python; compile time grows with ``T``),
``"scan"`` (the same step in a rolled ``lax.scan``: the smallest program,
and on CPU the fastest; :data:`DEFAULT_MODES`) and ``"layerwise"`` (every
stateless layer applied once to all ``T * B`` inputs, only the LIF
recurrences scanned). Each order runs plain (``__call__``) or recording
(:meth:`SpikingNetwork.recording`); the shared layers are
:mod:`spenser_jax.snn.layers`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spenser_jax.genome import draws
from spenser_jax.genome.units import Conv, Dense, Pool
from spenser_jax.snn.activity_sums import activity_sums, input_sums, sample_sums
from spenser_jax.snn.architecture import DropoutSlot, Hyper, LIFSlot, Signature, layer_shapes, param_name
from spenser_jax.snn.conv import conv_nhwc  # noqa: F401 (offered here as before; Conv2d in layers calls it)
from spenser_jax.snn.layers import (
    Conv2d,
    LIFParams,
    Linear,
    _deferred,
    _flatten,
    dropout_keep,
    lif_options,
    merge_inputs,
    pool2d,
)
from spenser_jax.snn.lif import lif_sequence, lif_step

MODES = ("stepwise", "scan", "layerwise")
RECORDS = ("trace", "membrane", "activity")  # what SpikingNetwork.recording can return beside the output

DEFAULT_MODES = {"cpu": "scan"}
"""Default execution order per backend (others get ``"layerwise"``).

Measured on XLA:CPU (2 shared cores, jax 0.10.2), the reference CSNN of
``benchmarks/train_throughput.py`` (conv32-5 / max-pool / LIF / conv64-5 /
max-pool / LIF / fc128 / LIF / fc10 / LIF, B = 64) trained inside the epoch's
``lax.scan``, with :func:`conv_nhwc`: ms per step stepwise 389 / scan 363 /
layerwise 559 at T = 10, 1353 / 892 / 1861 at T = 25, and scan compiles
2-4x faster (4.8 s vs 9.2 s at T = 10). Before :func:`conv_nhwc` every order
ran 20-30x slower inside the epoch loop. On GPU, ``"layerwise"`` (large
batched convolutions, a short elementwise scan) is the default by reasoning
only: it has not been measured.
"""


def default_mode(backend: str | None = None) -> str:
    """The execution order for ``backend`` (default: JAX's default backend)."""
    return DEFAULT_MODES.get(backend or jax.default_backend(), "layerwise")


class SpikingNetwork(nn.Module):
    """A phenotype's network (its static ``signature``): input spikes ``[T, B, H, W, C]`` -> ``[T, B, K]``.

    ``mode`` None picks :func:`default_mode`; every mode gives the same result.
    ``init_scheme``: ``"torch"`` (U(±1/sqrt(fan_in)) weights and biases,
    PyTorch's defaults) or ``"lecun"`` (LeCun normal weights, zero bias).
    """

    signature: Signature
    mode: str | None = None
    init_scheme: str = "torch"

    def setup(self):
        layers = []
        for i, spec in enumerate(self.signature.layers):
            if isinstance(spec, Conv):
                layers.append(
                    Conv2d(
                        spec.filters,
                        spec.kernel,
                        spec.stride,
                        spec.padding,
                        spec.bias,
                        self.init_scheme,
                        name=param_name(i, spec),
                    )
                )
            elif isinstance(spec, Dense):
                layers.append(Linear(spec.units, spec.bias, self.init_scheme, name=param_name(i, spec)))
            elif isinstance(spec, LIFSlot):
                layers.append(LIFParams(name=param_name(i, spec)))
            else:
                layers.append(None)
        self.layers = layers

    def __call__(self, spikes: jax.Array, hyper: Hyper, dropout_key: jax.Array | None = None) -> jax.Array:
        """Runs the network over time: input spikes ``[T, B, H, W, C]`` to the last layer's output ``[T, B, K]``.

        ``dropout_key=None`` disables dropout (evaluation).
        """
        return self._run(spikes, hyper, dropout_key, None, None)

    def recording(
        self,
        spikes: jax.Array,
        hyper: Hyper,
        dropout_key: jax.Array | None = None,
        *,
        what: str,
        weights: jax.Array | None = None,
    ) -> tuple[jax.Array, Any]:
        """Runs the network over time as :meth:`__call__` and also returns what it did.

        ``what``: ``"trace"``, every LIF layer's spikes in network order;
        ``"membrane"``, the last layer's membrane potentials (membrane losses read
        them); ``"activity"``, :func:`activity_sums`. ``weights`` (``[B]``, 0 for
        padding, activity only) turn the sums into weighted sums over the batch,
        cheaper: nothing of size B is carried through time. Call it as
        ``model.apply(variables, spikes, hyper, key, method=SpikingNetwork.recording, what=...)``.
        """
        if what not in RECORDS:
            raise ValueError(f"what must be one of {RECORDS}, got {what!r}")
        if weights is not None and what != "activity":
            raise ValueError("weights weigh activity sums; what is " + repr(what))
        weights = None if weights is None else jnp.asarray(weights, jnp.float32)
        out, extra = self._run(spikes, hyper, dropout_key, what, weights)
        if what == "activity":
            return out, activity_sums(self.signature, spikes, *extra, weights=weights)
        return out, extra

    def _run(self, spikes, hyper, dropout_key, record, weights):
        if spikes.ndim != 5:
            raise ValueError(f"spikes must be [T, B, H, W, C], got shape {spikes.shape}")
        mode = self.mode or default_mode()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if self.is_initializing():
            mode = "layerwise"  # parameters are created outside any transform
        run = {"stepwise": self._stepwise, "scan": self._scan, "layerwise": self._layerwise}[mode]
        if record is None:
            return run(spikes, hyper, dropout_key)
        return run(spikes, hyper, dropout_key, record, weights)

    def _lif(self, i: int, hyper) -> tuple[jax.Array, jax.Array, dict]:
        spec = self.signature.layers[i]
        j = sum(isinstance(x, LIFSlot) for x in self.signature.layers[:i])
        beta, threshold = self.layers[i](hyper["beta"][j], hyper["threshold"][j])
        return beta, threshold, lif_options(spec)

    def _dropout_rate(self, i: int, hyper) -> jax.Array:
        j = sum(isinstance(x, DropoutSlot) for x in self.signature.layers[:i])
        return hyper["dropout"][j]

    def _stateless(self, i: int, x: jax.Array) -> jax.Array:
        """Conv, pool or dense layer ``i`` on a batch ``[N, ...]``."""
        spec = self.signature.layers[i]
        if isinstance(spec, Pool):
            return pool2d(x, spec.kind, spec.kernel)
        if isinstance(spec, Dense):
            x = _flatten(x)
        return self.layers[i](x)

    def _sources(self, i: int, x: jax.Array, first: jax.Array, outs: list) -> jax.Array:
        """Layer ``i``'s input: ``x``, or its sources merged (skip connections)."""
        inputs = self.signature.inputs
        if inputs is None or inputs[i] is None:
            return x
        return merge_inputs([first if j < 0 else outs[j] for j in inputs[i]])

    def _step(self, mems: tuple, x: jax.Array, t, hyper, dropout_key, record=None, weights=None):
        """One time step of the whole network; ``mems`` has one entry per layer.

        Returns ``(mems, output)``; with ``record`` ``(mems, (output, extra))``
        (see :meth:`__call__`).
        """
        mems = list(mems)
        first, outs = x, []
        lif_spikes, inputs, membrane = [], [], None
        raw = True  # x is still the network input (the input's sums come from outside the loop)
        for i, spec in enumerate(self.signature.layers):
            x = self._sources(i, x, first, outs)
            if self.signature.inputs is not None and self.signature.inputs[i] is not None:
                raw = False
            if isinstance(spec, LIFSlot):
                beta, threshold, options = self._lif(i, hyper)
                mem = jnp.zeros_like(x) if mems[i] is None else mems[i]
                mems[i], x = lif_step(mem, x, beta, threshold, **options)
                lif_spikes.append(sample_sums(x, weights) if record == "activity" else x)
                membrane = mems[i]
            elif isinstance(spec, DropoutSlot):
                if dropout_key is not None:
                    x = x * dropout_keep(dropout_key, i, t, self._dropout_rate(i, hyper), x.shape)
                    raw = False
            else:
                if record == "activity" and isinstance(spec, (Conv, Dense)):
                    inputs.append(None if raw else input_sums(x, weights))
                x = self._stateless(i, x)
            if not isinstance(spec, DropoutSlot):
                raw = False
            if self.signature.inputs is not None:
                outs.append(x)
        return tuple(mems), _recorded(record, x, lif_spikes, inputs, membrane)

    def _stepwise(self, spikes, hyper, dropout_key, record=None, weights=None):
        mems = (None,) * len(self.signature.layers)
        outputs = []
        for t in range(spikes.shape[0]):
            mems, y = self._step(mems, spikes[t], t, hyper, dropout_key, record, weights)
            outputs.append(y)
        stacked = jax.tree.map(lambda *ys: jnp.stack(ys), *outputs)
        if record == "activity":  # sum the per-step reductions over time
            out, rest = stacked
            return out, jax.tree.map(lambda v: v.sum(0), rest)
        return stacked

    def _scan(self, spikes, hyper, dropout_key, record=None, weights=None):
        shapes = layer_shapes(self.signature, spikes.shape[2:])
        mems = tuple(
            jnp.zeros((spikes.shape[1], *shapes[i]), jnp.float32) if isinstance(spec, LIFSlot) else None
            for i, spec in enumerate(self.signature.layers)
        )

        if record == "activity":
            return self._scan_activity(spikes, hyper, dropout_key, mems, weights)

        def body(module, carry, inputs):
            x, t = inputs
            return module._step(carry, x, t, hyper, dropout_key, record)

        # The lifted scan shares the parameters between steps (broadcast).
        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
        _, outputs = scan(self, mems, (spikes, jnp.arange(spikes.shape[0])))
        return outputs

    def _scan_activity(self, spikes, hyper, dropout_key, mems, weights):
        # The per-step sums accumulate in the carry: stacking them over T
        # and summing afterwards wrote T copies to memory first.
        def step(module, carry, inputs):
            x, t = inputs
            mems, sums = carry
            mems, (y, extra) = module._step(mems, x, t, hyper, dropout_key, "activity", weights)
            return (mems, jax.tree.map(jnp.add, sums, extra)), y

        shape = jax.eval_shape(
            lambda: nn.apply(
                lambda module: module._step(mems, spikes[0], 0, hyper, dropout_key, "activity", weights)[1][1], self
            )({"params": self.variables["params"]})
        )
        sums = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shape)
        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        (_, sums), out = scan(self, (mems, sums), (spikes, jnp.arange(spikes.shape[0])))
        return out, sums

    def _layerwise(self, spikes, hyper, dropout_key, record=None, weights=None):
        x = spikes
        steps, batch = spikes.shape[:2]
        outs = []
        lif_spikes, inputs, membrane = [], [], None

        def flat(v):  # [T, B, ...] -> [T * B, ...]
            return v.reshape(steps * batch, *v.shape[2:])

        for i, spec in enumerate(self.signature.layers):
            if self.signature.inputs is not None and self.signature.inputs[i] is not None:
                merged = self._sources(i, flat(x), flat(spikes), [flat(o) for o in outs])
                x = merged.reshape(steps, batch, *merged.shape[1:])
            if isinstance(spec, LIFSlot):
                beta, threshold, options = self._lif(i, hyper)
                if not self.is_initializing():  # init only needs the shapes
                    x, membrane = lif_sequence(x, beta, threshold, **options)
                lif_spikes.append(sample_sums(x.sum(0), weights) if record == "activity" else x)
            elif isinstance(spec, DropoutSlot):
                if dropout_key is not None:
                    rate = self._dropout_rate(i, hyper)
                    keep = jax.vmap(lambda t: dropout_keep(dropout_key, i, t, rate, x.shape[1:]))  # noqa: B023 (called below)
                    x = x * keep(jnp.arange(steps))
            else:
                if record == "activity" and isinstance(spec, (Conv, Dense)):
                    inputs.append(input_sums(x.sum(0), weights))
                y = self._stateless(i, flat(x))
                x = y.reshape(steps, batch, *y.shape[1:])
            if self.signature.inputs is not None:
                outs.append(x)
        return _recorded(record, x, lif_spikes, inputs, membrane)


def _recorded(record: str | None, x: jax.Array, lif_spikes: list, inputs: list, membrane):
    """An order's result: its output ``x``, with what ``record`` asks for (see ``__call__``)."""
    if record is None:
        return x
    if record == "activity":
        return x, (tuple(lif_spikes), tuple(inputs))
    if record == "trace":
        return x, tuple(lif_spikes)
    return x, membrane


def init_params(
    key: jax.Array, sig: Signature, hyper: Hyper, input_shape: tuple[int, int, int], *, init_scheme: str = "torch"
) -> dict:
    """Initial parameters (``{"conv_0": {...}, "lif_2": {...}, ...}``).

    Weights and biases are drawn from ``key``; β and θ are the float genes' values.

    Raises:
      InvalidPhenotype: the network cannot process ``input_shape`` images.
    """
    layer_shapes(sig, input_shape)
    return _init_fn(sig, tuple(input_shape), init_scheme)(key, hyper)


@functools.lru_cache(maxsize=256)
def _init_fn(sig: Signature, input_shape: tuple[int, ...], init_scheme: str):
    # Jitted and cached: op-by-op initialisation costs seconds per network.
    model = SpikingNetwork(sig, init_scheme=init_scheme)
    # NumPy, not jnp: a jnp array made during a caller's trace would be a
    # tracer, and this cached closure would leak it into later calls.
    dummy = np.zeros((1, 1, *input_shape), np.float32)

    def init(key, hyper):
        # Flax asks for one weight at a time, and every threefry draw
        # compiles to a loop of its own (a second per network). So the
        # draws are owed during Flax's init and made afterwards in a few
        # shared loops (draws.uniform_many): the same keys, the same bits.
        _deferred.draws = []
        try:
            params = model.init(key, dummy, hyper)["params"]
            owed = _deferred.draws
        finally:
            _deferred.draws = None
        values = draws.uniform_many([request for request, _ in owed])
        by_placeholder = {id(placeholder): value for (_, placeholder), value in zip(owed, values, strict=True)}
        params = jax.tree.map(lambda x: by_placeholder.pop(id(x), x), params)
        if by_placeholder:  # pragma: no cover - Flax returned a copy of a placeholder
            raise RuntimeError("internal: weight draws owed to parameters Flax did not return")
        return params

    return jax.jit(init)
