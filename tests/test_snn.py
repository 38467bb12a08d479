"""Spiking primitives: snntorch parity (from a fixture) and properties.

The fixture tests/fixtures/snntorch_lif.npz is written by
tests/fixtures/make_snntorch_reference.py (torch + snntorch, dev-only);
these tests never import torch.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import snn

FIXTURE = np.load(Path(__file__).resolve().parent / "fixtures" / "snntorch_lif.npz")
NUM_LIF = len(FIXTURE["lif_reset"])
NUM_LOSS = len(FIXTURE["loss_value"])
TOL = dict(rtol=1e-5, atol=1e-5)


def spike_fn_for(name):
    return snn.SURROGATES[name]()


def _objective(currents, beta, threshold, w1, w2, reset, spike_fn):
    spikes, mems = snn.lif_sequence(currents, beta, threshold, reset=reset, spike_fn=spike_fn)
    return jnp.sum(w1 * spikes) + jnp.sum(w2 * mems), (spikes, mems)


_loss_and_grad = jax.jit(
    jax.value_and_grad(snn.mse_count_loss),
    static_argnames=("correct_rate", "incorrect_rate"),
)

# One compilation per (reset, surrogate): the spike functions are cached.
_objective_grads = jax.jit(
    jax.value_and_grad(_objective, argnums=(0, 1, 2), has_aux=True),
    static_argnames=("reset", "spike_fn"),
)


# --- snntorch parity ---------------------------------------------------------


def test_fixture_records_versions():
    assert str(FIXTURE["snntorch_version"]) == "1.0.0"
    assert str(FIXTURE["torch_version"]).startswith("2.13.0")


@pytest.mark.parametrize("k", range(NUM_LIF))
def test_lif_sequence_matches_snntorch_leaky(k):
    f = {n[4:]: FIXTURE[n][k] for n in FIXTURE.files if n.startswith("lif_")}
    (_, (spikes, mems)), (g_cur, g_beta, g_thr) = _objective_grads(
        f["currents"],
        jnp.float32(f["beta"]),
        jnp.float32(f["threshold"]),
        f["w1"],
        f["w2"],
        reset=str(f["reset"]),
        spike_fn=spike_fn_for(str(f["surrogate"])),
    )
    np.testing.assert_array_equal(spikes, f["spikes"])
    np.testing.assert_allclose(mems, f["membranes"], **TOL)
    np.testing.assert_allclose(g_cur, f["grad_currents"], **TOL)
    np.testing.assert_allclose(g_beta, f["grad_beta"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g_thr, f["grad_threshold"], rtol=1e-5, atol=1e-4)


def test_fixture_covers_clamp_edges_with_gradients():
    # Guards the fixture itself: beta == 1 must carry a gradient (torch's
    # clamp is inclusive; jnp.clip would halve it), beta outside [0, 1] none.
    beta, g = FIXTURE["lif_beta"], FIXTURE["lif_grad_beta"]
    assert np.all(g[beta == 1.0] != 0)
    assert np.all(g[(beta > 1) | (beta < 0)] == 0)


def test_lif_step_loop_matches_lif_sequence():
    k = 1
    currents = FIXTURE["lif_currents"][k]
    beta, thr = FIXTURE["lif_beta"][k], FIXTURE["lif_threshold"][k]
    spike_fn = spike_fn_for(str(FIXTURE["lif_surrogate"][k]))
    reset = str(FIXTURE["lif_reset"][k])
    mem = jnp.zeros(currents.shape[1:])
    for t in range(currents.shape[0]):
        mem, spike = snn.lif_step(mem, currents[t], beta, thr, reset=reset, spike_fn=spike_fn)
        np.testing.assert_array_equal(spike, FIXTURE["lif_spikes"][k, t])
        np.testing.assert_allclose(mem, FIXTURE["lif_membranes"][k, t], **TOL)


@pytest.mark.parametrize("k", range(NUM_LOSS))
def test_mse_count_loss_matches_snntorch(k):
    spikes, labels = FIXTURE["loss_spikes"][k], FIXTURE["loss_labels"][k]
    rates = dict(
        correct_rate=float(FIXTURE["loss_correct_rate"][k]),
        incorrect_rate=float(FIXTURE["loss_incorrect_rate"][k]),
    )
    value, grad = _loss_and_grad(spikes, labels, **rates)
    np.testing.assert_allclose(value, FIXTURE["loss_value"][k], **TOL)
    np.testing.assert_allclose(grad, FIXTURE["loss_grad"][k], **TOL)


def test_accuracy_matches_snntorch_on_ties():
    spikes, labels = FIXTURE["acc_spikes"], FIXTURE["acc_labels"]
    np.testing.assert_array_equal(snn.spike_count_predictions(spikes), FIXTURE["acc_predictions"])
    np.testing.assert_allclose(snn.spike_count_accuracy(spikes, labels), FIXTURE["acc_value"], rtol=1e-6)
    assert int(snn.correct_count(spikes, labels)) == round(float(FIXTURE["acc_value"]) * len(labels))


# --- surrogates --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(snn.SURROGATES))
def test_spike_forward_is_strict_and_keeps_dtype(name):
    spike = spike_fn_for(name)
    for dtype in (jnp.float32, jnp.bfloat16):
        x = jnp.array([-1.0, -1e-3, 0.0, 1e-3, 2.0], dtype)
        out = spike(x)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, [0, 0, 0, 1, 1])


def test_surrogate_gradients_follow_their_formulas():
    x = jnp.array([-0.7, -0.05, 0.0, 0.05, 0.7])
    g_atan = jax.grad(lambda x: jnp.sum(snn.atan(3.0)(x)))(x)
    np.testing.assert_allclose(g_atan, 1.5 / (1 + (np.pi * 3.0 * x / 2) ** 2), 1e-6)
    g_fs = jax.grad(lambda x: jnp.sum(snn.fast_sigmoid(10)(x)))(x)
    np.testing.assert_allclose(g_fs, 1 / (10 * np.abs(x) + 1) ** 2, 1e-6)


def test_spike_functions_are_cached_per_parameters():
    assert snn.atan() is snn.atan(2.0) is snn.atan(alpha=2)
    assert snn.fast_sigmoid() is snn.fast_sigmoid(slope=25)
    assert snn.atan(3.0) is not snn.atan()
    assert snn.fast_sigmoid(2.0) is not snn.atan(2.0)
    # Every surrogate the shipped grammars can choose has an implementation.
    from spenser_jax.grammar import PACKAGE_GRAMMARS, load_grammar

    for path in PACKAGE_GRAMMARS.glob("*.grammar"):
        rules = load_grammar(path).rules
        names = {p[0].text.split(":")[1] for p in rules.get("surr-grad", ())}
        assert names and names <= set(snn.SURROGATES), path


def test_jit_with_static_spike_fn_does_not_retrace():
    traces = []

    def run(currents, beta, threshold, spike_fn):
        traces.append(spike_fn)
        return snn.lif_sequence(currents, beta, threshold, spike_fn=spike_fn)

    run_jit = jax.jit(run, static_argnames="spike_fn")
    currents = jnp.ones((3, 2, 4))
    run_jit(currents, 0.5, 1.0, spike_fn=snn.atan())
    run_jit(2 * currents, 0.7, 0.9, spike_fn=snn.atan(alpha=2.0))
    assert len(traces) == 1
    run_jit(currents, 0.5, 1.0, spike_fn=snn.fast_sigmoid())
    assert len(traces) == 2


# --- LIF properties ----------------------------------------------------------


def _random_currents(seed, shape=(12, 4, 6)):
    return 0.3 + jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("beta", [0.8, 1.0])
def test_zero_reset_sets_membrane_to_input_after_a_spike(beta):
    currents = _random_currents(0)
    spikes, mems = snn.lif_sequence(currents, beta, 0.7, reset="zero")
    spiked = np.asarray(spikes[:-1]) == 1
    assert spiked.sum() > 10 and (~spiked).sum() > 10
    np.testing.assert_array_equal(np.asarray(mems[1:])[spiked], np.asarray(currents[1:])[spiked])
    # Without a spike the membrane carries over, so it differs from the input.
    assert np.all(np.asarray(mems[1:])[~spiked] != np.asarray(currents[1:])[~spiked])


def test_subtract_reset_keeps_the_excess():
    # beta = 1: after a spike the membrane keeps U - theta, the input adds on.
    currents = _random_currents(1)
    spikes, mems = snn.lif_sequence(currents, 1.0, 0.7, reset="subtract")
    spiked = np.asarray(spikes[:-1]) == 1
    assert spiked.sum() > 10
    expected = np.asarray(mems[:-1]) - 0.7 + np.asarray(currents[1:])
    np.testing.assert_allclose(np.asarray(mems[1:])[spiked], expected[spiked], rtol=1e-6, atol=1e-6)


def test_trainable_flags_stop_gradients():
    currents = _random_currents(2)

    def grads(**flags):
        def f(beta, threshold):
            spikes, mems = snn.lif_sequence(currents, beta, threshold, **flags)
            return jnp.sum(spikes) + jnp.sum(mems**2)

        return jax.jit(jax.grad(f, argnums=(0, 1)))(0.8, 0.9)

    g_beta, g_thr = grads()
    assert g_beta != 0 and g_thr != 0
    g_beta, g_thr = grads(trainable_beta=False)
    assert g_beta == 0 and g_thr != 0
    g_beta, g_thr = grads(trainable_threshold=False)
    assert g_beta != 0 and g_thr == 0
    # The flags do not change the forward pass.
    fixed = snn.lif_sequence(currents, 0.8, 0.9, trainable_beta=False, trainable_threshold=False)
    free = snn.lif_sequence(currents, 0.8, 0.9)
    np.testing.assert_array_equal(fixed[1], free[1])


def test_lif_step_trainable_flags_stop_gradients():
    mem, cur = jnp.full((3,), 0.95), jnp.array([0.1, 0.5, 0.2])

    def f(beta, thr, **flags):
        new_mem, spike = snn.lif_step(mem, cur, beta, thr, **flags)
        return jnp.sum(new_mem) + jnp.sum(spike)

    flags = ("trainable_beta", "trainable_threshold")
    grads = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnames=flags)
    g_beta, g_thr = grads(0.5, 0.9)
    assert g_beta != 0 and g_thr != 0
    g_fixed_beta = grads(0.5, 0.9, trainable_beta=False)
    assert g_fixed_beta[0] == 0 and g_fixed_beta[1] == pytest.approx(g_thr)
    g_fixed_thr = grads(0.5, 0.9, trainable_threshold=False)
    assert g_fixed_thr[0] == pytest.approx(g_beta) and g_fixed_thr[1] == 0


@pytest.mark.parametrize("unroll", [2, 5, True])
def test_unroll_does_not_change_results(unroll):
    currents = _random_currents(3)

    def f(beta, u):
        spikes, mems = snn.lif_sequence(currents, beta, 0.8, reset="zero", spike_fn=snn.fast_sigmoid(), unroll=u)
        return jnp.sum(spikes * mems), (spikes, mems)

    f_jit = jax.jit(jax.value_and_grad(f, has_aux=True), static_argnums=1)
    (_, (s1, m1)), g1 = f_jit(0.9, 1)
    (_, (s2, m2)), g2 = f_jit(0.9, unroll)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(m1, m2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5)


def test_bad_reset_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="reset must be one of"):
        snn.lif_sequence(jnp.ones((2, 3)), 0.5, 1.0, reset="none")
    with pytest.raises(ValueError, match="reset must be one of"):
        snn.lif_step(jnp.ones(3), jnp.ones(3), 0.5, 1.0, reset="Zero")
    with pytest.raises(ValueError, match="time-major"):
        snn.lif_sequence(jnp.float32(1.0), 0.5, 1.0)


# --- rate encoding -----------------------------------------------------------


def test_rate_frequencies_approach_intensities():
    images = jnp.array([[0, 1, 64, 128], [191, 230, 254, 255]], jnp.uint8)
    t = 4000
    spikes = snn.rate(jax.random.key(0), images, t)
    assert spikes.shape == (t, 2, 4) and spikes.dtype == jnp.float32
    p = np.asarray(images, np.float64) / 255
    freq = np.asarray(spikes).mean(0)
    sigma = np.sqrt(p * (1 - p) / t)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), (freq, p)
    assert freq[0, 0] == 0 and freq[1, 3] == 1


def test_rate_draws_independently_per_step():
    images = jnp.full((64,), 0.5)
    spikes = np.asarray(snn.rate(jax.random.key(1), images, 2000))
    # Independent draws: consecutive steps agree half the time, and the
    # joint firing rate is p^2, not p.
    same = (spikes[1:] == spikes[:-1]).mean()
    both = (spikes[1:] * spikes[:-1]).mean()
    assert abs(same - 0.5) < 0.01 and abs(both - 0.25) < 0.01
    # Independent across elements too: columns are not copies of each other.
    assert (spikes[:, 0] != spikes[:, 1]).mean() > 0.4


def test_rate_float_images_and_jit():
    images = jax.random.uniform(jax.random.key(2), (3, 5))
    key = jax.random.key(3)
    rate_jit = jax.jit(snn.rate, static_argnames="time_steps")
    np.testing.assert_array_equal(rate_jit(key, images, 7), snn.rate(key, images, 7))
    assert rate_jit(key, images, 7).shape == (7, 3, 5)
    with pytest.raises(TypeError, match="static Python int"):
        jax.jit(snn.rate)(key, images, 7)


# --- loss and readout --------------------------------------------------------


def test_spike_count_predictions_pick_first_index_on_ties():
    # counts: [2, 2, 1], [0, 3, 3], [1, 0, 1]
    spikes = jnp.array(
        [
            [[1, 1, 0], [0, 1, 1], [1, 0, 0]],
            [[1, 1, 1], [0, 1, 1], [0, 0, 1]],
            [[0, 0, 0], [0, 1, 1], [0, 0, 0]],
        ],
        jnp.float32,
    )
    np.testing.assert_array_equal(snn.spike_count_predictions(spikes), [0, 1, 0])
    labels = jnp.array([1, 1, 2])
    assert float(snn.spike_count_accuracy(spikes, labels)) == pytest.approx(1 / 3)
    assert int(snn.correct_count(spikes, labels)) == 1


def test_silent_network_predicts_class_zero():
    spikes = jnp.zeros((5, 4, 10))
    np.testing.assert_array_equal(snn.spike_count_predictions(spikes), [0, 0, 0, 0])
    labels = jnp.array([0, 3, 0, 9])
    assert float(snn.spike_count_accuracy(spikes, labels)) == 0.5


def test_loss_target_uses_truncated_counts():
    # T = 10, rate 0.57: int(5.7) = 5; a count of 5 on the label and 0
    # elsewhere is a perfect match, 6 is not.
    spikes = jnp.zeros((10, 1, 3)).at[:5, 0, 2].set(1.0)
    labels = jnp.array([2])
    assert float(snn.mse_count_loss(spikes, labels, correct_rate=0.57)) == 0
    assert float(snn.mse_count_loss(spikes.at[5, 0, 2].set(1.0), labels, 0.57)) > 0


def test_loss_mask_excludes_padded_samples():
    key_spikes, key_labels, key_pad = jax.random.split(jax.random.key(4), 3)
    spikes = jax.random.uniform(key_spikes, (6, 3, 4))
    labels = jax.random.randint(key_labels, (3,), 0, 4)
    padded = jnp.concatenate([spikes, jax.random.uniform(key_pad, (6, 2, 4))], 1)
    padded_labels = jnp.concatenate([labels, jnp.array([1, 3])])
    mask = jnp.array([1, 1, 1, 0, 0])

    rates = dict(correct_rate=0.8, incorrect_rate=0.1)
    loss, grad = _loss_and_grad(spikes, labels, **rates)
    loss_p, grad_p = _loss_and_grad(padded, padded_labels, **rates, mask=mask)
    np.testing.assert_allclose(loss_p, loss, rtol=1e-6)
    np.testing.assert_allclose(grad_p[:, :3], grad, rtol=1e-6)
    assert np.all(np.asarray(grad_p[:, 3:]) == 0)
    # Without the mask the padding would count.
    assert abs(float(_loss_and_grad(padded, padded_labels, **rates)[0]) - loss) > 1e-3

    assert int(snn.correct_count(padded, padded_labels, mask)) == int(snn.correct_count(spikes, labels))
    np.testing.assert_allclose(
        snn.spike_count_accuracy(padded, padded_labels, mask),
        snn.spike_count_accuracy(spikes, labels),
    )


def test_all_padding_batch_gives_zero_loss_and_finite_gradient():
    spikes = jnp.ones((4, 2, 3))
    labels = jnp.array([0, 1])
    mask = jnp.zeros(2)
    loss, grad = _loss_and_grad(spikes, labels, mask=mask)
    assert float(loss) == 0 and np.all(np.asarray(grad) == 0)
    assert float(snn.spike_count_accuracy(spikes, labels, mask)) == 0


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        snn.mse_count_loss(jnp.ones((3, 4)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="labels must have shape"):
        snn.mse_count_loss(jnp.ones((2, 3, 4)), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="mask must have shape"):
        snn.spike_count_accuracy(jnp.ones((2, 3, 4)), jnp.zeros(3, jnp.int32), jnp.ones(2))
