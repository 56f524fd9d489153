"""The HTTP listener: one raw ASGI app for every HTTP face, its guards and health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from switchyard.auth.authenticator import Authenticator, AuthSettings, Refusal, open_authenticator
from switchyard.downstream import approvals_api
from switchyard.downstream.admission import (
    ADMISSION_KEY,
    RETRY_AFTER_S,
    Admission,
    ClientQuota,
    busy_reply,
    overloaded_reply,
)
from switchyard.downstream.asgi import (
    BODY_ARRIVED,
    IDENTITY,
    IDENTITY_KEY,
    PEER,
    TRACEPARENT,
    TRACESTATE,
    VIEW,
    ASGIApp,
    Receive,
    Scope,
    Send,
    first,
    head_index,
    header_list,
    refuse,
    respond,
    respond_json,
)
from switchyard.downstream.exchange import Exchange
from switchyard.downstream.guard import Guard
from switchyard.downstream.legacy_sse import LegacySseEndpoint
from switchyard.downstream.scrape import CONTENT_TYPE, MetricsListener, exposition
from switchyard.downstream.streamable_http import StreamableHttpEndpoint
from switchyard.gateway import Gateway
from switchyard.observability.memory import MemoryGuard
from switchyard.observability.settling import settling
from switchyard.policies.base import Identity
from switchyard.wire import frame
from switchyard.wire.strict import JsonLimits

log = logging.getLogger("switchyard.http")

MCP_PATH: Final = "/mcp"
SSE_PATH: Final = "/sse"
MESSAGES_PATH: Final = "/messages"
WELL_KNOWN_ROOT: Final = "/.well-known/oauth-protected-resource"
VIEWS_PREFIX: Final = "/servers/"
# Every path that speaks MCP: with authentication on, none is reachable without it.
GUARDED_PATHS: Final = frozenset(
    {MCP_PATH, MCP_PATH + "/", SSE_PATH, MESSAGES_PATH, MESSAGES_PATH + "/"}
)


class AdminFace(Protocol):
    """The admin plane, when served (it lives above this layer and is handed in)."""

    admin_port: int | None

    def serves(self, scope: Scope) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies whose forwarding headers name the caller; none: the TCP peer does."""
    max_body_bytes: int = 4 * 1024 * 1024
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_in_flight_per_client: int = 32
    memory_budget_bytes: int | None = None
    json: JsonLimits = field(default_factory=JsonLimits)


