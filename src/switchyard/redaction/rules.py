"""Which rules apply to a message: selected by caller (issuer, name, role), view, backend,
backend-side name (tool, prompt or resource URI) and direction, all with case-sensitive globs.

For each detector the first applicable rule that names it decides the action; metadata keys
to strip are the union of every applicable rule's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import translate

from switchyard.call import Identity, selects_caller


class Direction(StrEnum):
    ARGUMENTS = "arguments"
    RESULTS = "results"
    NOTIFICATIONS = "notifications"


class Action(StrEnum):
    MASK = "mask"
    HASH = "hash"
    BLOCK = "block"
    TOKENIZE = "tokenize"


def globs(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(g)})" for g in patterns) or "(?!)")


@dataclass(frozen=True, slots=True)
class RedactionRule:
    name: str
    action: Action
    detectors: frozenset[str]
    directions: frozenset[Direction]
    strip_keys: re.Pattern[str] | None = None
    principals: re.Pattern[str] | None = None
    issuers: re.Pattern[str] | None = None
    roles: frozenset[str] | None = None
    views: re.Pattern[str] | None = None
    backends: re.Pattern[str] | None = None
    names: re.Pattern[str] | None = None

    def applies(
        self,
        direction: Direction,
        who: Identity | None,
        view: str | None,
        backend: str | None,
        name: str | None,
    ) -> bool:
        """A selector on something this message does not tell (a notification's view or
        tool) is taken as met: a rule errs toward redacting, never toward letting through."""
        if direction not in self.directions:
            return False
        if not selects_caller(who, self.principals, self.issuers, self.roles):
            return False
        if self.views is not None and view is not None and self.views.fullmatch(view) is None:
            return False
        backends = self.backends
        if backends is not None and backend is not None and backends.fullmatch(backend) is None:
            return False
        return self.names is None or name is None or self.names.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Selection:
    """What the applicable rules decide for one message."""

    actions: dict[str, RedactionRule]
    """Detector name -> the rule deciding its action."""
    strip_keys: re.Pattern[str] | None
    """Every applicable rule's `strip_keys` at once."""
    strip_rules: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def stripped_by(self, key: str) -> str:
        return next((name for name, p in self.strip_rules if p.fullmatch(key)), "")

    @property
    def empty(self) -> bool:
        return not self.actions and self.strip_keys is None


def select(
    rules: Sequence[RedactionRule],
    direction: Direction,
    who: Identity | None,
    view: str | None,
    backend: str | None,
    name: str | None,
) -> Selection:
    actions: dict[str, RedactionRule] = {}
    strips: list[tuple[str, re.Pattern[str]]] = []
    for rule in rules:
        if not rule.applies(direction, who, view, backend, name):
            continue
        for detector in rule.detectors:
            actions.setdefault(detector, rule)
        if rule.strip_keys is not None:
            strips.append((rule.name, rule.strip_keys))
    strip = re.compile("|".join(f"(?:{p.pattern})" for _, p in strips)) if strips else None
    return Selection(actions, strip, tuple(strips))
