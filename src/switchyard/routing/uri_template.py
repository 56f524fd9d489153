"""RFC 6570 URI templates, matched (not expanded) to find which backend owns a URI.

A template compiles to a sequence of literal text and *runs*: an expression matches a run of
characters from a class, optionally introduced by its operator's lead character. Matching walks
that sequence once, carrying the set of reachable URI positions as sorted intervals, so its cost
is linear in the URI's length whatever the URI's shape (no regex backtracking). A template whose
every expression must run up to a fixed stop character (the common case, `a://{x}/{y}`) uses a
regex with possessive quantifiers instead, which never backtracks either. URIs longer than
`MAX_URI_CHARS` match no template at all.

What each expression matches (the URIs its expansions can produce):

- `{x}` (simple): any run without `/`, `?` or `#`.
- `{+x}` (reserved): any run, slashes included.
- `{#x}` (fragment): nothing, or `#` and any run.
- `{.x}`, `{;x}` (label, path parameter): nothing, or `.`/`;` and a run without `/`, `?`, `#`.
- `{/x}` (path segments): nothing, or `/` and a run without `?` or `#`.
- `{?x}`, `{&x}` (query, continuation): nothing, or `?`/`&` and a run without `#`.

Literal text must match exactly.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

MAX_URI_CHARS: Final = 8192
"""A URI longer than this (in characters) matches no template."""

_EXPR: Final = re.compile(r"\{([^}]*)\}")
_STOP_PATTERNS: Final[dict[str, re.Pattern[str]]] = {}  # one per operator class, filled lazily

# operator -> (lead characters, characters a run may not contain)
_OPERATORS: Final[dict[str, tuple[str, str]]] = {
    "": ("", "/?#"),
    "+": ("", ""),
    "#": ("#", ""),
    ".": (".", "/?#"),
    ";": (";", "/?#"),
    "/": ("/", "?#"),
    "?": ("?&", "#"),
    "&": ("?&", "#"),
}


@dataclass(frozen=True, slots=True)
class Run:
    """One expression: `lead` empty means a bare run (possibly empty); otherwise nothing, or one
    lead character followed by a run. A lead character is never one a run excludes."""

    lead: str
    excluded: str
    lead_pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def spans_segments(self) -> bool:
        return "/" not in self.excluded


Token = str | Run
Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class UriTemplate:
    template: str
    tokens: tuple[Token, ...]
    prefix: str
    """The literal text before the first expression."""
    suffix: str
    """The literal text after the last expression (the whole template if it has none)."""
    expressions: int
    plain: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    """For a template where every expression must run to the first character it stops at (the
    next literal starts with one, or the URI ends): the same language as a regex whose every
    quantifier is possessive, so it never backtracks."""

    @property
    def literal_chars(self) -> int:
        return sum(len(t) for t in self.tokens if isinstance(t, str))

    @property
    def spanning_expressions(self) -> int:
        return sum(1 for t in self.tokens if isinstance(t, Run) and t.spans_segments)

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key, most specific first: the longer literal prefix, then fewer expressions
        that may span `/` (`{+x}`, `{#x}`, `{/x}`), then more literal characters."""
        return (-len(self.prefix), self.spanning_expressions, -self.literal_chars)

    def matches(self, uri: str, stops: Stops | None = None) -> bool:
        """Whether some expansion of the template is exactly `uri`. `stops` may be shared
        across templates matched against the same URI."""
        n = len(uri)
        if n > MAX_URI_CHARS:
            return False
        if not self.expressions:
            return uri == self.template
        if self.plain is not None:
            return self.plain.fullmatch(uri) is not None
        # Prefix and suffix are separate literal tokens here, so they may not overlap.
        if (
            len(self.prefix) + len(self.suffix) > n
            or not uri.startswith(self.prefix)
            or not uri.endswith(self.suffix)
        ):
            return False
        stops = stops if stops is not None else Stops(uri)
        reach: list[Interval] = [(0, 0)]
        for token in self.tokens:
            if isinstance(token, str):
                reach = _literal_step(uri, reach, token)
            else:
                reach = _run_step(uri, reach, token, stops)
            if not reach:
                return False
        return reach[-1][1] == n


class Stops:
    """Per URI: the positions of the characters each run class stops at, found once."""

    __slots__ = ("_positions", "uri")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._positions: dict[str, list[int]] = {}

    def next_stop(self, excluded: str, at: int) -> int:
        """The first position >= `at` holding a character of `excluded`, else the URI's end."""
        if not excluded:
            return len(self.uri)
        positions = self._positions.get(excluded)
        if positions is None:
            stops = _STOP_PATTERNS.get(excluded)
            if stops is None:
                stops = _STOP_PATTERNS[excluded] = re.compile("[" + re.escape(excluded) + "]")
            positions = [m.start() for m in stops.finditer(self.uri)]
            self._positions[excluded] = positions
        k = bisect_left(positions, at)
        return positions[k] if k < len(positions) else len(self.uri)


def _literal_step(uri: str, reach: list[Interval], literal: str) -> list[Interval]:
    out: list[Interval] = []
    size = len(literal)
    for start, end in reach:
        i = uri.find(literal, start, end + size)
        while i >= 0:
            out.append((i + size, i + size))
            i = uri.find(literal, i + 1, end + size)
    return out


