"""One signature for every policy, composed once per method at startup.

Code before `await self.next(call)` runs on the way in, code after it on the way out (reverse
order for free); returning a `Reply` without calling `next` is a local answer. List results pass
every filter a policy attached to the call, so a denied item is absent, not merely uncallable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from switchyard.call import Call, Handler, Identity, ListFilter, RequestContext
from switchyard.wire.frame import Reply

# Call, Identity and RequestContext live in `switchyard.call`; re-exported for policy authors.
__all__ = [
    "Call",
    "Handler",
    "Identity",
    "ListFilter",
    "Policy",
    "PolicySpec",
    "RequestContext",
    "build_chain",
]


class Policy:
    """Base of every policy. Subclasses override `__call__` and may narrow `methods`."""

    methods: ClassVar[frozenset[str] | None] = None
    """The methods this policy applies to; None means every method."""

    def __init__(self, next_: Handler, settings: Any = None) -> None:
        self.next = next_
        self.settings = settings

    async def __call__(self, call: Call) -> Reply:
        return await self.next(call)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    cls: type[Policy]
    settings: Any = None

    def applies_to(self, method: str) -> bool:
        return self.cls.methods is None or method in self.cls.methods

    def bind(self, next_: Handler) -> Handler:
        return self.cls(next_, self.settings)


def build_chain(specs: Sequence[PolicySpec], method: str, terminal: Handler) -> Handler:
    handler = terminal
    for spec in reversed(specs):
        if spec.applies_to(method):
            handler = spec.bind(handler)
    return handler
