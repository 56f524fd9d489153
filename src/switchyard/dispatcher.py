"""Requests in, replies out: the route resolved first, then the prebuilt chain for the method.

Every request leaves with exactly one reply: params of the wrong shape are `-32602`, and an
exception nobody expected is a gateway error carrying the request's id, never a dropped answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from switchyard.call import Call, Handler, RequestContext
from switchyard.forwarder import Forwarder
from switchyard.policies.base import PolicySpec, build_chain
from switchyard.protocol import codes, methods
from switchyard.protocol.versions import Era
from switchyard.routing.router import ROUTED, Router
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.dispatcher")

# Methods that exist only in one era; the other era answers "method not found".
LEGACY_ONLY = frozenset(
    {methods.INITIALIZE, methods.SET_LEVEL, methods.SUBSCRIBE, methods.UNSUBSCRIBE}
)


class Dispatcher:
    def __init__(
        self, forwarder: Forwarder, policies: Sequence[PolicySpec], router: Router
    ) -> None:
        self.chains: dict[str, Handler] = {
            method: build_chain(policies, method, terminal)
            for method, terminal in forwarder.terminals().items()
        }
        self.unknown = build_chain(policies, "*", forwarder.method_not_found)
        self.router = router
        self.caller_router: Callable[[RequestContext], Awaitable[Router]] | None = None
        """The caller's own router, where some backend lists per caller (caller_lists.py);
        None (the usual case): every caller is routed by `router`."""

    async def request(
        self,
        ctx: RequestContext,
        method: str,
        params: Raw | None,
        fields: dict[str, Raw] | None = None,
    ) -> Reply:
        """Route, police and serve one request. `fields`: `params` already decoded one level
        deep by the face that received them (the call's `fields` from then on), else decoded
        here when first needed."""
        chain = self.chains.get(method)
        if chain is None or (ctx.era is Era.MODERN and method in LEGACY_ONLY):
            chain = self.unknown
        call = Call(method, params, ctx, _fields=fields)
        try:
            if method in ROUTED and chain is not self.unknown:
                own = self.caller_router
                router = self.router if own is None else await own(ctx)
                call.route = router.resolve(method, call.fields(), ctx.view)
            return await chain(call)
        except (frame.DecodeError, frame.ValidationError) as exc:
            # A field of the wrong JSON type somewhere in params.
            return frame.error_reply(codes.INVALID_PARAMS, f"Invalid params: {exc}")
        except Exception:
            log.exception("unexpected failure handling %s", method[:128])
            return frame.error_reply(
                codes.GATEWAY_ERROR,
                "the gateway failed to handle this request",
                {"source": "gateway"},
            )

    def knows(self, method: str, era: Era) -> bool:
        return method in self.chains and not (era is Era.MODERN and method in LEGACY_ONLY)
