"""One RE2 pass that tells which built-in detectors have any candidate in a text at all.

Python's `re` walks the text once per pattern at tens of nanoseconds a character; RE2 matches
every detector's pattern in one automaton pass. Each prefilter is its detector's pattern with
the lookarounds dropped and backreferences widened, so it matches wherever the pattern could
(an over-approximation: the precise pattern and the validation still decide). A detector whose
prefilter RE2 cannot compile simply always runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import re2

_LOOKAROUND: Final = ("(?<!", "(?<=", "(?!", "(?=")
_BACKREF: Final = re.compile(r"\\[1-9]")


def widen(source: str) -> str:
    """`source` without lookaround assertions, each backreference replaced by its group."""
    out: list[str] = []
    dropping: list[bool] = []
    in_class = False
    i = 0
    while i < len(source):
        c = source[i]
        keep = not any(dropping)
        step = 2 if c == "\\" else 1
        if c == "\\":
            pass
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            dropping.append(source.startswith(_LOOKAROUND, i))
            keep = not any(dropping)
        elif c == ")":
            dropping.pop()
        if keep:
            out.append(source[i : i + step])
        i += step
    widened = "".join(out)
    groups = _groups(widened)
    return _BACKREF.sub(lambda m: groups[int(m.group(0)[1:]) - 1], widened)


def _groups(source: str) -> list[str]:
    """The text of each capturing group, in order."""
    opened: list[tuple[int, bool]] = []
    found: list[tuple[int, str]] = []
    in_class = False
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            opened.append((i, not source.startswith("(?", i)))
        elif c == ")":
            start, capturing = opened.pop()
            if capturing:
                found.append((start, source[start : i + 1]))
        i += 1
    return [text for _start, text in sorted(found)]


class Prefilter:
    def __init__(self, patterns: Sequence[re.Pattern[str]]) -> None:
        options = re2.Options()
        options.log_errors = False
        self._set: Any = re2.Set.SearchSet(options)
        self._index: list[int] = []
        self.always: list[int] = []
        for i, pattern in enumerate(patterns):
            source = widen(pattern.pattern)
            if pattern.flags & re.IGNORECASE:
                source = "(?i)" + source
            try:
                self._set.Add(source)
            except re2.error:
                self.always.append(i)
                continue
            self._index.append(i)
        self._set.Compile()

    def candidates(self, text: str) -> set[int]:
        """Indices (into the patterns given) that may match somewhere in `text`."""
        hits = {self._index[k] for k in self._set.Match(text) or ()}  # None: no match
        hits.update(self.always)
        return hits
