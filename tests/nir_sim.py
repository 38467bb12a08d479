"""A small NumPy reference simulator for NIR graphs (tests only).

Written from NIR's published node definitions (the ``nir`` package's
docstrings, nir 1.0.8), not from this project's network code:

* ``Input``/``Output``: pass the signal through. A node with several incoming
  edges receives their sum.
* ``Affine``: ``y = W x + b``; ``Linear``: ``y = W x``; ``Scale``: ``y = s ⊙ x``
  (``W`` is ``[out, in]``).
* ``Conv2d``: cross-correlation as ``torch.nn.functional.conv2d`` (weight
  ``[out, in, kh, kw]``, stride, symmetric zero padding per axis or
  ``"valid"``/``"same"``, dilation; groups = 1 only).
* ``AvgPool2d``/``SumPool2d``: windows of ``kernel_size`` every ``stride``,
  zero padding, floor; the average divides by the window size.
* ``Flatten``: flattens dims ``start_dim..end_dim`` of one sample (NIR types
  have no batch axis).
* ``LIF``: ``tau·dv/dt = (v_leak - v) + r·I``, ``z = v > v_threshold``,
  ``v <- v_reset`` where ``z``; ``IF``: ``dv/dt = r·I``, same spike and reset;
  ``LI`` and ``I``: the same without spikes (the output is ``v``);
  ``Threshold``: ``z = x > threshold``. Integrated with forward Euler at the
  graph's ``dt`` (``metadata["dt"]``, or the ``dt`` argument), the reset in
  the step of the spike; the state starts at 0::

      v'  = v + dt/tau·(v_leak - v) + dt/tau·r·I      (LIF, LI)
      v'  = v + dt·r·I                                (IF, I)
      z   = v' > v_threshold;   v = v_reset where z, else v'

Every node is evaluated once per time step in topological order (the graph
must be acyclic: no recurrence, no subgraphs, no ``Delay``).

Precision: float64 throughout. Bit-for-bit agreement with a float32 network
is impossible whatever the dtype (XLA and NumPy sum convolutions in different
orders, and NIR's ``1 - dt/tau`` and ``r·dt/tau`` are only float64 roundings
of β and 1), so the simulator computes the graph's semantics as exactly as
cheaply possible: its float64 membranes are within ~1e-15 (relative) of the
real-number result, and a float32 network differs from that by its own
rounding only (~1e-6 relative). Spikes therefore agree exactly whenever no
membrane lies within that distance of its threshold; :class:`Trace` keeps the
pre-reset membranes so that a test can assert the margin instead of trusting
luck.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque

import numpy as np


@dataclasses.dataclass
class Trace:
    """Result of :func:`simulate`.

    Attributes:
      output: the Output node's signal per step, ``[T, (B,) ...]``.
      nodes: every node's output per step, ``{name: [T, (B,) ...]}``.
      membranes: every spiking node's pre-reset membrane ``v'`` per step.
    """

    output: np.ndarray
    nodes: dict
    membranes: dict


def _arr(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def _pair(x) -> tuple[int, int]:
    x = np.asarray(x).reshape(-1)
    if x.size == 1:
        return int(x[0]), int(x[0])
    return int(x[0]), int(x[1])


def _text(x):
    return x.decode() if isinstance(x, bytes) else x


def _windows(x: np.ndarray, kernel, stride, padding, dilation=(1, 1)):
    """Yields ``(i, j, slice)`` with ``slice[b, c, oh, ow] = x_padded[b, c, oh*s + i*d, ow*s + j*d]``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    hp, wp = x.shape[2:]
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]


