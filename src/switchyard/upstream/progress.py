"""Progress on the way back: token rewriting for shared connections, and timeouts that a
backend's progress keeps alive up to a hard maximum.

Several clients share one backend connection, and their progress tokens may collide (many
clients use 1). Upstream, a request carries a token Switchyard minted (the upstream request id);
progress for it is mapped back to the client's own token and that client's stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from switchyard.protocol import methods
from switchyard.protocol.link import ClientLink
from switchyard.wire import frame
from switchyard.wire.frame import Raw

T = TypeVar("T")


@dataclass(slots=True)
class _Route:
    link: ClientLink
    client_token: Raw
    progressed: asyncio.Event = field(default_factory=asyncio.Event)


class ProgressRoutes:
    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}

    def bind(self, params: bytes | None, token: int, link: ClientLink | None) -> bytes | None:
        """Swap the client's progress token for ours; params unchanged if there is none."""
        if link is None or params is None or b'"progressToken"' not in params:
            return params
        fields = frame.decode_object(params)
        raw_meta = fields.get("_meta")
        if raw_meta is None:
            return params
        meta = frame.decode_object(raw_meta)
        client_token = meta.get("progressToken")
        if client_token is None:
            return params
        meta["progressToken"] = Raw(str(token).encode())
        fields["_meta"] = Raw(frame.encode_object(meta))
        self._routes[token] = _Route(link, client_token)
        return frame.encode_object(fields)

    def progressed(self, token: int) -> asyncio.Event | None:
        route = self._routes.get(token)
        return route.progressed if route is not None else None

    def unbind(self, token: int) -> None:
        self._routes.pop(token, None)

    async def deliver(self, params: bytes | None) -> bool:
        """Forward one progress notification to the client that asked; False if nobody did."""
        if params is None:
            return False
        try:
            fields = frame.decode_object(params)
            token: Any = frame.decode_any(fields["progressToken"])
        except (frame.DecodeError, frame.ValidationError, KeyError):
            return False
        route = self._routes.get(token) if isinstance(token, int) else None
        if route is None:
            return False  # after completion, or never ours: progress for it must not be sent
        fields["progressToken"] = route.client_token
        route.progressed.set()
        await route.link.notify(methods.PROGRESS, frame.encode_object(fields))
        return True


async def bounded(
    work: asyncio.Future[T], timeout: float, hard_max: float, progressed: asyncio.Event | None
) -> T:
    """Await `work` for `timeout` seconds, extended while progress arrives, never past `hard_max`.

    On expiry `work` is cancelled and TimeoutError raised.
    """
    started = time.monotonic()
    try:
        while True:
            left = hard_max - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({work}, timeout=min(timeout, left))
            if done:
                return work.result()
            if progressed is None or not progressed.is_set():
                raise TimeoutError
            progressed.clear()
    finally:
        if not work.done():
            work.cancel()
