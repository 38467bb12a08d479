"""Training and evaluation: torch parity of optimizer steps, masking, compile reuse."""

import gzip
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax import training
from spenser_jax.genome import phenotype
from spenser_jax.snn import architecture, encoding, network
from spenser_jax.training.protocol import Protocol

from compiles import compilations

FIXTURE = Path(__file__).parent / "fixtures" / "snntorch_network.npz"

# One fixed and one trainable LIF; SGD with weight decay.
NET = (
    "layer:conv num-filters:3 filter-shape:3 stride:2 padding:valid bias:True "
    "layer:pool-avg kernel-size:2 "
    "layer:act beta:0.7 beta-trainable:False threshold:0.6 threshold-trainable:False "
    "surr-grad:fast-sigmoid reset:zero "
    "layer:dropout rate:0.2 layer:fc num-units:10 bias:True "
    "layer:act beta:0.9 beta-trainable:True threshold:0.8 threshold-trainable:True "
    "surr-grad:atan reset:subtract "
    "learning:gradient-descent lr:0.05 momentum:0.9 decay:0.001 nesterov:True"
)
SHAPE = (10, 10, 1)
PROTOCOL = Protocol(time_steps=1)  # train_step reads its loss targets and execution order (the defaults)


def toy_data(seed, n, binary=False):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    if binary:  # intensities 0 or 255 make rate coding deterministic
        images = np.where(images > 127, 255, 0).astype(np.uint8)
    return jnp.asarray(images), jnp.asarray(rng.integers(0, 10, n), jnp.int32)


def tree_copy(tree):
    # Train states are donated: keep host copies of what the tests compare.
    return jax.tree.map(np.array, tree)


def load_fixture():
    data = np.load(FIXTURE)
    out = {"params": {}, "after2": {}}
    for name in data.files:
        group, _, rest = name.partition("/")
        if group in out:
            layer, leaf = rest.split("/")
            out[group].setdefault(layer, {})[leaf] = jnp.asarray(data[name])
        else:
            out[name] = data[name]
    return out


@pytest.mark.slow
def test_two_adam_steps_match_torch():
    ref = load_fixture()
    sig, genes = architecture.split(phenotype.parse(str(ref["text"])))
    state = training.create_train_state(jax.random.key(0), sig, genes, ref["spikes"].shape[2:])
    state = state.replace(params=ref["params"])
    step = jax.jit(
        lambda state: training.train_step(
            sig,
            PROTOCOL,
            state,
            genes,
            jnp.asarray(ref["spikes"]),
            jnp.asarray(ref["labels"]),
            dropout_key=jax.random.key(1),
        )
    )
    for _ in range(2):
        state, loss, finite = step(state)
        assert finite
    assert int(state.step) == 2
    for layer, leaves in ref["after2"].items():
        for leaf, expected in leaves.items():
            np.testing.assert_allclose(
                state.params[layer][leaf], expected, rtol=1e-5, atol=1e-6, err_msg=f"{layer}/{leaf}"
            )


@pytest.mark.slow
def test_padded_batch_equals_the_smaller_batch():
    sig, genes = architecture.split(phenotype.parse(NET))
    images, labels = toy_data(0, 8)
    spikes = encoding.rate(jax.random.key(1), images, 3)
    state = training.create_train_state(jax.random.key(2), sig, genes, SHAPE)
    step = jax.jit(
        lambda state, spikes, labels, mask: training.train_step(sig, PROTOCOL, state, genes, spikes, labels, mask)
    )
    small, small_loss, _ = step(state, spikes[:, :6], labels[:6], None)
    mask = jnp.arange(8) < 6
    padded, padded_loss, _ = step(state, spikes, labels, mask)
    assert small_loss > 0
    np.testing.assert_allclose(padded_loss, small_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), padded.params, small.params)


