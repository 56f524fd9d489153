"""Legacy-era client sessions (2025 revisions and HTTP+SSE). Modern requests never need one.

Session ids are 256-bit CSPRNG tokens minted by Switchyard; a backend's ids never reach clients.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from switchyard.protocol import codes
from switchyard.protocol.link import CAPABILITY_FOR, log_wanted
from switchyard.protocol.methods import MESSAGE as METHOD_MESSAGE
from switchyard.protocol.versions import LATEST_HANDSHAKE
from switchyard.wire import frame
from switchyard.wire.frame import UNSET, Envelope, Raw, Reply

log = logging.getLogger("switchyard.sessions")

# Messages queued for a client that is not reading; past this a slow client loses the oldest.
OUTBOX_LIMIT: Final = 1024


class InflightRequests:
    """One client's open requests by client id: only that client may cancel them.

    A request runs in the task that received it; registering that task costs a dict entry, not
    an extra task per request.
    """

    __slots__ = ("_cancelled", "_tasks")

    def __init__(self) -> None:
        self._tasks: dict[bytes, asyncio.Task[Any]] = {}
        self._cancelled: set[bytes] = set()

    async def run(self, key: bytes, work: Coroutine[Any, Any, Reply]) -> Reply | None:
        """Run `work` as request `key`; None if the client cancelled it."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[key] = task
        try:
            return await work
        except asyncio.CancelledError:
            if key not in self._cancelled:
                raise  # shutdown, not the client
            task.uncancel()
            return None
        finally:
            self._tasks.pop(key, None)
            self._cancelled.discard(key)

    def cancel(self, params: Raw | None) -> bool:
        """Act on the client's `notifications/cancelled`; False if no such request is open."""
        if params is None:
            return False
        try:
            request_id = frame.decode_object(params).get("requestId")
            key = frame.encode_id(frame.decode_any(request_id)) if request_id is not None else None
        except (frame.DecodeError, frame.ValidationError, TypeError):
            return False
        task = self._tasks.get(key) if key is not None else None
        if key is None or task is None or task.done():
            return False
        self._cancelled.add(key)
        task.cancel()
        return True


class ClientRequests:
    """Requests Switchyard sends to one client on a backend's behalf, awaiting its answers."""

    __slots__ = ("_ids", "_waiting")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}

    async def ask(
        self,
        write: Callable[[bytes], Awaitable[None]],
        capabilities: Raw | None,
        method: str,
        params: bytes | None,
        timeout: float,
    ) -> Reply:
        needed = CAPABILITY_FOR.get(method)
        if needed is not None and not has_capability(capabilities, needed):
            return frame.error_reply(
                codes.METHOD_NOT_FOUND, f"The client does not support {method}"
            )
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await write(frame.request_bytes(str(request_id).encode(), method, params))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return frame.error_reply(
                codes.CLIENT_TIMEOUT,
                f"the client did not answer {method} within {timeout:g} s",
                {"source": "gateway"},
            )
        finally:
            self._waiting.pop(request_id, None)

    def resolve(self, env: Envelope) -> bool:
        """Deliver a client's response; False if it answers nothing we asked."""
        future = self._waiting.get(env.id) if isinstance(env.id, int) else None
        if future is None or future.done():
            return False
        if env.error is not UNSET:
            future.set_result(Reply(error=bytes(env.error)))
        else:
            future.set_result(Reply(result=bytes(env.result) if env.result is not UNSET else b"{}"))
        return True


def has_capability(capabilities: Raw | None, name: str) -> bool:
    if capabilities is None:
        return False
    try:
        return name in frame.decode_object(capabilities)
    except (frame.DecodeError, frame.ValidationError):
        return False


@dataclass(slots=True, eq=False)
class Session:
    id: str
    transport: str
    version: str = LATEST_HANDSHAKE
    client_capabilities: Raw | None = None
    initialized: bool = False
    log_level: str | None = None
    principal: str | None = None
    """The caller that opened it; the id means nothing in anyone else's hands."""
    view: str | None = None
    """The endpoint (virtual server) it was opened on; elsewhere it is unknown."""
    outbox: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT))
    stream_open: bool = False
    requests: InflightRequests = field(default_factory=lambda: InflightRequests())
    outgoing: ClientRequests = field(default_factory=lambda: ClientRequests())
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)

    def push(self, message: bytes) -> None:
        if self.outbox.full():
            self.outbox.get_nowait()
            log.warning("session %s…: outbox full; dropped its oldest message", self.id[:8])
        self.outbox.put_nowait(message)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    async def _push(self, message: bytes) -> None:
        self.push(message)

    def notify(self, method: str, params: bytes | None) -> None:
        """Queue a notification on this session's stream."""
        self.push(frame.notification_bytes(method, params))

    def link(self) -> SessionLink:
        """A link that reaches this client through its stream (HTTP+SSE, or the GET stream)."""
        return SessionLink(self)


class SessionLink:
    """Notifications and server->client requests delivered on a session's own stream."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def client(self) -> str:
        return self.session.id

    async def notify(self, method: str, params: bytes | None) -> None:
        if method != METHOD_MESSAGE or log_wanted(params, self.session.log_level):
            self.session.push(frame.notification_bytes(method, params))

    async def ask(self, method: str, params: bytes | None, timeout: float) -> Reply:
        s = self.session
        return await s.outgoing.ask(s._push, s.client_capabilities, method, params, timeout)


class SessionRegistry:
    def __init__(self, idle_timeout_s: float = 3600.0, max_sessions: int = 10000) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self.on_removed: Callable[[str], None] | None = None
        """Told the id of every session that ends (deleted, closed or reaped)."""

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, transport: str, principal: str | None = None, view: str | None = None
    ) -> Session | None:
        if len(self._sessions) >= self.max_sessions:
            self.reap()
            if len(self._sessions) >= self.max_sessions:
                return None
        session = Session(secrets.token_urlsafe(32), transport, principal=principal, view=view)
        self._sessions[session.id] = session
        return session

    def get(
        self, session_id: str, principal: str | None = None, view: str | None = None
    ) -> Session | None:
        """The session, if it exists, belongs to `principal` and was opened on `view`: another
        caller's session id, or one from another endpoint, is answered like an unknown one."""
        session = self._sessions.get(session_id)
        if session is None or session.principal != principal or session.view != view:
            return None
        session.touch()
        return session

    def peek(self, session_id: str) -> Session | None:
        """The session, whoever owns it (for delivering what its own backend session says)."""
        return self._sessions.get(session_id)

    def remove(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None and self.on_removed is not None:
            self.on_removed(session_id)
        return session

    def values(self) -> list[Session]:
        return list(self._sessions.values())

    def broadcast(self, message: bytes) -> None:
        """Queue a notification for every initialized session (list changes)."""
        for session in self._sessions.values():
            if session.initialized:
                session.push(message)

    def reap(self) -> int:
        cutoff = time.monotonic() - self.idle_timeout_s
        idle = [
            sid for sid, s in self._sessions.items() if s.last_seen < cutoff and not s.stream_open
        ]
        for sid in idle:
            self.remove(sid)
        return len(idle)
