"""One inbound HTTP message, read and vetted the same way on every HTTP face: bounded in size
and time, one message (no batches), strict JSON. Anything else is answered here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Final

from switchyard.downstream.asgi import (
    BODY_ARRIVED,
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    Receive,
    Scope,
    Send,
    drain,
    first,
    head_index,
    header,
    read_body,
    refuse,
)
from switchyard.protocol import codes
from switchyard.wire import frame, strict
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.http")

CLOSE: Final = [(b"connection", b"close")]
# How much of an oversized body is read and dropped before the 413, and for how long at most.
DRAIN_FACTOR: Final = 4
DRAIN_TIMEOUT_S: Final = 5.0
GATEWAY: Final = {"source": "gateway"}


def gateway_error(message: str = "Internal gateway error") -> Reply:
    return frame.error_reply(codes.GATEWAY_ERROR, message, GATEWAY)


def request_fields(params: frame.Raw | None) -> dict[str, frame.Raw] | str:
    """`params` decoded one level deep (values stay raw slices), or why they cannot be a
    request's params (they and their `_meta` must be objects).

    Checked at the door so no handler has to, and so a `_meta` the gateway would never look
    into is refused the same way as one it does. The fields go on with the request
    (`Dispatcher.request`), so this is the only shallow decode of the params."""
    if params is None:
        return {}
    try:
        fields = frame.decode_object(params)
        if "_meta" in fields:
            frame.decode_object(fields["_meta"])
    except frame.DecodeError:
        return "params and params._meta must be objects"
    return fields


async def settle(method: str, work: Awaitable[Reply]) -> Reply:
    """The one reply an accepted request is owed, whatever happens while it is served.

    Handlers decode the client's params lazily, so a field of the wrong shape (`params` an array,
    `_meta` a string, `ref` a number ...) surfaces as a msgspec validation error deep inside one:
    that is the client's mistake, `-32602`. Anything else is the gateway's own failure, answered
    with a gateway error rather than a dropped request or an HTTP 500. Cancellation passes through.
    """
    try:
        return await work
    except frame.DecodeError as exc:  # ValidationError included
        return frame.error_reply(codes.INVALID_PARAMS, f"Invalid params for {method[:64]}: {exc}")
    except Exception:
        log.exception("request %r failed inside the gateway", method[:64])
        return gateway_error()


def error_json(code: int, message: str, request_id: bytes = b"null", data: object = None) -> bytes:
    return frame.response_bytes(request_id, frame.error_reply(code, message, data))


async def read_message(
    scope: Scope,
    receive: Receive,
    send: Send,
    max_bytes: int,
    timeout_s: float,
    limits: strict.JsonLimits,
) -> bytes | None:
    """The body of one acceptable JSON-RPC message, or None once the refusal is sent."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    length = first(head_index(scope), b"content-length")
    declared = int(length) if length and length.isdigit() else None
    try:
        body = await read_body(
            receive, max_bytes, declared, timeout_s, arrived=BODY_ARRIVED in scope
        )
    except BodyTooLarge:
        # Take in (and drop) a bounded rest of the body first, so a client still sending reads
        # the 413 instead of a reset; past the bounds it is cut off. The connection closes
        # either way: an unread rest must never be parsed as a next request.
        budget = DRAIN_FACTOR * max_bytes
        # A client waiting for `100 Continue` has sent nothing yet: asking for the body would
        # only invite it.
        waiting = (header(headers, b"expect") or "").lower() == "100-continue"
        if not waiting and (declared is None or declared <= budget):
            await drain(receive, budget, min(DRAIN_TIMEOUT_S, timeout_s))
        body = error_json(codes.INVALID_REQUEST, "Request body too large")
        await refuse(scope, send, 413, body, "body too large", CLOSE)
        return None
    except BodyTooSlow:
        body = error_json(codes.INVALID_REQUEST, "Request body too slow")
        await refuse(scope, send, 408, body, "body too slow", CLOSE)
        return None
    except ClientGone:
        return None
    if body.lstrip()[:1] == b"[":
        body = error_json(codes.INVALID_REQUEST, "Batches are not supported")
        await refuse(scope, send, 400, body, "batch")
        return None
    try:
        strict.check(body, limits)
    except strict.Refused as refused:
        await refuse(scope, send, 400, error_json(refused.code, refused.message), refused.message)
        return None
    return body