@pytest.mark.slow
def test_epoch_compiles_once_per_signature_and_keeps_fixed_lif(monkeypatch):
    traces = []
    rate = encoding.rate
    monkeypatch.setattr(encoding, "rate", lambda *a, **k: traces.append(1) or rate(*a, **k))
    first = phenotype.parse(NET)
    other = phenotype.parse(
        NET.replace("beta:0.9", "beta:0.8")
        .replace("rate:0.2", "rate:0.1")
        .replace("lr:0.05", "lr:0.02")
        .replace("threshold:0.6", "threshold:0.5")
    )
    sig, genes = architecture.split(first)
    assert architecture.signature(other) == sig
    # time_steps=3 is used by no other test: a fresh cache entry.
    epoch = training.make_train_epoch(sig, Protocol(time_steps=3, batch_size=32))
    assert training.make_train_epoch(architecture.signature(other), Protocol(time_steps=3, batch_size=32)) is epoch
    images, labels = toy_data(0, 70)

    def train(pheno):
        genes = architecture.hyper(pheno)
        state = training.create_train_state(jax.random.key(0), sig, genes, SHAPE)
        initial = tree_copy(state.params)
        state, metrics = epoch(state, genes, images, labels, jax.random.key(1))
        assert not metrics["nonfinite"]
        assert int(metrics["steps"]) == int(state.step) == 3  # 32 + 32 + 6 samples
        assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
        # The fixed LIF (decay > 0) is untouched, the trainable one moved.
        for leaf in ("beta", "threshold"):
            np.testing.assert_array_equal(state.params["lif_2"][leaf], initial["lif_2"][leaf])
            assert state.params["lif_5"][leaf] != initial["lif_5"][leaf]
        return tree_copy(state.params)

    results = [train(first)]
    with compilations() as compiled:  # other float genes, same signature: no new program
        results.append(train(other))
    assert compiled == [] and len(traces) == 1
    np.testing.assert_allclose(results[1]["lif_2"]["threshold"], 0.5)
    assert not np.allclose(results[0]["conv_0"]["kernel"], results[1]["conv_0"]["kernel"])

    # A NaN gene: reported, and the state stays at its last finite value.
    genes = architecture.hyper(first)
    genes["optimizer"]["lr"] = jnp.float32(jnp.nan)
    state = training.create_train_state(jax.random.key(0), sig, genes, SHAPE)
    initial = tree_copy(state.params)
    state, metrics = epoch(state, genes, images, labels, jax.random.key(1))
    assert metrics["nonfinite"]
    assert int(metrics["steps"]) == int(state.step) == 0
    jax.tree.map(np.testing.assert_array_equal, tree_copy(state.params), initial)
    assert len(traces) == 1


def test_score_masks_the_padded_tail():
    sig, genes = architecture.split(phenotype.parse(NET))
    params = network.init_params(jax.random.key(0), sig, genes, SHAPE)
    params = jax.tree.map(lambda x: 4 * x if x.ndim else x, params)  # make it spike
    images, labels = toy_data(3, 70, binary=True)
    score = training.make_score(sig, Protocol(time_steps=3), batch_size=32)
    metrics = score(params, genes, images, labels, jax.random.key(1))
    spikes = encoding.rate(jax.random.key(2), images, 3)
    out = network.SpikingNetwork(sig).apply({"params": params}, spikes, genes)
    assert out.sum() > 0
    expected = int(jnp.sum(jnp.argmax(out.sum(0), -1) == labels))
    assert int(metrics["correct"]) == expected
    np.testing.assert_allclose(metrics["accuracy"], expected / 70)


