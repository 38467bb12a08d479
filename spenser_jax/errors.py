"""The one base of spenser_jax's errors, and the command lines' one way to report them.

Every error raised for a user to act on (a bad configuration, grammar, data
set, run directory, individual, ...) is a :class:`SpenserError` that keeps
its builtin base (``ValueError``, ``RuntimeError``), so existing ``except``
clauses still catch it, while a bug still ends in a traceback. Every
command reports them alike: one ``error: ...`` line on stderr, exit status 1
(:func:`command`, :func:`fail`). Imports nothing from spenser_jax.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class SpenserError(Exception):
    """An error a user can act on; its message says what and, where it can, how."""


class ConfigError(SpenserError, ValueError):
    """A configuration value that cannot be used."""


def require(condition: bool, message: str) -> None:
    """A :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def is_int(value, low: int) -> bool:
    """An int (not a bool) of at least ``low``: what a count in a configuration must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_number(value) -> bool:
    """An int or a float (not a bool, not a string): what a rate or fraction in a configuration must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


# Command-line argument types: a bad value is a usage error at once (argparse
# prints it and exits 2), not a failure after minutes of work.


def _whole(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _whole(text, 1)


def count(text: str) -> int:
    """argparse type: an int >= 0."""
    return _whole(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def output_file(text: str) -> str:
    """argparse type: a file to write; its folder must exist (``-`` is stdout) and it must not be a folder."""
    import argparse
    from pathlib import Path

    if text == "-":
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {path.parent} does not exist")
    return text


def output_folder(text: str) -> str:
    """argparse type: a folder to write into (made when missing); not an existing file."""
    import argparse
    from pathlib import Path

    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; give a folder to write into")
    return text


def individual(text: str) -> str:
    """argparse type: ``best`` or ``G:I`` (two whole numbers >= 0), so a malformed one is a usage error."""
    import argparse

    parts = text.split(":")
    if text != "best" and not (len(parts) == 2 and all(p.isdigit() and p.isascii() for p in parts)):
        raise argparse.ArgumentTypeError(
            f"must be best or G:I (generation:index, both whole numbers counted from 0 as in generations.jsonl), "
            f"got {text!r}"
        )
    return text


def add_json_argument(parser, what: str) -> None:
    """``--json [PATH]``, the same in every command: ``--json`` alone prints ``what`` as JSON on
    stdout (instead of the text), ``--json PATH`` writes it there (and the text still prints)."""
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        type=output_file,
        metavar="PATH",
        help=f"{what} as JSON: on stdout instead of the text (--json alone), or into PATH",
    )


def add_individual_arguments(parser, note: str) -> None:
    """``--individual best|G:I`` and ``--retrained`` / ``--search-weights``, as inspect and export take them.

    ``note`` ends the ``--individual`` help (what happens to an individual that is not the best).
    """
    parser.add_argument(
        "--individual",
        default="best",
        type=individual,
        metavar="best|G:I",
        help=f"best (default) or G:I, individual I of generation G, both counted from 0 as in generations.jsonl "
        f"({note})",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--retrained",
        action="store_true",
        help="the best with the weights retrain left (the default when they are readable)",
    )
    which.add_argument(
        "--search-weights", action="store_true", help="the weights the search scored, even after a retrain"
    )


def chosen_weights(args) -> str:
    """The ``weights`` argument of ``checkpoint.Run.choose`` that :func:`add_individual_arguments` parsed."""
    return "retrained" if args.retrained else "search" if args.search_weights else "auto"


def file_mode() -> int:
    """The mode a new file of ours gets: 0o666 less the process's umask, as ``open()`` gives Hydra's ``evolve.log``.

    One policy for every file a command writes (results through temporary
    files, which ``mkstemp`` makes 0600, and the log alike): the umask is how
    a user says who may read what they make (022: a group sharing a cluster's
    run directories reads them all; 077: nobody else reads any of them), so
    results follow it instead of being more private than the log beside them.
    """
    import os

    try:  # Linux: read it without changing it (os.umask sets as it reads, racing other threads)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_json(dest: str, text: str) -> None:
    """JSON text to stdout (``dest`` ``-``) or to the file ``dest``, whole or not at all."""
    import os
    import tempfile
    from pathlib import Path

    if dest == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    path = Path(dest).expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
