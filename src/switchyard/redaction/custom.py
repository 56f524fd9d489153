"""Operators' own patterns, compiled with RE2: matching takes time linear in the text whatever
the pattern, so a pattern like `(a+)+$` cannot stall the gateway on a large result (stdlib `re`
backtracks exponentially on it). RE2 has no backreferences or lookaround; a pattern using them
is refused when the configuration loads, with RE2's reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, cast

import re2

from switchyard.redaction.detector import Detector, MatchLike, PatternLike, keeping

# RE2's default memory budget; a pattern whose automaton would exceed it fails to compile.
MAX_PROGRAM_MEMORY: Final = 8 << 20


class PatternError(ValueError):
    """A custom pattern RE2 cannot compile."""


class LinearPattern:
    """An RE2 pattern behind the same `finditer` the built-ins' stdlib patterns offer."""

    def __init__(self, source: str, case_sensitive: bool = True) -> None:
        options = re2.Options()
        options.log_errors = False  # RE2 would otherwise print the pattern on stderr
        options.max_mem = MAX_PROGRAM_MEMORY
        options.case_sensitive = case_sensitive
        try:
            self._pattern: Any = re2.compile(source, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise PatternError(str(reason)) from None
        self.source = source
        self.groups: int = self._pattern.groups
        self.groupindex: dict[str, int] = dict(self._pattern.groupindex)

    def finditer(self, string: str, /) -> Iterator[MatchLike]:
        return cast(Iterator[MatchLike], self._pattern.finditer(string))

    def search(self, text: str) -> bool:
        return self._pattern.search(text) is not None

    def fullmatch(self, text: str) -> bool:
        return self._pattern.fullmatch(text) is not None


def custom_detector(
    name: str, source: str, case_sensitive: bool = True, keep_last: int = 0
) -> Detector:
    """A detector for an operator's pattern. A group named `value`, when present, is what is
    redacted; the rest of the match is context (`order-secret: (?P<value>\\w+)`)."""
    pattern = LinearPattern(source, case_sensitive)
    # RE2's matches take group numbers only.
    group = pattern.groupindex.get("value", 0)
    compiled: PatternLike = pattern
    return Detector(name, compiled, keeping(0, keep_last), group=group, builtin=False)