def _run_step(uri: str, reach: list[Interval], run: Run, stops: Stops) -> list[Interval]:
    lead = run.lead_pattern
    if lead is None:
        # From any reachable p, a run reaches up to the next stop; for an interval, from its
        # start to the stop after its end.
        return _merge((start, stops.next_stop(run.excluded, end)) for start, end in reach)
    entered: list[Interval] = []
    for start, end in reach:
        at = start
        while at <= end:
            found = lead.search(uri, at, end + 1)
            if found is None:
                break
            p = found.start() + 1
            stop = stops.next_stop(run.excluded, p)
            entered.append((p, stop))
            # A lead character before `stop` opens a run inside [p, stop]; the one at `stop`
            # is a character runs exclude, never a lead.
            at = stop + 1
    return _merge(_sorted_union(reach, entered))


def _sorted_union(a: list[Interval], b: list[Interval]) -> Iterator[Interval]:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            yield a[i]
            i += 1
        else:
            yield b[j]
            j += 1
    yield from a[i:]
    yield from b[j:]


def _merge(intervals: Iterator[Interval] | list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in intervals:
        if out and start <= out[-1][1] + 1:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def compile_template(template: str) -> UriTemplate:
    """Parse a template into literal text and runs; adjacent literals are joined."""
    tokens: list[Token] = []
    pos = 0
    for m in _EXPR.finditer(template):
        _add_literal(tokens, template[pos : m.start()])
        body = m.group(1)
        op = body[:1] if body[:1] in _OPERATORS else ""
        lead, excluded = _OPERATORS[op]
        pattern = re.compile("[" + re.escape(lead) + "]") if lead else None
        tokens.append(Run(lead, excluded, pattern))
        pos = m.end()
    _add_literal(tokens, template[pos:])
    prefix = tokens[0] if tokens and isinstance(tokens[0], str) else ""
    suffix = tokens[-1] if tokens and isinstance(tokens[-1], str) else ""
    expressions = sum(1 for t in tokens if isinstance(t, Run))
    plain = _possessive(tokens)
    return UriTemplate(template, tuple(tokens), prefix, suffix, expressions, plain)


def _possessive(tokens: list[Token]) -> re.Pattern[str] | None:
    """The possessive regex for `tokens`, or None unless every run is followed by the end or by
    a literal whose first character the run stops at and (for a lead) is not a lead: then a run
    can only end where a possessive quantifier ends it."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            out.append(re.escape(token))
            continue
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if after is not None and (
            not isinstance(after, str) or after[0] not in token.excluded or after[0] in token.lead
        ):
            return None
        run = f"[^{re.escape(token.excluded)}]*+" if token.excluded else ".*+"
        out.append(f"(?:[{re.escape(token.lead)}]{run})?+" if token.lead else run)
    return re.compile("".join(out), re.DOTALL)


def _add_literal(tokens: list[Token], text: str) -> None:
    if not text:
        return
    if tokens and isinstance(tokens[-1], str):
        tokens[-1] += text
    else:
        tokens.append(text)


# -- overlap ----------------------------------------------------------------------------------

State = tuple[int, int]
"""(token index, offset): the offset within a literal, or for a run 0 before it (its lead not
yet seen) and 1 inside it. (len(tokens), 0) accepts."""


def overlaps(a: UriTemplate, b: UriTemplate) -> bool:
    """Whether some URI matches both templates (ignoring the length limit).

    Explores the product of the two templates' automata over the characters that matter to
    either (their literal, lead and stop characters) plus one standing for every other."""
    if not (a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)):
        return False
    if not (a.suffix.endswith(b.suffix) or b.suffix.endswith(a.suffix)):
        return False
    special: set[str] = set()
    for template in (a, b):
        for token in template.tokens:
            special.update(token if isinstance(token, str) else token.lead + token.excluded)
    other = next(chr(c) for c in range(1, 0x110000) if chr(c) not in special)
    alphabet = [*special, other]
    start = [(x, y) for x in _closure(a, (0, 0)) for y in _closure(b, (0, 0))]
    seen = set(start)
    frontier = list(start)
    end_a, end_b = (len(a.tokens), 0), (len(b.tokens), 0)
    while frontier:
        x, y = frontier.pop()
        if x == end_a and y == end_b:
            return True
        for char in alphabet:
            for nx in _step(a, x, char):
                for ny in _step(b, y, char):
                    if (nx, ny) not in seen:
                        seen.add((nx, ny))
                        frontier.append((nx, ny))
    return False


def _closure(template: UriTemplate, state: State) -> list[State]:
    out = [state]
    i, k = state
    while i < len(template.tokens) and isinstance(template.tokens[i], Run):
        i, k = i + 1, 0  # any run may end (or be skipped) without consuming anything
        out.append((i, k))
    return out


def _step(template: UriTemplate, state: State, char: str) -> list[State]:
    i, k = state
    if i == len(template.tokens):
        return []
    token = template.tokens[i]
    if isinstance(token, str):
        if token[k] != char:
            return []
        return _closure(template, (i, k + 1) if k + 1 < len(token) else (i + 1, 0))
    if k == 0 and token.lead:
        return _closure(template, (i, 1)) if char in token.lead else []
    return _closure(template, (i, 1)) if char not in token.excluded else []
