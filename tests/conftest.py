import os
import tempfile

# Tests run on the CPU whatever the machine has, so results and compile
# behaviour match CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# XLA:CPU at optimisation level 0 compiles ~3x faster (tests/test_network.py:
# 135 s -> 40 s), and compiling is most of this suite's time. The tests
# compare two computations in the same process (orders, batching, resume) or
# against snntorch within a tolerance, which hold at any level. That batched
# and one-by-one evaluation agree bit for bit at the default level, as users
# compile, is what benchmarks/generation_throughput.py checks (each
# variant's "identical_to_none"). Subprocesses inherit the flag.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

# One persistent XLA cache for the session (inherited by the subprocesses
# tests start): ahead-of-time compiles (`lower().compile()`) skip JAX's
# in-memory cache, so identical programs compiled again by another Evaluator
# or process load from disk instead. A fresh directory per session keeps
# runs independent of each other; cached programs compute exactly what
# freshly compiled ones do.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.TemporaryDirectory(prefix="spenser-test-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE.name
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
