"""Data sets beyond MNIST: CIFAR-10 end to end, shapes from the data, clear errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from spenser_jax import evolve, training
from spenser_jax.data import known_shape
from spenser_jax.genome import phenotype
from spenser_jax.grammar import locate
from spenser_jax.run import runs
from spenser_jax.snn import activity, architecture, network

from helpers import fake_cifar

CONF = Path(evolve.CONFIG_DIR)


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_cifar_config_is_the_originals():
    cfg = config("dataset=cifar10")
    assert (cfg.dataset.name, cfg.dataset.time_steps, cfg.evolution.generations) == ("cifar10", 50, 150)
    # Its generations are the dataset's, overridable as any key; MNIST keeps the paper's 200.
    assert config("dataset=cifar10", "evolution.generations=3").evolution.generations == 3
    assert config().evolution.generations == 200
    assert known_shape("cifar10") == ((32, 32, 3), 10) and known_shape("svhn_cropped") is None


def test_colour_network_shapes_and_parameters():
    ph = phenotype.parse(
        "layer:conv num-filters:8 filter-shape:3 stride:2 padding:same bias:True layer:pool-avg kernel-size:2 "
        "layer:act beta:0.5 beta-trainable:True threshold:0.5 threshold-trainable:False surr-grad:atan reset:zero "
        "layer:fc num-units:10 bias:True layer:act beta:0.5 beta-trainable:False threshold:0.5 "
        "threshold-trainable:False surr-grad:atan reset:zero "
        "learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    assert phenotype.infer_shapes(ph, (32, 32, 3), 10) == [(16, 16, 8), (8, 8, 8), (8, 8, 8), (10,), (10,)]
    # conv: 3*3*3*8 + 8; LIF: beta; fc: 8*8*8*10 + 10.
    assert phenotype.count_parameters(ph, (32, 32, 3)) == 3 * 3 * 3 * 8 + 8 + 1 + 512 * 10 + 10


def test_output_size_must_match_the_classes(tmp_path):
    grammar = Path(locate("grammars/csnn.grammar")).read_text().replace("num-units : 10", "num-units : 7")
    path = tmp_path / "seven.grammar"
    path.write_text(grammar)
    with pytest.raises(evolve.ConfigError, match=r"output layer has \[7\] units, the data set has 10 classes"):
        evolve.setup(config(f"grammar={path}"), load_data=False)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cifar")
    fake_cifar(base / "data" / "cifar-10-batches-bin", n_train=40, n_test=20)
    cfg = config(
        "dataset=cifar10",
        f"dataset.data_dir={base / 'data'}",
        "dataset.verify=false",
        "dataset.time_steps=2",
        "evolution.generations=2",
        "evolution.offspring=2",
        "runtime.progress=false",
        f"runtime.compile_cache={base / 'cache'}",
    )
    evolve.run(cfg, base / "run")
    return base


@pytest.mark.slow
def test_a_cifar_search_runs_end_to_end(cifar_run):
    run = runs.load_run(cifar_run / "run")
    assert [r["generation"] for r in run.records] == [0, 1]
    assert any(i["status"] == "ok" for r in run.records for i in r["individuals"])
    assert run.identity["input_shape"] == [32, 32, 3] and run.identity["num_classes"] == 10
    assert run.identity["dataset"] == "cifar10" and run.identity["time_steps"] == 2
    space = run.space()
    assert space.input_shape == (32, 32, 3)
    phenotype.infer_shapes(space.phenotype(run.state.parent), (32, 32, 3), 10)
    splits = run.splits()
    assert splits.train.images.shape == (200, 32, 32, 3) and splits.test.images.shape == (20, 32, 32, 3)


def test_verification_refuses_made_up_cifar_files(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-bin", n_train=4, n_test=4)
    with pytest.raises(evolve.data.DataError, match="checksum|SHA|MD5"):
        evolve.setup(config("dataset=cifar10", f"dataset.data_dir={tmp_path}"))


def test_direct_encoding_joins_the_identity():
    plain = evolve.setup(config(), load_data=False)
    direct = evolve.setup(config("training.encoding=direct"), load_data=False)
    assert "encoding" not in plain.identity["training"] and direct.identity["training"]["encoding"] == "direct"
    assert direct.protocol.encoding == "direct"
    with pytest.raises(evolve.ConfigError, match="encoding"):
        evolve.setup(config("training.encoding=latency"), load_data=False)


def test_direct_encoding_feeds_the_image_and_costs_macs():
    ph = phenotype.parse(
        "layer:conv num-filters:3 filter-shape:3 stride:1 padding:valid bias:True "
        "layer:act beta:0.5 beta-trainable:False threshold:0.2 threshold-trainable:False surr-grad:atan reset:zero "
        "layer:fc num-units:10 bias:True layer:act beta:0.5 beta-trainable:False threshold:0.2 "
        "threshold-trainable:False surr-grad:atan reset:zero "
        "learning:adam lr:0.01 beta1:0.9 beta2:0.999 decay:0.0 amsgrad:False"
    )
    sig, hyper = architecture.split(ph)
    params = network.init_params(jax.random.key(0), sig, hyper, (6, 6, 3))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 8), jnp.int32)
    runs = [
        training.score(
            sig,
            training.Protocol(time_steps=3, eval_batch_size=4, encoding="direct"),
            params,
            hyper,
            images,
            labels,
            jax.random.key(k),
            activity=True,
        )
        for k in (1, 2)
    ]
    assert int(runs[0]["correct"]) == int(runs[1]["correct"])  # no randomness in the input
    totals = jax.tree.map(np.asarray, runs[0]["activity"])
    assert totals["input"] == pytest.approx(float(images.sum()) / 255 * 3, rel=1e-5)  # the image, every step
    summary = activity.summarise(sig, (6, 6, 3), 3, totals, 8, spiking_input=False)
    assert summary["input_spikes_per_sample"] == 0.0
    assert summary["macs_per_sample"] == 4 * 4 * 3 * (3 * 3 * 3) * 3  # the first conv, densely, every step
    assert summary["synops_per_layer"][0] == 0.0 and summary["synops_per_layer"][1] > 0
