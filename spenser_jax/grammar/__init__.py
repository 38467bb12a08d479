"""BNF grammars with numeric genes: the search space of the DSGE level.

The format is docs/search-space.md's (the SPENSER paper's Grammar 2 is
``grammars/csnn.grammar``): ``<nt> ::= alt | alt``, rules continued over
lines, ``key : value`` terminals (spaces around the colon removed), numeric
genes ``[name, int|float, count, min, max]``, repeated alternatives weigh
more, and ``%name value`` options (:data:`OPTIONS`) that the configuration
may override. Parsing errors name the file and line (:class:`GrammarError`).

This module is the parser alone and imports nothing else from spenser_jax
but :mod:`spenser_jax.errors`; ``python -m spenser_jax.grammar`` samples and
mutates individuals (``__main__.py``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from spenser_jax.errors import SpenserError


class GrammarError(SpenserError, ValueError):
    """A grammar file that cannot be used; the message names file and line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Terminal:
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class NonTerminal:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Gene:
    """A numeric gene: ``count`` values of ``type`` in ``[low, high]``."""

    name: str
    type: str  # "int" | "float"
    count: int
    low: float | int
    high: float | int

    @property
    def is_int(self) -> bool:
        return self.type == "int"

    def contains(self, value) -> bool:
        ok_type = (isinstance(value, int) and not isinstance(value, bool)) if self.is_int else isinstance(value, float)
        return ok_type and self.low <= value <= self.high


Symbol = Terminal | NonTerminal | Gene
Production = tuple[Symbol, ...]


@dataclasses.dataclass(frozen=True)
class Grammar:
    """A parsed grammar: ``rules`` (nonterminal -> productions in file order, repeats kept).

    ``lines`` and ``production_lines`` say where each rule and production
    starts (for messages); ``min_height`` is the fewest derivation levels each
    nonterminal needs to finish, to steer sampling of recursive grammars towards
    termination; ``options`` are the ``%name value`` lines, checked and typed
    (:data:`OPTIONS`).
    """

    rules: dict[str, tuple[Production, ...]]
    lines: dict[str, int]
    path: str = "<string>"
    min_height: dict[str, int] = dataclasses.field(default_factory=dict)
    options: dict[str, int | float] = dataclasses.field(default_factory=dict)
    production_lines: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def option(self, name: str, default=None):
        """The grammar's ``%name value`` option, or ``default``."""
        if name not in OPTIONS:
            raise KeyError(f"no grammar option %{name} (known: {sorted(OPTIONS)})")
        return self.options.get(name, default)

    def values_of(self, key: str) -> list[tuple[str, int]]:
        """``(value, line)`` of every terminal ``key:value`` in the grammar, in file order."""
        found = []
        for nt, productions in self.rules.items():
            lines = self.production_lines.get(nt, (self.lines.get(nt, 0),) * len(productions))
            for production, line in zip(productions, lines):
                found += [
                    (s.text.partition(":")[2], line)
                    for s in production
                    if isinstance(s, Terminal) and s.text.partition(":")[0] == key
                ]
        return found

    def production_height(self, production: Production) -> int:
        return 1 + max((self.min_height[s.name] for s in production if isinstance(s, NonTerminal)), default=0)

    def terminating_choices(self, nt: str) -> list[int]:
        """Indices of ``nt``'s productions that finish in the fewest levels."""
        heights = [self.production_height(p) for p in self.rules[nt]]
        best = min(heights)
        return [i for i, h in enumerate(heights) if h == best]

    def require(self, names) -> None:
        """Raise if any of ``names`` (e.g. the GA modules) is not defined."""
        missing = [n for n in names if n not in self.rules]
        if missing:
            raise GrammarError(
                f"{self.path}: module nonterminal(s) {missing} not defined (defined: {sorted(self.rules)})"
            )


_RULE = re.compile(r"^\s*<([^<>\s]+)>\s*::=(.*)$")
_TOKEN = re.compile(r"<[^<>]*>|\[[^\]]*\]|[^\s<\[]+|[<\[]")


def _parse_number(text: str, as_int: bool):
    text = text.strip()
    try:
        return int(text) if as_int else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {'an int' if as_int else 'a number'}") from None


