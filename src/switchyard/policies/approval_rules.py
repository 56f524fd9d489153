"""The compiled `approvals:` rules, and the decision they make about one tool call: run it, or
gate it behind whom.

The first rule that selects a call decides; a call no rule selects runs when its public name is
in `auto_execute` (agent mode), else as `default` says. Argument conditions look at top-level
arguments only, by value: a condition on an absent argument is false, except `present: false`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from switchyard.call import Identity, selects_caller
from switchyard.policies.rate_limits import effective_hints
from switchyard.routing import catalog
from switchyard.routing.router import Route

CALLER: Final = "caller"
"""The approver meaning: the caller's own user confirms at the client."""
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class ArgumentCondition:
    name: str
    equals: Any = _MISSING
    one_of: tuple[Any, ...] | None = None
    matches: str | None = None
    greater_than: float | None = None
    present: bool | None = None

    def holds(self, arguments: Mapping[str, Any]) -> bool:
        value = arguments.get(self.name, _MISSING)
        if self.present is not None and (value is not _MISSING) != self.present:
            return False
        if value is _MISSING:
            return self.present is False and self._only_presence()
        if self.equals is not _MISSING and not _same(value, self.equals):
            return False
        if self.one_of is not None and not any(_same(value, v) for v in self.one_of):
            return False
        if self.matches is not None and not (
            isinstance(value, str) and fnmatchcase(value, self.matches)
        ):
            return False
        return self.greater_than is None or (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and value > self.greater_than
        )

    def _only_presence(self) -> bool:
        return (
            self.equals is _MISSING
            and self.one_of is None
            and self.matches is None
            and self.greater_than is None
        )


def _same(a: Any, b: Any) -> bool:
    # JSON's true is not 1: a boolean equals only a boolean.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    name: str
    require: bool = True
    approver: str = CALLER
    principals: re.Pattern[str] | None = None
    issuers: re.Pattern[str] | None = None
    roles: frozenset[str] | None = None
    views: re.Pattern[str] | None = None
    backends: re.Pattern[str] | None = None
    tools: re.Pattern[str] | None = None
    annotations: tuple[tuple[str, bool], ...] = ()
    arguments: tuple[ArgumentCondition, ...] = ()

    def selects(
        self,
        who: Identity | None,
        view: str | None,
        route: Route,
        arguments: Mapping[str, Any],
        hints: Mapping[str, bool],
    ) -> bool:
        if not selects_caller(who, self.principals, self.issuers, self.roles):
            return False
        if self.views is not None and (view is None or self.views.fullmatch(view) is None):
            return False
        if self.backends is not None and self.backends.fullmatch(route.backend) is None:
            return False
        if self.tools is not None and self.tools.fullmatch(route.name) is None:
            return False
        if any(hints.get(hint) != wanted for hint, wanted in self.annotations):
            return False
        return all(c.holds(arguments) for c in self.arguments)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say about one call: `rule` names what decided (`default`,
    `auto_execute` when no rule did)."""

    require: bool
    rule: str
    approver: str


@dataclass(slots=True)
class ApprovalRules:
    rules: tuple[ApprovalRule, ...]
    default_require: bool = False
    default_approver: str = CALLER
    auto_execute: re.Pattern[str] | None = None
    _hints: dict[bytes, dict[str, bool]] = field(default_factory=dict)

    def hints(self, entry: catalog.Entry) -> dict[str, bool]:
        hints = self._hints.get(entry.item)
        if hints is None:
            if len(self._hints) >= 4096:
                self._hints.clear()  # catalogs change rarely; a bounded cache suffices
            hints = self._hints[entry.item] = effective_hints(entry.item)
        return hints

    def judge(
        self,
        who: Identity | None,
        view: str | None,
        route: Route,
        arguments: Mapping[str, Any],
    ) -> Verdict:
        hints = self.hints(route.entry)
        for rule in self.rules:
            if rule.selects(who, view, route, arguments, hints):
                return Verdict(rule.require, rule.name, rule.approver)
        if self.auto_execute is not None and self.auto_execute.fullmatch(route.public):
            return Verdict(False, "auto_execute", self.default_approver)
        return Verdict(self.default_require, "default", self.default_approver)
