"""The Streamable HTTP endpoint (`/mcp`), serving both eras on one path.

A POST whose `MCP-Protocol-Version` is not a handshake revision takes the modern stateless path
(2026-07-28: no sessions, headers must mirror the body). Everything else is the legacy session
path: `initialize` mints an `Mcp-Session-Id`, a GET opens the session's notification stream,
DELETE ends it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Final, Protocol

from switchyard.downstream.asgi import (
    IDENTITY,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    accepted_types,
    caller,
    caller_name,
    current_peer,
    current_traceparent,
    current_tracestate,
    current_view,
    first,
    head_index,
    header,
    refuse,
    respond,
    respond_json,
)
from switchyard.downstream.inbound import error_json, read_message, request_fields, settle
from switchyard.gateway import Gateway
from switchyard.policies.base import Identity, RequestContext
from switchyard.protocol import codes, methods, param_headers
from switchyard.protocol.link import log_wanted
from switchyard.protocol.versions import (
    DEFAULT_HTTP_LEGACY_VERSION,
    HANDSHAKE_VERSIONS,
    META_CLIENT_CAPABILITIES,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    META_SUBSCRIPTION_ID,
    MODERN_VERSIONS,
    Era,
)
from switchyard.sessions import OUTBOX_LIMIT, OutboxClosed, Session, SessionRefusal
from switchyard.wire import frame, sse, strict
from switchyard.wire.frame import UNSET, Envelope, HttpHints, Raw, Reply

log = logging.getLogger("switchyard.http")

KEEPALIVE_S: Final = 15.0
STREAM_QUEUE_BYTES: Final = 1024 * 1024
"""Bytes queued for one POST's stream that its client has not read yet; past it, drops."""
DISCONNECT_WATCH_S: Final = 0.5
_ALLOW: Final = [(b"allow", b"GET, POST, DELETE")]
_ALLOW_POST: Final = [(b"allow", b"POST")]


