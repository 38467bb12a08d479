"""Helpers shared by the benchmarks: machine and version info, timing, data, results.

Every benchmark writes one JSON file to ``benchmarks/results/`` (or the
folder given with ``--out``) with :func:`write_result`; its payload starts
with :func:`header` (machine, versions, date, load average) so that figures
from different machines or library versions are never compared by accident.
Benchmarks are scripts, not part of the package: run them from the
repository root, e.g. ``python benchmarks/train_throughput.py``. Importing
this module puts the checkout first on ``sys.path``, so the scripts measure
this checkout's package whether or not (and however) it is installed; it
imports JAX only where a function needs it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Distributions whose versions every result records (None: not installed).
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "flax",
    "optax",
    "numpy",
    "torch",
    "snntorch",
)


def _cpu_model() -> str:
    # platform.processor() is empty or just "x86_64" on most Linux systems.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpu_info() -> list[dict[str, str]] | None:
    """Name, driver and memory of each NVIDIA GPU (``nvidia-smi``), None without one."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    keys = ("name", "driver", "memory", "compute_capability")
    return [dict(zip(keys, (x.strip() for x in line.split(",")))) for line in out.splitlines() if line.strip()]


def host_info() -> dict[str, Any]:
    """Platform, CPU, memory, host, Python and GPUs, without starting JAX."""
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "gpus": gpu_info(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_platforms": os.environ.get("JAX_PLATFORMS", ""),
    }


def machine_info() -> dict[str, Any]:
    """:func:`host_info` and JAX's backend and devices (starts JAX's backend)."""
    import jax

    devices = jax.devices()
    return {
        **host_info(),
        "jax_backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
    }


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages``, read from their metadata.

    Nothing is imported, so asking for torch's version costs nothing and
    works without it (the value is then None).
    """
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Wall-clock time of ``fn()``, blocking on its (JAX) result.

    ``fn`` runs ``warmup`` times untimed (compilation, caches), then
    ``repeats`` times timed; each timed call ends with
    ``jax.block_until_ready`` on what it returns (a no-op for non-JAX values,
    e.g. torch tensors, whose CPU ops are synchronous).

    Returns:
      ``{"median_s", "min_s", "max_s", "times_s"}``.
    """
    import jax

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times}


def header(benchmark: str, load_before: list[float] | None = None) -> dict[str, Any]:
    """The fields every result starts with: name, machine, versions, load average.

    ``load_before``: the load average taken when the benchmark started (the
    current one is recorded as ``after``).
    """
    return {
        "benchmark": benchmark,
        "machine": machine_info(),
        "versions": versions(),
        "load_average": {
            "before": load_before,
            "after": load_average(),
            "note": "1/5/15-minute load averages of the host",
        },
    }


# --------------------------------------------------------------------------
# Data


def load_train_images(
    name: str, n: int | None, seed: int = 0, shape: tuple[int, int, int] = (28, 28, 1)
) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``n`` train images of ``name`` (uint8 NHWC) and int32 labels.

    ``name`` is ``"mnist"``/``"fmnist"`` (the IDX files from
    ``$SPENSER_DATA_DIR`` or ``../shared/data``, see ``spenser_jax.data``) or
    ``"random"``. When the files are missing the images are uniform random
    pixels of the same shape and the labels uniform over 10 classes.

    Returns:
      ``(images, labels, source)``: ``source`` is ``name`` or
      ``"random (<why>)"``: every result records it.
    """
    from spenser_jax import data

    if name != "random":
        try:
            ds = data.load(name)
            n = len(ds.train_labels) if n is None else n
            return (np.ascontiguousarray(ds.train_images[:n]), np.asarray(ds.train_labels[:n], np.int32), name)
        except data.DataError as err:
            why = f"{name} not found: {str(err).splitlines()[0][:200]}"
            print(f"{why}; using random images", file=sys.stderr, flush=True)
        source = f"random ({why})"
    else:
        source = "random"
    n = 60_000 if n is None else n
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return images, rng.integers(0, 10, n, dtype=np.int32), source


def load_splits(name: str, seed: int, subset: int | None):
    """The paper's EvoTrain/Fitness splits of ``name`` (``spenser_jax.data.split``).

    Random images of MNIST's shape and size (60,000 train, 10,000 test) when
    the files are missing.

    Returns:
      ``(splits, source)`` as :func:`load_train_images`.
    """
    from spenser_jax import data

    try:
        ds, source = data.load(name), name
    except data.DataError as err:
        source = f"random ({name} not found: {str(err).splitlines()[0][:200]})"
        print(f"{source}; using random images", file=sys.stderr, flush=True)
        rng = np.random.default_rng(seed)
        ds = data.Dataset(
            name,
            rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 10, 60_000).astype(np.int32),
            rng.integers(0, 256, (10_000, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 10, 10_000).astype(np.int32),
            10,
        )
    return data.split(ds, seed=seed, subset=subset), source


def spread(values: list[float]) -> dict[str, Any]:
    """Median, 10th and 90th percentile and count of per-item ratios ({} when there are none)."""
    if not values:
        return {}
    return {
        "median": statistics.median(values),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "count": len(values),
    }


def today() -> str:
    """Local date as ``YYYY-MM-DD`` (the results' file-name stamp)."""
    return datetime.date.today().isoformat()


def _plain(value: Any) -> Any:
    # NumPy scalars and arrays, paths: what json cannot write itself.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_result(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Writes ``payload`` to ``<directory>/<name>_<date>.json`` atomically.

    ``date`` (ISO timestamp) is added when the payload has none. A file of
    the same name and day is replaced: the latest run of the day wins.
    ``directory`` defaults to ``benchmarks/results`` (the scripts' ``--out``).

    Returns:
      The path written.
    """
    directory = Path(directory or RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **payload}
    path = directory / f"{name}_{today()}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def keep_host_memory_as_the_cli(overrides: Iterable[str] = ()) -> bool:
    """Apply ``runtime.keep_host_memory`` (from ``overrides``, else ``auto``) as ``python -m spenser_jax.evolve``
    does, so a benchmark times what a user's run does; call it first. Returns whether memory is kept.

    ``overrides`` are Hydra's (``runtime.compile_unit=layer`` among them); a preset that sets
    ``compile_unit`` (``search=fast``) is not seen here: name it in the overrides too."""
    from spenser_jax import scheduler

    found: dict[str, Any] = {"keep_host_memory": "auto", "compile_unit": "network"}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("runtime.") and key[len("runtime.") :] in found:
            found[key[len("runtime.") :]] = {"true": True, "false": False}.get(value.lower(), value)
    per_block = found["compile_unit"] in ("layer", "auto")
    return scheduler.wants_host_memory_kept(found["keep_host_memory"], per_block) and scheduler.keep_host_memory()