def _parse_gene(token: str) -> Gene:
    fields = [f.strip() for f in token[1:-1].split(",")]
    if len(fields) != 5:
        raise ValueError(f"numeric gene {token} needs 5 fields [name, int|float, count, min, max]")
    name, kind, count, low, high = fields
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", name):
        raise ValueError(f"numeric gene {token} has a bad name {name!r}")
    if kind not in ("int", "float"):
        raise ValueError(f"numeric gene {token} has unknown type {kind!r} (int or float)")
    count_value = _parse_number(count, True)
    if count_value < 1:
        raise ValueError(f"numeric gene {token} needs count >= 1")
    lo, hi = _parse_number(low, kind == "int"), _parse_number(high, kind == "int")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"numeric gene {token} has a non-finite bound")
    if lo > hi:
        raise ValueError(f"numeric gene {token} has min > max")
    return Gene(name, kind, count_value, lo, hi)


def _parse_alternative(text: str) -> Production:
    symbols: list[Symbol] = []
    words: list[str] = []

    def flush():
        if words:
            joined = re.sub(r"\s*:\s*", ":", " ".join(words))
            symbols.extend(Terminal(t) for t in joined.split())
            words.clear()

    for token in _TOKEN.findall(text):
        if token.startswith("<"):
            if not token.endswith(">") or len(token) < 3 or re.search(r"\s", token):
                raise ValueError(f"malformed nonterminal {token!r}")
            flush()
            symbols.append(NonTerminal(token[1:-1]))
        elif token.startswith("["):
            if not token.endswith("]"):
                raise ValueError("unclosed '[' in numeric gene")
            flush()
            symbols.append(_parse_gene(token))
        else:
            words.append(token)
    flush()
    for s in symbols:
        if isinstance(s, Terminal) and (s.text.startswith(":") or s.text.endswith(":")):
            raise ValueError(f"terminal {s.text!r} is missing a key or a value")
    return tuple(symbols)


def _split_alternatives(body: str) -> list[str]:
    # '|' separates alternatives except inside a numeric gene's brackets.
    parts, depth, current = [], 0, []
    for ch in body:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_grammar(text: str, path: str = "<string>") -> Grammar:
    """Parse grammar text. Raises :class:`GrammarError` naming ``path`` and a line."""
    # Collect each rule's body with the line each piece of text came from, so
    # errors in continuation lines point at the right line.
    raw: dict[str, list[tuple[int, str]]] = {}
    lines: dict[str, int] = {}
    options: dict[str, int | float] = {}
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0]
        if not line.strip():
            continue
        if line.lstrip().startswith("%"):
            name, value = _parse_option(line.strip()[1:], path, number)
            if name in options:
                raise GrammarError(f"{path}:{number}: option %{name} is set twice")
            options[name] = value
            current = None  # an option ends the rule before it
            continue
        match = _RULE.match(line)
        if match:
            current = match.group(1)
            if current in raw:
                raise GrammarError(f"{path}:{number}: <{current}> is defined again (first at line {lines[current]})")
            raw[current], lines[current] = [(number, match.group(2))], number
        elif "::=" in line:
            raise GrammarError(f"{path}:{number}: malformed rule head (expected '<name> ::= ...')")
        elif current is None:
            raise GrammarError(f"{path}:{number}: text outside any rule")
        else:
            raw[current].append((number, line))
    if not raw:
        raise GrammarError(f"{path}: no rules found")

    rules: dict[str, tuple[Production, ...]] = {}
    production_lines: dict[str, tuple[int, ...]] = {}
    for nt, pieces in raw.items():
        # Alternatives may span lines; join with a marker so we know where
        # each alternative started for error messages.
        productions = []
        alt_text, alt_line = "", pieces[0][0]
        for number, piece in pieces:
            for k, part in enumerate(_split_alternatives(piece)):
                if k > 0:
                    productions.append((alt_line, alt_text))
                    alt_text, alt_line = "", number
                if not alt_text.strip():
                    alt_line = number
                alt_text += " " + part
        productions.append((alt_line, alt_text))
        if all(not t.strip() for _, t in productions) and len(productions) == 1:
            raise GrammarError(f"{path}:{lines[nt]}: <{nt}> has no productions")
        parsed = []
        for number, alt in productions:
            if not alt.strip():
                raise GrammarError(f"{path}:{number}: <{nt}> has an empty alternative")
            try:
                parsed.append(_parse_alternative(alt))
            except ValueError as err:
                raise GrammarError(f"{path}:{number}: {err}") from None
        rules[nt] = tuple(parsed)
        production_lines[nt] = tuple(number for number, _ in productions)

    for nt, productions in rules.items():
        for production in productions:
            for s in production:
                if isinstance(s, NonTerminal) and s.name not in rules:
                    line = _line_of(raw[nt], f"<{s.name}>")
                    raise GrammarError(f"{path}:{line}: unknown nonterminal <{s.name}> in <{nt}>")

    return Grammar(rules, lines, path, _min_heights(rules, lines, path), options, production_lines)


