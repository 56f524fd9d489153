"""A keep-alive HTTP/1.1 client for the requests on a call's path: one POST, its answer as JSON
or as an SSE stream.

Measured against aiohttp's client session for the same POST on the same kept-alive connection,
it retires about a seventh of the instructions (bench/README.md, "Where Switchyard's CPU
goes"): the session's request and response objects, its connector, timers and tracing hooks
are the largest single cost of a small call. What a call needs is kept: a bounded pool of
connections reused while fresh, answers read as they arrive with reading paused past a buffer
bound, a connection closed whenever an answer was not read to its end, and failures told apart
the way the retry rules need them: `ConnectFailed` (nothing was sent) from `Disconnected`
(sent; the backend may have run it) and `MalformedResponse`.

Plain `http://` only: TLS, userinfo in the URL and the long-lived streams (GET, listen) stay on
aiohttp, which already does them, at a cost that is not per call.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator
from typing import Final, cast
from urllib.parse import quote, urlsplit

import httptools
from multidict import CIMultiDict

BUFFER_HIGH: Final = 256 * 1024
"""Bytes of an answer held unread before the socket stops being read."""
BUFFER_LOW: Final = 64 * 1024
MAX_HEAD_BYTES: Final = 64 * 1024
"""Bytes an answer may send with no body byte among them: its status line and headers, or
chunk lines and trailers later. The parser keeps an unfinished header in memory; past this
a backend is sending something else."""
_NO_BODY_STATUS: Final = frozenset({204, 304})
# RFC 3986's characters of a path and query that need no escaping, and `%` (already escaped).
_TARGET_SAFE: Final = "/?:@!$&'()*+,;=%-._~"


class ConnectFailed(OSError):
    """No connection could be made: the request never left."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause


class Disconnected(ConnectionError):
    """The connection closed after the request was written and before the answer's head."""


class MalformedResponse(ValueError):
    """The backend's bytes are not an HTTP/1.1 answer, or its body ended short."""


def supports(url: str) -> bool:
    """Whether this client can carry requests to `url`."""
    split = urlsplit(url)
    return split.scheme == "http" and "@" not in split.netloc and bool(split.hostname)


def request_target(url: str) -> str:
    """The path and query of `url` as a request line carries them: any character that may not
    stand there bare (a space, a quote, a byte over 127, a line break) percent-encoded."""
    split = urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    return quote(target, safe=_TARGET_SAFE)


