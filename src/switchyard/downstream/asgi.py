"""Small ASGI helpers shared by the HTTP faces: bounded body reads and plain responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, Final

from switchyard.deadline import Deadline
from switchyard.observability.logging import write_decision
from switchyard.observability.metrics import metrics
from switchyard.observability.trace_context import trace_id
from switchyard.policies.base import Identity

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the HTTP listener leaves the authenticated caller's Identity in the ASGI scope, and the
# same for code running in the request's task (each request has its own task and context).
IDENTITY_KEY: Final = "switchyard.identity"
IDENTITY: ContextVar[Identity | None] = ContextVar("switchyard_identity", default=None)


VIEW: ContextVar[str | None] = ContextVar("switchyard_view", default=None)
"""The virtual server a request came through (None: the full gateway)."""


TRACEPARENT: ContextVar[str | None] = ContextVar("switchyard_traceparent", default=None)
"""The request's W3C `traceparent` header, for the faces' request contexts."""


def current_traceparent() -> str | None:
    return TRACEPARENT.get()


TRACESTATE: ContextVar[str | None] = ContextVar("switchyard_tracestate", default=None)
"""The request's W3C `tracestate` header lines, joined with commas as the spec combines them."""


def current_tracestate() -> str | None:
    return TRACESTATE.get()


def header_list(
    headers: list[tuple[bytes, bytes]], name: bytes, index: dict[bytes, bytes] | None = None
) -> str | None:
    """Every `name` header line's value, joined with commas (one list split over lines)."""
    values = header_lines(headers, name, index)
    return ",".join(v.decode("latin-1") for v in values) if values else None


def header_lines(
    headers: list[tuple[bytes, bytes]], name: bytes, index: dict[bytes, bytes] | None = None
) -> tuple[bytes, ...]:
    """Every `name` header line's value, in order. `index`, the request's `head_index`,
    answers alone when no header name repeats (its length is then the list's), so the list
    is scanned only for a request that repeats some name."""
    if index is not None and len(index) == len(headers):
        value = index.get(name)
        return () if value is None else (value,)
    return tuple(value for key, value in headers if key == name)


PEER: ContextVar[str | None] = ContextVar("switchyard_peer", default=None)
"""The client's address (ASGI `client` host), which new sessions count against without auth."""


def current_peer() -> str | None:
    return PEER.get()


def current_view() -> str | None:
    return VIEW.get()


def caller() -> Identity | None:
    return IDENTITY.get()


def caller_name() -> str | None:
    """The qualified principal key of the caller (see `Identity.key`)."""
    identity = IDENTITY.get()
    return identity.key if identity is not None else None


JSON_HEADERS: Final = [(b"content-type", b"application/json")]
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class BodyTooSlow(Exception):
    pass


BODY_ARRIVED: Final = "switchyard.body_arrived"
"""Set in a request's ASGI scope once the listener has its whole body (`guarded_protocol`)."""


