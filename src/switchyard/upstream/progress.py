"""Progress on the way back: token rewriting for shared connections, and timeouts that a
backend's progress keeps alive up to a hard maximum.

Several clients share one backend connection, and their progress tokens may collide (many
clients use 1). Upstream, a request carries a token Switchyard minted (the upstream request id);
progress for it is mapped back to the client's own token and that client's stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.deadline import Deadline
from switchyard.protocol import methods
from switchyard.protocol.link import ClientLink
from switchyard.wire import frame
from switchyard.wire.frame import Raw


@dataclass(slots=True)
class _Route:
    link: ClientLink
    client_token: Raw
    deadline: Deadline | None = None


def progress_token(fields: dict[str, Raw]) -> Raw | None:
    """The progress token in a request's params (decoded one level), as the sender wrote its
    value; None without one. Keys count as decoded, so an escaped spelling is still found. A
    `_meta` that is not an object carries no token."""
    raw_meta = fields.get("_meta")
    meta = _object(raw_meta) if raw_meta is not None else None
    return meta.get("progressToken") if meta is not None else None


def _object(raw: bytes | Raw) -> dict[str, Raw] | None:
    try:
        return frame.decode_object(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None


class ProgressRoutes:
    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}

    def bind(self, params: bytes | None, token: int, link: ClientLink | None) -> bytes | None:
        """Swap the client's progress token for ours; params unchanged if there is none.

        Decided on the decoded `_meta` keys, however the sender spelled them: a token that
        reached a shared backend unchanged could name another client's request. Without a link
        the token is still replaced, and progress for it goes nowhere."""
        if params is None:
            return params
        fields = _object(params)
        if fields is None:
            return params
        raw_meta = fields.get("_meta")
        meta = _object(raw_meta) if raw_meta is not None else None
        if meta is None or "progressToken" not in meta:
            return params
        client_token = meta["progressToken"]
        meta["progressToken"] = Raw(str(token).encode())
        fields["_meta"] = Raw(frame.encode_object(meta))
        if link is not None:
            self._routes[token] = _Route(link, client_token)
        return frame.encode_object(fields)

    def watch(self, token: int, deadline: Deadline) -> None:
        """Let progress for `token` push back `deadline`."""
        route = self._routes.get(token)
        if route is not None:
            route.deadline = deadline

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
        if route.deadline is not None:
            route.deadline.extend()
        await route.link.notify(methods.PROGRESS, frame.encode_object(fields))
        return True
