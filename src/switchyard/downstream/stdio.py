"""The gateway on its own stdin/stdout, for desktop clients that spawn their servers.

One client per process. `initialize` opens its legacy session; a request whose `params._meta`
names a modern revision is served statelessly, as on HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from switchyard.downstream import standard_streams
from switchyard.downstream.streamable_http import _adopt, level_of
from switchyard.gateway import Gateway
from switchyard.policies.base import Identity, RequestContext
from switchyard.protocol import codes, methods
from switchyard.protocol.link import LOG_LEVELS, log_wanted
from switchyard.protocol.versions import (
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    META_CLIENT_CAPABILITIES,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    META_SUBSCRIPTION_ID,
    MODERN_VERSIONS,
    Era,
)
from switchyard.sessions import (
    ClientRequests,
    InflightRequests,
    OutboxClosed,
    Session,
    Undeliverable,
)
from switchyard.wire import frame, strict
from switchyard.wire.frame import UNSET, Envelope, Raw, Reply

log = logging.getLogger("switchyard.stdio")

MAX_LINE_BYTES: Final = 4 * 1024 * 1024
# Resource URIs one listen request may subscribe to; the rest are not honoured.
MAX_LISTEN_URIS: Final = 100
# How often the caller's credential is checked again: a revoked or expired API key stops
# working within this (plus the key cache's few seconds at most).
REVERIFY_S: Final = 5.0

Reverify = Callable[[], Awaitable[str | None]]
"""Checks the process's credential again: why it is no longer good, or None."""

# What may wait for a client that is not reading stdout before notifications are dropped.
STDOUT_QUEUE_BYTES: Final = 4 * 1024 * 1024