def test_bad_data_is_rejected():
    sig, genes = architecture.split(phenotype.parse(NET))
    score = training.make_score(sig, Protocol(time_steps=3), batch_size=32)
    images, labels = toy_data(0, 10)
    with pytest.raises(ValueError, match="labels"):
        score(None, genes, images, labels[:5], jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        score(None, genes, images[..., 0], labels, jax.random.key(0))


def test_every_way_of_training_walks_the_plan_alike():
    """A program and the host run the same epochs with the same budgets and early check, and halt alike."""
    protocol = Protocol(time_steps=1, epochs=2.5, batch_size=10, early_stop=0.1, stop_min_steps=2)
    assert protocol.plan(100) == (None, None, 5) and protocol.stop_check(100) == 2
    calls = []

    def run_epoch(xp, fail_at):
        def run(state, epoch, max_steps, stop_check):
            calls.append((max_steps, stop_check))
            metrics = {"loss": xp.float32(epoch + 1), "steps": xp.int32(max_steps or 10), "samples": xp.int32(7)}
            return state + 1, {**metrics, "nonfinite": xp.asarray(epoch) == fail_at, "stopped": xp.bool_(False)}

        return run

    walked = jax.jit(lambda state: training.walk_plan(protocol, 100, state, run_epoch(jnp, 1)))(0)
    assert calls == [(None, 2), (None, None), (5, None)]  # traced once each: the later epochs are conds
    for fail_at, ran in [(1, 2), (9, 3)]:
        calls.clear()
        on_host = training.walk_plan(protocol, 100, 0, run_epoch(np, fail_at), traced=False)
        assert calls == [(None, 2), (None, None), (5, None)][:ran]  # the host runs no epoch after a failure
        assert on_host[0] == ran and bool(on_host[1]) == (fail_at == 1) and not on_host[2]
    calls.clear()
    on_host = training.walk_plan(protocol, 100, 0, run_epoch(np, 1), traced=False)
    metrics = [training.evaluation_metrics(3, w[3], w[1], w[2], {}) for w in (walked, on_host)]
    for name in ("losses", "steps", "samples", "nonfinite", "stopped"):
        np.testing.assert_array_equal(metrics[0][name], metrics[1][name], err_msg=name)
    np.testing.assert_array_equal(metrics[1]["losses"], [1, 2, 0])  # 0 for the epoch skipped
    assert int(metrics[1]["steps"]) == 20 and int(walked[0]) == 2  # the skipped epoch left the state as it was
    assert training.walk_plan(protocol, 100, 0, run_epoch(np, 9), traced=False, after_epoch=lambda *a: True)[0] == 1


# --------------------------------------------------------------------------
# Learning on real data


def data_dir() -> Path:
    env = os.environ.get("SPENSER_DATA_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return root / "fashion_mnist"


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.slow
def test_conv_snn_learns_fashion_mnist():
    folder = data_dir()
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {folder}")
    train_x = read_idx(folder / "train-images-idx3-ubyte.gz")[:9600, :, :, None]
    train_y = read_idx(folder / "train-labels-idx1-ubyte.gz")[:9600]
    test_x = read_idx(folder / "t10k-images-idx3-ubyte.gz")[:1000, :, :, None]
    test_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:1000]
    pheno = phenotype.parse(
        "layer:conv num-filters:8 filter-shape:4 stride:2 padding:valid bias:True "
        "layer:pool-max kernel-size:2 "
        "layer:act beta:0.9 beta-trainable:True threshold:1.0 threshold-trainable:True "
        "surr-grad:atan reset:subtract "
        "layer:fc num-units:10 bias:True "
        "layer:act beta:0.9 beta-trainable:True threshold:1.0 threshold-trainable:True "
        "surr-grad:fast-sigmoid reset:subtract "
        "learning:adam lr:0.005 beta1:0.9 beta2:0.999 decay:0.000001 amsgrad:False"
    )
    sig, genes = architecture.split(pheno)
    key_init, key_train, key_eval = jax.random.split(jax.random.key(0), 3)
    state = training.create_train_state(key_init, sig, genes, (28, 28, 1))
    epoch = training.make_train_epoch(sig, Protocol(time_steps=4, batch_size=32))
    state, metrics = epoch(state, genes, jnp.asarray(train_x), jnp.asarray(train_y, jnp.int32), key_train)
    assert int(metrics["steps"]) == 300 and not metrics["nonfinite"]
    score = training.make_score(sig, Protocol(time_steps=4, eval_batch_size=250))
    accuracy = score(state.params, genes, jnp.asarray(test_x), jnp.asarray(test_y, jnp.int32), key_eval)["accuracy"]
    assert accuracy >= 0.6, accuracy


@pytest.mark.slow
def test_train_epoch_vmaps_over_offspring():
    first = phenotype.parse(NET)
    other = phenotype.parse(NET.replace("beta:0.9", "beta:0.7").replace("lr:0.05", "lr:0.01"))
    sig = architecture.signature(first)
    images, labels = toy_data(4, 40)
    genes = [architecture.hyper(first), architecture.hyper(other)]
    keys = jax.random.split(jax.random.key(5), 2)
    states = [training.create_train_state(k, sig, g, SHAPE) for k, g in zip(keys, genes)]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    batched = jax.jit(
        jax.vmap(
            lambda state, genes, key: training.train_epoch(
                sig, Protocol(time_steps=3, batch_size=32), state, genes, images, labels, key
            ),
            in_axes=(0, 0, 0),
        )
    )
    together, metrics = batched(stack(states), stack(genes), keys)
    epoch = training.make_train_epoch(sig, Protocol(time_steps=3, batch_size=32))
    for i in range(2):
        alone, alone_metrics = epoch(states[i], genes[i], images, labels, keys[i])
        np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"], rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6),  # noqa: B023 (called at once)
            together.params,
            alone.params,
        )


