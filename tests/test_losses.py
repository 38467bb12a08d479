"""snntorch's rate-coded losses: parity with golden values, masks, jit.

The fixture tests/fixtures/snntorch_losses.npz is written by
tests/fixtures/make_snntorch_loss_reference.py (torch + snntorch, dev-only);
these tests never import torch.

Tolerances. Inputs are float32 in both frameworks and the JAX code performs
snntorch's operations in its order, so the only differences are the
rounding of reductions (torch and XLA sum B, C and T elements in different
orders) and of fused elementwise steps: a few float32 ulps (eps = 1.2e-7;
the fixture's losses differ by at most 3 ulps, 2.2e-7 relative). Hence
rtol = 1e-6 (about 8 ulps) on the scalar losses, which are all of order 1.
A gradient entry is a difference (count - target, membrane - target,
softmax - one-hot) whose rounding error is relative to its operands, not to
the possibly much smaller difference; its operands are on the scale of the
gradient's largest entry, so each entry may also differ by 2e-6 of that
largest entry (16 ulps of it), on top of rtol = 1e-6. The worst case is
ce-count at T=25, whose softmax inputs are counts summed from 25 floats in
another order (ulps of ~12 apart): 5e-7 of the largest entry. Exact zeros
(non-peak steps of ce-max-membrane, met targets) must stay exact.
"""

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import snn
from spenser_jax.snn import loss as loss_lib

FIXTURE = np.load(Path(__file__).resolve().parent / "fixtures" / "snntorch_losses.npz")
NAMES = ("mse-count", "ce-count", "ce-rate", "mse-membrane", "ce-max-membrane")
# Each loss's keyword settings, as the fixture stores them.
SETTINGS = {
    "mse-count": ("correct_rate", "incorrect_rate"),
    "mse-membrane": ("on_target", "off_target"),
}
RTOL = 1e-6
GRAD_ATOL_OF_LARGEST = 2e-6


def _case(name, k):
    prefix = f"{name.replace('-', '_')}_{k}_"
    return {n[len(prefix) :]: FIXTURE[n] for n in FIXTURE.files if n.startswith(prefix)}


def _settings(name, case):
    return {key: float(case[key]) for key in SETTINGS.get(name, ())}


CASES = [(name, k) for name in NAMES for k in range(int(FIXTURE[f"{name.replace('-', '_')}_cases"]))]

# One compilation per (loss, settings, shape); mask None or an array.
_value_and_grad = jax.jit(
    lambda name, x, labels, mask, kw: jax.value_and_grad(lambda x: snn.LOSSES[name](x, labels, mask=mask, **dict(kw)))(
        x
    ),
    static_argnames=("name", "kw"),
)


def value_and_grad(name, x, labels, mask=None, **kw):
    return _value_and_grad(name, x, labels, mask, tuple(sorted(kw.items())))


def assert_grad_close(grad, expected):
    expected = np.asarray(expected)
    atol = GRAD_ATOL_OF_LARGEST * np.abs(expected).max()
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=atol)


# --- snntorch parity ---------------------------------------------------------


def test_fixture_records_versions_and_covers_every_loss():
    assert str(FIXTURE["snntorch_version"]) == "1.0.0"
    assert str(FIXTURE["torch_version"]).startswith("2.13.0")
    assert set(snn.LOSSES) == set(NAMES)
    assert {name for name, _ in CASES} == set(NAMES)


@pytest.mark.parametrize("name, k", CASES)
def test_loss_matches_snntorch(name, k):
    case = _case(name, k)
    assert case["input"].dtype == np.float32 and case["input"].shape[-1] == 10
    value, grad = value_and_grad(name, case["input"], case["labels"], **_settings(name, case))
    np.testing.assert_allclose(value, case["value"], rtol=RTOL, atol=0)
    assert_grad_close(grad, case["grad"])
    np.testing.assert_array_equal(np.asarray(grad) == 0, case["grad"] == 0)


