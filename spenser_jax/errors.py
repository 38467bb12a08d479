"""The one base of spenser_jax's errors, and the command lines' one way to report them.

Every error spenser_jax raises for a user to act on (a bad configuration,
grammar, data set, run directory, individual, ...) is a :class:`SpenserError`;
each keeps the builtin base it had (``ValueError``, ``RuntimeError``) so
existing ``except`` clauses still catch it. ``except SpenserError`` catches
them all, and a bug (anything else) still ends in a traceback.

The command lines (evolve, retrain, inspect, export, report, grammar) report
them the same way: one line ``error: ...`` on stderr and exit status 1
(:func:`command`, :func:`fail`).

This module imports nothing from spenser_jax, so every module can import it.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class SpenserError(Exception):
    """An error a user can act on; its message says what and, where it can, how."""


#: What a command line reports as ``error: ...`` instead of a traceback: our
#: errors, and a file it cannot read or write (a missing folder, permissions).
REPORTED = (SpenserError, OSError)


def fail(err: BaseException | str) -> int:
    """Print ``error: <err>`` on stderr (one line); returns the exit status, 1."""
    print(f"error: {err}", file=sys.stderr)
    return 1


def command(main: Callable[..., int]) -> Callable[..., int]:
    """A command line's ``main(argv)`` that reports :data:`REPORTED` errors with :func:`fail`.

    The wrapped ``main`` returns 1 after such an error (``raise
    SystemExit(main())`` then exits 1); argparse's usage errors still exit 2.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except REPORTED as err:
            return fail(err)

    return wrapper
