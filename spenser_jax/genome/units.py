"""The units a phenotype is made of: layers, learning units and loss units.

Each is a typed, frozen, hashable dataclass (:class:`Conv`, :class:`Pool`,
..., :class:`Adam`, ..., :class:`MSECount`, ...) whose ``tag`` names it in the
text form of the original SPENSER code and whose ``keys`` list its genes as
``(text key, field, type)``. :func:`unit_text` writes a unit's tokens (floats
with ``repr``, so they round-trip bit for bit) and :func:`unit_from_text`
reads them back.

Of a learning unit, only its kind and boolean genes shape a compiled program
(:class:`OptimizerKey`, from :func:`static_key`); its float genes
(:func:`float_hparams`) may be traced arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from spenser_jax.errors import SpenserError


class InvalidPhenotype(SpenserError, ValueError):
    """The phenotype cannot be built as a network (bad tokens or shapes)."""


def _fmt(value: Any) -> str:
    # repr() is the shortest string that round-trips a float exactly; str()
    # of a bool gives the original's ``True``/``False``.
    return repr(value) if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Conv:
    filters: int
    kernel: int
    stride: int
    padding: str  # "same" | "valid"
    bias: bool

    tag: ClassVar[str] = "conv"
    keys: ClassVar[tuple] = (
        ("num-filters", "filters", int),
        ("filter-shape", "kernel", int),
        ("stride", "stride", int),
        ("padding", "padding", str),
        ("bias", "bias", bool),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    kind: str  # "max" | "avg"
    kernel: int

    tag: ClassVar[str] = "pool"
    keys: ClassVar[tuple] = (("kernel-size", "kernel", int),)


@dataclasses.dataclass(frozen=True, slots=True)
class NoOp:
    """``layer:no-op``: the grammar's "no pooling"; kept so text round-trips."""

    tag: ClassVar[str] = "no-op"
    keys: ClassVar[tuple] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Dropout:
    rate: float

    tag: ClassVar[str] = "dropout"
    keys: ClassVar[tuple] = (("rate", "rate", float),)


@dataclasses.dataclass(frozen=True, slots=True)
class Dense:
    units: int
    bias: bool

    tag: ClassVar[str] = "fc"
    keys: ClassVar[tuple] = (("num-units", "units", int), ("bias", "bias", bool))


