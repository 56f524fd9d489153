"""Legacy-era client sessions (2025 revisions and HTTP+SSE). Modern requests never need one.

Session ids are 256-bit CSPRNG tokens minted by Switchyard; a backend's ids never reach clients.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from switchyard.call import Identity
from switchyard.delivery import Recipient
from switchyard.protocol import codes
from switchyard.protocol.link import CAPABILITY_FOR, log_wanted
from switchyard.protocol.methods import MESSAGE as METHOD_MESSAGE
from switchyard.protocol.versions import LATEST_HANDSHAKE
from switchyard.storage.counters import Counters, MemoryCounters
from switchyard.wire import frame
from switchyard.wire.frame import UNSET, Envelope, Raw, Reply

log = logging.getLogger("switchyard.sessions")

# Queued for a count-bounded consumer elsewhere (listen streams): past this the oldest goes.
OUTBOX_LIMIT: Final = 1024
# What one session's stream may have queued: past this the oldest messages are dropped. One
# message larger than this is still queued alone, so a large answer is never lost.
OUTBOX_BYTES: Final = 4 * 1024 * 1024
# What a session may keep queued while no stream reads it: pushes beyond are dropped.
DETACHED_OUTBOX_BYTES: Final = 64 * 1024
# Every session's queued bytes together.
OUTBOX_BUDGET_BYTES: Final = 256 * 1024 * 1024


class Undeliverable(Exception):
    """A message for a client could not be queued (it is not reading, or its queue is full)."""


class OutboxClosed(Exception):
    """The session ended: its stream has nothing more to carry."""


class ByteBudget:
    """Bytes queued across every outbox of a gateway, against one ceiling."""

    __slots__ = ("dropped", "limit", "used")

    def __init__(self, limit: int = OUTBOX_BUDGET_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        """Messages dropped, gateway-wide, because an outbox or the budget was full."""


class Outbox(asyncio.Queue[bytes]):
    """Messages queued for one session's stream (one reader at a time), bounded in bytes.

    Messages are stored by reference: a notification broadcast to many sessions is one `bytes`
    object however many outboxes hold it. Closing the outbox ends the stream reading it: `get`
    raises `OutboxClosed`, so a session closed by its lifetime (or deleted) keeps no stream open.
    """

    def __init__(
        self,
        limit_bytes: int = OUTBOX_BYTES,
        detached_bytes: int = DETACHED_OUTBOX_BYTES,
        budget: ByteBudget | None = None,
    ) -> None:
        super().__init__()
        self.limit_bytes = limit_bytes
        self.detached_bytes = detached_bytes
        self.budget = budget or ByteBudget()
        self._items: collections.deque[bytes] = collections.deque()
        self.size = 0
        """Bytes queued here now."""
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return self.size >= self.limit_bytes

    def offer(self, message: bytes, attached: bool = True) -> bool:
        """Queue `message`; False if it was dropped (counted) instead.

        With a stream attached the oldest messages make room for it; without one, what is
        queued is kept and the new message dropped past the small detached bound, so a session
        nobody reads cannot hoard. The gateway-wide budget applies either way.
        """
        if self.closed:
            return False
        n = len(message)
        if attached:
            while self._items and self.size + n > self.limit_bytes:
                self._drop_oldest()
        elif self.size + n > self.detached_bytes:
            return self._refuse()
        budget = self.budget
        while self._items and budget.used + n > budget.limit:
            self._drop_oldest()
        if budget.used + n > budget.limit:
            return self._refuse()
        self._items.append(message)
        self.size += n
        budget.used += n
        self._ready.set()
        return True

    def _drop_oldest(self) -> None:
        self._take()
        self._count_drop()

    def _refuse(self) -> bool:
        self._count_drop()
        return False

    def _count_drop(self) -> None:
        if not self.dropped:
            log.warning("a session's outbox is full: dropping messages its client is not reading")
        self.dropped += 1
        self.budget.dropped += 1

    def _take(self) -> bytes:
        item = self._items.popleft()
        self.size -= len(item)
        self.budget.used -= len(item)
        if not self._items:
            self._ready.clear()
        return item

    def put_nowait(self, item: bytes) -> None:
        self.offer(item)

    async def put(self, item: bytes) -> None:
        self.offer(item)

    def get_nowait(self) -> bytes:
        if not self._items:
            if self.closed:
                raise OutboxClosed
            raise asyncio.QueueEmpty
        return self._take()

    async def get(self) -> bytes:
        while not self._items:
            if self.closed:
                raise OutboxClosed
            await self._ready.wait()
        return self._take()

    def close(self) -> None:
        """Drop what is queued (giving its bytes back to the budget) and end the reader."""
        self.closed = True
        while self._items:
            self._take()
        self._ready.set()


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
        write: Callable[[bytes], Awaitable[object]],
        capabilities: Raw | None,
        method: str,
        params: bytes | None,
        timeout: float,
    ) -> Reply:
        """Send the request with `write` and await the client's answer. `write` raises
        `Undeliverable` when it cannot queue it: that is answered at once, not timed out."""
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
        except Undeliverable:
            return frame.error_reply(
                codes.CLIENT_BACKLOGGED,
                f"{method} could not be delivered: the client is not reading",
                {"source": "gateway"},
            )
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
    identity: Identity | None = None
    """That caller's identity, by which what reaches the session is judged on delivery."""
    view: str | None = None
    """The endpoint (virtual server) it was opened on; elsewhere it is unknown."""
    outbox: Outbox = field(default_factory=lambda: Outbox())
    """Replaced by the registry with one bounded by its settings and shared budget."""
    stream_open: bool = False
    requests: InflightRequests = field(default_factory=lambda: InflightRequests())
    outgoing: ClientRequests = field(default_factory=lambda: ClientRequests())
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    owner: str | None = None
    """The key its registry counts it against (see `owner_key`)."""
    closed: bool = False

    def close(self) -> None:
        """The session ended: its stream ends too, and nothing more is queued for it."""
        self.closed = True
        self.outbox.close()

    def push(self, message: bytes) -> bool:
        """Queue a message for this session's stream; False if it was dropped (counted)."""
        return self.outbox.offer(message, self.stream_open)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    async def _push(self, message: bytes) -> None:
        if not self.push(message):
            raise Undeliverable

    def notify(self, method: str, params: bytes | None) -> None:
        """Queue a notification on this session's stream."""
        self.push(_shared_notification(method, params))

    def link(self) -> SessionLink:
        """A link that reaches this client through its stream (HTTP+SSE, or the GET stream)."""
        return SessionLink(self)

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.principal or self.id, self.identity)


