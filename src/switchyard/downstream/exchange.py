"""One HTTP/1.1 request and its response on a client connection, as the listener serves it.

The listener (`http.guarded_protocol`) parses with uvicorn's httptools protocol and hands each
request to the gateway's ASGI app through an `Exchange`: the request's body as it arrives,
and the response written back. It does what uvicorn's own request cycle does, with less work
per request, which on a small MCP call is a visible share of the gateway's CPU:

- The body is kept as the chunks that arrived and handed over in one piece (one copy, none
  for a body read in one chunk), and the app waits for it only when it is not all there yet.
- A response head is held until the body's first write, so both leave in one `writelines`
  (one TCP segment when they fit, one wake-up of the client instead of two). A head with a
  declared length always has its body next; a streamed one (an event stream, whose first
  event may be a while coming) leaves at the end of the loop's pass if no body follows in it.
- Header lines are checked for what would split the head (CR, LF, NUL and the other control
  characters), as uvicorn checks them; a name checked once is not checked again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from switchyard.downstream.asgi import ASGIApp, Message, Scope

log = logging.getLogger("uvicorn.error")

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}
# What may not appear in a header name or value: anything that ends a line or the head early,
# the same classes uvicorn refuses.
_BAD_NAME: Final = re.compile(rb'[\x00-\x1F\x7F()<>@,;:\[\]={} \t\\"]')
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0A-\x1F\x7F]")
_GOOD_NAMES: set[bytes] = set()
"""Header names already found valid (a response sends the same few names every time)."""
_GOOD_NAMES_MAX: Final = 256

HIGH_WATER: Final = 65536
"""Body bytes buffered before the connection stops reading until the app takes them."""

_DISCONNECT: Final = {"type": "http.disconnect"}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class Exchange:
    """One request on a connection and its response; `run` serves it with an ASGI app.

    The listener calls `take` with each piece of body, `ended` once the request is complete and
    `lost` when the connection goes; the app calls `receive` and `send`. The attributes the
    listener reads (`response_complete`, `keep_alive`, `disconnected`) keep uvicorn's names.
    """

    __slots__ = (
        "_body_taken",
        "_buffered",
        "_chunks",
        "_content_left",
        "_flush",
        "_head",
        "_waiter",
        "chunked",
        "default_headers",
        "disconnected",
        "flow",
        "keep_alive",
        "more_body",
        "on_response",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        scope: Scope,
        transport: asyncio.Transport,
        flow: Any,
        default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.waiting_for_100_continue = expect_100_continue
        self.keep_alive = keep_alive
        self.on_response = on_response
        self.disconnected = False
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._content_left = 0
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._body_taken = False
        """The app has had the whole body: what it waits for next is the end of the exchange."""

    # The listener's side.

    def take(self, chunk: bytes) -> None:
        """A piece of the request body arrived."""
        if self.response_complete:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self.flow.pause_reading()
        self._wake()

    def ended(self) -> None:
        """The request's body is complete."""
        if self.response_complete:
            return
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        """The connection closed."""
        if not self.response_complete:
            self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The app's side.

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self._close()
        else:
            if not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self._close()
        finally:
            self.on_response = _nothing

    async def receive(self) -> Message:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        # With the body taken, the next message is the end: the client gone or the response
        # complete (how an event stream learns its client left).
        while (
            not self.disconnected
            and not self.response_complete
            and (self._body_taken or (not self._chunks and self.more_body))
        ):
            self.flow.resume_reading()
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        chunks = self._chunks
        self._buffered = 0
        if not chunks:
            body = b""
        elif len(chunks) == 1:
            body = chunks.pop()
        else:
            body = b"".join(chunks)
            chunks.clear()
        more = self.more_body
        if more:
            self.flow.resume_reading()
        else:
            self._body_taken = True
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent after the response completed."
            )

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [status_line(status)]
        length: int | None = None
        chunked = False
        closing = False
        for lines in (self.default_headers, headers):
            for name, value in lines:
                if name not in _GOOD_NAMES:
                    if _BAD_NAME.search(name):
                        raise RuntimeError("Invalid HTTP header name.")
                    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                        _GOOD_NAMES.add(name)
                if _BAD_VALUE.search(value):
                    raise RuntimeError("Invalid HTTP header value.")
                name = name.lower()
                if name == b"content-length" and length is None and not chunked:
                    length = int(value.decode())
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    length = None
                    chunked = True
                elif name == b"connection" and b"close" in [
                    t.strip().lower() for t in value.split(b",")
                ]:
                    self.keep_alive = False
                    closing = True
                content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        if (
            length is None
            and not chunked
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.chunked = chunked
        self._content_left = length or 0
        self._head = b"".join(content)
        if length is None:
            # A streamed body may be a while coming: the head leaves at the end of this pass
            # of the loop unless a body follows in it.
            self._flush = asyncio.get_running_loop().call_soon(self._write_head)

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self._content_left = 0
            out: list[bytes] = []
        elif self.chunked:
            out = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                out.append(b"0\r\n\r\n")
        else:
            if len(body) > self._content_left:
                raise RuntimeError("Response content longer than Content-Length")
            self._content_left -= len(body)
            out = [body] if body else []
        head = self._take_head()
        if head is not None:
            out.insert(0, head)
        if len(out) == 1:
            self.transport.write(out[0])
        elif out:
            self.transport.writelines(out)
        if not more_body:
            if self._content_left != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self._wake()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _take_head(self) -> bytes | None:
        head = self._head
        if head is not None:
            self._head = None
            flush = self._flush
            if flush is not None:
                self._flush = None
                flush.cancel()
        return head

    def _write_head(self) -> None:
        head = self._take_head()
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)

    def _close(self) -> None:
        # A head not yet out still goes before the close.
        self._write_head()
        self.transport.close()

    async def _send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send(
            {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
        )


def _nothing() -> None:
    return None
