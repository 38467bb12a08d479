"""The exported NIR graph rewritten for each NIR reader, so that the reader runs it as we do.

:func:`spenser_jax.snn.nir_graph.to_nir` writes a graph that is exact under
NIR's own semantics (forward Euler at ``metadata["dt"]``, ``r`` honoured,
reset to ``v_reset``). The readers do not all follow those semantics: each
reader here is described by a :class:`Reader`, written from its importer's
source in the named release, and :func:`for_reader` turns our graph into one
that reader runs with our spikes, by transformations that leave the graph's
NIR semantics unchanged (so the rewritten graph is still exact NIR), or
refuses (:class:`ReaderRefusal`, one reason per node) where the reader has
no form for a node. The transformations, each a pure function:

* :func:`retime`: the same dynamics at another step. Euler's coefficients
  are ``dt/tau`` (LIF) and ``dt·r`` (IF), so ``tau' = tau·dt'/dt`` and
  ``r'_IF = r·dt/dt'`` (and ``r' = r`` for a LIF) change nothing but the
  step a reader that ignores the metadata assumes.
* :func:`fold_r`: ``r`` folded into the weighted node before each LIF, for
  readers that assume ``r = 1``: ``r·(W x + b) = (r W) x + r b``, then
  ``r = 1``. Average and sum pools and flattens between the two are linear,
  so the factor passes through them.
* :func:`sum_pools`: ``AvgPool2d`` as ``SumPool2d`` with ``1/k²`` folded
  into the weighted node before it (or into the weights after it).
* :func:`affine_linears`: ``Linear`` as ``Affine`` with a zero bias.

The folded weights are float64 (``r`` is), so the rewritten graph's
semantics equal the original's to float64 rounding; a float32 reader rounds
both alike. docs/export.md has the table of what each reader assumes and how
far it agrees, as measured by benchmarks/nir_readers.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from spenser_jax.errors import SpenserError

_RESET_SUBTRACT = "resets by subtraction (U - θ), so our reset:zero has no form there"

#: The weighted nodes a factor can be folded into, and what passes a factor through unchanged.
_WEIGHTED = ("Conv2d", "Affine", "Linear")
_LINEAR = ("AvgPool2d", "SumPool2d", "Flatten")


@dataclasses.dataclass(frozen=True)
class Reader:
    """What one reader's NIR import assumes, and how :func:`for_reader` meets it.

    Attributes:
      name: the ``--for`` name (the package).
      version: the release whose importer these rules were read from.
      entry: how to import a graph with it.
      dt: the step its importer integrates at whatever the metadata says
        (``None``: the graph's own ``dt`` is honoured or passed by the user).
      fold_r: it assumes ``r = 1`` (:func:`fold_r`).
      sum_pool: it has no ``AvgPool2d`` (:func:`sum_pools`).
      affine: it has no ``Linear`` (:func:`affine_linears`).
      refuse: ``(NIR node type, why)`` for each node it cannot run as NIR means it.
    """

    name: str
    version: str
    entry: str
    dt: float | None = None
    fold_r: bool = False
    sum_pool: bool = False
    affine: bool = False
    refuse: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader("nir", "1.0.8", "nir.read(path)"),
        Reader(
            "snntorch",
            "1.0.0",
            "snntorch.import_nir.import_from_nir(nir.read(path))",
            dt=1e-4,
            refuse=(
                (
                    "IF",
                    "β = 1 is a nir.IF node, which snntorch 1.0.0 imports only with r = 1, "
                    "and then as Leaky(beta=0.9) with a subtractive reset",
                ),
            ),
        ),
        Reader(
            "norse",
            "1.1.0",
            "norse.torch.from_nir(nir.read(path))",
            dt=1e-3,
            fold_r=True,
            sum_pool=True,
        ),
        Reader(
            "spyx",
            "1.0.0",
            "spyx.nir.from_nir(nir.read(path), x, dt=metadata['dt'])",
            sum_pool=True,
            refuse=(
                ("LIF", f"spyx 1.0.0's LIF spikes on the previous step's membrane and {_RESET_SUBTRACT}"),
                ("IF", f"spyx 1.0.0's IF spikes on the previous step's membrane and {_RESET_SUBTRACT}"),
                (
                    "Flatten",
                    "spyx 1.0.0 runs maps channels-last and flattens them in (H, W, C) order, NIR's Flatten "
                    "in (C, H, W) order",
                ),
            ),
        ),
        Reader(
            "sinabs",
            "3.1.3",
            "sinabs.from_nir(nir.read(path), batch_size=B)",
            sum_pool=True,
            affine=True,
            refuse=(
                (
                    "LIF",
                    "sinabs 3.1.3 pins nir <= 1.0.4, whose LIF has no v_reset and resets by subtraction; "
                    "sinabs imports it as LIFSqueeze with MultiSpike (several spikes a step) and "
                    f"MembraneSubtract: it {_RESET_SUBTRACT}",
                ),
                (
                    "IF",
                    "sinabs 3.1.3 imports nir.IF as IAFSqueeze with MultiSpike and MembraneSubtract: it "
                    + _RESET_SUBTRACT,
                ),
            ),
        ),
        Reader(
            "rockpool",
            "3.1.0",
            "rockpool.nn.modules.from_nir(nir.read(path))",
            refuse=tuple(
                (kind, f"rockpool 3.1.0's from_nir has no {kind} mapping (NotImplementedError)")
                for kind in ("Conv2d", "AvgPool2d", "Flatten", "IF")
            )
            + (
                (
                    "LIF",
                    "rockpool 3.1.0 imports nir.LIF reading a tau_mem field that nir.LIF does not have "
                    f"(AttributeError), and its LIF neurons emit several spikes a step; each {_RESET_SUBTRACT}",
                ),
            ),
        ),
    )
}


class ReaderRefusal(SpenserError, ValueError):
    """A reader cannot run the graph as NIR means it.

    Attributes:
      reader: the :class:`Reader`.
      problems: ``{node name: why}``, in the graph's node order.
    """

    def __init__(self, reader: Reader, problems: Mapping[str, str]):
        self.reader = reader
        self.problems = dict(problems)
        super().__init__(
            f"{reader.label} cannot run it as NIR means it: "
            + "; ".join(f"node {k}: {v}" for k, v in self.problems.items())
        )


def _kind(node) -> str:
    return type(node).__name__


def _graph(graph, nodes: Mapping, metadata: Mapping | None = None):
    import nir

    return nir.NIRGraph(
        nodes=dict(nodes), edges=list(graph.edges), metadata=dict(graph.metadata if metadata is None else metadata)
    )


def _neighbours(graph) -> tuple[dict, dict]:
    before, after = {}, {}
    for src, dst in graph.edges:
        before.setdefault(dst, []).append(src)
        after.setdefault(src, []).append(dst)
    return before, after


def _scalar(values, name: str, field: str) -> float:
    flat = np.unique(np.asarray(values, np.float64))
    if flat.size != 1:
        raise ValueError(f"node {name}: {field} differs between neurons, so it cannot be folded into weights")
    return float(flat[0])


def _scale(node, factor: float, bias: bool):
    """``node`` (Conv2d, Affine or Linear) with its weight, and its bias if ``bias``, times ``factor``."""
    changes = {"weight": np.asarray(node.weight, np.float64) * factor}
    if bias and hasattr(node, "bias"):
        changes["bias"] = np.asarray(node.bias, np.float64) * factor
    return dataclasses.replace(node, **changes)


def _fold(graph, nodes: dict, name: str, factor: float, *, upstream: bool) -> str | None:
    """Multiplies the output of ``name``'s input (upstream) or the input of its consumer by ``factor``.

    Walks through pools and flattens to the nearest weighted node; upstream
    it scales weight and bias (the node's whole output), downstream the
    weight only (the factor multiplies what enters it). Every node on the
    way must have one input and one consumer, or the factor would reach
    other paths. Returns why it cannot, or ``None`` once done (``nodes`` updated).
    """
    before, after = _neighbours(graph)
    step = before if upstream else after
    current = name
    while True:
        nxt = step.get(current, [])
        if len(nxt) != 1:
            return "it has several inputs or consumers"
        current = nxt[0]
        kind = _kind(nodes[current])
        if kind not in _WEIGHTED + _LINEAR:
            return f"no weighted node lies {'before' if upstream else 'after'} it (the nearest is {current}, {kind})"
        if len(before.get(current, [])) != 1 or len(after.get(current, [])) != 1:
            return f"node {current} has several inputs or consumers"
        if kind in _WEIGHTED:
            nodes[current] = _scale(nodes[current], factor, bias=upstream)
            return None


def retime(graph, dt: float):
    """``graph`` at step ``dt`` with the same Euler dynamics (see the module doc)."""
    old = float(graph.metadata["dt"])
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if dt == old:
        return _graph(graph, graph.nodes)
    nodes = {}
    for name, node in graph.nodes.items():
        if _kind(node) == "LIF":
            node = dataclasses.replace(node, tau=np.asarray(node.tau, np.float64) * (dt / old))
        elif _kind(node) == "IF":
            node = dataclasses.replace(node, r=np.asarray(node.r, np.float64) * (old / dt))
        nodes[name] = node
    return _graph(graph, nodes, {**graph.metadata, "dt": float(dt)})


def fold_r(graph):
    """Every LIF's ``r`` folded into the weighted node before it, then ``r = 1``.

    Raises:
      ReaderRefusal: naming each LIF whose ``r`` cannot be folded (no
        weighted node before it, a branch, per-neuron ``r``); its reader is ``nir``.
    """
    nodes, problems = dict(graph.nodes), {}
    for name, node in graph.nodes.items():
        if _kind(node) != "LIF":
            continue
        try:
            r = _scalar(node.r, name, "r")
        except ValueError as err:
            problems[name] = str(err)
            continue
        if r != 1.0:
            why = _fold(graph, nodes, name, r, upstream=True)
            if why is not None:
                problems[name] = f"r = {r:g} cannot be folded into weights: {why}"
                continue
        nodes[name] = dataclasses.replace(node, r=np.ones_like(np.asarray(node.r, np.float64)))
    if problems:
        raise ReaderRefusal(READERS["nir"], problems)
    return _graph(graph, nodes)


def sum_pools(graph):
    """Every ``AvgPool2d`` as a ``SumPool2d``, its ``1/k²`` folded into a weighted neighbour.

    Raises:
      ReaderRefusal: naming each pool with no weighted node to fold into.
    """
    import nir

    nodes, problems = dict(graph.nodes), {}
    for name, node in graph.nodes.items():
        if _kind(node) != "AvgPool2d":
            continue
        k = np.asarray(node.kernel_size, np.float64).reshape(-1)
        factor = 1.0 / (k[0] * k[0] if k.size == 1 else k[0] * k[1])
        why = _fold(graph, nodes, name, factor, upstream=True)
        if why is not None and _fold(graph, nodes, name, factor, upstream=False) is not None:
            problems[name] = f"its 1/k² cannot be folded into weights: {why}"
            continue
        nodes[name] = nir.SumPool2d(kernel_size=node.kernel_size, stride=node.stride, padding=node.padding)
    if problems:
        raise ReaderRefusal(READERS["nir"], problems)
    return _graph(graph, nodes)


def affine_linears(graph):
    """Every ``Linear`` as an ``Affine`` with a zero bias."""
    import nir

    nodes = {
        name: nir.Affine(weight=node.weight, bias=np.zeros(np.asarray(node.weight).shape[0], np.float32))
        if _kind(node) == "Linear"
        else node
        for name, node in graph.nodes.items()
    }
    return _graph(graph, nodes)


def refusals(graph, reader: Reader) -> dict[str, str]:
    """``{node: why}`` for every node of ``graph`` that ``reader`` cannot run (empty: none)."""
    why = dict(reader.refuse)
    return {name: why[_kind(node)] for name, node in graph.nodes.items() if _kind(node) in why}


def for_reader(graph, reader: str):
    """``graph`` rewritten so that ``reader`` runs it with our spikes (see the module doc).

    ``reader="nir"`` returns ``graph`` itself. Otherwise the result is a new
    graph, exact under NIR's semantics too, whose metadata names the reader
    (``reader``, ``reader_version``).

    Raises:
      ValueError: an unknown reader.
      ReaderRefusal: nodes the reader cannot run, each with its reason.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
    spec = READERS[reader]
    if reader == "nir":
        return graph
    problems = refusals(graph, spec)
    if problems:
        raise ReaderRefusal(spec, problems)
    try:
        if spec.dt is not None:
            graph = retime(graph, spec.dt)
        if spec.sum_pool:
            graph = sum_pools(graph)
        if spec.fold_r:
            graph = fold_r(graph)
        if spec.affine:
            graph = affine_linears(graph)
    except ReaderRefusal as err:
        raise ReaderRefusal(spec, err.problems) from None
    return _graph(graph, graph.nodes, {**graph.metadata, "reader": spec.name, "reader_version": spec.version})
