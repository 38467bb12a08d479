"""A recompile guard for tests: which programs XLA compiled inside a block."""

import contextlib
import logging

import jax


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" ")[1])


@contextlib.contextmanager
def compilations():
    """Yields a list that fills with the names of the functions compiled in the block.

    Reads JAX's own log (``jax_log_compiles``), as optax's
    ``test_utils.log_compilations`` does: a second call of a cached program
    must leave the list empty.
    """
    handler = _Collect()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler.names
    finally:
        logger.removeHandler(handler)