class StdoutQueue:
    """Lines waiting for stdout, written in order by one writer task.

    Notifications and server->client requests arrive from backend readers shared with other
    work: `offer` never waits, and past the byte bound refuses (the caller drops and counts).
    Answers and errors come from the client's own request tasks: `put` waits for room and never
    drops, so a client that stops reading stalls only its own requests.
    """

    def __init__(self, limit_bytes: int = STDOUT_QUEUE_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.size = 0
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.emptied = asyncio.Event()
        """Set while nothing is queued (the writer has taken every line)."""
        self.emptied.set()

    def offer(self, line: bytes) -> bool:
        if self.size + len(line) > self.limit_bytes and self._lines:
            if not self.dropped:
                log.warning("the client is not reading stdout: dropping notifications")
            self.dropped += 1
            return False
        self._append(line)
        return True

    async def put(self, line: bytes) -> None:
        while self.size >= self.limit_bytes:
            await self._room.wait()
        self._append(line)

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        self.size += len(line)
        self._ready.set()
        self.emptied.clear()
        if self.size >= self.limit_bytes:
            self._room.clear()

    async def get(self) -> bytes:
        while not self._lines:
            self._ready.clear()
            await self._ready.wait()
        line = self._lines.popleft()
        self.size -= len(line)
        if self.size < self.limit_bytes:
            self._room.set()
        if not self._lines:
            self.emptied.set()
        return line


class StdioListener:
    """One 2026-07-28 listen request on stdio: what it asked for, delivered tagged with its id.

    Resource URIs are routed and judged by the gateway like `resources/subscribe`: the same
    access rules, and "denied is unknown" (a refused URI is simply not honoured).
    """

    _LIST_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")

    def __init__(self, server: StdioServer, request_id: object) -> None:
        self.server = server
        self.key = f"listen-{secrets.token_hex(8)}"
        self.meta = frame.encode({META_SUBSCRIPTION_ID: request_id})

    async def open(self, ctx: RequestContext, wanted: dict[str, Raw]) -> dict[str, object]:
        """Register; returns the subset of the request that will be honoured."""
        honoured: dict[str, object] = {}
        for flag in self._LIST_FLAGS:
            with contextlib.suppress(frame.DecodeError):
                if flag in wanted and frame.decode_any(wanted[flag]) is True:
                    honoured[flag] = True
        try:
            uris = frame.decode_any(wanted.get("resourceSubscriptions", Raw(b"[]")))
        except frame.DecodeError:
            uris = []
        accepted = await self.server.gateway.open_listen(
            self.key,
            self.push,
            frozenset(honoured),
            uris[:MAX_LISTEN_URIS] if isinstance(uris, list) else [],
            ctx.identity,
            ctx.view,
            ctx.client_capabilities,
        )
        if accepted:
            honoured["resourceSubscriptions"] = accepted
        return honoured

    def tagged(self, method: str, params: bytes | None) -> bytes:
        fields = frame.decode_object(params) if params else {}
        meta = frame.decode_object(fields["_meta"]) if "_meta" in fields else {}
        meta.update(frame.decode_object(self.meta))
        fields["_meta"] = Raw(frame.encode_object(meta))
        return frame.notification_bytes(method, frame.encode_object(fields)) + b"\n"

    def push(self, method: str, params: bytes | None) -> None:
        try:
            line = self.tagged(method, params)
        except (frame.DecodeError, frame.ValidationError):
            return  # a backend's malformed params: nothing to tag
        self.server.stdout.offer(line)

    def farewell(self) -> Reply:
        """The listen request's answer, once the gateway ends it."""
        return Reply(result=b'{"resultType":"complete","_meta":' + self.meta + b"}")

    async def close(self) -> None:
        await self.server.gateway.subscriptions.drop(self.key)


class StdioServer:
    def __init__(
        self,
        gateway: Gateway,
        view: str | None = None,
        identity: Identity | None = None,
        *,
        reverify: Reverify | None = None,
    ) -> None:
        self.gateway = gateway
        self.reverify = reverify
        self.refused: str | None = None
        """Why the credential stopped being good; the process then refuses requests and ends."""
        self._verified_at = time.monotonic()
        self._verify_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        """Set when stdin ends: open listen requests are answered and end."""
        self.view = view
        """The virtual server this process serves (None: the full gateway)."""
        self.identity = identity
        """The caller, established once from the environment's API key (authentication on)."""
        self.session: Session | None = None
        self._writer: standard_streams.Sink | None = None
        self.stdout = StdoutQueue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_ready = asyncio.Event()
        self.requests = InflightRequests()
        self.limits = strict.JsonLimits()
        self.outgoing = ClientRequests()

    async def serve(self) -> None:
        reader, self._writer = await standard_streams.open_streams(MAX_LINE_BYTES)
        outbox = asyncio.create_task(self._drain_outbox())
        writer = asyncio.create_task(self._write_stdout())
        watch = asyncio.create_task(self._watch_credential())
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._handle(exc.partial)
                    break
                except asyncio.LimitOverrunError:
                    await self._write(_error(b"null", codes.INVALID_REQUEST, "Message too large"))
                    break
                if line.strip():
                    await self._handle(line)
                if self.refused is not None:
                    break
            self._closing.set()
            if self._tasks and self.refused is None:
                await asyncio.wait(self._tasks, timeout=5.0)
            await self._flush(5.0)
        finally:
            for task in (watch, *self._tasks) if self.refused is not None else (watch,):
                task.cancel()
            for task in (outbox, writer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _credential_refused(self, every: float = REVERIFY_S) -> bool:
        """Whether the caller's credential is no longer good, checking it again when the last
        check is `every` seconds old."""
        if self.refused is not None:
            return True
        if self.reverify is None or time.monotonic() - self._verified_at < every:
            return False
        async with self._verify_lock:
            if time.monotonic() - self._verified_at >= every and self.refused is None:
                try:
                    self.refused = await self.reverify()
                except Exception:  # the store is down: not the caller's fault; retry later
                    log.exception("could not re-verify the API key")
                self._verified_at = time.monotonic()
        return self.refused is not None

    async def _watch_credential(self) -> None:
        """Check the credential between requests too, so an idle process learns of it."""
        if self.reverify is None:
            return
        while self.refused is None:
            await asyncio.sleep(REVERIFY_S)
            if await self._credential_refused():
                log.warning("the API key is no longer valid (%s): refusing requests", self.refused)

    async def _write(self, data: bytes) -> None:
        """Queue an answer for stdout, waiting for room (never dropped)."""
        await self.stdout.put(data + b"\n")

    async def _write_stdout(self) -> None:
        assert self._writer is not None
        while True:
            self._writer.write(await self.stdout.get())
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def _flush(self, timeout: float) -> None:
        """Give the writer a bounded time to empty the queue before the process ends."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.stdout.emptied.wait()
                assert self._writer is not None
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()

    async def _drain_outbox(self) -> None:
        while True:
            await self._session_ready.wait()
            session = self.session
            assert session is not None
            try:
                message = await session.outbox.get()
            except OutboxClosed:
                # The session ended (its lifetime); a new `initialize` opens another.
                if self.session is session:
                    self.session = None
                    self._session_ready.clear()
                continue
            await self._write(message)

    async def _handle(self, line: bytes) -> None:
        if line.lstrip()[:1] == b"[":
            await self._write(_error(b"null", codes.INVALID_REQUEST, "Batches are not supported"))
            return
        try:
            strict.check(line, self.limits)
        except strict.Refused as refused:
            await self._write(_error(b"null", refused.code, refused.message))
            return
        try:
            env = frame.peek(line)
        except (frame.DecodeError, frame.ValidationError):
            await self._write(_error(b"null", codes.PARSE_ERROR, "Parse error"))
            return
        if env.method is UNSET:
            # The client answering a server->client request: asked on a call, or on its session.
            if not self.outgoing.resolve(env) and self.session is not None:
                self.session.outgoing.resolve(env)
            return
        if env.id is UNSET:
            if env.method == methods.INITIALIZED and self.session is not None:
                self.session.initialized = True
            elif env.method == methods.CANCELLED:
                self.requests.cancel(env.params if env.params is not UNSET else None)
            return
        if env.id is None or env.jsonrpc != "2.0":
            await self._write(_error(b"null", codes.INVALID_REQUEST, "Invalid JSON-RPC request"))
            return
        if await self._credential_refused():
            id_raw = frame.encode_id(env.id)
            message = f"Authentication failed: {self.refused}"
            await self._write(_error(id_raw, codes.INVALID_REQUEST, message))
            return
        task = asyncio.create_task(self._request(env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, env: Envelope) -> None:
        assert isinstance(env.method, str)
        id_raw = frame.encode_id(env.id)  # type: ignore[arg-type]
        params = env.params if env.params is not UNSET else None
        ctx, refusal = self._context(env.method, params)
        ctx.request_id = id_raw
        if refusal is not None:
            await self._write(frame.response_bytes(id_raw, refusal))
            return
        if ctx.era is Era.MODERN and env.method == methods.LISTEN:
            reply = await self.requests.run(id_raw, self._listen(ctx, env.id, params))
        else:
            reply = await self.requests.run(
                id_raw, self.gateway.dispatcher.request(ctx, env.method, params)
            )
        if reply is None:
            return  # cancelled by the client: no answer is owed
        if env.method == methods.SET_LEVEL and reply.result is not None and self.session:
            self.session.log_level = level_of(params)
        if env.method == methods.INITIALIZE and reply.result is not None:
            principal = self.identity.key if self.identity else None
            session = self.gateway.sessions.create(
                "stdio", principal, self.view, identity=self.identity
            )
            if session is not None:
                _adopt(session, reply, params)
                session.stream_open = True  # stdout is this session's stream, always attached
                if self.session is not None:
                    self.gateway.sessions.remove(self.session.id)
                self.session = session
                self._session_ready.set()
        await self._write(frame.response_bytes(id_raw, reply))

    async def _listen(self, ctx: RequestContext, request_id: object, params: Raw | None) -> Reply:
        """2026-07-28 `subscriptions/listen`: acknowledge what will be honoured, then deliver it
        on stdout tagged with the request's id, until the client cancels it or stdin ends."""
        try:
            fields = frame.decode_object(params) if params is not None else {}
            wanted = frame.decode_object(fields["notifications"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            return frame.error_reply(codes.INVALID_PARAMS, "notifications must be an object")
        listener = StdioListener(self, request_id)
        try:
            honoured = await listener.open(ctx, wanted)
            self.stdout.offer(
                listener.tagged(methods.ACKNOWLEDGED, frame.encode({"notifications": honoured}))
            )
            await self._closing.wait()
        finally:
            await listener.close()
        return listener.farewell()

    @property
    def client(self) -> str:
        return self.session.id if self.session is not None else "stdio"

    async def notify(self, method: str, params: bytes | None) -> None:
        # Reached from backend readers: queue and return, never wait for the client.
        level = self.session.log_level if self.session is not None else None
        if method != methods.MESSAGE or log_wanted(params, level):
            self.stdout.offer(frame.notification_bytes(method, params) + b"\n")

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        capabilities = self.session.client_capabilities if self.session is not None else None
        return await self.outgoing.ask(self._offer, capabilities, method, params, timeout)

    async def _offer(self, data: bytes) -> None:
        if not self.stdout.offer(data + b"\n"):
            raise Undeliverable

    def _context(self, method: str, params: Raw | None) -> tuple[RequestContext, Reply | None]:
        meta: dict[str, Raw] | None = None
        if params is not None:
            with contextlib.suppress(frame.DecodeError, frame.ValidationError, KeyError):
                meta = frame.decode_object(frame.decode_object(params)["_meta"])
        if meta is not None and META_PROTOCOL_VERSION in meta and method != methods.INITIALIZE:
            version = frame.decode_any(meta[META_PROTOCOL_VERSION])
            level, bad_level = _log_level(meta)
            ctx = RequestContext(
                Era.MODERN,
                str(version),
                "stdio",
                client_capabilities=meta.get(META_CLIENT_CAPABILITIES),
                link=RequestLink(self, level),
                principal=self.identity.key if self.identity else None,
                identity=self.identity,
                log_level=level,
                view=self.view,
            )
            if version not in MODERN_VERSIONS:
                return ctx, frame.error_reply(
                    codes.UNSUPPORTED_PROTOCOL_VERSION,
                    f"Unsupported protocol version: {version}",
                    {"supported": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS], "requested": version},
                )
            if META_CLIENT_CAPABILITIES not in meta:
                return ctx, frame.error_reply(
                    codes.INVALID_PARAMS, f"params._meta must carry {META_CLIENT_CAPABILITIES!r}"
                )
            if bad_level:
                return ctx, frame.error_reply(
                    codes.INVALID_PARAMS,
                    f"params._meta {META_LOG_LEVEL!r} must be one of {', '.join(LOG_LEVELS)}",
                )
            return ctx, None
        session = self.session
        return RequestContext(
            Era.LEGACY,
            session.version if session else LATEST_HANDSHAKE,
            "stdio",
            session_id=session.id if session else None,
            client_capabilities=session.client_capabilities if session else None,
            link=self,
            session_push=session.notify if session else None,
            session_link=session.link() if session else None,
            principal=self.identity.key if self.identity else None,
            identity=self.identity,
            view=self.view,
            log_level=session.log_level if session else None,
        ), None


class RequestLink:
    """The way back to one 2026-07-28 request's client: its log lines only if the request
    opted in with `logLevel` (and at or above it); everything else as the process's link."""

    __slots__ = ("level", "server")

    def __init__(self, server: StdioServer, level: str | None) -> None:
        self.server = server
        self.level = level

    @property
    def client(self) -> str:
        # One per request, as on HTTP: a log line is attributed to a request, never guessed
        # among several of this client's requests in flight.
        return f"stdio-request-{id(self)}"

    async def notify(self, method: str, params: bytes | None) -> None:
        if method == methods.MESSAGE and (self.level is None or not log_wanted(params, self.level)):
            return  # 2026-07-28: no log lines for a request that did not ask, or below its level
        self.server.stdout.offer(frame.notification_bytes(method, params) + b"\n")

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        return await self.server.ask(method, params, timeout)


def _log_level(meta: dict[str, Raw]) -> tuple[str | None, bool]:
    """A modern request's `logLevel` opt-in, and whether it was malformed."""
    raw = meta.get(META_LOG_LEVEL)
    if raw is None:
        return None, False
    try:
        level = frame.decode_any(raw)
    except frame.DecodeError:
        return None, True
    return (level, False) if level in LOG_LEVELS else (None, True)


def _error(id_raw: bytes, code: int, message: str) -> bytes:
    return frame.response_bytes(id_raw, frame.error_reply(code, message))