class SessionLink:
    """Notifications and server->client requests delivered on a session's own stream.

    Called from backend readers: it only queues (bounded), never waits for the client, so a
    client that stops reading cannot stall a backend shared with others.
    """

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


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How many legacy sessions may exist, for whom, and for how long."""

    max_sessions: int = 10000
    max_per_principal: int = 100
    """Per authenticated caller; with authentication off, per peer address."""
    idle_timeout_s: float = 3600.0
    max_lifetime_s: float = 86400.0
    """A session is closed this long after it opened, even with a stream attached."""
    high_water: float = 0.9
    """Past this share of `max_sessions`, each owner is held to a fair share of the table."""
    outbox_bytes: int = OUTBOX_BYTES
    """Bytes one session's stream may have queued."""
    detached_outbox_bytes: int = DETACHED_OUTBOX_BYTES
    """Bytes a session may keep queued while no stream reads it."""
    outbox_budget_bytes: int = OUTBOX_BUDGET_BYTES
    """Bytes queued across all sessions."""


@dataclass(frozen=True, slots=True)
class SessionRefusal:
    """Why a new session was not opened: an HTTP status and a JSON-RPC error to answer with."""

    status: int
    code: int
    message: str


class SessionStore(Protocol):
    """Where sessions are found by id. A session's record (id, owner, view, version,
    capabilities, log level) is what another process would need to serve it; its stream and
    outbox stay with the process its client is connected to."""

    def put(self, session: Session) -> None: ...

    def get(self, session_id: str) -> Session | None: ...

    def pop(self, session_id: str) -> Session | None: ...

    def values(self) -> list[Session]: ...

    def __len__(self) -> int: ...


class MemorySessionStore:
    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def put(self, session: Session) -> None:
        self._sessions[session.id] = session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def pop(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def values(self) -> list[Session]:
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)