class HttpApp:
    def __init__(
        self, gateway: Gateway, settings: HttpSettings, auth: AuthSettings | None = None
    ) -> None:
        self.auth_settings = auth
        self.authenticator: Authenticator | None = None
        self.gateway = gateway
        self.settings = settings
        self.guard = Guard.for_bind(
            settings.host, settings.port, settings.allowed_origins, settings.allowed_hosts
        )
        self.quota = ClientQuota(settings.max_in_flight_per_client)
        self.memory = MemoryGuard(settings.memory_budget_bytes)
        self.shutting_down = asyncio.Event()
        self.mcp = StreamableHttpEndpoint(
            gateway,
            settings.max_body_bytes,
            self.shutting_down,
            settings.json,
            settings.body_timeout_s,
        )
        self.sse = LegacySseEndpoint(
            gateway,
            settings.max_body_bytes,
            self.shutting_down,
            MESSAGES_PATH,
            settings.json,
            settings.body_timeout_s,
        )
        self.on_hangup: Callable[[], Coroutine[Any, Any, object]] | None = None
        """What SIGHUP does (a config reload); None: it is logged and ignored."""
        self._starting: asyncio.Task[None] | None = None
        self._hangups: set[asyncio.Task[object]] = set()
        self.admin: AdminFace | None = None
        """The admin plane (`/admin/v1`, approvals, `/v1/tools`); None: approvals alone."""
        self.admin_guard: Guard | None = None
        """The Origin/Host guard of the admin plane's own listener, when it has one."""
        self.on_started: list[Callable[[], Awaitable[None]]] = []
        """Run once the gateway started (in order); `on_stopping` before it stops."""
        self.on_stopping: list[Callable[[], Awaitable[None]]] = []
        self._after_start: asyncio.Task[None] | None = None
        self.metrics_listener: MetricsListener | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        PEER.set(scope["client"][0] if scope.get("client") else None)
        limit = self.settings.max_header_bytes
        # The listener counted the raw head, an upper bound of the header bytes: only a head
        # near the limit is measured exactly.
        if len(headers) > self.settings.max_headers or (
            scope.get(HEAD_BYTES, limit + 1) > limit
            and sum(len(k) + len(v) for k, v in headers) > limit
        ):
            await refuse(
                scope,
                send,
                431,
                b"Request Header Fields Too Large",
                "too many header bytes",
                json=False,
            )
            return
        index = head_index(scope)
        TRACEPARENT.set(first(index, b"traceparent"))
        TRACESTATE.set(header_list(headers, b"tracestate", index))
        admin = self.admin
        guard = self.guard
        if admin is not None and self.admin_guard is not None:
            server = scope.get("server")
            if server is not None and server[1] == admin.admin_port:
                guard = self.admin_guard
        refusal = guard.check(headers, index)
        if refusal:
            reason = (
                "Forbidden: Origin not allowed"
                if refusal == 403
                else "Misdirected Request: Host not allowed"
            )
            await refuse(
                scope,
                send,
                refusal,
                frame.response_bytes(b"null", frame.error_reply(-32600, reason)),
                reason,
            )
            return
        if admin is not None and admin.serves(scope):
            await admin(scope, receive, send)
            return
        view: str | None = None
        if path.startswith((VIEWS_PREFIX, WELL_KNOWN_ROOT + VIEWS_PREFIX)):
            routed = self._view_route(path)
            if routed is None:
                await refuse(
                    scope,
                    send,
                    404,
                    b"Not Found",
                    "unknown virtual server",
                    [(b"content-type", b"text/plain")],
                    json=False,
                )
                return
            view, path = routed
            VIEW.set(view)
        authenticator = self.authenticator
        if authenticator is not None:
            resource = authenticator.resource_for(view)
            if path in (WELL_KNOWN_ROOT, resource.well_known_path, WELL_KNOWN_ROOT + MCP_PATH):
                await respond_json(send, 200, frame.encode(resource.metadata()))
                return
            if path in GUARDED_PATHS:
                query = scope.get("query_string", b"")
                outcome = await authenticator.authenticate(headers, query, resource)
                if isinstance(outcome, Refusal):
                    answer = frame.response_bytes(
                        b"null", frame.error_reply(-32600, outcome.message)
                    )
                    challenge = (b"www-authenticate", outcome.challenge.encode("latin-1"))
                    await refuse(scope, send, outcome.status, answer, outcome.message, [challenge])
                    return
                roles = self.gateway.view_roles(view)
                if roles is not None and roles.isdisjoint(outcome.roles):
                    answer = frame.response_bytes(
                        b"null", frame.error_reply(-32600, "Forbidden: this endpoint needs a role")
                    )
                    IDENTITY.set(outcome)
                    await refuse(scope, send, 403, answer, "the endpoint needs a role")
                    return
                scope[IDENTITY_KEY] = outcome
                IDENTITY.set(outcome)
        starting = self._starting
        if starting is not None and not starting.done() and path in GUARDED_PATHS:
            # Bound before the backends started: a request this early waits for their first
            # attempt (bounded by `startup_wait`) instead of finding an empty gateway.
            await self.gateway.until_started()
        if path == MCP_PATH or path == MCP_PATH + "/":
            await self._limited(scope, receive, send, self.mcp)
        elif path == MESSAGES_PATH or path == MESSAGES_PATH + "/":
            await self._limited(scope, receive, send, self.sse.message, deferred=True)
        elif path == SSE_PATH:
            await self._limited(scope, receive, send, self.sse.stream)
        elif path == "/healthz":
            await respond_json(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            await self._readyz(scope, send, view)
        elif approvals_api.handles(path) and view is None:
            await self._approvals_api(scope, receive, send)
        elif path == "/metrics" and view is None and self._metrics_here():
            await self._metrics(scope, send)
        else:
            await respond(send, 404, b"Not Found", [(b"content-type", b"text/plain")])

    async def _approvals_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Approvers' and applications' REST: the same credentials as `/mcp`."""
        who: Identity | None = None
        authenticator = self.authenticator
        if authenticator is not None:
            outcome = await authenticator.authenticate(scope["headers"], b"")
            if isinstance(outcome, Refusal):
                challenge = (b"www-authenticate", outcome.challenge.encode("latin-1"))
                body = frame.encode({"error": outcome.message})
                await respond_json(send, outcome.status, body, [challenge])
                return
            who = outcome
            scope[IDENTITY_KEY] = who
            IDENTITY.set(who)

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            await approvals_api.serve(self.gateway, scope, receive, send, who)

        # The same per-client and memory admission as `/mcp`: REST is no way around it.
        await self._limited(scope, receive, send, serve)

    async def _readyz(self, scope: Scope, send: Send, view: str | None) -> None:
        """Readiness for probes. With authentication on, backend details (names, states, their
        error text) are for callers with a valid credential; everyone else learns only whether
        the gateway is ready."""
        ready, body = self.gateway.readiness()
        after = self._after_start
        if after is not None and not after.done() and body["status"] in ("starting", "ready"):
            # Start-up ends with its after-start steps (the configuration's first version
            # recorded): until then this process is still starting.
            ready = body["ready"] = False
            body["status"] = "starting"
        authenticator = self.authenticator
        if authenticator is not None:
            outcome = await authenticator.authenticate(
                scope["headers"], scope.get("query_string", b""), authenticator.resource_for(view)
            )
            if isinstance(outcome, Refusal):
                body = {"ready": ready, "status": body["status"]}
        await respond_json(send, 200 if ready else 503, frame.encode(body))

    def _metrics_here(self) -> bool:
        observed = self.gateway.plan.observability
        return observed.metrics and observed.metrics_listen is None

    async def _metrics(self, scope: Scope, send: Send) -> None:
        """Prometheus metrics on the main port. With authentication on, only for a valid
        credential (as /readyz's details): backend names and states are not for everyone."""
        authenticator = self.authenticator
        if authenticator is not None:
            outcome = await authenticator.authenticate(
                scope["headers"], scope.get("query_string", b""), authenticator.resource_for(None)
            )
            if isinstance(outcome, Refusal):
                challenge = (b"www-authenticate", outcome.challenge.encode("latin-1"))
                await refuse(
                    scope,
                    send,
                    outcome.status,
                    b"Unauthorized",
                    outcome.message,
                    [(b"content-type", b"text/plain"), challenge],
                    json=False,
                )
                return
        await respond(send, 200, exposition(self.gateway), [(b"content-type", CONTENT_TYPE)])

    def _view_route(self, path: str) -> tuple[str, str] | None:
        """`/servers/<name>/<rest>` (or its well-known metadata path): the view and the path
        within it; None for an unknown name."""
        well_known = path.startswith(WELL_KNOWN_ROOT)
        inner = path.removeprefix(WELL_KNOWN_ROOT) if well_known else path
        name, _, rest = inner.removeprefix(VIEWS_PREFIX).partition("/")
        if name not in self.gateway.views:
            return None
        rest = "/" + rest
        return name, WELL_KNOWN_ROOT + rest if well_known else rest

    async def admitted(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """`app` under the per-client and memory admission of `/mcp` (for faces served from
        above this layer, e.g. the admin plane's REST)."""
        await self._limited(scope, receive, send, app)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp, deferred: bool = False
    ) -> None:
        """At most `max_in_flight_per_client` requests of one client at a time, and nothing new
        while memory is past its shedding threshold. Refused with 429 / 503, unless `deferred`:
        then the face gets the decision in the scope (`ADMISSION_KEY`) and answers the refused
        request itself, on the channel its transport answers requests on."""
        overloaded = self.memory.overloaded
        key = _client_key(scope) if scope["method"] == "POST" else None
        lease = self.quota.take(key) if key is not None and not overloaded else None
        refusal = None
        if overloaded:
            refusal = overloaded_reply()
        elif key is not None and lease is None:
            refusal = busy_reply()
        if refusal is not None and not deferred:
            status = 503 if overloaded else 429
            body = frame.response_bytes(b"null", refusal)
            retry = [(b"retry-after", str(RETRY_AFTER_S).encode())]
            await refuse(scope, send, status, body, "overloaded" if overloaded else "busy", retry)
            return
        scope[ADMISSION_KEY] = Admission(lease, refusal)
        try:
            await app(scope, receive, send)
        finally:
            if lease is not None and not lease.detached:
                lease.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.auth_settings is not None:
                        self.authenticator = await open_authenticator(self.auth_settings)
                        self.mcp.scope_gate = self.authenticator.scope_refusal
                        self.sse.scope_gate = self.authenticator.scope_refusal
                    self.memory.start()
                except Exception as exc:
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                listen = self.gateway.plan.observability.metrics_listen
                if listen is not None and self.gateway.plan.observability.metrics:
                    try:
                        self.metrics_listener = MetricsListener(self.gateway, *listen)
                        await self.metrics_listener.start()
                    except OSError as exc:
                        log.error("metrics.listen %s:%d: %s", listen[0], listen[1], exc.strerror)
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                # Serving (readiness says `starting`) while the backends make their first
                # attempt: probes and early clients get an answer, not a refused connection.
                self._starting = asyncio.create_task(self.gateway.start(), name="gateway-start")
                if self.on_started:
                    self._after_start = asyncio.create_task(
                        self._run_after_start(self._starting), name="after-start"
                    )
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                settling.settle()  # the last answers' records, before their sinks close
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
                self.shutting_down.set()
                if self._starting is not None and not self._starting.done():
                    self._starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._starting
                for task in list(self._hangups):
                    task.cancel()
                if self._after_start is not None and not self._after_start.done():
                    self._after_start.cancel()
                for hook in self.on_stopping:
                    try:
                        await hook()
                    except Exception:
                        log.exception("a shutdown step failed")
                if self.admin is not None:
                    await self.admin.aclose()
                await self.memory.aclose()
                if self.metrics_listener is not None:
                    await self.metrics_listener.aclose()
                await self.gateway.stop()
                if self.authenticator is not None:
                    await self.authenticator.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _run_after_start(self, starting: asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(starting)
        for hook in self.on_started:
            try:
                await hook()
            except Exception:
                log.exception("a start-up step failed")

    def _hangup(self) -> None:
        if self.on_hangup is None:
            log.warning("SIGHUP: no configuration file to reload; ignored")
            return
        task = asyncio.create_task(self.on_hangup(), name="reload")
        self._hangups.add(task)
        task.add_done_callback(self._hangups.discard)


def _client_key(scope: Scope) -> str | None:
    """Who a request counts against: its caller, else its session. A 2026-07-28 request without
    authentication carries no identity; counting it by peer address would put every client of a
    host (all of loopback) in one bucket, so it is bounded by the per-backend limit instead."""
    identity: Identity | None = scope.get(IDENTITY_KEY)
    if identity is not None:
        return "p:" + identity.key
    session = head_index(scope).get(b"mcp-session-id")
    if session is not None:
        return "s:" + session.decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    if query.startswith(b"session_id="):
        return "s:" + query[11:].decode("latin-1")
    return None


HEAD_BYTES: Final = "switchyard.head_bytes"
"""Where the listener leaves the size of a request's raw head in its ASGI scope."""


def guarded_protocol(settings: HttpSettings) -> type[Any]:
    """uvicorn's httptools protocol, with a deadline for the request head (slowloris), a hard
    stop for a header block far past the limit (431 is answered at the ASGI level) and its own
    request cycle (`Exchange`), which does less per request than uvicorn's."""
    import urllib.parse

    import httptools
    from uvicorn.protocols.http.flow_control import service_unavailable
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    hard_limit = settings.max_header_bytes * 4

    class GuardedProtocol(HttpToolsProtocol):
        cycle: Exchange  # type: ignore[assignment]
        pipeline: deque[tuple[Exchange, ASGIApp]]  # type: ignore[assignment]
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _in_head = True
        """Whether the bytes arriving now belong to a request head (none is complete yet)."""
        _head_open = False
        """A request head has begun and not yet ended."""

        def data_received(self, data: bytes) -> None:
            # Counted per chunk read, not per header line: a callback per header was a visible
            # share of a small request's CPU. Only the head's part of a chunk counts.
            if self._in_head:
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end
                if self._head_bytes > hard_limit:
                    self.transport.close()
                    return
            super().data_received(data)
            if self._head_open and self._head_timer is None and not self.transport.is_closing():
                # A head began in this chunk and did not end in it: from now it has
                # `header_timeout_s` to end. One that ends in the chunk it began in (nearly
                # every one) costs no timer: one set and cancelled per request was a share of
                # a small call's CPU.
                self._head_timer = self.loop.call_later(settings.header_timeout_s, self._too_slow)

        def on_message_begin(self) -> None:
            self._head_open = True
            self.url = b""
            self.headers = []
            self.scope = {  # type: ignore[typeddict-item]
                "type": "http",
                "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1",
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,  # type: ignore[typeddict-item]
                "root_path": self.root_path,
                "headers": self.headers,
                "state": self.app_state.copy(),
            }

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_headers_complete(self) -> None:
            self._head_open = False
            self._stop_timer()
            self._in_head = False
            parser = self.parser
            scope = self.scope
            scope[HEAD_BYTES] = self._head_bytes  # type: ignore[typeddict-unknown-key]
            self._head_bytes = 0
            http_version = parser.get_http_version()
            scope["method"] = parser.get_method().decode("ascii")
            if http_version != "1.1":
                scope["http_version"] = http_version
            if parser.should_upgrade() and self._should_upgrade():
                return
            url = self.url
            if url[:1] == b"/" and b"?" not in url and b"#" not in url:
                raw_path, query = url, b""
            else:
                parsed = httptools.parse_url(url)
                raw_path, query = parsed.path, parsed.query or b""
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            root = self.root_path
            scope["path"] = root + path if root else path
            scope["raw_path"] = root.encode("ascii") + raw_path if root else raw_path
            scope["query_string"] = query
            expect = head_index(cast(Scope, scope)).get(b"expect")
            app = self.app
            if self.limit_concurrency is not None and (
                len(self.connections) >= self.limit_concurrency
                or len(self.tasks) >= self.limit_concurrency
            ):
                app = service_unavailable
            existing = self.cycle
            self.cycle = Exchange(
                cast(Scope, scope),
                self.transport,
                self.flow,
                self.server_state.default_headers,
                expect is not None and expect.lower() == b"100-continue",
                http_version != "1.0" and parser.should_keep_alive(),
                self.on_response_complete,
            )
            if existing is None or existing.response_complete:
                self._start_asgi_task(self.cycle, app)
            else:
                # A pipelined request waits for the one before it to be answered.
                self.flow.pause_reading()
                self.pipeline.appendleft((self.cycle, app))

        def _start_asgi_task(self, cycle: Exchange, app: ASGIApp) -> None:  # type: ignore[override]
            task = self.loop.create_task(cycle.run(app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        def on_body(self, body: bytes) -> None:
            if self.parser.should_upgrade() and self._should_upgrade():
                return
            self.cycle.take(body)

        def on_message_complete(self) -> None:
            self._in_head = True
            # The whole body is buffered: the app may read it without a deadline (`read_body`).
            self.scope[BODY_ARRIVED] = True  # type: ignore[typeddict-unknown-key]
            if self.parser.should_upgrade() and self._should_upgrade():
                return
            self.cycle.ended()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            self.connections.discard(self)
            cycle: Exchange | None = self.cycle
            if cycle is not None:
                cycle.lost()
            if self.flow is not None:
                self.flow.resume_writing()
            if exc is None:
                self.transport.close()
            self.parser = None  # type: ignore[assignment]

        # The keep-alive timeout, with one timer per connection instead of one set and
        # cancelled per request: the timer reads when the connection fell idle and, finding
        # it in use since, waits out the rest (uvicorn's own logic otherwise).

        _idle_since: float | None = None
        """When the last response ended with no request after it; None: one is in hand."""

        def _unset_keepalive_if_required(self) -> None:
            # uvicorn calls this as each chunk of a request arrives: the connection is in use.
            self._idle_since = None

        def on_response_complete(self) -> None:
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._idle_since = None
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self._keep_alive_due
                )

        def _keep_alive_due(self) -> None:
            self.timeout_keep_alive_task = None
            idle_since = self._idle_since
            if idle_since is None or self.transport.is_closing():
                return  # in use: the response that ends it sets the timer again
            left = idle_since + self.timeout_keep_alive - self.loop.time()
            if left > 0:
                self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
            else:
                self.timeout_keep_alive_handler()

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            # A client that cannot send its request head in time gets nothing but a close.
            self._head_timer = None
            self.transport.close()

    return GuardedProtocol


class BindError(Exception):
    """The listening address cannot be used; the message says which and why."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, made before anything else starts: a port in use or a
    host that is not this machine's is reported at once, not after every backend started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"--host {host!r}: cannot resolve it: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BindError(f"cannot listen on {_host_port(host, port)}: {why.lower()}") from None
    sock.set_inheritable(False)
    return sock


def bound_base(host: str, sock: socket.socket) -> str:
    """`http://host:port` of a bound socket (the port the system chose, for port 0)."""
    return f"http://{_host_port(host, sock.getsockname()[1])}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce(base: str, views: list[str]) -> None:
    """Where clients connect, once the socket is bound."""
    log.info(
        "listening on %s%s (Streamable HTTP) and %s%s (HTTP+SSE)", base, MCP_PATH, base, SSE_PATH
    )
    for name in views:
        log.info("virtual server %r: %s%s%s%s", name, base, VIEWS_PREFIX, name, MCP_PATH)


def run(app: HttpApp, sock: socket.socket, *more: socket.socket) -> None:
    """Serve on `sock` until SIGTERM/SIGINT, then shut down gracefully and return (exit status
    0). SIGHUP calls `app.on_hangup` (a config reload) instead of ending the process."""
    import signal
    from types import FrameType

    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises the stop signal after a graceful shutdown, turning a clean stop into
        # a death by signal; a supervisor should see a clean stop as success.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=guarded_protocol(app.settings),
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
            # Many small keep-alive requests are the normal MCP pattern.
            timeout_keep_alive=30,
            # Forwarding headers only from the proxies named: uvicorn would otherwise believe
            # any caller on 127.0.0.1, who could then be any peer it likes (a session cap
            # per peer address evaded by a new `X-Forwarded-For` per session).
            proxy_headers=bool(app.settings.trusted_proxies),
            forwarded_allow_ips=list(app.settings.trusted_proxies) or None,
        )
    ).run(sockets=[sock, *more])