class Response:
    """One answer: status and headers once its head is in, the body as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_eof_body",
        "_error",
        "_head",
        "_keep",
        "_paused",
        "_waiter",
        "_whole",
        "content_length",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection, head: asyncio.Future[None]) -> None:
        self._conn = conn
        self._head = head
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.content_length: int | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._done = False
        self._eof_body = False
        """The body has no length: it ends when the connection does."""
        self._keep = False
        """The connection may carry another request once this answer is read."""
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._whole = False
        """`read` waits for the whole body: no flow control, and one wake-up, at its end."""

    @property
    def content(self) -> Response:
        """The body stream (aiohttp's spelling, so one reader serves both clients)."""
        return self

    async def read(self) -> bytes:
        """The whole body. Callers bound its size first (`decoded_body.read`)."""
        if not self._done:
            if self.content_length is None:
                return b"".join([chunk async for chunk in self.iter_chunked(0)])
            await self._whole_body()
        if self._error is not None:
            raise self._error
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks.popleft()
        data = b"".join(chunks)
        chunks.clear()
        return data

    async def _whole_body(self) -> None:
        # The declared length bounds what can arrive (the parser frames the body by it, and the
        # caller checked it against its limit), so the body is taken in without flow control
        # and the reader is woken once, at its end, not once per piece the socket delivers.
        self._whole = True
        if self._paused:
            self._paused = False
            self._conn.resume()
        while not self._done:
            await self._arrival()

    async def _arrival(self) -> None:
        """Until the connection next feeds this answer (a piece, its end, or a failure)."""
        waiter = self._conn.loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (each as the socket delivered it; `n` unused)."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= BUFFER_LOW:
                    self._paused = False
                    self._conn.resume()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            await self._arrival()

    def release(self) -> None:
        """Give the connection back when this answer was read to its end, else close it."""
        conn = self._conn
        if conn.response is not self:
            return
        conn.response = None
        if self._done and self._error is None and self._keep:
            conn.park()
        else:
            conn.close()

    # -- fed by the connection -----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._whole:
            return
        if self._buffered > BUFFER_HIGH and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._head.done():
            self._head.set_exception(exc)
            return
        if not self._done:
            self._error = exc
            self._done = True
            self._wake()


class _Connection(asyncio.Protocol):
    """One TCP connection and its response parser; carries one request at a time."""

    def __init__(self, client: HttpClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        """The loop it was opened on, kept: `asyncio.get_running_loop` is a system call
        (`getpid`) on Python 3.11, and each request would ask it three times."""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.idle_since = 0.0
        self.closed = False
        self._counted = True
        self._interim = False
        self._headers: list[tuple[str, str]] = []
        self._unframed = 0
        """Bytes fed since the last body byte (or the answer's start)."""

    # -- asyncio -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.closed:
            transport.close()  # its connect was cancelled as it completed: nobody will use it

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: this connection's framing is not to be trusted
            return
        self._unframed += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(MalformedResponse("backend switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._broken(MalformedResponse(f"malformed HTTP answer: {exc}"))
            return
        response = self.response
        if self._unframed > MAX_HEAD_BYTES and response is not None and not response._done:
            what = "head" if not response._head.done() else "framing between body bytes"
            self._broken(MalformedResponse(f"answer {what} over {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._uncount()
        response = self.response
        if response is None:
            return
        if not response._head.done():
            response._fail(Disconnected("the server closed the connection"))
        elif response._eof_body:
            response._complete()  # a body without a length ends when the connection does
        else:
            response._fail(MalformedResponse("the connection closed before the answer ended"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self.response
        if response is None or response._done:
            # A second answer to one request: whatever follows cannot be trusted.
            raise MalformedResponse("more than one answer to a request")

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is not None and response._head.done():
            return  # a trailer: nothing of it is used
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        if status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the answer follows
            return
        response.status = status
        response.headers = CIMultiDict(headers)
        length = response.headers.get("Content-Length")
        if length is not None:
            response.content_length = int(length)
        elif (
            "chunked" not in response.headers.get("Transfer-Encoding", "").lower()
            and status not in _NO_BODY_STATUS
        ):
            response._eof_body = True
        response._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        self._unframed = 0
        response._body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self.response
        assert response is not None
        response._keep = self.parser.should_keep_alive()
        response._complete()

    # -- the pool's side ------------------------------------------------------------------------

    def _broken(self, exc: BaseException) -> None:
        response = self.response
        if response is not None:
            response._fail(exc)
        self.close()

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def park(self) -> None:
        if self.closed:
            return
        self.parser = httptools.HttpResponseParser(self)
        self._unframed = 0
        self.client._park(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.client._dropped(self)


class HttpClient:
    """Connections to one origin, at most `max_connections` open, an idle one kept `idle_s`."""

    def __init__(
        self, url: str, *, max_connections: int, connect_timeout_s: float, idle_s: float
    ) -> None:
        split = urlsplit(url)
        assert split.scheme == "http" and split.hostname
        self._host = split.hostname
        self._port = split.port or 80
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        if split.port is not None and split.port != 80:
            netloc = f"{netloc}:{split.port}"
        self._request_line = f"POST {request_target(url)} HTTP/1.1\r\n"
        self._host_line = f"Host: {netloc}\r\n"
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._idle_s = idle_s
        self._open = 0
        self._idle: list[_Connection] = []
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._busy: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def post(
        self, body: bytes, headers: dict[str, str], target: str | None = None
    ) -> Response:
        """Send one POST to the client's URL, or to `target` (a `request_target` on the same
        origin); return its answer once the head is in. The caller must `release()` the
        response (whether or not it read the body)."""
        line = self._request_line if target is None else f"POST {target} HTTP/1.1\r\n"
        lines = [line, self._host_line]
        for key, value in headers.items():
            if len(key) == 4 and key.lower() == "host":
                lines[1] = ""  # the configured Host stands
            lines.append(f"{key}: {value}\r\n")
        block = "".join(lines)
        # A CR, LF or NUL inside a name or value would end the header early: one from a
        # credential or a client-chosen name could add headers, or a request, of its own.
        breaks = len(lines) - (not lines[1])
        if block.count("\n") != breaks or block.count("\r") != breaks or "\x00" in block:
            raise ValueError("a request header contains a line break or NUL character")
        head = f"{block}Content-Length: {len(body)}\r\n\r\n".encode()
        conn = await self._acquire()
        future: asyncio.Future[None] = conn.loop.create_future()
        response = Response(conn, future)
        conn.response = response
        self._busy.add(conn)
        assert conn.transport is not None
        conn.transport.writelines((head, body))
        try:
            await future
        except BaseException:
            response.release()  # closes the connection: its answer was not read
            raise
        return response

    async def _acquire(self) -> _Connection:
        idle = self._idle
        while True:
            if self._closed:
                raise ConnectFailed(ConnectionAbortedError("client closed"))
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.loop.time() - conn.idle_since < self._idle_s:
                    return conn
                conn.close()
            loop = asyncio.get_running_loop()
            if self._open < self._max:
                break
            waiter = loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._slot_waiters:
                    self._slot_waiters.remove(waiter)
        self._open += 1
        conn = _Connection(self, loop)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn, self._host, self._port, family=socket.AF_UNSPEC
                ),
                self._connect_timeout_s,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, TimeoutError) as exc:
            conn.close()
            raise ConnectFailed(exc) from exc
        return conn

    def _park(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if self._closed:
            conn.close()
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.append(conn)
        self._wake_one()
        if self._sweep is None:
            self._sweep = loop.call_later(self._idle_s, self._close_stale)

    def _close_stale(self) -> None:
        """Close connections idle for `idle_s`: shorter than the 5 s after which uvicorn and
        Node close one, so a request never goes out on a connection the server is closing."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        keep = []
        for conn in self._idle:
            if conn.closed or now - conn.idle_since >= self._idle_s:
                conn.close()
            else:
                keep.append(conn)
        self._idle[:] = keep
        if keep:
            oldest = min(conn.idle_since for conn in keep)
            self._sweep = loop.call_at(oldest + self._idle_s, self._close_stale)

    def _dropped(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every connection, idle or carrying a request (whose reader sees it end)."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()
        self._busy.clear()
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
