"""``runtime.*``: where and how a generation is evaluated, every default resolved.

None of it changes results except what :func:`spenser_jax.run.config.setup`
writes into the identity (vmapped groups, the XLA optimisation level and
emitters, programs per block).
"""

from __future__ import annotations

from spenser_jax.errors import ConfigError, is_int, require

EXECUTORS = ("local", "ray")


def per_block(rt: dict) -> bool:
    """Whether the run may train through programs per block: known before the backend starts, so
    ``compile_unit=auto`` counts (it resolves to them on a CPU)."""
    return rt.get("compile_unit", "network") in ("layer", "auto")


def keeps_host_memory(rt: dict) -> bool:
    """``runtime.keep_host_memory`` resolved (:func:`spenser_jax.scheduler.keep_host_memory`)."""
    from spenser_jax import scheduler

    try:
        return scheduler.wants_host_memory_kept(rt.get("keep_host_memory", "auto"), per_block(rt))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def runtime_options(rt: dict) -> dict:
    """The Evaluator's runtime options from ``runtime.*``, every default resolved."""
    from spenser_jax import scheduler

    batching = rt.get("batching", "auto")
    require(
        batching in ("auto",) + scheduler.BATCHING,
        f"runtime.batching must be auto | none | map | vmap, got {batching!r}",
    )
    threads = rt.get("compile_threads")
    require(threads is None or is_int(threads, 0), "runtime.compile_threads must be null or an int >= 0")
    devices = rt.get("devices")
    require(devices in (None, "all") or is_int(devices, 1), "runtime.devices must be null, all or an int >= 1")
    vmap_group = rt.get("vmap_group")
    require(vmap_group in (None, "auto") or is_int(vmap_group, 1), "runtime.vmap_group must be null or an int >= 1")
    level = rt.get("xla_opt_level")
    require(level in (None, 0, 1, 2, 3), f"runtime.xla_opt_level must be null or 0..3, got {level!r}")
    emitters = rt.get("xla_cpu_fusion_emitters", True)
    require(isinstance(emitters, bool), f"runtime.xla_cpu_fusion_emitters must be true or false, got {emitters!r}")
    keeps_host_memory(rt)  # applied by the command line, before anything starts the backend
    unit = rt.get("compile_unit", "network")
    require(
        unit == "auto" or unit in scheduler.COMPILE_UNITS,
        f"runtime.compile_unit must be one of {['auto', *scheduler.COMPILE_UNITS]}, got {unit!r}",
    )
    try:
        selected = scheduler.select_devices(None if devices in (None, "all") else devices)
    except ValueError as err:
        raise ConfigError(f"runtime.devices: {err}") from None
    if unit == "auto":  # blocks on one CPU, where they were measured to pay; whole programs spread over devices
        single_cpu = len(selected) == 1 and selected[0].platform == "cpu"
        unit = "layer" if single_cpu and batching != "vmap" else "network"
    return {
        "batching": "map" if batching == "auto" else batching,
        "compile_threads": (scheduler.default_compile_threads(selected[0].platform) if threads is None else threads),
        "devices": selected,
        "vmap_group": None if vmap_group in (None, "auto") else vmap_group,
        "compiler_options": scheduler.compiler_options(
            selected[0].platform, opt_level=level, cpu_fusion_emitters=emitters
        ),
        "progress": bool(rt.get("progress", True)),
        "compile_unit": unit,
    }


def executor_options(rt: dict) -> dict:
    """Where individuals are evaluated (``runtime.executor`` and its ``ray_*`` keys); results do not depend on it.

    Besides ``name``, the keyword arguments of :class:`~spenser_jax.scheduler.ray_executor.RayEvaluator`.
    """
    name = rt.get("executor", "local")
    require(name in EXECUTORS, f"runtime.executor must be one of {list(EXECUTORS)}, got {name!r}")
    if name == "local":
        return {"name": name}
    import importlib.util

    # Refused with the config, before the run directory is made: not after its files were written.
    require(
        importlib.util.find_spec("ray") is not None,
        "runtime.executor=ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9'), "
        "or use runtime.executor=local",
    )
    address = rt.get("ray_address")
    require(address is None or isinstance(address, str), "runtime.ray_address must be null, auto or host:port")
    cpus, gpus, workers = rt.get("ray_cpus", 1), rt.get("ray_gpus", 0), rt.get("ray_workers")
    for key, value in (("ray_cpus", cpus), ("ray_gpus", gpus)):
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            f"runtime.{key} must be a number >= 0, got {value!r}",
        )
    require(cpus > 0 or gpus > 0, "runtime.ray_cpus and runtime.ray_gpus cannot both be 0")
    require(workers is None or is_int(workers, 1), "runtime.ray_workers must be null or an int >= 1")
    return {
        "name": name,
        "address": address,
        "cpus": float(cpus),
        "gpus": float(gpus),
        "workers": workers,
        "compile_cache": rt.get("compile_cache"),  # each worker opens the same persistent cache
        # Resolved on each worker's host as it starts.
        "keep_host_memory": (rt.get("keep_host_memory", "auto"), per_block(rt)),
    }
