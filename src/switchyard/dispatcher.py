"""Requests in, replies out: the prebuilt chain for each method, chosen by name."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.forwarder import Forwarder
from switchyard.policies.base import Call, Handler, PolicySpec, RequestContext, build_chain
from switchyard.protocol import methods
from switchyard.protocol.versions import Era
from switchyard.wire.frame import Raw, Reply

# Methods that exist only in one era; the other era answers "method not found".
LEGACY_ONLY = frozenset(
    {methods.INITIALIZE, methods.SET_LEVEL, methods.SUBSCRIBE, methods.UNSUBSCRIBE}
)


class Dispatcher:
    def __init__(self, forwarder: Forwarder, policies: Sequence[PolicySpec]) -> None:
        self.chains: dict[str, Handler] = {
            method: build_chain(policies, method, terminal)
            for method, terminal in forwarder.terminals().items()
        }
        self.unknown = build_chain(policies, "*", forwarder.method_not_found)

    async def request(self, ctx: RequestContext, method: str, params: Raw | None) -> Reply:
        chain = self.chains.get(method)
        if chain is None or (ctx.era is Era.MODERN and method in LEGACY_ONLY):
            chain = self.unknown
        return await chain(Call(method, params, ctx))

    def knows(self, method: str, era: Era) -> bool:
        return method in self.chains and not (era is Era.MODERN and method in LEGACY_ONLY)