def test_count_targets_truncate_in_float64_like_snntorch():
    differs = []
    for k in range(int(FIXTURE["mse_count_cases"])):
        case = _case("mse-count", k)
        steps = case["input"].shape[0]
        rates = float(case["correct_rate"]), float(case["incorrect_rate"])
        assert snn.count_targets(steps, *rates) == (int(case["on"]), int(case["off"]))
        on32 = int(np.float32(steps) * np.float32(rates[0]))
        differs.append(on32 != int(case["on"]))
    # The fixture holds cases where float32 on a device would truncate to
    # another count (T=50, rate 0.58; T=10, the float64 below 0.7).
    assert sum(differs) == 2


def test_float32_targets_would_miss_snntorch():
    # Why callers compute the counts on the host: a traced float32 rate
    # truncated on the device gives another target, and a visibly different
    # loss, on those cases.
    core = jax.jit(snn.mse_count_loss_targets)
    missed = 0
    for k in range(int(FIXTURE["mse_count_cases"])):
        case = _case("mse-count", k)
        # IEEE float32, as on any device.
        steps = np.float32(case["input"].shape[0])
        on32 = np.floor(steps * np.float32(case["correct_rate"]))
        if int(on32) == int(case["on"]):
            continue
        missed += 1
        wrong = core(case["input"], case["labels"], on32, np.float32(case["off"]))
        assert abs(float(wrong) - float(case["value"])) > 100 * RTOL * case["value"]
    assert missed == 2


def test_max_membrane_gradient_goes_to_the_first_peak_only():
    # The fixture's tie case has outputs peaking at several steps; torch.max
    # sends the gradient to the first of them, jnp.max would split it.
    case = _case("ce-max-membrane", 2)
    mem, labels = case["input"], case["labels"]
    assert ((mem == mem.max(0, keepdims=True)).sum(0) > 1).sum() > 5
    _, grad = value_and_grad("ce-max-membrane", mem, labels)
    np.testing.assert_array_equal(np.asarray(grad) != 0, case["grad"] != 0)
    assert np.all(np.count_nonzero(np.asarray(grad), axis=0) <= 1)

    def split_ties(m):
        peak = jnp.max(m, axis=0)
        nll = -jax.nn.log_softmax(peak)[jnp.arange(len(labels)), labels]
        return jnp.mean(nll)

    split = jax.jit(jax.grad(split_ties))(mem)
    assert np.abs(np.asarray(split) - case["grad"]).max() > 1e-3


def test_mse_membrane_keeps_snntorch_clamp_of_negative_off_target():
    # off < 0 and off < on: snntorch's clamp(one_hot * on, min=off) gives
    # the other classes a target of 0, not off. With on < off it does not
    # clamp.
    labels = np.array([1, 0], np.int32)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    # The targets may be traced too: one compilation for all three.
    loss_jit = jax.jit(snn.mse_membrane_loss)

    def loss(on_label, off_label, on, off):
        mem = np.broadcast_to(on_label * one_hot + off_label * (1 - one_hot), (4, 2, 3))
        return float(loss_jit(mem, labels, np.float32(on), np.float32(off)))

    assert loss(2.0, 0.0, on=2.0, off=-0.5) == 0
    assert loss(2.0, -0.5, on=2.0, off=-0.5) > 0
    assert loss(-0.5, 1.5, on=-0.5, off=1.5) == 0


def test_ce_rate_averages_per_step_losses_over_time():
    # Label 0 fires at step 0, class 1 at step 1: ce-rate is the mean of the
    # two steps' cross entropies, ln(1 + 1/e) and ln(1 + e); ce-count sees
    # tied counts, ln 2.
    spikes = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], np.float32)
    labels = np.array([0], np.int32)
    rate = value_and_grad("ce-rate", spikes, labels)[0]
    np.testing.assert_allclose(rate, (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(1.0))) / 2, rtol=RTOL)
    count = value_and_grad("ce-count", spikes, labels)[0]
    np.testing.assert_allclose(count, np.log(2.0), rtol=RTOL)


# --- targets core ------------------------------------------------------------


