"""Who may see and use what: allow and deny rules over caller, backend and name, default deny.

Rules match the caller by issuer, name or role, the backend by name, the item (tool, prompt,
resource URI or template) by its backend-side name, all with case-sensitive globs: no case
folding or Unicode normalisation that could make a denied name match something else. A deny
rule beats every allow rule. A denied item is absent from lists, and a call to it is answered
exactly like a call to one that does not exist. A resource is judged by the URI asked for,
whichever listed resource or template routes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import translate

from switchyard.call import Call, Identity, selects_caller
from switchyard.policies.base import Policy
from switchyard.routing import catalog
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route, unroutable
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
    issuers: re.Pattern[str] | None = None
    whole_backend: bool = False
    """Names every item of every kind: a deny rule like this shuts the backend off entirely."""

    @classmethod
    def build(
        cls,
        allow: bool,
        principals: Sequence[str] | None,
        roles: Sequence[str] | None,
        backends: Sequence[str],
        names: Sequence[str],
        kinds: Sequence[str],
        issuers: Sequence[str] | None = None,
    ) -> Rule:
        return cls(
            allow,
            _patterns(principals) if principals is not None else None,
            frozenset(roles) if roles is not None else None,
            _patterns(backends),
            _patterns(names),
            frozenset(kinds),
            _patterns(issuers) if issuers is not None else None,
            "*" in names and frozenset(kinds) >= frozenset(catalog.KINDS),
        )

    def applies_to(self, who: Identity, backend: str) -> bool:
        return (
            selects_caller(who, self.principals, self.issuers, self.roles)
            and self.backends.fullmatch(backend) is not None
        )

    def names_item(self, kind: str, backend: str, name: str) -> bool:
        """Whether the rule is about this item, whoever calls."""
        return (
            kind in self.kinds
            and self.names.fullmatch(name) is not None
            and self.backends.fullmatch(backend) is not None
        )

    def matches(self, who: Identity, kind: str, backend: str, name: str) -> bool:
        return (
            kind in self.kinds
            and self.names.fullmatch(name) is not None
            and self.applies_to(who, backend)
        )


@dataclass(frozen=True, slots=True)
class AccessRules:
    rules: tuple[Rule, ...]

    def decide(self, who: Identity, kind: str, backend: str, name: str) -> bool:
        allowed = False
        for rule in self.rules:
            if rule.matches(who, kind, backend, name):
                if not rule.allow:
                    return False
                allowed = True
        return allowed

    def explain(self, who: Identity, kind: str, backend: str, name: str) -> tuple[bool, int | None]:
        """`decide`, with the rule that decides: the first deny that matches, else the first
        allow; None when no rule matches (the default, deny)."""
        first_allow: int | None = None
        for index, rule in enumerate(self.rules):
            if rule.matches(who, kind, backend, name):
                if not rule.allow:
                    return False, index
                if first_allow is None:
                    first_allow = index
        return first_allow is not None, first_allow

    def naming(self, kind: str, backend: str, name: str) -> list[int]:
        """The rules about an item, in order: who they select is who may (or may not) use
        it; a deny among them beats the allows for the callers it selects."""
        return [i for i, rule in enumerate(self.rules) if rule.names_item(kind, backend, name)]

    def allows(self, who: Identity, entry: Entry) -> bool:
        """A listed item, judged by its backend-side name (a template by its template)."""
        return self.decide(who, entry.kind, entry.backend, entry.original)

    def permits(self, who: Identity, route: Route) -> bool:
        """A routed request, judged by what it asks for: a resource by its URI."""
        return self.decide(who, route.kind, route.backend, route.name)

    def may_reach(self, who: Identity, backend: str) -> bool:
        """Whether any item of `backend` could be allowed to `who`: a caller who may use
        nothing of a backend never makes it start, subscribe or change its log level."""
        reachable = False
        for rule in self.rules:
            if rule.applies_to(who, backend):
                if not rule.allow and rule.whole_backend:
                    return False
                reachable = reachable or rule.allow
        return reachable


class AccessControl(Policy):
    """Denies a routed request the caller may not make, with the answer an unknown one gets;
    hides from lists what the caller may not see."""

    settings: AccessRules

    async def __call__(self, call: Call) -> Reply:
        who = call.ctx.identity
        if who is not None:
            rules = self.settings
            route = call.route
            if route is not None and not rules.permits(who, route):
                call.denied = True
                return unroutable(call.method, call.ctx.era, call.fields())
            call.add_list_filter(lambda entry: rules.allows(who, entry))
            call.reachable = lambda backend: rules.may_reach(who, backend)
        return await self.next(call)
