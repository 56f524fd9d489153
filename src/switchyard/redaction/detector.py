"""What a detector is: a candidate pattern, a validation of each candidate, and how its value
is masked. Detectors find; rules decide what happens to what they find."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class MatchLike(Protocol):
    def span(self, group: int | str = 0) -> tuple[int, int]: ...

    def group(self, group: int | str = 0, /) -> str | None: ...


class PatternLike(Protocol):
    """A compiled pattern of either engine: stdlib `re` for the fixed built-ins (reviewed,
    bounded), RE2 for operators' patterns (linear time whatever the pattern)."""

    def finditer(self, string: str, /) -> Iterator[Any]: ...


Validator = Callable[[str], str | None]
"""Returns the accepted value (the candidate, or a prefix of it), or None to reject it."""
Masker = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    pattern: PatternLike
    mask: Masker
    validate: Validator | None = None
    group: int | str = 0
    """The group holding the value; the rest of the match is context (`aws_secret_access_key=`)."""
    gates: tuple[str, ...] = ()
    """The text must contain one of these for the pattern to run at all (a C-speed substring
    test that spares most texts the regular expression)."""
    folded_gates: tuple[str, ...] = ()
    """Like `gates`, tested on the lower-cased text."""
    key_context: re.Pattern[str] | None = None
    """A JSON key naming this kind of value: under it, a whole string matching `bare` is one."""
    bare: re.Pattern[str] | None = None
    builtin: bool = True


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: str
    rank: int
    """Lower wins when two findings overlap: a JWT inside a bearer header is a JWT."""


def mask_keep(value: str, keep_start: int = 0, keep_end: int = 0, mark: str = "*") -> str:
    """Every letter and digit becomes `mark` except the first `keep_start` and the last
    `keep_end` of them; separators stay, so the shape does."""
    total = sum(c.isalnum() for c in value)
    if keep_start + keep_end >= total:
        keep_start = keep_end = 0
    out: list[str] = []
    seen = 0
    for c in value:
        if c.isalnum():
            seen += 1
            keep = seen <= keep_start or seen > total - keep_end
            out.append(c if keep else mark)
        else:
            out.append(c)
    return "".join(out)


def keeping(start: int = 0, end: int = 0) -> Masker:
    def masker(value: str) -> str:
        return mask_keep(value, start, end)

    return masker


def keeping_prefix(prefix: re.Pattern[str]) -> Masker:
    """Keeps a token's well-known prefix (`ghp_`, `sk-ant-api03-`): it says what leaked, not
    what the secret is."""

    def masker(value: str) -> str:
        m = prefix.match(value)
        n = m.end() if m else 0
        return value[:n] + mask_keep(value[n:])

    return masker