class SessionRegistry:
    def __init__(
        self,
        idle_timeout_s: float = 3600.0,
        max_sessions: int = 10000,
        *,
        limits: SessionLimits | None = None,
        store: SessionStore | None = None,
        owned: Counters | None = None,
    ) -> None:
        base = limits or SessionLimits()
        self.limits = SessionLimits(
            max_sessions=max_sessions,
            max_per_principal=base.max_per_principal,
            idle_timeout_s=idle_timeout_s,
            max_lifetime_s=base.max_lifetime_s,
            high_water=base.high_water,
            outbox_bytes=base.outbox_bytes,
            detached_outbox_bytes=base.detached_outbox_bytes,
            outbox_budget_bytes=base.outbox_budget_bytes,
        )
        self.budget = ByteBudget(self.limits.outbox_budget_bytes)
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self._sessions: SessionStore = store if store is not None else MemorySessionStore()
        self._owned: Counters = owned if owned is not None else MemoryCounters()
        """Open sessions per owner key (principal, or peer address without authentication)."""
        self.on_removed: Callable[[str], None] | None = None
        """Told the id of every session that ends (deleted, closed or reaped)."""

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self,
        transport: str,
        principal: str | None = None,
        view: str | None = None,
        *,
        peer: str | None = None,
        identity: Identity | None = None,
    ) -> Session | None:
        """A new session, or None when a limit refuses it (`open` says which)."""
        opened = self.open(transport, principal, view, peer=peer, identity=identity)
        return opened if isinstance(opened, Session) else None

    def open(
        self,
        transport: str,
        principal: str | None = None,
        view: str | None = None,
        *,
        peer: str | None = None,
        identity: Identity | None = None,
    ) -> Session | SessionRefusal:
        """A new session for `principal` (or, with authentication off, `peer`), unless that owner
        is at its cap or the table is full with no one over their fair share to make room."""
        owner = owner_key(principal, peer)
        limits = self.limits
        if len(self._sessions) >= limits.max_sessions * limits.high_water:
            self.reap()
        held = self._owned.get(owner) if owner is not None else 0
        if owner is not None and held >= limits.max_per_principal:
            return SessionRefusal(
                429,
                codes.SESSION_LIMIT,
                f"Too many sessions for this caller (at most {limits.max_per_principal}); "
                "close one (DELETE) first",
            )
        if len(self._sessions) >= limits.max_sessions * limits.high_water:
            # Near the cap, nobody may grow past a fair share, so one owner's load cannot shut
            # out a newcomer; at the cap, a newcomer's session takes the place of the oldest
            # idle session of whoever holds the most beyond their share.
            share = self._fair_share(owner)
            if held >= share:
                return _TABLE_FULL
            if len(self._sessions) >= limits.max_sessions and not self._evict_beyond(share):
                return _TABLE_FULL
        outbox = Outbox(limits.outbox_bytes, limits.detached_outbox_bytes, self.budget)
        session = Session(
            secrets.token_urlsafe(32),
            transport,
            principal=principal,
            identity=identity,
            view=view,
            outbox=outbox,
        )
        session.owner = owner
        self._sessions.put(session)
        if owner is not None:
            self._owned.add(owner)
        return session

    def _fair_share(self, owner: str | None) -> int:
        # Counting one owner more than there are keeps a share free for whoever comes next.
        held = self._owned.get(owner) if owner is not None else 0
        owners = self._owned.owners() + (1 if held else 2)
        return max(1, self.limits.max_sessions // owners)

    def _evict_beyond(self, share: int) -> bool:
        largest = self._owned.largest()
        if largest is None or largest[1] <= share:
            return False
        theirs = [s for s in self._sessions.values() if s.owner == largest[0]]
        # Prefer a session no stream is reading; then the one seen longest ago.
        victim = min(theirs, key=lambda s: (s.stream_open, s.last_seen))
        log.warning("session table full: closed a session of an owner above its fair share")
        self.remove(victim.id)
        return True

    def get(
        self, session_id: str, principal: str | None = None, view: str | None = None
    ) -> Session | None:
        """The session, if it exists, belongs to `principal` and was opened on `view`: another
        caller's session id, or one from another endpoint, is answered like an unknown one."""
        session = self._sessions.get(session_id)
        if session is None or session.principal != principal or session.view != view:
            return None
        if self._expired(session, time.monotonic()):
            self.remove(session_id)
            return None
        session.touch()
        return session

    def peek(self, session_id: str) -> Session | None:
        """The session, whoever owns it (for delivering what its own backend session says)."""
        return self._sessions.get(session_id)

    def remove(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id)
        if session is None:
            return None
        if session.owner is not None:
            self._owned.release(session.owner)
        session.close()
        if self.on_removed is not None:
            self.on_removed(session_id)
        return session

    def values(self) -> list[Session]:
        return self._sessions.values()

    def count_for(self, principal: str | None, peer: str | None = None) -> int:
        owner = owner_key(principal, peer)
        return self._owned.get(owner) if owner is not None else 0

    def broadcast(self, message: bytes) -> None:
        """Queue a notification for every initialized session (list changes)."""
        for session in self._sessions.values():
            if session.initialized:
                session.push(message)

    def _expired(self, session: Session, now: float) -> bool:
        if now - session.created >= self.limits.max_lifetime_s:
            return True
        return not session.stream_open and now - session.last_seen >= self.limits.idle_timeout_s

    def reap(self) -> int:
        """Close sessions idle past the idle timeout (unless a stream is reading them) and every
        session past its lifetime, streamed or not."""
        now = time.monotonic()
        ended = [s.id for s in self._sessions.values() if self._expired(s, now)]
        for sid in ended:
            self.remove(sid)
        return len(ended)


_TABLE_FULL: Final = SessionRefusal(
    503, codes.SESSION_LIMIT, "Too many sessions on this gateway; retry later"
)


def owner_key(principal: str | None, peer: str | None) -> str | None:
    """Whom a session counts against: its authenticated caller, else its peer address."""
    if principal is not None:
        return "principal:" + principal
    if peer is not None:
        return "peer:" + peer
    return None


_last_notification: tuple[str, bytes | None, bytes] | None = None


def _shared_notification(method: str, params: bytes | None) -> bytes:
    """The notification's bytes, built once when the same params go to session after session:
    a line fanned out to many sessions is one object in all their outboxes, not a copy each."""
    global _last_notification
    last = _last_notification
    if last is not None and last[1] is params and last[0] == method:
        return last[2]
    message = frame.notification_bytes(method, params)
    # Holding `params` keeps its id from being reused by another object while cached.
    _last_notification = (method, params, message)
    return message