def decode_header_value(value: str) -> str:
    """Undo the 2026-07-28 `=?base64?…?=` wrapping of non-ASCII header values."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return value
    return value


CANCELLED_REPLY: Final = frame.error_reply(-32800, "Request cancelled")


class DisconnectWatch:
    """Cancels the current request when its client disconnects.

    Watching needs a task waiting on `receive`; it starts only once a request has been open for
    `DISCONNECT_WATCH_S`, so quick requests pay a timer, not a task.
    """

    __slots__ = ("_handle", "_receive", "_target", "_watcher", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        loop = asyncio.get_running_loop()  # once: a system call (`getpid`) on Python 3.11
        self._target = asyncio.current_task(loop)
        self._watcher: asyncio.Task[None] | None = None
        self.disconnected = False
        self._handle = loop.call_later(DISCONNECT_WATCH_S, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        if self._target is not None:
            self._target.cancel()

    def close(self) -> None:
        self._handle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class ScopeRefusal(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def challenge(self) -> str: ...

    @property
    def message(self) -> str: ...


ScopeGate = Callable[[Identity | None, str], ScopeRefusal | None]


class PostReply:
    """One POST's answer: a JSON body, unless a message for the client comes first; then an SSE
    stream carrying notifications and server->client requests and, last, the response.

    Messages for the client are reached from a backend connection's reader, shared by every
    client of that backend, so they never wait on this client's socket: they go into a queue
    bounded in bytes, which a writer task of this response drains. A client that stops reading
    loses further notifications (counted in `dropped`), and a backend's request to it is
    answered with an error; the backend's reader moves on either way.
    """

    __slots__ = (
        "_queue",
        "_queued_bytes",
        "_ready",
        "_writer",
        "dropped",
        "extra",
        "log_level",
        "send",
        "session",
        "streaming",
    )

    def __init__(
        self, send: Send, session: Session | None = None, log_level: str | None = None
    ) -> None:
        self.send = send
        self.session = session
        self.log_level = log_level
        """Modern: the request's `logLevel` opt-in (None: no log lines at all)."""
        self.extra: list[tuple[bytes, bytes]] | None = None
        self.streaming = False
        self.dropped = 0
        self._queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._queued_bytes = 0
        self._ready: asyncio.Event | None = None
        """Made with the stream: most answers are a plain JSON body, and need no event."""
        self._writer: asyncio.Task[None] | None = None

    @property
    def client(self) -> str:
        return self.session.id if self.session is not None else f"post-{id(self)}"

    def _has_room(self, size: int) -> bool:
        # An empty queue takes any one message, so a large one still reaches a reading client.
        return self._queued_bytes == 0 or self._queued_bytes + size <= STREAM_QUEUE_BYTES

    def _enqueue(self, message: bytes, last: bool = False) -> None:
        event = sse.format_event(message, "message")
        self._queue.append((event, last))
        self._queued_bytes += len(event)
        if self._ready is None:
            self._ready = asyncio.Event()
        self._ready.set()
        if self._writer is None:
            self.streaming = True
            self._writer = asyncio.create_task(self._write(self._ready))

    async def _write(self, ready: asyncio.Event) -> None:
        headers = SSE_HEADERS if self.extra is None else [*SSE_HEADERS, *self.extra]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        while True:
            while not self._queue:
                ready.clear()
                await ready.wait()
            event, last = self._queue.popleft()
            await self.send({"type": "http.response.body", "body": event, "more_body": not last})
            self._queued_bytes -= len(event)
            if last:
                return

    async def notify(self, method: str, params: bytes | None) -> None:
        if method == methods.MESSAGE:
            if self.session is not None:
                if not log_wanted(params, self.session.log_level):
                    return
            elif self.log_level is None or not log_wanted(params, self.log_level):
                return  # 2026-07-28: log lines only to a request that asked, at its level
        message = frame.notification_bytes(method, params)
        if not self._has_room(len(message)):
            self.dropped += 1
            if self.dropped == 1:
                log.warning("%s: the client is not reading its stream; dropping", self.client)
            return
        self._enqueue(message)

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        session = self.session
        if session is None:
            # 2026-07-28 has no server->client requests on HTTP.
            return frame.error_reply(
                codes.CLIENT_UNREACHABLE,
                f"{method}: the client has no back-channel (2026-07-28)",
                {"source": "gateway"},
            )
        # A client already losing notifications is not reading, and a finished stream carries
        # nothing more: either way its answer would never come.
        finished = self._writer is not None and self._writer.done()
        if finished or self.dropped or not self._has_room(len(params or b"") + 64):
            return frame.error_reply(
                codes.CLIENT_UNREACHABLE,
                f"{method}: the client is not reading its stream",
                {"source": "gateway"},
            )
        return await session.outgoing.ask(
            self._push, session.client_capabilities, method, params, timeout
        )

    async def _push(self, message: bytes) -> None:
        self._enqueue(message)

    async def finish(self, body: bytes, hints: HttpHints | None = None) -> None:
        """Send the response; `hints` (status, headers) apply while it is a plain JSON answer,
        and an event stream already open carries the JSON-RPC reply alone."""
        writer = self._writer
        if writer is None:
            if hints is None:
                await respond_json(self.send, 200, body, self.extra)
            else:
                extra = [*(self.extra or ()), *hints.headers]
                await respond_json(self.send, hints.status or 200, body, extra)
            return
        self._enqueue(body, last=True)
        with contextlib.suppress(OSError):  # the client left: nobody to answer
            await writer

    def abandon(self) -> None:
        """Stop writing, if the answer was not finished (the request was cancelled or failed)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


class StreamableHttpEndpoint:
    def __init__(
        self,
        gateway: Gateway,
        max_body_bytes: int,
        shutting_down: asyncio.Event,
        limits: strict.JsonLimits | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.limits = limits or strict.JsonLimits()
        self.body_timeout_s = body_timeout_s
        self.scope_gate: ScopeGate | None = None
        """Set when authentication is on: refuses an operation a token has no scope for."""
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.shutting_down = shutting_down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        index = head_index(scope)
        version = first(index, b"mcp-protocol-version")
        modern = version is not None and version not in HANDSHAKE_VERSIONS
        if method == "POST":
            await self._post(scope, headers, index, version, modern, receive, send)
        elif modern:
            # 2026-07-28 is POST-only; old verbs get 405 and never a session.
            await respond(send, 405, headers=_ALLOW_POST)
        elif method == "GET":
            await self._get(headers, receive, send)
        elif method == "DELETE":
            await self._delete(headers, send)
        else:
            await respond(send, 405, headers=_ALLOW)

    async def _param_headers_mismatch(
        self, headers: list[tuple[bytes, bytes]], method: str, params: dict[str, Raw]
    ) -> str | None:
        """How a 2026-07-28 `tools/call`'s `Mcp-Param-*` headers disagree with its arguments.
        Judged only for a tool the caller may call: for any other the call is answered like an
        unknown tool, so the headers never tell a caller what exists."""
        if method != methods.TOOLS_CALL:
            return None
        gateway = self.gateway
        router = gateway.router
        if gateway.caller_lists is not None:  # the tool may be one only this caller is shown
            router = await gateway.router_for(caller(), current_view())
        route = router.resolve(method, params, current_view())
        # Most tools mirror nothing: they cost a cached lookup, not a second access decision.
        if route is None or not param_headers.header_params(route.entry.item):
            return None
        if not self.gateway.permits(caller(), route):
            return None
        sent = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers
            if k.startswith(b"mcp-param-")
        ]
        return param_headers.check_request(sent, route.entry.item, params.get("arguments"))

    # -- POST ---------------------------------------------------------------------------------

    async def _post(
        self,
        scope: Scope,
        headers: list[tuple[bytes, bytes]],
        index: dict[bytes, bytes],
        version: str | None,
        modern: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        ctype = first(index, b"content-type") or ""
        if not ctype.lower().startswith("application/json"):
            message = "Content-Type must be application/json"
            await refuse(scope, send, 415, error_json(codes.INVALID_REQUEST, message), message)
            return
        # Either kind of answer may come back (a JSON body, or an SSE stream once the backend
        # has something to say first), so a client must take both.
        if not all(accepted_types(headers, index)):
            message = "Accept must include application/json and text/event-stream"
            await refuse(scope, send, 406, error_json(codes.INVALID_REQUEST, message), message)
            return
        body = await read_message(
            scope, receive, send, self.max_body_bytes, self.body_timeout_s, self.limits
        )
        if body is None:
            return
        try:
            env = frame.peek(body)
        except frame.ValidationError:
            await respond_json(
                send, 400, error_json(codes.INVALID_REQUEST, "Invalid JSON-RPC message")
            )
            return
        except frame.DecodeError:
            await respond_json(send, 400, error_json(codes.PARSE_ERROR, "Parse error"))
            return
        if (
            env.jsonrpc != "2.0"
            or (env.method is UNSET and not env.is_response)
            or (env.method is not UNSET and env.id is None)
        ):
            await respond_json(
                send, 400, error_json(codes.INVALID_REQUEST, "Invalid JSON-RPC message")
            )
            return
        if self.scope_gate is not None and env.method is not UNSET:
            refusal = self.scope_gate(caller(), env.method)
            if refusal is not None:
                challenge = [(b"www-authenticate", refusal.challenge.encode("latin-1"))]
                answer = error_json(codes.INVALID_REQUEST, refusal.message)
                await respond_json(send, refusal.status, answer, challenge)
                return
        if modern:
            await self._post_modern(headers, version or "", env, send, receive)
        else:
            await self._post_legacy(index, version, env, send)

    async def _post_modern(
        self,
        headers: list[tuple[bytes, bytes]],
        version: str,
        env: Envelope,
        send: Send,
        receive: Receive,
    ) -> None:
        if not env.is_request:
            await respond(send, 202)
            return
        assert isinstance(env.method, str)
        id_raw = frame.encode_id(env.id)  # type: ignore[arg-type]
        try:
            params = frame.decode_object(env.params) if env.params is not UNSET else {}
            meta = frame.decode_object(params["_meta"]) if "_meta" in params else None
        except (frame.DecodeError, frame.ValidationError):
            await respond_json(
                send,
                400,
                error_json(codes.INVALID_PARAMS, "params and params._meta must be objects", id_raw),
            )
            return
        if (
            meta is None
            or META_PROTOCOL_VERSION not in meta
            or META_CLIENT_CAPABILITIES not in meta
        ):
            await respond_json(
                send,
                400,
                error_json(
                    codes.INVALID_PARAMS,
                    f"params._meta must carry {META_PROTOCOL_VERSION!r} and "
                    f"{META_CLIENT_CAPABILITIES!r}",
                    id_raw,
                ),
            )
            return
        mismatch = _header_mismatch(headers, version, env.method, params, meta)
        if mismatch is None:
            mismatch = await self._param_headers_mismatch(headers, env.method, params)
        if mismatch is not None:
            await respond_json(send, 400, error_json(codes.HEADER_MISMATCH, mismatch, id_raw))
            return
        if version not in MODERN_VERSIONS:
            await respond_json(
                send,
                400,
                error_json(
                    codes.UNSUPPORTED_PROTOCOL_VERSION,
                    f"Unsupported protocol version: {version}",
                    id_raw,
                    {"supported": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS], "requested": version},
                ),
            )
            return
        if env.method == methods.TOOLS_CALL and "arguments" in params:
            try:
                frame.decode_object(params["arguments"])
            except frame.DecodeError:
                await respond_json(
                    send,
                    400,
                    error_json(codes.INVALID_PARAMS, "arguments must be an object", id_raw),
                )
                return
        if env.method == methods.LISTEN:
            await self._listen(env, id_raw, params, send, receive)
            return
        if not self.gateway.dispatcher.knows(env.method, Era.MODERN):
            await respond_json(
                send,
                404,
                error_json(codes.METHOD_NOT_FOUND, f"Method not found: {env.method}", id_raw),
            )
            return
        raw_level = meta.get(META_LOG_LEVEL)
        try:
            log_level = frame.decode_str(raw_level) if raw_level is not None else None
        except frame.DecodeError:
            await respond_json(
                send,
                400,
                error_json(codes.INVALID_PARAMS, f"{META_LOG_LEVEL} must be a string", id_raw),
            )
            return
        out = PostReply(send, log_level=log_level)
        identity = caller()
        ctx = RequestContext(
            Era.MODERN,
            version,
            "streamable-http",
            client_capabilities=meta[META_CLIENT_CAPABILITIES],
            link=out,
            principal=identity.key if identity else None,
            identity=identity,
            log_level=log_level,
            view=current_view(),
            request_id=id_raw,
            traceparent=current_traceparent(),
            tracestate=current_tracestate(),
        )
        params_raw = env.params if env.params is not UNSET else None
        watch = DisconnectWatch(receive)
        try:
            reply = await settle(
                env.method, self.gateway.dispatcher.request(ctx, env.method, params_raw, params)
            )
        except asyncio.CancelledError:
            out.abandon()
            if not watch.disconnected:
                raise
            # 2026-07-28: the client closing its stream is the cancellation; no answer is owed.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return
        finally:
            watch.close()
        await out.finish(frame.response_bytes(id_raw, reply), reply.http)

    async def _post_legacy(
        self, index: dict[bytes, bytes], version: str | None, env: Envelope, send: Send
    ) -> None:
        sessions = self.gateway.sessions
        if env.method == methods.INITIALIZE and env.is_request:
            await self._initialize(env, send)
            return
        session_id = first(index, b"mcp-session-id")
        if session_id is None:
            await respond_json(
                send,
                400,
                error_json(codes.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"),
            )
            return
        session = sessions.get(session_id, caller_name(), current_view())
        if session is None:
            await respond_json(send, 404, error_json(codes.INVALID_REQUEST, "Session not found"))
            return
        if not env.is_request:
            if env.is_response:
                session.outgoing.resolve(env)
            elif env.method == methods.INITIALIZED:
                session.initialized = True
            elif env.method == methods.CANCELLED:
                session.requests.cancel(env.params if env.params is not UNSET else None)
            await respond(send, 202)
            return
        assert isinstance(env.method, str)
        id_raw = frame.encode_id(env.id)  # type: ignore[arg-type]
        params_raw = env.params if env.params is not UNSET else None
        fields = request_fields(params_raw)
        if isinstance(fields, str):
            await respond_json(send, 200, error_json(codes.INVALID_PARAMS, fields, id_raw), None)
            return
        out = PostReply(send, session)
        ctx = RequestContext(
            Era.LEGACY,
            version or session.version or DEFAULT_HTTP_LEGACY_VERSION,
            "streamable-http",
            session_id=session.id,
            client_capabilities=session.client_capabilities,
            link=out,
            session_push=session.notify,
            session_link=session.link(),
            log_level=session.log_level,
            principal=session.principal,
            identity=caller(),
            view=current_view(),
            request_id=id_raw,
            traceparent=current_traceparent(),
            tracestate=current_tracestate(),
        )
        try:
            reply = await session.requests.run(
                id_raw,
                settle(
                    env.method,
                    self.gateway.dispatcher.request(ctx, env.method, params_raw, fields),
                ),
            )
        except BaseException:
            out.abandon()  # shutting down: the stream's writer goes with the request
            raise
        if env.method == methods.SET_LEVEL and reply is not None and reply.result is not None:
            session.log_level = level_of(params_raw)
        # A cancelled request is answered with -32800 only because an HTTP POST needs an
        # answer; the SDK's 2025 Streamable HTTP server does the same.
        answer = reply or CANCELLED_REPLY
        await out.finish(frame.response_bytes(id_raw, answer), answer.http)

    async def _initialize(self, env: Envelope, send: Send) -> None:
        id_raw = frame.encode_id(env.id)  # type: ignore[arg-type]
        identity = caller()
        ctx = RequestContext(
            Era.LEGACY,
            "",
            "streamable-http",
            principal=identity.key if identity else None,
            identity=identity,
            view=current_view(),
            request_id=id_raw,
            traceparent=current_traceparent(),
            tracestate=current_tracestate(),
        )
        params_raw = env.params if env.params is not UNSET else None
        reply = await settle(
            methods.INITIALIZE, self.gateway.dispatcher.request(ctx, methods.INITIALIZE, params_raw)
        )
        if reply.result is None:
            await respond_json(send, 200, frame.response_bytes(id_raw, reply))
            return
        session = self.gateway.sessions.open(
            "streamable-http",
            caller_name(),
            current_view(),
            peer=current_peer(),
            identity=IDENTITY.get(),
        )
        if isinstance(session, SessionRefusal):
            body = error_json(session.code, session.message, id_raw, {"source": "gateway"})
            await respond_json(send, session.status, body)
            return
        _adopt(session, reply, params_raw)
        await respond_json(
            send,
            200,
            frame.response_bytes(id_raw, reply),
            [(b"mcp-session-id", session.id.encode())],
        )

    async def _listen(
        self, env: Envelope, id_raw: bytes, params: dict[str, Raw], send: Send, receive: Receive
    ) -> None:
        """2026-07-28 `subscriptions/listen`: acknowledge what will be honoured, then stream it."""
        try:
            wanted = frame.decode_object(params["notifications"])
        except (KeyError, frame.DecodeError, frame.ValidationError):
            await respond_json(
                send,
                400,
                error_json(codes.INVALID_PARAMS, "notifications must be an object", id_raw),
            )
            return
        listener = Listener(self.gateway, env.id, wanted)
        try:
            honoured = await listener.open(_client_capabilities(params))
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            ack = listener.tagged(
                methods.ACKNOWLEDGED, frame.encode_object({"notifications": Raw(honoured)})
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": sse.format_event(ack, "message"),
                    "more_body": True,
                }
            )
            await pump(
                listener.outbox, receive, send, self.shutting_down, listener.farewell(id_raw)
            )
        finally:
            await listener.close()

    # -- GET / DELETE ---------------------------------------------------------------------------

    async def _get(self, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send) -> None:
        if not accepted_types(headers)[1]:
            await respond_json(
                send,
                406,
                error_json(codes.INVALID_REQUEST, "Accept must include text/event-stream"),
            )
            return
        session = await self._session_or_refuse(headers, send)
        if session is None:
            return
        if session.stream_open:
            await respond_json(
                send,
                409,
                error_json(codes.INVALID_REQUEST, "A stream is already open for this session"),
            )
            return
        session.stream_open = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send(
                {"type": "http.response.body", "body": b": stream open\n\n", "more_body": True}
            )
            await pump(session.outbox, receive, send, self.shutting_down)
        finally:
            session.stream_open = False

    async def _delete(self, headers: list[tuple[bytes, bytes]], send: Send) -> None:
        session = await self._session_or_refuse(headers, send)
        if session is not None:
            self.gateway.sessions.remove(session.id)
            await respond(send, 200)

    async def _session_or_refuse(
        self, headers: list[tuple[bytes, bytes]], send: Send
    ) -> Session | None:
        session_id = header(headers, b"mcp-session-id")
        if session_id is None:
            await respond_json(
                send,
                400,
                error_json(codes.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"),
            )
            return None
        session = self.gateway.sessions.get(session_id, caller_name(), current_view())
        if session is None:
            await respond_json(send, 404, error_json(codes.INVALID_REQUEST, "Session not found"))
        return session


class Listener:
    """One modern listen stream: what it asked for, what it gets, tagged with its id."""

    _LIST_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")

    def __init__(self, gateway: Gateway, request_id: object, wanted: dict[str, Raw]) -> None:
        self.gateway = gateway
        self.key = f"listen-{secrets.token_hex(8)}"
        self.meta = frame.encode({META_SUBSCRIPTION_ID: request_id})
        self.wanted = wanted
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_LIMIT)

    async def open(self, capabilities: Raw | None = None) -> bytes:
        """Register; returns the subset of the request Switchyard will honour."""
        honoured: dict[str, object] = {}
        for flag in self._LIST_FLAGS:
            if flag in self.wanted and frame.decode_any(self.wanted[flag]) is True:
                honoured[flag] = True
        uris = frame.decode_any(self.wanted.get("resourceSubscriptions", Raw(b"[]")))
        accepted = await self.gateway.open_listen(
            self.key,
            self.push,
            frozenset(honoured),
            uris if isinstance(uris, list) else [],
            caller(),
            current_view(),
            capabilities,
        )
        if accepted:
            honoured["resourceSubscriptions"] = accepted
        return frame.encode(honoured)

    def tagged(self, method: str, params: bytes | None) -> bytes:
        fields = frame.decode_object(params) if params else {}
        meta = frame.decode_object(fields["_meta"]) if "_meta" in fields else {}
        meta.update(frame.decode_object(self.meta))
        fields["_meta"] = Raw(frame.encode_object(meta))
        return frame.notification_bytes(method, frame.encode_object(fields))

    def push(self, method: str, params: bytes | None) -> None:
        if self.outbox.full():
            self.outbox.get_nowait()
        self.outbox.put_nowait(self.tagged(method, params))

    def farewell(self, id_raw: bytes) -> bytes:
        """The listen request's answer, sent when the gateway ends the stream."""
        result = b'{"resultType":"complete","_meta":' + self.meta + b"}"
        return frame.response_bytes(id_raw, Reply(result=result))

    async def close(self) -> None:
        await self.gateway.subscriptions.drop(self.key)


