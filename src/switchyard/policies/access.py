"""Who may see and use what: allow and deny rules over caller, backend and name, default deny.

Rules match the caller by name or role, the backend by name, the item (tool, prompt, resource
URI or template) by its backend-side name, all with case-sensitive globs: no case folding or
Unicode normalisation that could make a denied name match something else. A deny rule beats
every allow rule. A denied item is absent from lists, and a call to it is answered exactly like
a call to one that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import translate

from switchyard.policies.base import Call, Identity, Policy
from switchyard.routing.catalog import Entry
from switchyard.wire.frame import Reply


def _patterns(globs: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(g)})" for g in globs) or "(?!)")


@dataclass(frozen=True, slots=True)
class Rule:
    allow: bool
    principals: re.Pattern[str] | None
    roles: frozenset[str] | None
    backends: re.Pattern[str]
    names: re.Pattern[str]
    kinds: frozenset[str]

    @classmethod
    def build(
        cls,
        allow: bool,
        principals: Sequence[str] | None,
        roles: Sequence[str] | None,
        backends: Sequence[str],
        names: Sequence[str],
        kinds: Sequence[str],
    ) -> Rule:
        return cls(
            allow,
            _patterns(principals) if principals is not None else None,
            frozenset(roles) if roles is not None else None,
            _patterns(backends),
            _patterns(names),
            frozenset(kinds),
        )

    def matches(self, who: Identity, entry: Entry) -> bool:
        if self.principals is not None and self.principals.fullmatch(who.name) is None:
            return False
        if self.roles is not None and self.roles.isdisjoint(who.roles):
            return False
        return (
            entry.kind in self.kinds
            and self.backends.fullmatch(entry.backend) is not None
            and self.names.fullmatch(entry.original) is not None
        )


@dataclass(frozen=True, slots=True)
class AccessRules:
    rules: tuple[Rule, ...]

    def allows(self, who: Identity, entry: Entry) -> bool:
        allowed = False
        for rule in self.rules:
            if rule.matches(who, entry):
                if not rule.allow:
                    return False
                allowed = True
        return allowed


class AccessControl(Policy):
    """Attaches the caller's view to every call; the router and list handlers apply it."""

    settings: AccessRules

    async def __call__(self, call: Call) -> Reply:
        who = call.ctx.identity
        if who is not None:
            rules = self.settings
            call.add_list_filter(lambda entry: rules.allows(who, entry))
        return await self.next(call)
