"""One inbound HTTP message, read and vetted the same way on every HTTP face: bounded in size
and time, one message (no batches), strict JSON. Anything else is answered here."""

from __future__ import annotations

from typing import Final

from switchyard.downstream.asgi import (
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    Receive,
    Send,
    header,
    read_body,
    respond_json,
)
from switchyard.protocol import codes
from switchyard.wire import frame, strict

CLOSE: Final = [(b"connection", b"close")]


def error_json(code: int, message: str, request_id: bytes = b"null", data: object = None) -> bytes:
    return frame.response_bytes(request_id, frame.error_reply(code, message, data))


async def read_message(
    receive: Receive,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    max_bytes: int,
    timeout_s: float,
    limits: strict.JsonLimits,
) -> bytes | None:
    """The body of one acceptable JSON-RPC message, or None once the refusal is sent."""
    length = header(headers, b"content-length")
    try:
        body = await read_body(
            receive, max_bytes, int(length) if length and length.isdigit() else None, timeout_s
        )
    except BodyTooLarge:
        # The unread rest of the body must never be parsed as a next request: close.
        body = error_json(codes.INVALID_REQUEST, "Request body too large")
        await respond_json(send, 413, body, CLOSE)
        return None
    except BodyTooSlow:
        body = error_json(codes.INVALID_REQUEST, "Request body too slow")
        await respond_json(send, 408, body, CLOSE)
        return None
    except ClientGone:
        return None
    if body.lstrip()[:1] == b"[":
        await respond_json(
            send, 400, error_json(codes.INVALID_REQUEST, "Batches are not supported")
        )
        return None
    try:
        strict.check(body, limits)
    except strict.Refused as refused:
        await respond_json(send, 400, error_json(refused.code, refused.message))
        return None
    return body