def test_targets_core_with_traced_counts_equals_the_python_path():
    traces = []

    def core(spikes, labels, on, off, mask):
        traces.append(None)
        return jax.value_and_grad(snn.mse_count_loss_targets)(spikes, labels, on, off, mask)

    core_jit = jax.jit(core)
    spikes, labels = _case("mse-count", 1)["input"], _case("mse-count", 1)["labels"]
    mask = np.array([1, 0, 1, 1], np.float32)
    for rates in ((1.0, 0.0), (0.8, 0.2)):
        on, off = snn.count_targets(spikes.shape[0], *rates)
        kw = dict(correct_rate=rates[0], incorrect_rate=rates[1])
        for m in (None, mask):
            want = value_and_grad("mse-count", spikes, labels, m, **kw)
            for dtype in (jnp.float32, jnp.int32):
                got = core_jit(spikes, labels, jnp.asarray(on, dtype), jnp.asarray(off, dtype), m)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
    # Traced counts: one compilation per (dtype, mask or not), not per rate.
    assert len(traces) == 4


# --- masks ---------------------------------------------------------------------


def _padded_batch(name, seed=0):
    """3 real samples and 2 of padding, interleaved; T=7, C=10."""
    rng = np.random.default_rng(seed)
    if name in snn.MEMBRANE_LOSSES:
        padded = (0.3 + rng.standard_normal((7, 5, 10))).astype(np.float32)
    else:
        padded = rng.random((7, 5, 10), dtype=np.float32)
    padded_labels = rng.integers(0, 10, 5).astype(np.int32)
    mask = np.array([1, 0, 1, 1, 0], np.float32)
    kept = mask == 1
    return padded[:, kept], padded_labels[kept], padded, padded_labels, mask


# Non-default mse-count rates, so that the mask meets on != T and off != 0.
MASK_SETTINGS = {"mse-count": dict(correct_rate=0.8, incorrect_rate=0.2)}


@pytest.mark.parametrize("name", NAMES)
def test_mask_keeps_only_the_real_samples(name):
    outputs, labels, padded, padded_labels, mask = _padded_batch(name)
    kw = MASK_SETTINGS.get(name, {})
    value, grad = value_and_grad(name, outputs, labels, **kw)
    value_p, grad_p = value_and_grad(name, padded, padded_labels, mask, **kw)
    np.testing.assert_allclose(value_p, value, rtol=RTOL, atol=0)
    kept = mask == 1
    assert_grad_close(np.asarray(grad_p)[:, kept], grad)
    assert np.all(np.asarray(grad_p)[:, ~kept] == 0)
    # Without the mask (all ones: the same compiled function) the padding
    # would count.
    everything = value_and_grad(name, padded, padded_labels, np.ones_like(mask), **kw)
    assert abs(float(everything[0]) - float(value)) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_all_padding_batch_gives_zero_loss_and_finite_gradient(name):
    _, _, padded, padded_labels, mask = _padded_batch(name, seed=1)
    kw = MASK_SETTINGS.get(name, {})
    value, grad = value_and_grad(name, padded, padded_labels, 0 * mask, **kw)
    assert float(value) == 0
    assert np.all(np.asarray(grad) == 0)


# --- registry and shapes ---------------------------------------------------------


def test_registry_names_and_membrane_losses():
    assert snn.MEMBRANE_LOSSES < set(snn.LOSSES)
    # The registry says what each loss reads: membrane losses take membranes first.
    for name, fn in snn.LOSSES.items():
        first = next(iter(inspect.signature(fn).parameters))
        assert first == ("membranes" if name in snn.MEMBRANE_LOSSES else "spikes"), name
    assert snn.LOSSES["mse-count"] is snn.mse_count_loss
    assert loss_lib.LOSSES is snn.LOSSES


@pytest.mark.parametrize("name", NAMES)
def test_losses_reject_bad_shapes(name):
    fn = snn.LOSSES[name]
    what = "membranes" if name in snn.MEMBRANE_LOSSES else "spikes"
    with pytest.raises(ValueError, match=rf"{what} must be time-major \[T, B, C\]"):
        fn(np.ones((3, 4)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="labels must have shape"):
        fn(np.ones((2, 3, 4)), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="mask must have shape"):
        fn(np.ones((2, 3, 4)), np.zeros(3, np.int32), mask=np.ones(2))