def _int_at_least_1(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"needs a whole number >= 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"needs a whole number >= 1, got {raw}")
    return value


def _probability(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"needs a probability in [0, 1], got {raw!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"needs a probability in [0, 1], got {raw}")
    return value


#: The ``%name value`` options a grammar may set, each with its parser (which
#: raises ValueError for a value it does not take).
OPTIONS = {
    "levels-back": _int_at_least_1,
    "add-connection": _probability,
    "remove-connection": _probability,
}


def _parse_option(text: str, path: str, number: int) -> tuple[str, int | float]:
    parts = text.split()
    if len(parts) != 2 or not re.fullmatch(r"[A-Za-z][\w\-]*", parts[0]):
        raise GrammarError(f"{path}:{number}: malformed option (expected '%name value')")
    name, raw = parts
    if name not in OPTIONS:
        raise GrammarError(f"{path}:{number}: unknown option %{name} (known: {', '.join('%' + n for n in OPTIONS)})")
    try:
        return name, OPTIONS[name](raw)
    except ValueError as err:
        raise GrammarError(f"{path}:{number}: %{name} {err}") from None


def _line_of(pieces: list[tuple[int, str]], needle: str) -> int:
    return next((n for n, text in pieces if needle in text), pieces[0][0])


def _min_heights(rules, lines, path) -> dict[str, int]:
    # Fixpoint: a nonterminal finishes once one of its productions uses only
    # nonterminals that finish. Whatever never finishes recurses forever.
    height: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for nt, productions in rules.items():
            for production in productions:
                subs = [s.name for s in production if isinstance(s, NonTerminal)]
                if all(n in height for n in subs):
                    h = 1 + max((height[n] for n in subs), default=0)
                    if h < height.get(nt, math.inf):
                        height[nt] = h
                        changed = True
    stuck = {nt for nt in rules if nt not in height}
    if stuck:
        # Blame a nonterminal on a cycle, not one that merely uses it.
        def reaches_itself(start):
            seen, todo = set(), [start]
            while todo:
                for p in rules[todo.pop()]:
                    for s in p:
                        if isinstance(s, NonTerminal) and s.name in stuck:
                            if s.name == start:
                                return True
                            if s.name not in seen:
                                seen.add(s.name)
                                todo.append(s.name)
            return False

        line, nt = min((lines[nt], nt) for nt in stuck if reaches_itself(nt))
        raise GrammarError(
            f"{path}:{line}: unbounded recursion: <{nt}> can never finish deriving (every production recurses)"
        )
    return height


#: The grammars shipped with the package (``grammars/`` in a checkout links here).
PACKAGE_GRAMMARS = Path(__file__).resolve().parents[1] / "grammars"


def locate(path: str | Path) -> Path:
    """Find a grammar file: as given (relative to the working directory), then shipped.

    ``grammars/csnn.grammar`` and ``csnn.grammar`` both find the packaged
    Grammar 2 from any directory, so a wheel install needs no checkout.

    Raises:
      GrammarError: found nowhere (the message lists where it looked).
    """
    given = Path(path).expanduser()
    candidates = [given, PACKAGE_GRAMMARS.parent / given, PACKAGE_GRAMMARS / given.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if given.exists():  # a folder (or a device) by that name: found, but not a grammar file
        raise GrammarError(f"grammar {str(path)!r} is not a file (a folder?); give the path of a .grammar file")
    raise GrammarError(f"grammar file {str(path)!r} not found (looked in {Path.cwd()} and {PACKAGE_GRAMMARS})")


def load_grammar(path: str | Path) -> Grammar:
    """Read and parse a grammar file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GrammarError(f"{path}: grammar file not found") from None
    except IsADirectoryError:
        raise GrammarError(f"{path}: not a file (a folder); give the path of a .grammar file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GrammarError(f"{path}: cannot read grammar file ({err})") from None
    return parse_grammar(text, str(path))
