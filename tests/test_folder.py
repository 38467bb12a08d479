"""Any labelled image folder as a data set (spenser_jax.data.folder), its cache, its config and identity."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from spenser_jax import data, evolve
from spenser_jax.data import DataError, cache, folder
from spenser_jax.grammar import locate
from spenser_jax.run import runs

CONF = Path(evolve.CONFIG_DIR)
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10_jpeg"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    # Never the user's ~/.cache: each test its own, empty cache folder.
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def pixels(label: int, index: int, shape=(6, 5)) -> np.ndarray:
    # Distinct, reproducible content per image, so a mix-up of files or labels shows.
    return ((np.arange(np.prod(shape)).reshape(shape) * 7 + 31 * label + 5 * index) % 256).astype(np.uint8)


def make_folder(root: Path, counts: dict[str, int], test: dict[str, int] | None = None, shape=(6, 5)) -> Path:
    for split, per_class in (("train", counts), ("test", test or {})):
        for label, (name, n) in enumerate(sorted(per_class.items())):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(pixels(label, i, shape)).save(root / split / name / f"{i:03d}.png")
    return root


def test_classes_in_sorted_order_and_pixels_exact(tmp_path):
    root = make_folder(tmp_path / "imgs", {"zebra": 3, "ant": 2, "mole": 2}, test={"zebra": 1, "ant": 1})
    ds = folder.load_folder(root)
    assert ds.num_classes == 3 and ds.train_images.shape == (7, 6, 5, 1) and ds.test_images.shape == (2, 6, 5, 1)
    # ant = 0, mole = 1, zebra = 2 (sorted names), whatever the order they were made in.
    assert ds.train_labels.tolist() == [0, 0, 1, 1, 2, 2, 2] and ds.test_labels.tolist() == [0, 2]
    assert np.array_equal(ds.train_images[4, ..., 0], pixels(2, 0)) and np.array_equal(
        ds.test_images[0, ..., 0], pixels(0, 0)
    )
    assert not ds.train_images.flags.writeable


def test_grey_stays_one_channel_unless_an_image_is_colour(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 2, "b": 2}, test={"a": 1})
    colour = np.stack([pixels(1, 9), pixels(1, 8), pixels(1, 7)], axis=-1)
    Image.fromarray(colour).save(root / "train" / "b" / "rgb.png")
    ds = folder.load_folder(root)
    assert ds.train_images.shape == (5, 6, 5, 3)
    assert np.array_equal(ds.train_images[0], np.repeat(pixels(0, 0)[..., None], 3, axis=-1))
    assert np.array_equal(ds.train_images[4], colour)  # b/rgb.png sorts after b/001.png


def test_jpeg_bmp_gif_are_read(tmp_path):
    root = tmp_path / "imgs"
    for name, ext in (("a", "bmp"), ("b", "gif"), ("c", "jpg")):
        (root / "train" / name).mkdir(parents=True)
        Image.fromarray(pixels(0, 0)).save(root / "train" / name / f"x.{ext.upper()}")
    ds = folder.load_folder(root, test_fraction=0.34)
    assert ds.train_images.shape[1:] == (6, 5, 1) and len(ds.train_labels) + len(ds.test_labels) == 3
    assert np.array_equal(ds.train_images[0, ..., 0], pixels(0, 0))  # BMP is lossless


def test_no_test_folder_carves_a_stratified_seeded_test_split(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 10, "b": 20})
    ds = folder.load_folder(root, test_fraction=0.2)
    assert np.bincount(ds.test_labels).tolist() == [2, 4] and np.bincount(ds.train_labels).tolist() == [8, 16]
    again = folder.load_folder(root, test_fraction=0.2)
    assert np.array_equal(again.test_images, ds.test_images)
    every = {im.tobytes() for im in np.concatenate([ds.train_images, ds.test_images])}
    assert len(every) == 30  # disjoint, nothing lost
    section = {"name": "folder", "source": "folder", "path": str(root), "test_fraction": 0.2}
    assert data.section_identity(section)["folder"]["test"] == {"carved": 0.2, "seed": folder.TEST_SEED}


def test_sizes_must_agree_unless_image_size_is_given(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 2, "b": 2}, test={"a": 1})
    Image.fromarray(pixels(1, 5, shape=(9, 4))).save(root / "train" / "b" / "big.png")
    Image.fromarray(pixels(1, 5, shape=(9, 4))).save(root / "train" / "b" / "cig.png")
    with pytest.raises(DataError, match=r"b/big\.png: 4x9 pixels, but .*a/000\.png is 5x6; set dataset.image_size"):
        folder.load_folder(root)
    ds = folder.load_folder(root, image_size=(4, 3))
    assert ds.train_images.shape == (6, 4, 3, 1) and ds.test_images.shape == (1, 4, 3, 1)
    bilinear = Image.fromarray(pixels(1, 5, shape=(9, 4))).resize((3, 4), Image.Resampling.BILINEAR)
    assert np.array_equal(ds.train_images[4, ..., 0], np.asarray(bilinear))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "train" / "empty").mkdir(), r"train/empty: an empty class folder"),
        (lambda r: (r / "test" / "ghost").mkdir(), r"test/ghost: a test class with no training folder"),
        (lambda r: (r / "train" / "a" / "notes.txt").write_text("x"), r"a/notes\.txt: not an image file"),
        (lambda r: (r / "train" / "b" / "bad.png").write_bytes(b"not a png"), r"b/bad\.png: cannot decode it"),
        (lambda r: (r / "train" / "b" / "sub").mkdir(), r"b/sub: a folder inside the class folder"),
        (lambda r: (r / "train" / "stray.png").write_bytes(b""), r"train/stray\.png: a file where"),
        (
            lambda r: [f.unlink() for f in (r / "test" / "a").iterdir()] + [(r / "test" / "a").rmdir()],
            r"test: no class",
        ),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, own_cache, breakage, message):
    root = make_folder(tmp_path / "imgs", {"a": 2, "b": 2}, test={"a": 1})
    breakage(root)
    with pytest.raises(DataError, match=message):
        folder.load_folder(root)
    assert not own_cache.exists()


def test_a_single_class_or_no_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "imgs", {"only": 3})
    with pytest.raises(DataError, match=r"train: 1 class folder \['only'\]; a classifier needs at least two"):
        folder.load_folder(root)
    with pytest.raises(DataError, match="does not exist"):
        folder.load_folder(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        folder.load_folder(tmp_path / "file")
    with pytest.raises(DataError, match="no train/ folder"):
        folder.load_folder(tmp_path)


def test_the_cache_is_read_rebuilt_on_change_and_on_damage(tmp_path, own_cache, monkeypatch, caplog):
    root = make_folder(tmp_path / "imgs", {"a": 3, "b": 3}, test={"a": 1, "b": 1})
    first = folder.load_folder(root)
    files = list((own_cache / "folders").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    decoded = []
    real = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: decoded.append(a) or real(*a))
    warm = folder.load_folder(root)
    assert decoded == [] and all(np.array_equal(x, y) for x, y in zip(first, warm) if isinstance(x, np.ndarray))
    # A rewritten file changes the key: decoded again, the new pixels read.
    Image.fromarray(pixels(5, 5)).save(root / "train" / "a" / "000.png")
    os.utime(root / "train" / "a" / "000.png", ns=(1, 1))
    changed = folder.load_folder(root)
    assert len(decoded) == 8 and np.array_equal(changed.train_images[0, ..., 0], pixels(5, 5))
    # A damaged cache file: a warning, decoded again, rewritten whole.
    key = folder.scan(root).key
    cache.cache_file(key).write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING):
        again = folder.load_folder(root)
    assert "unreadable" in caplog.text and len(decoded) == 16
    assert np.array_equal(again.train_images, changed.train_images)
    assert cache.read_cache(key, 8) is not None


def test_cache_folder_from_the_config_or_the_environment(tmp_path, own_cache):
    root = make_folder(tmp_path / "imgs", {"a": 1, "b": 1}, test={"a": 1})
    folder.load_folder(root, cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine" / "folders").glob("*.npz"))) == 1 and not own_cache.exists()
    folder.load_folder(root)
    assert len(list((own_cache / "folders").glob("*.npz"))) == 1
    assert cache.cache_root(None) == own_cache


def test_the_digest_is_sha256sum_of_the_listing(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 1, "b": 1}, test={"a": 1})
    import hashlib

    lines = "".join(
        f"{hashlib.sha256((root / rel).read_bytes()).hexdigest()}  {rel}\n"
        for rel in ("test/a/000.png", "train/a/000.png", "train/b/000.png")
    )
    expected = hashlib.sha256(lines.encode()).hexdigest()
    folder.load_folder(root, digest=expected)
    with pytest.raises(DataError, match="SHA-256 listing"):
        folder.load_folder(root, digest="0" * 64)


def two_class_grammar(tmp_path: Path) -> Path:
    # The grammars' output layers have 10 units: another number of classes needs its own grammar.
    path = tmp_path / "two.grammar"
    path.write_text(Path(locate("grammars/csnn.grammar")).read_text().replace("num-units : 10", "num-units : 2"))
    return path


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_folder_config_needs_path_and_time_steps(tmp_path):
    with pytest.raises(evolve.ConfigError, match="dataset.path is required for dataset=folder"):
        evolve.setup(config("dataset=folder", "dataset.time_steps=4"))
    with pytest.raises(evolve.ConfigError, match="dataset.time_steps is required for dataset=folder: no default"):
        evolve.setup(config("dataset=folder", f"dataset.path={tmp_path}"))
    with pytest.raises(evolve.ConfigError, match="dataset.image_size must be null, an int N"):
        evolve.setup(
            config("dataset=folder", f"dataset.path={tmp_path}", "dataset.time_steps=4", "dataset.image_size=[1]")
        )
    with pytest.raises(evolve.ConfigError, match="dataset.path applies to dataset=folder"):
        evolve.setup(config("+dataset.path=x"))


def test_a_folder_run_identity_rebuilds_its_splits(tmp_path):
    root = make_folder(tmp_path / "imgs", {"cat": 30, "dog": 30}, shape=(8, 8))
    cfg = config(
        "dataset=folder",
        f"dataset.path={root}",
        "dataset.time_steps=3",
        "dataset.name=pets",
        f"grammar={two_class_grammar(tmp_path)}",
    )
    s = evolve.setup(cfg)
    assert s.identity["dataset"] == "pets" and s.identity["source"] == "folder"
    assert s.identity["input_shape"] == [8, 8, 1] and s.identity["num_classes"] == 2
    assert s.identity["folder"] == {
        "path": str(root.resolve()),
        "image_size": None,
        "classes": ["cat", "dog"],
        "test": {"carved": 0.2, "seed": 0},
    }
    assert (len(s.splits.train.labels), len(s.splits.test.labels)) == (48, 12)
    assert (len(s.splits.evo_train.labels), len(s.splits.fitness.labels)) == (34, 14)  # 70 / 30
    dataset = data.from_identity(s.identity, {})
    again = data.split(dataset, s.identity["seed"], s.identity["subset"], s.identity["fitness_fraction"])
    for part in ("evo_train", "fitness", "train", "test"):
        assert np.array_equal(getattr(again, part).images, getattr(s.splits, part).images)
    # The folder changed under a finished run: said, not silently other classes.
    make_folder(root, {"eel": 2})
    with pytest.raises(DataError, match=r"its classes are now \['cat', 'dog', 'eel'\]"):
        data.from_identity(s.identity, {})


def test_the_paper_data_sets_gain_no_identity_entries():
    for name in ("mnist", "fmnist", "cifar10"):
        section = config(f"dataset={name}").dataset
        data.check_section(section)
        assert data.section_identity(section) == {}


def test_cifar10_jpeg_config_is_cifar10s():
    cfg = config("dataset=cifar10_jpeg")
    assert (cfg.dataset.name, cfg.dataset.time_steps, cfg.evolution.generations) == ("cifar10_jpeg", 50, 150)
    assert data.known_shape("cifar10_jpeg") == ((32, 32, 3), 10) and data.TIME_STEPS["cifar10_jpeg"] == 50
    with pytest.raises(ValueError, match="read from its files only"):
        data.load("cifar10_jpeg", source="tfds")


def test_cifar10_jpeg_is_searched_for_like_the_other_files(tmp_path, monkeypatch):
    make_folder(tmp_path / "cifar10_jpeg", {"a": 2, "b": 2}, test={"a": 1})
    ds = data.load("cifar10_jpeg", tmp_path, verify=False)
    assert ds.name == "cifar10_jpeg" and ds.train_images.shape == (4, 6, 5, 1)
    with pytest.raises(DataError, match="SHA-256 listing"):  # not the published copy
        data.load("cifar10_jpeg", tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"no CIFAR-10 \(JPEG copy\) found"):
        data.load("cifar10_jpeg")


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data/cifar10_jpeg beside the checkout")
def test_the_real_jpeg_copy_counts_and_class_order():
    listing = folder.scan(SHARED)  # lists and stats; decodes nothing
    assert listing.classes == CIFAR_CLASSES and listing.has_test
    assert listing.num_train == 50_000 and len(listing.files) == 60_000
    assert np.bincount(listing.labels[: listing.num_train]).tolist() == [5000] * 10
    assert np.bincount(listing.labels[listing.num_train :]).tolist() == [1000] * 10
    for i in (0, 12_345, 49_999, 50_000, 59_999):
        image, _ = folder._decode(SHARED / listing.files[i], None)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert listing.files[i].split("/")[1] == CIFAR_CLASSES[listing.labels[i]]


@pytest.mark.slow
def test_a_folder_search_runs_and_retrain_reads_it_back(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 12, "b": 12}, test={"a": 4, "b": 4}, shape=(8, 8))
    cfg = config(
        "dataset=folder",
        f"dataset.path={root}",
        "dataset.time_steps=2",
        f"grammar={two_class_grammar(tmp_path)}",
        "evolution.generations=1",
        "evolution.offspring=1",
        "runtime.progress=false",
        f"runtime.compile_cache={tmp_path / 'xla'}",
    )
    evolve.run(cfg, tmp_path / "run")
    run = runs.load_run(tmp_path / "run")
    assert run.identity["folder"]["test"] == "test/" and run.identity["folder"]["classes"] == ["a", "b"]
    assert [r["generation"] for r in run.records] == [0]
    splits = run.splits()
    assert splits.test.images.shape == (8, 8, 8, 1) and len(splits.train.labels) == 24