def _client_capabilities(params: dict[str, Raw]) -> Raw | None:
    """The capabilities a 2026-07-28 request declares in its `_meta`, if it does."""
    try:
        meta = frame.decode_object(params["_meta"])
    except (KeyError, frame.DecodeError, frame.ValidationError):
        return None
    return meta.get(META_CLIENT_CAPABILITIES)


def level_of(params: Raw | None) -> str | None:
    """The level a successful `logging/setLevel` asked for."""
    try:
        return frame.decode_str(frame.decode_object(params)["level"]) if params else None
    except (frame.DecodeError, frame.ValidationError, KeyError):
        return None


def _adopt(session: Session, reply: Reply, params: Raw | None) -> None:
    """Record what `initialize` negotiated on the new session."""
    assert reply.result is not None
    result = frame.decode_object(reply.result)
    session.version = frame.decode_str(result["protocolVersion"])
    if params is not None:
        fields = frame.decode_object(params)
        session.client_capabilities = fields.get("capabilities")


def _header_mismatch(
    headers: list[tuple[bytes, bytes]],
    version: str,
    method: str,
    params: dict[str, Raw],
    meta: dict[str, Raw],
) -> str | None:
    for name in (b"mcp-protocol-version", b"mcp-method", b"mcp-name"):
        if sum(1 for k, _ in headers if k == name) > 1:
            return f"{name.decode()} header appears more than once"
    try:
        body_version = frame.decode_any(meta[META_PROTOCOL_VERSION])
    except frame.DecodeError:
        body_version = None
    if body_version != version:
        return "MCP-Protocol-Version header does not match params._meta"
    if header(headers, b"mcp-method") != method:
        return "Mcp-Method header does not match the request body's method"
    name_field = methods.NAME_FIELDS.get(method)
    if name_field is not None and name_field in params:
        sent = header(headers, b"mcp-name")
        try:
            body_value = frame.decode_any(params[name_field])
        except frame.DecodeError:
            body_value = None
        if sent is None or decode_header_value(sent) != body_value:
            return f"Mcp-Name header does not match the request body's {name_field!r}"
    return None


