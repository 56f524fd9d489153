"""What every backend transport offers above the wire, and the shared message-stream core.

Switchyard mints its own request ids per backend connection; client ids never go upstream, so
two clients that both use id 1 each get their own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from switchyard.deadline import Deadline
from switchyard.protocol import codes, methods
from switchyard.protocol.link import ClientLink
from switchyard.protocol.versions import Era
from switchyard.upstream.outbound import Outbound
from switchyard.upstream.progress import ProgressRoutes
from switchyard.wire import frame
from switchyard.wire.frame import UNSET, Reply, reply_from

log = logging.getLogger("switchyard.upstream")

# Called with (method, raw params) for every notification a backend sends outside a request.
NotificationHandler = Callable[[str, bytes | None], None]
# Notifications that concern the client a request was made for, never the backend as a whole.
CLIENT_NOTIFICATIONS: Final = frozenset({methods.MESSAGE})


class UpstreamClosed(Exception):
    """The backend connection is gone; in-flight requests are answered with an error."""


class NotSent(UpstreamClosed):
    """The request could not be written at all: the backend provably never received it."""


@dataclass(slots=True)
class ServerFacts:
    """What the handshake taught us about a backend."""

    era: Era = Era.LEGACY
    version: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    server_info: Any = None
    instructions: str | None = None


class Connection(Protocol):
    facts: ServerFacts
    owner: ClientLink | None
    """Set when the connection serves one client: server requests outside calls go there."""
    exclusive_owner: str | None
    """The session or principal key a connection serves alone; None: shared."""
    declared: Any
    """Client capabilities to declare in a legacy `initialize` (None: the routable set)."""
    client_timeout_s: float
    """How long a client may take to answer this backend's server->client request."""
    on_unattributed: Callable[[str, str], None] | None
    """Told (method, why) of each client-bound message no single client could be proven to
    own: it is dropped, and the gateway counts it."""

    async def open(self) -> None: ...

    async def request(self, out: Outbound) -> Reply: ...

    async def notify(self, method: str, params: bytes | None) -> None: ...

    async def listen(self, params: bytes) -> None:
        """(Re)open the one `subscriptions/listen` stream of a modern backend with `params`;
        its notifications arrive like any other."""
        ...

    async def wait_closed(self) -> None: ...

    async def aclose(self) -> None: ...


def unavailable(backend: str, why: str) -> Reply:
    return frame.error_reply(
        codes.BACKEND_UNAVAILABLE,
        f"backend {backend!r} is unavailable: {why}",
        {"source": "gateway", "backend": backend},
    )


def undelivered(backend: str, why: str) -> Reply:
    """`unavailable`, for a request that provably never reached the backend: the one kind of
    failure after which any request may be sent again (`data.delivered` is false)."""
    return frame.error_reply(
        codes.BACKEND_UNAVAILABLE,
        f"backend {backend!r} is unavailable: {why}",
        {"source": "gateway", "backend": backend, "delivered": False},
    )


def timed_out(backend: str, timeout: float) -> Reply:
    return frame.error_reply(
        codes.BACKEND_TIMEOUT,
        f"backend {backend!r} did not answer within {timeout:g} s",
        {"source": "gateway", "backend": backend},
    )


def protocol_error(backend: str, why: str) -> Reply:
    return frame.error_reply(
        codes.BACKEND_PROTOCOL_ERROR,
        f"backend {backend!r} broke the protocol: {why}",
        {"source": "gateway", "backend": backend},
    )


async def answer_server_request(
    method: str, params: bytes | None, link: ClientLink | None, timeout: float
) -> Reply:
    """What to tell a backend that asked something of the client."""
    if method == methods.PING:
        if link is not None:
            reply = await link.ask(method, params, timeout)
            if reply.result is not None:
                return reply
        # No client to ask, or one without a back-channel: Switchyard, the backend's peer, is up.
        return Reply(result=b"{}")
    if link is None:
        return frame.error_reply(
            codes.INTERNAL_ERROR,
            f"{method}: no single client to route this request to (use isolation: per_session)",
        )
    return await link.ask(method, params, timeout)


