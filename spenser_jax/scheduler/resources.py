"""What the scheduler runs on and keeps: devices, free memory, compile threads and caches.

Small, stateless helpers (and one bounded map) that both the caller
(``spenser_jax.evolve`` resolves ``"auto"`` settings with them) and the
:class:`~spenser_jax.scheduler.Evaluator` use; nothing here knows about
individuals or signatures.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax


def enable_compile_cache(path: str | os.PathLike | None) -> None:
    """Persist compiled XLA programs in ``path`` (None: leave JAX's setting)."""
    if not path:
        return
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))


_MALLOPT = {  # glibc's mallopt parameters (malloc.h) and the values keep_host_memory sets
    -8: 1,  # M_ARENA_MAX: every thread allocates from the main heap, which the settings below govern
    -4: 0,  # M_MMAP_MAX: no block gets a mapping of its own (unmapped again when freed)
    -1: 2**31 - 1,  # M_TRIM_THRESHOLD: hand freed heap back to the kernel only beyond 2 GiB free at its top
}


def keep_host_memory() -> bool:
    """Keep freed host memory in the C allocator for the next program, instead of returning it to the kernel.

    XLA:CPU allocates a program's buffers at every call. glibc gives large
    blocks mappings of their own and unmaps them when they are freed, so
    every call faults its pages in again and the kernel zeroes them: on this
    project's 2-core host (``benchmarks/host_memory.py``) that was a sixth of
    a large network's epoch and a third for programs per block, which are
    called several times per step. With these settings freed memory is
    reused. Nothing computed changes; the process keeps its peak memory
    until :func:`release_host_memory` hands it back.

    Call it before the backend starts (before the first computation): threads
    that already hold an allocator arena keep it. Returns False where the C
    library has no ``mallopt`` (not glibc: nothing changed).
    """
    import ctypes

    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _kept
    _kept = all(mallopt(param, value) == 1 for param, value in _MALLOPT.items())
    return _kept


_kept = False


@functools.cache
def _libc():
    # Looked up once: find_library runs ldconfig in a subprocess, and the release comes after every candidate.
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_host_memory() -> None:
    """Hand the kept heap's free pages back to the kernel (after :func:`keep_host_memory`; else nothing).

    Kept memory is reused while one network trains, but networks of a
    search differ: with one heap trimmed only at its top, a few large ones
    leave it at their peak (13.9 GB resident, against glibc's default's
    peak of 10.5, in the first generation of a random search at subset
    3,000, measured by hand; ``benchmarks/search_memory.py`` repeats it).
    ``malloc_trim`` releases free pages anywhere in the heap, so between
    candidates the process holds what is live, at the cost of faulting the
    next one's first pages in again.
    """
    if _kept:
        _libc().malloc_trim(0)


def wants_host_memory_kept(setting: bool | str, per_block: bool) -> bool:
    """``runtime.keep_host_memory`` resolved for a run that trains through programs per block (``per_block``) or not.

    ``"auto"`` keeps it for programs per block on a CPU: they gain most
    (``benchmarks/host_memory.py``). One program per network gains too when
    it runs alone, but on 2 cores with a program compiling beside it the
    compiler's allocations wait on the one arena: ``preset=quick
    search=fast`` took 44-49 s with glibc's default and 53-63 s with memory
    kept, while per block it went from 38.5 to 33.5 s. Accelerators: not measured.
    """
    if setting == "auto":
        return per_block and not accelerator_installed()
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"runtime.keep_host_memory must be auto, true or false, got {setting!r}")


def accelerator_installed() -> bool:
    """Whether a JAX accelerator plugin is installed, found without starting a backend (which starts threads)."""
    import importlib.util

    names = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() not in ("cpu", "")
    return any(importlib.util.find_spec(name) is not None for name in names)


def default_compile_threads(backend: str | None = None) -> int:
    """Compile threads for ``backend`` (default: JAX's default backend).

    CPU: 1, one program compiling ahead while the previous one trains
    (measured on a shared 2-core host, ``benchmarks/generation_throughput.py``:
    ~7% faster than compiling and training in turn at light load; 2 threads
    were slower, and under heavy load from other processes any overlap can
    lose, since the compiler then steals cores from training's multi-threaded
    ops: set 0 there). Accelerators: the host cores are idle while the
    device trains, so up to 4 programs compile at once (not measured yet).
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1
    return min(4, os.cpu_count() or 1)


def compiler_options(platform: str, *, opt_level: int | None = None, cpu_fusion_emitters: bool = True) -> dict:
    """XLA options for every program a run compiles.

    On CPU, ``cpu_fusion_emitters=False`` selects XLA's loop emitters instead
    of its newer fusion emitters: each elementwise fusion is cheaper to
    generate, so a network's program compiles in about 0.6x the time
    (``benchmarks/compile_cost.py``); every operation alone computes the
    same bits, but whole programs differ in the last bits (~3e-8 after a few
    steps), so like ``opt_level`` (``xla_backend_optimization_level``) it
    belongs to a run's identity.
    """
    options = {}
    if platform == "cpu" and not cpu_fusion_emitters:
        options["xla_cpu_use_fusion_emitters"] = False
    if opt_level is not None:
        options["xla_backend_optimization_level"] = opt_level
    return options


def select_devices(devices: int | Sequence[Any] | None) -> tuple:
    """This process's devices to use: all (None), the first ``n``, or the ones given.

    With several hosts (``jax.distributed``), each process evaluates on its
    own devices (see the README).
    """
    available = jax.local_devices()
    if devices is None:
        return tuple(available)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices must be in [1, {len(available)}], got {devices}")
        return tuple(available[:devices])
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return devices


def free_bytes(device) -> int:
    """Free memory of ``device`` (host RAM for CPU devices)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class LRU:
    """A small thread-safe least-recently-used map with a bound."""

    def __init__(self, size: int):
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_make(self, key, make: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