@dataclasses.dataclass(frozen=True, slots=True)
class LIF:
    beta: float
    beta_trainable: bool
    threshold: float
    threshold_trainable: bool
    surrogate: str  # "atan" | "fast-sigmoid"
    reset: str  # "subtract" | "zero"

    tag: ClassVar[str] = "act"
    keys: ClassVar[tuple] = (
        ("beta", "beta", float),
        ("beta-trainable", "beta_trainable", bool),
        ("threshold", "threshold", float),
        ("threshold-trainable", "threshold_trainable", bool),
        ("surr-grad", "surrogate", str),
        ("reset", "reset", str),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SGD:
    lr: float
    momentum: float
    decay: float
    nesterov: bool

    tag: ClassVar[str] = "gradient-descent"
    keys: ClassVar[tuple] = (
        ("lr", "lr", float),
        ("momentum", "momentum", float),
        ("decay", "decay", float),
        ("nesterov", "nesterov", bool),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Adam:
    lr: float
    beta1: float
    beta2: float
    decay: float
    amsgrad: bool

    tag: ClassVar[str] = "adam"
    keys: ClassVar[tuple] = (
        ("lr", "lr", float),
        ("beta1", "beta1", float),
        ("beta2", "beta2", float),
        ("decay", "decay", float),
        ("amsgrad", "amsgrad", bool),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RMSProp:
    lr: float
    rho: float
    decay: float

    tag: ClassVar[str] = "rmsprop"
    keys: ClassVar[tuple] = (
        ("lr", "lr", float),
        ("rho", "rho", float),
        ("decay", "decay", float),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MSECount:
    """snntorch's ``mse_count_loss``: target counts ``int(T * rate)``."""

    correct_rate: float
    incorrect_rate: float

    tag: ClassVar[str] = "mse-count"
    keys: ClassVar[tuple] = (("correct-rate", "correct_rate", float), ("incorrect-rate", "incorrect_rate", float))


@dataclasses.dataclass(frozen=True, slots=True)
class CECount:
    """snntorch's ``ce_count_loss``: cross entropy of the spike counts."""

    tag: ClassVar[str] = "ce-count"
    keys: ClassVar[tuple] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CERate:
    """snntorch's ``ce_rate_loss``: cross entropy at every step, averaged."""

    tag: ClassVar[str] = "ce-rate"
    keys: ClassVar[tuple] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class MSEMembrane:
    """snntorch's ``mse_membrane_loss``: the output membrane against fixed targets."""

    on_target: float
    off_target: float

    tag: ClassVar[str] = "mse-membrane"
    keys: ClassVar[tuple] = (("on-target", "on_target", float), ("off-target", "off_target", float))


@dataclasses.dataclass(frozen=True, slots=True)
class CEMaxMembrane:
    """snntorch's ``ce_max_membrane_loss``: cross entropy of each output's peak membrane."""

    tag: ClassVar[str] = "ce-max-membrane"
    keys: ClassVar[tuple] = ()


Layer = Conv | Pool | NoOp | Dropout | Dense | LIF
Optimizer = SGD | Adam | RMSProp
Loss = MSECount | CECount | CERate | MSEMembrane | CEMaxMembrane

_LAYER_TAGS = {
    "conv": Conv,
    "pool-max": Pool,
    "pool-avg": Pool,
    "no-op": NoOp,
    "dropout": Dropout,
    "fc": Dense,
    "act": LIF,
}
_OPTIMIZER_TAGS = {cls.tag: cls for cls in (SGD, Adam, RMSProp)}
_LOSS_TAGS = {cls.tag: cls for cls in (MSECount, CECount, CERate, MSEMembrane, CEMaxMembrane)}
LOSS_TAGS = tuple(_LOSS_TAGS)
#: What ``layer:``, ``learning:`` and ``loss:`` may name.
TAGS = {"layer": tuple(_LAYER_TAGS), "learning": tuple(_OPTIMIZER_TAGS), "loss": LOSS_TAGS}
_CHOICES = {"padding": ("same", "valid"), "surrogate": ("atan", "fast-sigmoid"), "reset": ("subtract", "zero")}


def tag_of(item: Any) -> str:
    """The tag that names ``item`` in the text form (``pool-max``, ``adam``, ...); a signature slot's class name."""
    return f"pool-{item.kind}" if isinstance(item, Pool) else getattr(item, "tag", type(item).__name__)


def unit_text(head: str, item: Layer | Optimizer) -> str:
    """``item`` as tokens of the text form, after ``head:`` (``layer``, ``learning`` or ``loss``)."""
    tokens = [f"{head}:{tag_of(item)}"]
    tokens += [f"{key}:{_fmt(getattr(item, attr))}" for key, attr, _ in item.keys]
    return " ".join(tokens)


def _convert(key: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw not in ("True", "False"):
                raise ValueError
            return raw == "True"
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise InvalidPhenotype(f"{key}:{raw} is not a valid {kind.__name__}") from None


def unit_from_text(head: str, tag: str, fields: dict[str, str]) -> Layer | Optimizer | Loss:
    """The unit ``head:tag`` with the gene tokens ``fields`` (key -> text value).

    Raises:
      InvalidPhenotype: an unknown tag, missing or unexpected keys, or a
        malformed or disallowed value.
    """
    table = {"layer": _LAYER_TAGS, "learning": _OPTIMIZER_TAGS, "loss": _LOSS_TAGS}[head]
    if tag not in table:
        raise InvalidPhenotype(f"unknown {head} type {tag!r} (known: {sorted(table)})")
    cls = table[tag]
    expected = {key for key, _, _ in cls.keys}
    if set(fields) != expected:
        missing = sorted(expected - set(fields))
        extra = sorted(set(fields) - expected)
        raise InvalidPhenotype(
            f"{tag}: missing keys {missing}, unexpected keys {extra}" if missing or extra else f"{tag}: bad keys"
        )
    kwargs = {attr: _convert(key, fields[key], kind) for key, attr, kind in cls.keys}
    for attr, allowed in _CHOICES.items():
        if attr in kwargs and kwargs[attr] not in allowed:
            raise InvalidPhenotype(f"{tag}: {attr} must be one of {allowed}, got {kwargs[attr]!r}")
    if cls is Pool:
        kwargs["kind"] = tag.split("-")[1]
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True, slots=True)
class OptimizerKey:
    """What fixes an optimizer's program: its ``kind`` (tag) and boolean genes ``flags``, in key order.

    Two learning units with equal keys build the same computation; their float
    genes are passed as (possibly traced) ``hparams``.
    """

    kind: str
    flags: tuple[tuple[str, bool], ...]

    @property
    def float_names(self) -> tuple[str, ...]:
        """Names of the float genes ``make_optimizer`` needs with this key."""
        return tuple(attr for _, attr, kind in _OPTIMIZER_TAGS[self.kind].keys if kind is float)


def float_hparams(spec: Optimizer) -> dict[str, float]:
    """The float genes of a learning unit, by field name (e.g. ``lr``, ``rho``)."""
    _check_spec(spec)
    return {attr: getattr(spec, attr) for _, attr, kind in spec.keys if kind is float}


def static_key(spec: Optimizer) -> OptimizerKey:
    """The :class:`OptimizerKey` of a learning unit."""
    _check_spec(spec)
    flags = tuple((attr, getattr(spec, attr)) for _, attr, kind in spec.keys if kind is bool)
    return OptimizerKey(spec.tag, flags)


def _check_spec(spec: Any) -> None:
    if type(spec) not in _OPTIMIZER_TAGS.values():
        known = ", ".join(cls.__name__ for cls in _OPTIMIZER_TAGS.values())
        raise TypeError(f"not a learning unit: {spec!r} (expected one of {known} from spenser_jax.genome.units)")