class ConnectionCore:
    """What every backend connection shares: identity, close state, and answering the backend's
    own requests (sampling, elicitation, roots) off its reader. Transports say how an answer
    travels back."""

    def __init__(self, backend: str, on_notification: NotificationHandler) -> None:
        self.backend = backend
        self.facts = ServerFacts()
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._progress = ProgressRoutes()
        self._serving: set[asyncio.Task[None]] = set()
        self.declared: Any = None
        """Client capabilities to declare in `initialize`; None: what Switchyard can route."""
        self.owner: ClientLink | None = None
        """Set when this connection serves one client only: its session stream, where messages
        that name no request reach it."""
        self.exclusive_owner: str | None = None
        """The session or principal key this connection serves alone (an isolated session);
        None: shared, so a message that names no request belongs to nobody provably."""
        self.client_timeout_s = 60.0
        self.unattributed = 0
        """Client-bound notifications dropped because no client could be proven theirs."""
        self.on_unattributed: Callable[[str, str], None] | None = None
        self._links: dict[int, ClientLink] = {}
        """The way back to the client of each request in flight, by upstream id."""
        self._log_optins: set[int] = set()
        """Requests in flight whose client asked for their log lines."""
        self._closed = asyncio.Event()
        self._close_reason = "connection closed"

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None or self.owner is not None

    def _unrelated_link(self) -> ClientLink | None:
        """The client a message that names no request of ours belongs to. Only a connection
        that serves one owner can tell: any request in flight (the stream its client is
        reading for sure), else the owner's session stream. A shared connection cannot: the
        client that happens to be calling is not the one the backend meant."""
        if not self.exclusive:
            return None
        clients = {link.client: link for link in self._links.values()}
        if len(clients) > 1:
            # One owner, several of its clients calling at once (two sessions of a principal,
            # or anonymous callers): which one the backend means is not provable either.
            return None
        for link in clients.values():
            return link
        return self.owner

    async def _unrelated_notification(self, method: str, params: bytes | None) -> None:
        """A notification that names no request: backend-wide ones (list changes, resource
        updates) go to the handler; one meant for a client only to a provable client."""
        if method not in CLIENT_NOTIFICATIONS:
            self._on_notification(method, params)
            return
        clients = {link.client: link for link in self._links.values()}
        if self.exclusive and len(clients) <= 1:
            for link in clients.values():
                await link.notify(method, params)  # its caller, on the stream it is reading
                return
            # Between calls: the isolated session's handler knows its owner and its log level.
            self._on_notification(method, params)
        elif (wanting := self._sole_log_optin(method)) is not None:
            await wanting.notify(method, params)
        else:
            self.unattributed += 1
            if self.on_unattributed is not None:
                self.on_unattributed(method, "outside any request, with several clients calling")

    def _sole_log_optin(self, method: str) -> ClientLink | None:
        """A 2026-07-28 server logs only for requests that opted in: when every such request in
        flight is one client's, a log line naming no request is provably that client's."""
        if method != methods.MESSAGE or self.facts.era is not Era.MODERN:
            return None
        # Several requests of one client (a legacy session's) are that client's either way.
        wanting = {
            self._links[r].client: self._links[r] for r in self._log_optins if r in self._links
        }
        return next(iter(wanting.values())) if len(wanting) == 1 else None

    async def _send_answer(self, data: bytes) -> None:
        """Deliver the answer to a server request; a backend that is gone is not an error."""
        raise NotImplementedError

    def _serve_server_request(
        self,
        request_id: int | str | None,
        method: str,
        params: bytes | None,
        link: ClientLink | None,
        *,
        unrelated: bool = False,
    ) -> None:
        """Answer a backend's request off the reader. `unrelated`: it names no request of ours,
        so its client is chosen when the task runs, among requests still in flight then (one
        chosen now may have finished its stream by the time the question is written)."""
        # Never block the reader on a client: the answer may take a person minutes.
        task = asyncio.create_task(
            self._answer_server_request(request_id, method, params, link, unrelated)
        )
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _answer_server_request(
        self,
        request_id: int | str | None,
        method: str,
        params: bytes | None,
        link: ClientLink | None,
        unrelated: bool = False,
    ) -> None:
        if unrelated:
            link = self._unrelated_link()
        reply = await answer_server_request(method, params, link, self.client_timeout_s)
        await self._send_answer(frame.response_bytes(frame.encode_id(request_id), reply))

    def _mark_closed(self, reason: str) -> bool:
        """Record the first close reason; False when the connection was already closed."""
        if self._closed.is_set():
            return False
        self._close_reason = reason
        self._closed.set()
        return True

    async def wait_closed(self) -> None:
        await self._closed.wait()


