"""tensorflow-datasets as a source (``source="tfds"``), with or without TensorFlow.

With TensorFlow, tfds downloads and builds as usual; without it, only a copy
already built can be read. Either way the result goes through the same
checks as the files (:func:`spenser_jax.data.catalog._assemble`).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from spenser_jax.data.catalog import _SPECS, DataError, Dataset, _assemble, _Spec


def _have_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _load_tfds(name: str, tfds_name: str, data_dir: str | os.PathLike | None) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            "source='tfds' needs tensorflow-datasets: pip install 'spenser_jax[tfds]' "
            "(it downloads and builds the data sets with TensorFlow; without TensorFlow it "
            "can read only an already-built copy). Or read the files on disk with "
            "source='files' (source='idx' is the same) and data_dir pointing at them."
        ) from exc
    spec = _SPECS.get(name)
    data_dir = None if data_dir is None else os.fspath(data_dir)
    where = data_dir or "tfds' default data dir"
    try:
        if _have_tensorflow():
            splits, info = tfds.load(
                tfds_name, split=["train", "test"], data_dir=data_dir, batch_size=-1, as_supervised=True, with_info=True
            )
            splits = tfds.as_numpy(splits)
        else:
            # Building needs TensorFlow, so only read what is there.
            sources = tfds.data_source(tfds_name, split=["train", "test"], data_dir=data_dir, download=False)
            info = getattr(sources[0], "dataset_info", None)
            image_key, label_key = _supervised_keys(info)
            splits = [_stack_examples(source, image_key, label_key) for source in sources]
    except DataError:
        raise
    except Exception as exc:  # tfds raises many kinds; say which and where
        hint = (
            ""
            if _have_tensorflow()
            else (
                " Without TensorFlow, tfds reads only a copy already built in array_record "
                "format; install TensorFlow to build one, or use source='files'."
            )
        )
        raise DataError(
            f"tensorflow-datasets could not load {tfds_name!r} (its 'train' and "
            f"'test' splits) from {where}: {type(exc).__name__}: {exc}.{hint}"
        ) from exc
    num_classes = _tfds_num_classes(info, spec, tfds_name)
    parts = [
        (_as_uint8(images, f"tfds {tfds_name}/{s}"), np.asarray(labels), f"tfds {tfds_name}/{s}")
        for (images, labels), s in zip(splits, ("train", "test"))
    ]
    return _assemble(name, parts, num_classes)


def _supervised_keys(info) -> tuple[str, str]:
    # The (input, target) features that as_supervised=True would pick.
    keys = getattr(info, "supervised_keys", None)
    if isinstance(keys, (tuple, list)) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys[0], keys[1]
    return "image", "label"


def _tfds_num_classes(info, spec: _Spec | None, tfds_name: str) -> int:
    if info is None:
        # Only a reader that gives no DatasetInfo (tests' fakes) ends up here.
        if spec is None:
            raise DataError(
                f"tensorflow-datasets gave no dataset info for {tfds_name!r}, so its number of classes is unknown"
            )
        return spec.num_classes
    _, label_key = _supervised_keys(info)
    try:
        return int(info.features[label_key].num_classes)
    except (AttributeError, KeyError, TypeError) as exc:
        raise DataError(
            f"tfds {tfds_name}: feature {label_key!r} is not a class label "
            f"({type(exc).__name__}: {exc}); source='tfds' reads image "
            "classification data sets"
        ) from exc


def _as_uint8(images, where: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    # Other integer types are fine when the values fit (a lossless cast);
    # floats or 16-bit intensities would need a scale spenser_jax does not guess.
    if np.issubdtype(images.dtype, np.integer) and (images.size == 0 or (images.min() >= 0 and images.max() <= 255)):
        return images.astype(np.uint8)
    raise DataError(
        f"{where}: images are {images.dtype}, not 8-bit intensities in 0..255; spenser_jax reads uint8 images"
    )


def _stack_examples(source, image_key: str = "image", label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    indices = list(range(len(source)))
    # ArrayRecord sources read a batch of records at once; a plain sequence
    # one at a time.
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(indices) if getitems is not None else [source[i] for i in indices]
    if not examples:
        raise DataError("tensorflow-datasets returned an empty split")
    images = [np.asarray(e[image_key]) for e in examples]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(
            f"tensorflow-datasets returned images of {len(shapes)} different shapes "
            f"(e.g. {sorted(shapes)[:2]}); pick a data set (or config) whose images "
            "all have one size"
        )
    labels = np.asarray([e[label_key] for e in examples])
    return np.stack(images), labels