# --------------------------------------------------------------------------
# Cheaper programs compute what the old ones did

# With NET (conv valid + bias, pool-avg, fixed fast-sigmoid/zero LIF,
# dropout, fc, trainable atan/subtract LIF, SGD with Nesterov): every layer
# type, reset, surrogate and optimizer of Grammar 2, and a skip connection
# with a loss unit of grammars/csnn_plus.grammar.
COVER = {
    "sgd": NET,
    "adam": (
        "layer:conv num-filters:4 filter-shape:2 stride:2 padding:same bias:False layer:pool-max kernel-size:2 "
        "layer:act beta:0.5 beta-trainable:True threshold:0.7 threshold-trainable:False surr-grad:atan reset:zero "
        "layer:fc num-units:12 bias:False "
        "layer:act beta:0.8 beta-trainable:False threshold:0.5 threshold-trainable:True "
        "surr-grad:fast-sigmoid reset:subtract layer:dropout rate:0.3 layer:fc num-units:10 bias:True "
        "layer:act beta:0.9 beta-trainable:True threshold:0.6 threshold-trainable:True surr-grad:atan reset:zero "
        "learning:adam lr:0.02 beta1:0.8 beta2:0.95 decay:0.0005 amsgrad:True"
    ),
    "rmsprop-skip": (
        "layer:conv num-filters:3 filter-shape:3 stride:1 padding:same bias:True "
        "layer:act beta:0.6 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:zero "
        "layer:conv num-filters:3 filter-shape:3 stride:2 padding:valid bias:True input:-1,1 "
        "layer:act beta:0.6 beta-trainable:True threshold:0.5 threshold-trainable:True surr-grad:atan reset:subtract "
        "layer:fc num-units:10 bias:True input:1,3 "
        "layer:act beta:0.9 beta-trainable:False threshold:0.5 threshold-trainable:False surr-grad:atan reset:zero "
        "learning:rmsprop lr:0.01 rho:0.9 decay:0.0001 loss:mse-membrane on-target:1.0 off-target:0.0"
    ),
}


def _shaped_uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0):
    return jax.random.uniform(key, tuple(shape), dtype, minval, maxval)


def _whole_evaluation(text, compiler_options=None):
    """Params and metrics of one train_and_score program (2 steps, then scored), compiled afresh."""
    sig, hyper = architecture.split(phenotype.parse(text), 2)
    network._init_fn.cache_clear()  # the initialisation's trace is cached per signature
    images, labels = toy_data(5, 48)
    protocol = Protocol(time_steps=2, batch_size=16, eval_batch_size=16, activity=False)
    args = (jax.random.key(4), hyper, images[:32], labels[:32], images[32:], labels[32:], jax.random.key(6))
    fn = jax.jit(lambda *a: training.train_and_score(sig, *a, protocol=protocol))
    return jax.tree.map(np.asarray, fn.lower(*args).compile(compiler_options=compiler_options)(*args))


@pytest.mark.parametrize("name", COVER)
def test_flat_and_shared_draws_train_bit_for_bit_as_shaped_draws(name, monkeypatch):
    from spenser_jax.genome import draws

    now = _whole_evaluation(COVER[name])
    with monkeypatch.context() as m:  # the draws as they were: each in its own shape and loop
        m.setattr(draws, "uniform", _shaped_uniform)
        m.setattr(draws, "uniform_many", lambda rs: [_shaped_uniform(k, s, jnp.float32, lo, hi) for k, s, lo, hi in rs])
        before = _whole_evaluation(COVER[name])
    network._init_fn.cache_clear()
    assert int(now[1]["steps"]) == 2
    for path, value in jax.tree_util.tree_leaves_with_path(before):
        got = now
        for entry in path:
            got = got[entry.key] if hasattr(entry, "key") else got[entry.idx]
        assert np.array_equal(got, value), jax.tree_util.keystr(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", COVER)
def test_loop_emitters_round_only_the_last_bits(name):
    from spenser_jax import scheduler

    default = _whole_evaluation(COVER[name])
    loop = _whole_evaluation(COVER[name], scheduler.compiler_options("cpu", cpu_fusion_emitters=False))
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(loop), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert scheduler.compiler_options("cpu", cpu_fusion_emitters=False) == {"xla_cpu_use_fusion_emitters": False}
    assert scheduler.compiler_options("gpu", cpu_fusion_emitters=False, opt_level=1) == {
        "xla_backend_optimization_level": 1
    }