class MessageStream(ConnectionCore):
    """Request/response correlation over a duplex stream of frames (stdio, legacy SSE)."""

    def __init__(self, backend: str, on_notification: NotificationHandler) -> None:
        super().__init__(backend, on_notification)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._listen_id: int | None = None

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError

    async def request(self, out: Outbound) -> Reply:
        if self._closed.is_set():
            return undelivered(self.backend, self._close_reason)
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        link = out.link
        if link is not None:
            self._links[request_id] = link
            if out.log_level is not None:
                self._log_optins.add(request_id)
        params = self._progress.bind(out.params, request_id, link)
        try:
            await self._send(frame.request_bytes(str(request_id).encode(), out.method, params))
            async with Deadline(out.timeout_s, out.max_s or out.timeout_s) as deadline:
                self._progress.watch(request_id, deadline)
                return await future
        except TimeoutError:
            await self._cancel_upstream(request_id, "timeout")
            return timed_out(self.backend, out.timeout_s)
        except asyncio.CancelledError:
            await self._cancel_upstream(request_id, "client cancelled")
            raise
        except NotSent as exc:
            return undelivered(self.backend, str(exc) or type(exc).__name__)
        except (OSError, UpstreamClosed) as exc:
            return unavailable(self.backend, str(exc) or type(exc).__name__)
        finally:
            self._pending.pop(request_id, None)
            self._links.pop(request_id, None)
            self._log_optins.discard(request_id)
            self._progress.unbind(request_id)

    async def _cancel_upstream(self, request_id: int, reason: str) -> None:
        if self._closed.is_set() or request_id not in self._pending:
            return
        params = frame.encode({"requestId": request_id, "reason": reason})
        with contextlib.suppress(OSError, UpstreamClosed):
            await asyncio.shield(self._send(frame.notification_bytes(methods.CANCELLED, params)))

    async def notify(self, method: str, params: bytes | None) -> None:
        if self._closed.is_set():
            return
        with contextlib.suppress(OSError, UpstreamClosed):
            await self._send(frame.notification_bytes(method, params))

    async def _dispatch(self, data: bytes) -> None:
        """Route one frame that arrived from the backend."""
        try:
            env = frame.peek(data)
        except (frame.DecodeError, frame.ValidationError):
            log.warning(
                "backend %r sent an invalid frame (%d bytes); dropped", self.backend, len(data)
            )
            return
        if env.is_response:
            pending = self._pending.get(env.id) if isinstance(env.id, int) else None
            if pending is None:
                log.debug(
                    "backend %r answered an unknown or finished request; dropped", self.backend
                )
            elif not pending.done():
                pending.set_result(reply_from(env))
            return
        if env.method is UNSET:
            return
        params = bytes(env.params) if env.params is not UNSET else None
        # A duplex stream never says which request a message belongs to.
        if env.id is not UNSET:
            self._serve_server_request(env.id, env.method, params, None, unrelated=True)
            return
        if env.method == methods.PROGRESS and await self._progress.deliver(params):
            return
        await self._unrelated_notification(env.method, params)

    async def listen(self, params: bytes) -> None:
        previous = self._listen_id
        if previous is not None:
            self._pending.pop(previous, None)
            await self._cancel_quietly(previous)
        if self._closed.is_set():
            return
        listen_id = next(self._ids)
        self._listen_id = listen_id
        # The response only ends the stream; registering a future keeps it from being "unknown".
        self._pending[listen_id] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(OSError, UpstreamClosed):
            await self._send(frame.request_bytes(str(listen_id).encode(), methods.LISTEN, params))

    async def _cancel_quietly(self, request_id: int) -> None:
        params = frame.encode({"requestId": request_id})
        with contextlib.suppress(OSError, UpstreamClosed):
            await self._send(frame.notification_bytes(methods.CANCELLED, params))

    async def _send_answer(self, data: bytes) -> None:
        with contextlib.suppress(OSError, UpstreamClosed):
            await self._send(data)

    def _mark_closed(self, reason: str) -> bool:
        if not super()._mark_closed(reason):
            return False
        for pending in self._pending.values():
            if not pending.done():
                pending.set_result(unavailable(self.backend, reason))
        return True
