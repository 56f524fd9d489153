"""HTTP backends: Streamable HTTP in either era, and the 2024-11-05 HTTP+SSE transport.

One pooled aiohttp session per backend, created once: building a client per call (and its TLS
context) is what made other gateways slow. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from switchyard.deadline import Deadline
from switchyard.protocol import codes, methods
from switchyard.protocol.link import ClientLink
from switchyard.protocol.versions import MODERN_VERSIONS, Era
from switchyard.upstream import decoded_body, handshake, http_client, unreachable
from switchyard.upstream.connection import (
    ConnectionCore,
    MessageStream,
    NotificationHandler,
    NotSent,
    ServerFacts,
    UpstreamClosed,
    protocol_error,
    timed_out,
    unavailable,
    undelivered,
)
from switchyard.upstream.credentials import Credential, CredentialError
from switchyard.upstream.outbound import Caller, Outbound
from switchyard.wire import frame, sse
from switchyard.wire.frame import UNSET, Reply, reply_from

log = logging.getLogger("switchyard.upstream.http")

JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"
ACCEPT_BOTH: Final = f"{JSON}, {EVENT_STREAM}"
# Reconnect pacing for the legacy GET notification stream.
STREAM_RETRY_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
# Resuming a response stream the backend ended before answering: the wait when it names
# none (SSE `retry:`), the longest wait it may ask for, and how many times.
DEFAULT_RETRY_S: Final = 1.0
MIN_RETRY_S: Final = 0.1
MAX_RETRY_S: Final = 5.0
MAX_RESUMES: Final = 3
# The HTTP+SSE transport's message POST is acknowledged at once (the answer comes on the
# stream): a backend that does not acknowledge within this is treated as gone.
SEND_TIMEOUT_S: Final = 30.0
# How long opening a listen stream waits for the backend's first word on it.
LISTEN_READY_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    transport: str = "streamable-http"  # or "sse" (2024-11-05)
    era: str = "auto"
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 30.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_connections: int = 256


IDLE_CONNECTION_S: Final = 4.0


def _session(settings: HttpSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        enable_cleanup_closed=True,
        # Shorter than the 5 s after which uvicorn and Node close an idle connection: a
        # request sent on a connection the server is closing that moment fails, and it cannot
        # be proven unread, so it is not re-sent.
        keepalive_timeout=IDLE_CONNECTION_S,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s),
        auto_decompress=False,  # inflated by `decoded_body`, within the size limit
        skip_auto_headers=("User-Agent",),
    )


class _Pool:
    """A connection's HTTP clients, each made on first use: a candidate that is never opened (a
    transport probe that lost, a spare isolation candidate) then has nothing left unclosed.
    A call's POST goes through the lean client where it can (`http_client.supports`); the rest,
    and every request to an origin it does not serve, through one aiohttp session."""

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._lean: http_client.HttpClient | None = None
        self._lean_ok = http_client.supports(settings.url)
        self._closed = False

    def lean(self) -> http_client.HttpClient | None:
        if not self._lean_ok:
            return None
        if self._lean is None:
            if self._closed:
                raise UpstreamClosed("connection closed")
            self._lean = http_client.HttpClient(
                self._settings.url,
                max_connections=self._settings.max_connections,
                connect_timeout_s=self._settings.connect_timeout_s,
                idle_s=IDLE_CONNECTION_S,
            )
        return self._lean

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise UpstreamClosed("connection closed")
            self._session = _session(self._settings)
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._lean is not None:
            self._lean.close()
        if self._session is not None:
            await self._session.close()


class _NotLegacyStreamable(Exception):
    """POST initialize was refused in a way that points at the 2024-11-05 SSE transport."""


class StreamableHttpConnection(ConnectionCore):
    def __init__(
        self, backend: str, settings: HttpSettings, on_notification: NotificationHandler
    ) -> None:
        super().__init__(backend, on_notification)
        self.settings = settings
        self._pool = _Pool(settings)
        self._session_id: str | None = None
        self._base_headers: dict[str, dict[str, str]] = {}
        self._stream_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._reinit: asyncio.Task[bool] | None = None
        """The re-initialization under way after the backend forgot our session, if any."""
        self._background: set[asyncio.Task[None]] = set()
        """Messages that expect no answer and must not hold up the one that sent them."""
        self.credential: Credential | None = None
        self._unreachable: str | None = None
        """Why the handshake could not connect at all, when it could not."""

    @property
    def _http(self) -> aiohttp.ClientSession:
        return self._pool.get()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await asyncio.wait_for(self._handshake(), self.settings.handshake_timeout_s)
        except handshake.HandshakeFailed:
            if self._unreachable is not None:
                raise unreachable.BackendUnreachable(
                    self.settings.url, "Streamable HTTP", self._unreachable
                ) from None
            raise

    async def _handshake(self) -> None:
        era = self.settings.era
        if era in ("auto", "modern"):
            self.facts = ServerFacts(era=Era.MODERN, version=MODERN_VERSIONS[-1])
            reply = await self._post_once(
                Outbound(
                    methods.DISCOVER,
                    handshake.discover_params(),
                    timeout_s=self.settings.handshake_timeout_s,
                )
            )
            facts = handshake.facts_from_discover(reply)
            if facts is not None:
                self.facts = facts
                return
            if era == "modern":
                raise handshake.HandshakeFailed(
                    "backend does not speak 2026-07-28 (server/discover failed)"
                )
        self.facts = ServerFacts(era=Era.LEGACY)
        await self._legacy_handshake()

    async def _legacy_handshake(self) -> None:
        # The session id in use stays until the answer brings its successor: a request sent
        # meanwhile carries the old one (and is retried), never none at all.
        reply = await self._post_once(
            Outbound(
                methods.INITIALIZE,
                handshake.initialize_params(capabilities=self.declared),
                timeout_s=self.settings.handshake_timeout_s,
            )
        )
        self.facts = handshake.facts_from_initialize(reply)
        await self.notify(methods.INITIALIZED, None)
        if self._stream_task is None:
            self._stream_task = asyncio.create_task(self._listen(), name=f"{self.backend}-get")

    async def aclose(self) -> None:
        self._mark_closed("gateway closed the connection")
        for task in (self._stream_task, self._listen_task, self._reinit, *self._background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._session_id is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self._http.delete(
                    self.settings.url,
                    headers=await self._request_headers(None, None),
                    timeout=aiohttp.ClientTimeout(total=2),
                ):
                    pass
        await self._pool.close()

    # -- requests ----------------------------------------------------------------------------

    def _headers(
        self, method: str | None, name: str | None, extra: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, str]:
        version = self.facts.version
        base = self._base_headers.get(version)
        if base is None:
            # What every request after the handshake carries, built once per negotiated version.
            base = dict(self.settings.headers)
            base["Accept"] = ACCEPT_BOTH
            base["Accept-Encoding"] = decoded_body.ACCEPT_ENCODING
            base["Content-Type"] = JSON
            if version:
                base["MCP-Protocol-Version"] = version
            self._base_headers[version] = base
        headers = base.copy()
        if method == methods.INITIALIZE:
            headers.pop("MCP-Protocol-Version", None)
        if self.facts.era is Era.MODERN:
            if method is not None:
                headers["Mcp-Method"] = method
            if name is not None:
                headers["Mcp-Name"] = _header_value(name)
            for key, value in extra:
                _check_param_header(key, value)
                headers[key] = value
        elif self._session_id is not None and method != methods.INITIALIZE:
            headers["Mcp-Session-Id"] = self._session_id
        return headers

    async def request(self, out: Outbound) -> Reply:
        for attempt in range(2):
            if self._reinit is not None and not self._reinit.done():
                await _outcome(self._reinit)  # a new session is on its way: wait for it
            if self._closed.is_set():
                return undelivered(self.backend, self._close_reason)
            try:
                return await self._post_once(out)
            except _SessionExpired as expired:
                # A 404 means the backend never processed it: safe to re-initialize and resend.
                if attempt == 1 or not await self._reinitialize(expired.session_id):
                    break
        if self._closed.is_set():
            return unavailable(self.backend, self._close_reason)
        return unavailable(self.backend, "backend keeps rejecting its session")

    async def _reinitialize(self, stale: str) -> bool:
        """Replace the session `stale` once, however many requests found it expired; True
        when a live session is there to retry with."""
        if self._closed.is_set():
            return False
        task = self._reinit
        if task is None or task.done():
            if self._session_id != stale:
                return True  # already replaced since that request went out
            task = asyncio.create_task(self._renew_session(stale), name=f"{self.backend}-reinit")
            self._reinit = task
        return await _outcome(task)

    async def _renew_session(self, stale: str) -> bool:
        log.info("backend %r: session expired; re-initializing", self.backend)
        try:
            await asyncio.wait_for(self._legacy_handshake(), self.settings.handshake_timeout_s)
        except Exception as exc:  # whatever the failure, this connection is done for
            why = str(exc) or type(exc).__name__
            reason = f"re-initializing after the session expired failed: {why}"
            log.warning("backend %r: %s", self.backend, reason)
            self._mark_closed(reason)  # supervision restarts the backend
            return False
        if self._session_id != stale:
            self._delete_session(stale)
        if self._stream_task is not None:
            # The GET stream belonged to the old session; the backend has dropped it.
            self._stream_task.cancel()
            self._stream_task = asyncio.create_task(self._listen(), name=f"{self.backend}-get")
        return True

    def _delete_session(self, session_id: str) -> None:
        """Tell the backend a superseded session is over (it may still hold its state)."""

        async def delete() -> None:
            headers = await self._request_headers(None, None)
            headers["Mcp-Session-Id"] = session_id
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, UpstreamClosed):
                async with self._http.delete(
                    self.settings.url,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=5),
                ):
                    pass

        self._in_background(delete())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _cancel_upstream(self, request_id: int, reason: str) -> None:
        """Legacy: tell the backend a request is abandoned. Sent off the request's path: a hung
        backend does not take the cancellation either, and its caller is answered now, not
        when that POST gives up."""
        cancel = frame.encode({"requestId": request_id, "reason": reason})
        self._in_background(self.notify(methods.CANCELLED, cancel))

    async def _post_once(self, out: Outbound) -> Reply:
        request_id = next(self._ids)
        method, timeout = out.method, out.timeout_s
        params = self._progress.bind(out.params, request_id, out.link)
        body = frame.request_bytes(str(request_id).encode(), method, params)
        if out.link is not None:
            self._links[request_id] = out.link
        try:
            async with Deadline(timeout, out.max_s or timeout) as deadline:
                self._progress.watch(request_id, deadline)
                headers = await self._request_headers(
                    method, out.name, out.caller, out.extra_headers
                )
                for key, value in out.trace_headers:
                    headers[key] = value
                return await self._exchange(body, request_id, headers, out)
        except TimeoutError:
            # Modern: abandoning the stream is the cancellation. Legacy: say so explicitly.
            if self.facts.era is Era.LEGACY and method != methods.INITIALIZE:
                self._cancel_upstream(request_id, "timeout")
            return timed_out(self.backend, timeout)
        except asyncio.CancelledError:
            if self.facts.era is Era.LEGACY:
                self._cancel_upstream(request_id, "client cancelled")
            raise
        except (aiohttp.ClientConnectorError, http_client.ConnectFailed) as exc:
            # No connection could be made: the request never left.
            why = unreachable.reason(exc)
            self._unreachable = why
            self._mark_closed(f"connection failed: {why}")
            return undelivered(self.backend, f"connection failed: {why}")
        except (aiohttp.ClientConnectionError, OSError, UpstreamClosed) as exc:
            # One exchange broke after it was sent (the backend may have run it); the backend
            # itself may be fine, and the next request that cannot connect closes this.
            return unavailable(self.backend, f"connection failed: {unreachable.reason(exc)}")
        except CredentialError as exc:
            code = codes.BACKEND_UNAVAILABLE if exc.temporary else codes.BACKEND_PROTOCOL_ERROR
            return frame.error_reply(code, str(exc), {"source": "gateway", "backend": self.backend})
        except HeaderRefused as exc:
            return frame.error_reply(
                codes.INVALID_PARAMS,
                f"request not sent to backend {self.backend!r}: {exc}",
                {"source": "gateway", "backend": self.backend},
            )
        except sse.TooLarge as exc:
            return frame.error_reply(
                codes.RESULT_TOO_LARGE,
                f"backend {self.backend!r} sent a result too large to forward: {exc}",
                {"source": "gateway", "backend": self.backend},
            )
        except (aiohttp.ClientError, ValueError) as exc:
            return protocol_error(self.backend, str(exc) or type(exc).__name__)
        finally:
            self._links.pop(request_id, None)
            self._progress.unbind(request_id)

    async def _request_headers(
        self,
        method: str | None,
        name: str | None,
        caller: Caller | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> dict[str, str]:
        """Headers for one request: the transport's own, then this backend's credentials (never
        anything of the client's but, where configured, its exchanged token)."""
        headers = self._headers(method, name, extra)
        if self.credential is not None:
            headers.update(await self.credential.headers(caller))
        return headers

    async def _exchange(
        self, body: bytes, request_id: int, headers: dict[str, str], out: Outbound
    ) -> Reply:
        lean = self._pool.lean()
        if lean is not None:
            resp = await lean.post(body, headers)
            try:
                outcome = await self._answer(resp, request_id, headers, out)
            finally:
                resp.release()
        else:
            async with self._http.post(
                self.settings.url, data=body, headers=headers, allow_redirects=False
            ) as aio_resp:
                outcome = await self._answer(aio_resp, request_id, headers, out)
        if isinstance(outcome, Reply):
            return outcome
        return await self._resume(outcome, request_id, out.link, out.caller)

    async def _answer(
        self, resp: decoded_body.Answer, request_id: int, headers: dict[str, str], out: Outbound
    ) -> Reply | _Cut:
        """A POST's answer: its JSON body, or the reply on its response stream."""
        ctype = resp.headers.get("Content-Type", "")
        if out.method == methods.INITIALIZE and resp.status < 300:
            self._session_id = resp.headers.get("Mcp-Session-Id")
        sent_with = headers.get("Mcp-Session-Id")
        if resp.status == 404 and self.facts.era is Era.LEGACY and sent_with is not None:
            raise _SessionExpired(sent_with)
        if ctype.startswith(EVENT_STREAM) and resp.status < 300:
            return await self._read_stream(resp, request_id, out.link)
        return await self._json_answer(resp, ctype, out.result_fields)

    async def _json_answer(
        self, resp: decoded_body.Answer, ctype: str, fields: bool = False
    ) -> Reply:
        data = await decoded_body.read(resp, self.settings.max_message_bytes)
        if ctype.startswith(JSON) and data:
            try:
                reply = frame.peek_reply(data, fields=fields)
            except (frame.DecodeError, frame.ValidationError):
                return protocol_error(self.backend, f"invalid JSON body (HTTP {resp.status})")
            if reply is not None:
                return reply
        return frame.error_reply(
            codes.BACKEND_PROTOCOL_ERROR if resp.status < 500 else codes.BACKEND_UNAVAILABLE,
            f"backend {self.backend!r} answered HTTP {resp.status} without a JSON-RPC response",
            {"source": "gateway", "backend": self.backend, "status": resp.status},
        )

    async def _read_stream(
        self, resp: decoded_body.Answer, request_id: int, link: ClientLink | None
    ) -> Reply | _Cut:
        """The answer on a response stream, or where the stream was cut off without one."""
        parser = sse.Parser(max_event_bytes=self.settings.max_message_bytes)
        last_id: str | None = None
        async for chunk in decoded_body.chunks(resp):
            for event in parser.feed(chunk):
                last_id = event.id if event.id is not None else last_id
                if event.event != "message" or not event.data:
                    continue  # a priming event: an id to resume from, no message
                reply = await self._on_stream_message(event.data, request_id, link)
                if reply is not None:
                    return reply
        return _Cut(last_id, parser.retry_ms)

    async def _resume(
        self, cut: _Cut, request_id: int, link: ClientLink | None, caller: Caller | None
    ) -> Reply:
        """The backend ended a response stream before answering, having given it an event id:
        wait as long as it asked (bounded), then GET the rest with `Last-Event-ID`. The
        request's own deadline keeps running throughout."""
        for _ in range(MAX_RESUMES):
            if cut.last_event_id is None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), _retry_delay(cut.retry_ms))
            if self._closed.is_set():
                return unavailable(self.backend, self._close_reason)
            headers = await self._request_headers(None, None, caller)
            headers["Accept"] = EVENT_STREAM
            headers["Last-Event-ID"] = cut.last_event_id
            async with self._http.get(
                self.settings.url, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status != 200 or not resp.headers.get("Content-Type", "").startswith(
                    EVENT_STREAM
                ):
                    return protocol_error(
                        self.backend, f"resuming its response stream failed (HTTP {resp.status})"
                    )
                outcome = await self._read_stream(resp, request_id, link)
            if isinstance(outcome, Reply):
                return outcome
            retry_ms = outcome.retry_ms if outcome.retry_ms is not None else cut.retry_ms
            cut = _Cut(outcome.last_event_id or cut.last_event_id, retry_ms)
        return protocol_error(self.backend, "response stream ended without an answer")

    async def _on_stream_message(
        self, data: bytes, request_id: int | None, link: ClientLink | None
    ) -> Reply | None:
        try:
            env = frame.peek(data)
        except (frame.DecodeError, frame.ValidationError):
            log.warning("backend %r sent an invalid SSE message; dropped", self.backend)
            return None
        if env.is_response:
            if request_id is not None and env.id == request_id:
                return reply_from(env)
            return None
        if env.method is UNSET:
            return None
        params = bytes(env.params) if env.params is not UNSET else None
        if env.id is not UNSET:
            # On a call's own stream its client is the one to ask; on the GET stream (no
            # request) only a client this connection provably serves.
            self._serve_server_request(
                env.id, env.method, params, link, unrelated=request_id is None
            )
        elif env.method == methods.PROGRESS and await self._progress.deliver(params):
            pass
        elif link is not None and env.method == methods.MESSAGE:
            await link.notify(env.method, params)  # a log message on this request's own stream
        else:
            await self._unrelated_notification(env.method, params)
        return None

    async def _send_answer(self, data: bytes) -> None:
        await self._post_quietly(data, None)

    async def listen(self, params: bytes) -> None:
        """Returns once the backend has said something on the new stream (its
        acknowledgement first), refused it, or `LISTEN_READY_S` passed: the stream travels
        on a connection of its own, and a change made by a call right after subscribing
        must not reach the backend before the subscription does. The stream it replaces is
        closed (its cancellation) only then, so no change falls between the two; one made
        while both are open may be heard twice."""
        previous = self._listen_task
        ready = asyncio.Event()
        self._listen_task = asyncio.create_task(
            self._listen_stream(params, ready), name=f"{self.backend}-listen"
        )
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), LISTEN_READY_S)
        finally:
            if previous is not None:
                previous.cancel()

    async def _listen_stream(self, params: bytes, ready: asyncio.Event) -> None:
        """2026-07-28 `subscriptions/listen`: one long-lived POST, reopened if it drops."""

        async def open_stream(last_event_id: str | None) -> Any:
            body = frame.request_bytes(str(next(self._ids)).encode(), methods.LISTEN, params)
            headers = await self._request_headers(methods.LISTEN, None)
            return self._http.post(
                self.settings.url, data=body, headers=headers, allow_redirects=False
            )

        try:
            await self._follow("subscriptions/listen", open_stream, ready)
        finally:
            ready.set()

    async def notify(self, method: str, params: bytes | None) -> None:
        await self._post_quietly(frame.notification_bytes(method, params), method)

    async def _post_quietly(self, body: bytes, method: str | None) -> None:
        """POST a message that expects no answer (202); a backend that is gone is not an error."""
        with contextlib.suppress(
            aiohttp.ClientError, OSError, TimeoutError, CredentialError, UpstreamClosed
        ):
            async with self._http.post(
                self.settings.url,
                data=body,
                headers=await self._request_headers(method, None),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=10),
            ):
                pass

    async def _listen(self) -> None:
        """The legacy GET stream: backend notifications outside any request (list_changed)."""

        async def open_stream(last_event_id: str | None) -> Any:
            headers = {**await self._request_headers(None, None), "Accept": EVENT_STREAM}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id  # resume where the stream broke off
            return self._http.get(self.settings.url, headers=headers, allow_redirects=False)

        await self._follow("GET stream", open_stream)

    async def _follow(
        self,
        label: str,
        open_stream: Callable[[str | None], Awaitable[Any]],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Read a long-lived SSE stream of backend notifications, reopening it while the
        connection lives (after the backend's `retry:` if it gave one, else with backoff, and
        from the last event id seen); a backend that refuses the stream is not asked again.
        `ready` is set by the first message, or when the first attempt fails."""
        attempt = 0
        last_id: str | None = None
        retry_ms: int | None = None
        while not self._closed.is_set():
            try:
                async with await open_stream(last_id) as resp:
                    is_stream = resp.headers.get("Content-Type", "").startswith(EVENT_STREAM)
                    if resp.status != 200 or not is_stream:
                        log.info(
                            "backend %r: %s refused (HTTP %d)", self.backend, label, resp.status
                        )
                        return
                    attempt = 0
                    parser = sse.Parser(max_event_bytes=self.settings.max_message_bytes)
                    try:
                        async for chunk in decoded_body.chunks(resp):
                            for event in parser.feed(chunk):
                                last_id = event.id if event.id is not None else last_id
                                if event.event == "message" and event.data:
                                    await self._on_stream_message(event.data, None, None)
                                    if ready is not None:
                                        ready.set()
                    finally:
                        retry_ms = parser.retry_ms if parser.retry_ms is not None else retry_ms
            except (
                aiohttp.ClientError,
                OSError,
                ValueError,
                CredentialError,
                UpstreamClosed,
            ) as exc:
                log.debug("backend %r: %s dropped: %s", self.backend, label, exc)
            if ready is not None:
                ready.set()  # not acknowledged on this attempt: nobody waits for a retry
            if retry_ms is not None:
                delay = _retry_delay(retry_ms)
            else:
                delay = STREAM_RETRY_S[min(attempt, len(STREAM_RETRY_S) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)


@dataclass(frozen=True, slots=True)
class _Cut:
    """A response stream that ended without the answer."""

    last_event_id: str | None
    retry_ms: int | None


def _retry_delay(retry_ms: int | None) -> float:
    """How long to wait before reconnecting: what the backend asked, within reason."""
    if retry_ms is None:
        return DEFAULT_RETRY_S
    return min(max(retry_ms / 1000, MIN_RETRY_S), MAX_RETRY_S)


async def _outcome(task: asyncio.Task[bool]) -> bool:
    """Wait for a shared task without letting one waiter's cancellation cancel it for all."""
    await asyncio.wait({task})
    return not task.cancelled() and task.exception() is None and task.result()


class _SessionExpired(Exception):
    """The backend no longer knows the session a request was sent with (HTTP 404)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id


class HeaderRefused(ValueError):
    """A parameter header that would not travel intact: refused, never sent."""


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
PARAM_PREFIX: Final = "mcp-param-"


def _check_param_header(key: str, value: str) -> None:
    # A CR or LF would end the header and start another one (or the body) of the backend's
    # choosing; the encoder must have base64'd such values already.
    if not key.lower().startswith(PARAM_PREFIX) or not _TOKEN.fullmatch(key):
        raise HeaderRefused(f"{key!r} is not an Mcp-Param-* header name")
    if not value.isascii() or any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise HeaderRefused(f"header {key} has a value that is not plain ASCII text")


def _header_value(value: str) -> str:
    """`Mcp-Name` carries non-ASCII or edge values base64-encoded, per 2026-07-28."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    import base64

    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


class SseConnection(MessageStream):
    """The 2024-11-05 HTTP+SSE transport: GET an event stream, POST to the endpoint it names."""

    def __init__(
        self, backend: str, settings: HttpSettings, on_notification: NotificationHandler
    ) -> None:
        super().__init__(backend, on_notification)
        self.settings = settings
        self._pool = _Pool(settings)
        self._endpoint: str | None = None
        self._endpoint_target = ""
        self._endpoint_ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._unreachable: str | None = None

    @property
    def _http(self) -> aiohttp.ClientSession:
        return self._pool.get()

    async def open(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"{self.backend}-sse")
        waiter = asyncio.create_task(self._endpoint_ready.wait())
        closed = asyncio.create_task(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, closed},
                timeout=self.settings.handshake_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
            closed.cancel()
        if not self._endpoint_ready.is_set():
            if self._unreachable is not None:
                raise unreachable.BackendUnreachable(
                    self.settings.url, "HTTP+SSE", self._unreachable
                )
            raise UpstreamClosed(
                self._close_reason if done else "no endpoint event from the SSE stream"
            )

        async def request(method: str, params: bytes | None) -> Reply:
            return await self.request(
                Outbound(method, params, timeout_s=self.settings.handshake_timeout_s)
            )

        self.facts = await handshake.legacy_handshake(request, self.notify, self.declared)

    async def _read(self) -> None:
        reason = "SSE stream ended"
        try:
            async with self._http.get(
                self.settings.url,
                headers={
                    **self.settings.headers,
                    "Accept": EVENT_STREAM,
                    "Accept-Encoding": decoded_body.ACCEPT_ENCODING,
                },
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    reason = f"SSE stream refused with HTTP {resp.status}"
                    return
                parser = sse.Parser(max_event_bytes=self.settings.max_message_bytes)
                async for chunk in decoded_body.chunks(resp):
                    for event in parser.feed(chunk):
                        if event.event == "endpoint":
                            self._endpoint = self._resolve_endpoint(event.data.decode().strip())
                            self._endpoint_target = http_client.request_target(self._endpoint)
                            self._endpoint_ready.set()
                        elif event.event == "message" and event.data:
                            await self._dispatch(event.data)
        except aiohttp.ClientConnectorError as exc:
            self._unreachable = unreachable.reason(exc)
            reason = f"SSE stream failed: {self._unreachable}"
        except (aiohttp.ClientError, OSError, ValueError, UpstreamClosed) as exc:
            reason = f"SSE stream failed: {unreachable.reason(exc)}"
        finally:
            self._mark_closed(reason)

    def _resolve_endpoint(self, target: str) -> str:
        endpoint = urljoin(self.settings.url, target)
        base, resolved = urlsplit(self.settings.url), urlsplit(endpoint)
        if (base.scheme, base.netloc) != (resolved.scheme, resolved.netloc):
            # An endpoint on another origin would let a backend redirect our traffic.
            raise ValueError(f"SSE endpoint {endpoint!r} is not on the backend's origin")
        return endpoint

    async def _send(self, data: bytes) -> None:
        if self._endpoint is None or self._closed.is_set():
            raise NotSent(self._close_reason)
        headers = {**self.settings.headers, "Content-Type": JSON}
        lean = self._pool.lean()
        if lean is not None:
            await self._send_lean(lean, data, headers)
            return
        try:
            async with self._http.post(
                self._endpoint,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S),
            ) as resp:
                if resp.status >= 300:
                    raise UpstreamClosed(f"endpoint refused a message with HTTP {resp.status}")
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"POST failed: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamClosed(f"POST failed: {type(exc).__name__}") from exc

    async def _send_lean(
        self, lean: http_client.HttpClient, data: bytes, headers: dict[str, str]
    ) -> None:
        try:
            # The acknowledgement's body (`Accepted`) is not read: it is in with the head
            # nearly always, and when it is not the connection is closed rather than reused.
            async with Deadline(SEND_TIMEOUT_S, SEND_TIMEOUT_S):
                resp = await lean.post(data, headers, self._endpoint_target)
            resp.release()
        except http_client.ConnectFailed as exc:
            raise NotSent(f"POST failed: {unreachable.reason(exc)}") from exc
        except (OSError, ValueError, TimeoutError) as exc:
            raise UpstreamClosed(f"POST failed: {unreachable.reason(exc)}") from exc
        if resp.status >= 300:
            raise UpstreamClosed(f"endpoint refused a message with HTTP {resp.status}")

    async def aclose(self) -> None:
        self._mark_closed("gateway closed the connection")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._pool.close()
