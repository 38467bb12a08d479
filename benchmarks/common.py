"""Helpers shared by the benchmarks: machine and version info, timing, results.

Every benchmark writes one JSON file to ``benchmarks/results/`` with
:func:`write_result`; its payload carries :func:`machine_info` and
:func:`versions` so that figures from different machines or library versions
are never compared by accident. Benchmarks are scripts, not part of the
package: run them from the repository root, e.g.
``python benchmarks/train_throughput.py``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Distributions whose versions every result records (None: not installed).
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "snntorch")


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


def machine_info() -> dict[str, Any]:
    """Platform, CPU, memory, host and JAX's backend and devices."""
    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
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
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times}


def today() -> str:
    """Local date as ``YYYY-MM-DD`` (the results' file-name stamp)."""
    return datetime.date.today().isoformat()


def write_result(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Writes ``payload`` to ``<directory>/<name>_<date>.json`` atomically.

    ``date`` (ISO timestamp) is added when the payload has none. A file of
    the same name and day is replaced: the latest run of the day wins.

    Returns:
      The path written.
    """
    directory = Path(directory or RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               **payload}
    path = directory / f"{name}_{today()}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