def _conv2d(node, x: np.ndarray) -> np.ndarray:
    weight = _arr(node.weight)
    if int(np.asarray(node.groups)) != 1:
        raise NotImplementedError("Conv2d with groups != 1")
    kh, kw = weight.shape[2:]
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    padding = _text(node.padding) if isinstance(node.padding, (str, bytes)) else node.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":  # torch: only stride 1; total = d·(k-1), split evenly
            totals = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
            if stride != (1, 1) or any(t % 2 for t in totals):
                raise NotImplementedError("padding='same' needs stride 1 and a symmetric split")
            padding = (totals[0] // 2, totals[1] // 2)
        else:
            raise ValueError(f"unknown padding {padding!r}")
    padding = _pair(padding)
    out = None
    for i, j, patch in _windows(x, (kh, kw), stride, padding, dilation):
        term = np.einsum("bchw,oc->bohw", patch, weight[:, :, i, j])
        out = term if out is None else out + term
    return out + _arr(node.bias)[None, :, None, None]


def _pool(node, x: np.ndarray, average: bool) -> np.ndarray:
    kernel = _pair(node.kernel_size)
    out = None
    for _, _, patch in _windows(x, kernel, _pair(node.stride), _pair(node.padding)):
        out = patch if out is None else out + patch
    return out / (kernel[0] * kernel[1]) if average else out


def _flatten(node, x: np.ndarray) -> np.ndarray:
    shape = x.shape[1:]  # per sample
    start = int(node.start_dim) % len(shape)
    end = int(node.end_dim) % len(shape)
    new = shape[:start] + (int(np.prod(shape[start : end + 1])),) + shape[end + 1 :]
    return x.reshape(x.shape[0], *new)


def _topological(graph) -> list[str]:
    indegree = {name: 0 for name in graph.nodes}
    successors = defaultdict(list)
    for src, dst in graph.edges:
        successors[src].append(dst)
        indegree[dst] += 1
    ready = deque(name for name, d in indegree.items() if d == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for nxt in successors[name]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(graph.nodes):
        raise NotImplementedError("recurrent (cyclic) graphs are not supported")
    return order


def simulate(graph, spikes, *, dt: float | None = None) -> Trace:
    """Runs ``graph`` over time on ``spikes``.

    Args:
      graph: a ``nir.NIRGraph`` (e.g. from ``nir.read``) with one Input and
        one Output node.
      spikes: input ``[T, *input_shape]`` (one sample) or
        ``[T, B, *input_shape]`` (a batch), channels first.
      dt: the Euler step; defaults to ``graph.metadata["dt"]``.

    Returns:
      A :class:`Trace`; ``output`` is ``[T, ...]`` or ``[T, B, ...]`` like
      the input.
    """
    import nir  # the tests skip without it

    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NotImplementedError("exactly one Input and one Output node are supported")
    if dt is None:
        if "dt" not in (graph.metadata or {}):
            raise ValueError("the graph's metadata has no dt: pass dt=")
        dt = float(graph.metadata["dt"])
    input_shape = tuple(int(n) for n in np.asarray(graph.nodes[inputs[0]].input_type["input"]))
    x_all = _arr(spikes)
    unbatched = x_all.ndim == 1 + len(input_shape)
    if unbatched:
        x_all = x_all[:, None]
    if x_all.shape[2:] != input_shape:
        raise ValueError(f"spikes must be [T, (B,) {input_shape}], got {np.shape(spikes)}")

    order = _topological(graph)
    predecessors = defaultdict(list)
    for src, dst in graph.edges:
        predecessors[dst].append(src)
    state: dict[str, np.ndarray] = {}
    record = defaultdict(list)
    membranes = defaultdict(list)

    for x_t in x_all:
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                values[name] = x_t
                record[name].append(x_t)
                continue
            srcs = predecessors[name]
            if not srcs:
                raise ValueError(f"node {name!r} has no input")
            x = values[srcs[0]]
            for src in srcs[1:]:
                x = x + values[src]
            values[name] = y = _step(node, name, x, state, membranes, dt, nir)
            record[name].append(y)

    def stack(seq):
        out = np.stack(seq)
        return out[:, 0] if unbatched else out

    nodes = {k: stack(v) for k, v in record.items()}
    return Trace(output=nodes[outputs[0]], nodes=nodes, membranes={k: stack(v) for k, v in membranes.items()})


def _step(node, name, x, state, membranes, dt, nir):
    if isinstance(node, nir.Output):
        return x
    if isinstance(node, nir.Affine):
        return x @ _arr(node.weight).T + _arr(node.bias)
    if isinstance(node, nir.Linear):
        return x @ _arr(node.weight).T
    if isinstance(node, nir.Scale):
        return x * _arr(node.scale)
    if isinstance(node, nir.Conv2d):
        return _conv2d(node, x)
    if isinstance(node, nir.AvgPool2d):
        return _pool(node, x, average=True)
    if isinstance(node, nir.SumPool2d):
        return _pool(node, x, average=False)
    if isinstance(node, nir.Flatten):
        return _flatten(node, x)
    if isinstance(node, nir.Threshold):
        return (x > _arr(node.threshold)).astype(np.float64)
    if isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.I)):
        v = state.get(name, np.zeros_like(x))
        if isinstance(node, (nir.LIF, nir.LI)):
            a = dt / _arr(node.tau)
            v = v + a * (_arr(node.v_leak) - v) + a * _arr(node.r) * x
        else:
            v = v + dt * _arr(node.r) * x
        if isinstance(node, (nir.LI, nir.I)):
            state[name] = v
            return v
        membranes[name].append(v)
        z = v > _arr(node.v_threshold)
        state[name] = np.where(z, _arr(node.v_reset), v)
        return z.astype(np.float64)
    raise NotImplementedError(f"node type {type(node).__name__} ({name!r}) is not simulated")