async def pump(
    outbox: asyncio.Queue[bytes],
    receive: Receive,
    send: Send,
    shutting_down: asyncio.Event,
    farewell: bytes | None = None,
) -> None:
    """Write queued messages as SSE events, with keep-alive comments when idle, until the client
    or the gateway leaves; on a gateway shutdown `farewell` is the last event."""
    disconnected = asyncio.create_task(_until_disconnect(receive))
    stopping = asyncio.create_task(shutting_down.wait())
    try:
        while not disconnected.done() and not stopping.done():
            getter = asyncio.create_task(outbox.get())
            done, _ = await asyncio.wait(
                {getter, disconnected, stopping},
                timeout=KEEPALIVE_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter in done:
                if isinstance(getter.exception(), OutboxClosed):
                    break  # the session ended (deleted, expired): so does its stream
                event = sse.format_event(getter.result(), "message")
                await send({"type": "http.response.body", "body": event, "more_body": True})
                continue
            if not getter.cancel() and not getter.cancelled():
                outbox.put_nowait(getter.result())  # taken just as we stopped waiting: keep it
            if not done:
                await send({"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True})
        tail = b""
        if stopping.done() and farewell is not None:
            tail = sse.format_event(farewell, "message")
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": tail, "more_body": False})
    finally:
        disconnected.cancel()
        stopping.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