async def read_body(
    receive: Receive,
    limit: int,
    declared: int | None,
    timeout: float = 30.0,
    *,
    arrived: bool = False,
) -> bytes:
    """The whole request body, refused before buffering past `limit` bytes or `timeout`.
    `arrived`: the listener holds all of it already (`BODY_ARRIVED`), so reading cannot wait
    and needs no deadline, whose timer would only be set and cancelled."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    if arrived:
        return await _read_body(receive, limit)
    try:
        async with Deadline(timeout, timeout):
            return await _read_body(receive, limit)
    except TimeoutError:
        raise BodyTooSlow from None


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def drain(receive: Receive, max_bytes: int, timeout: float) -> bool:
    """Read and discard the rest of a refused request's body, up to `max_bytes` and `timeout`.

    A client that sends its whole body before reading (most HTTP libraries) only sees an early
    answer if the connection is not closed under its feet: closing with unread bytes makes the
    kernel reset it, and the client reads ECONNRESET instead of the 413. True if the body ended
    within the bounds; False once a bound is hit (the caller closes the connection anyway).
    """
    taken = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                taken += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
                if taken > max_bytes:
                    return False
    except TimeoutError:
        return False


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    # A known length spares both ends chunked framing.
    length = (b"content-length", str(len(body)).encode())
    headers = [*headers, length] if headers else [length]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra is not None:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def record_refusal(scope: Scope, status: int, reason: str) -> None:
    """The access record of a request refused at the HTTP layer, before any JSON-RPC handling:
    the same kind of record a routed request leaves, with the HTTP status as its outcome."""
    identity = IDENTITY.get()
    write_decision(
        decision="deny",
        outcome=status,
        status=status,
        reason=reason,
        method=f"HTTP {scope.get('method', '?')} {scope.get('path', '')}",
        principal=identity.name if identity is not None else None,
        via=identity.via if identity is not None else None,
        issuer=identity.issuer if identity is not None else None,
        view=VIEW.get(),
        face="http",
        trace_id=trace_id(header(scope.get("headers") or [], b"traceparent")),
        request_bytes=_declared_length(scope),
    )


def _declared_length(scope: Scope) -> int | None:
    value = header(scope.get("headers") or [], b"content-length")
    return int(value) if value is not None and value.isdigit() and len(value) < 19 else None


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    reason: str,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    json: bool = True,
) -> None:
    """Answer a refusal and leave its access record."""
    record_refusal(scope, status, reason)
    if metrics.enabled:
        metrics.refused(status)
    if json:
        await respond_json(send, status, body, extra)
    else:
        await respond(send, status, body, extra)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


HEAD_INDEX: Final = "switchyard.head_index"
"""Where a request's `head_index` is kept in its ASGI scope once made."""


def head_index(scope: Scope) -> dict[bytes, bytes]:
    """Each header's first value by name, made once per request. The listener, the guard and
    the face read about ten headers of every request: one dict made in C costs less than ten
    scans of the list in Python. Every line of a name: `header_lines`."""
    index: dict[bytes, bytes] | None = scope.get(HEAD_INDEX)
    if index is None:
        # Reversed: a later line of a repeated name is overwritten by the first, which is the
        # one `header` reads.
        index = scope[HEAD_INDEX] = dict(reversed(scope["headers"]))
    return index


def first(index: dict[bytes, bytes], name: bytes) -> str | None:
    """The first `name` header's value (`header`, read from a `head_index`)."""
    value = index.get(name)
    return value.decode("latin-1") if value is not None else None


_ACCEPT_MEMO: dict[tuple[bytes, ...], tuple[bool, bool]] = {}
_ACCEPT_MEMO_MAX: Final = 256
"""A client sends the same `Accept` on every request: parsed once per distinct value."""


def accepted_types(
    headers: list[tuple[bytes, bytes]], index: dict[bytes, bytes] | None = None
) -> tuple[bool, bool]:
    """Whether `Accept` admits (JSON, an event stream). Media-type parameters (q too) are
    ignored and `*/*`, `application/*`, `text/*` count, as the official SDK servers do.
    `index`: the request's `head_index`, which answers alone when no header name repeats."""
    lines = header_lines(headers, b"accept", index)
    known = _ACCEPT_MEMO.get(lines)
    if known is not None:
        return known
    types = set()
    for value in lines:
        for item in value.decode("latin-1").split(","):
            types.add(item.split(";", 1)[0].strip().lower())
    anything = "*/*" in types
    json_ok = anything or "application/json" in types or "application/*" in types
    sse_ok = anything or "text/event-stream" in types or "text/*" in types
    if len(_ACCEPT_MEMO) >= _ACCEPT_MEMO_MAX:
        _ACCEPT_MEMO.clear()  # clients inventing values only make it parse again
    _ACCEPT_MEMO[lines] = (json_ok, sse_ok)
    return json_ok, sse_ok


def count(headers: list[tuple[bytes, bytes]], name: bytes) -> int:
    return sum(1 for k, _ in headers if k == name)
