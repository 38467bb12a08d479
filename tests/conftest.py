import os
import tempfile

# Tests run on the CPU whatever the machine has, so results and compile
# behaviour match CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
