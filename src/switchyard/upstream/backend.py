"""One configured backend: its endpoints' connections, supervised, and what it offers.

A backend that fails to start or dies never takes the gateway down: requests to it fail fast
with an error naming it, it is restarted with backoff, and its capabilities leave the catalog
once it has stayed away for `unavailable_grace_s` (a flapping backend causes no storm of
`list_changed`). Each endpoint (a URL, or a stdio replica) has its own connection, health
probes and circuit breaker; requests go to the less busy of two random healthy endpoints and
are re-sent only when that cannot execute anything twice (`retries.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import aiohttp

from switchyard.protocol import codes, eras, methods
from switchyard.protocol.link import ClientLink
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.routing.freshness import Freshness
from switchyard.upstream import endpoints, handshake
from switchyard.upstream.breaker import OPEN, BreakerSettings
from switchyard.upstream.coalescing import SingleFlight
from switchyard.upstream.connection import (
    Connection,
    NotificationHandler,
    ServerFacts,
    unavailable,
    undelivered,
)
from switchyard.upstream.credentials import Credential, CredentialSpec, token_session
from switchyard.upstream.endpoints import Endpoint
from switchyard.upstream.health import HealthSettings, Prober
from switchyard.upstream.http import HttpSettings, SseConnection, StreamableHttpConnection
from switchyard.upstream.outbound import Outbound
from switchyard.upstream.pool import IsolatedPool, OwnerKey, PoolLimits, PoolRefused, principal_key
from switchyard.upstream.retries import RetrySettings, failure_of
from switchyard.upstream.stdio import StdioConnection, StdioSettings
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.backend")

# Pages walked per list before a backend is judged to loop; a repeated cursor ends it at once.
MAX_PAGES: Final = 1000
# A backend's list lifetime is capped: a day-long promise still gets looked at daily.
MAX_LIST_TTL_MS: Final = 24 * 3600 * 1000
RELIST_BACKOFF_S: Final = 1.0
LIST_METHODS: Final = {
    catalog.TOOLS: (methods.TOOLS_LIST, "tools"),
    catalog.PROMPTS: (methods.PROMPTS_LIST, "prompts"),
    catalog.RESOURCES: (methods.RESOURCES_LIST, "resources"),
    catalog.TEMPLATES: (methods.TEMPLATES_LIST, "resources"),
}
PINNED_LISTS: Final = (catalog.TOOLS, catalog.PROMPTS, catalog.TEMPLATES)
CHANGED_KIND: Final = {
    methods.TOOLS_CHANGED: (catalog.TOOLS,),
    methods.PROMPTS_CHANGED: (catalog.PROMPTS,),
    methods.RESOURCES_CHANGED: (catalog.RESOURCES, catalog.TEMPLATES),
}
# Resource URIs one backend holds subscriptions for (each is renewed after every restart).
MAX_SUBSCRIBED: Final = 10_000
# Subscriptions renewed at once after a restart, while the backend already serves requests.
RESUBSCRIBE_CONCURRENCY: Final = 8
# A backend that stayed up this long restarts from the shortest delay again.
HEALTHY_RESET_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class BackendSettings:
    name: str
    prefix: str
    transport: StdioSettings | HttpSettings
    timeout_s: float = 60.0
    max_request_s: float = 1800.0
    """A request whose backend keeps reporting progress may run this long, never longer."""
    list_timeout_s: float = 30.0
    isolation: str = "per_principal"
    """`shared`, `per_session` or `per_principal`: who shares an upstream session (legacy)."""
    max_isolated: int = 64
    """Isolated sessions (stdio: processes) live, opening or closing at once."""
    max_isolated_per_principal: int | None = None
    """One principal's share of `max_isolated`; None: max(1, max_isolated // 4)."""
    spawn_burst: int = 10
    spawns_per_s: float = 1.0
    """Isolated sessions one principal may start: `spawn_burst` at once, then this rate."""
    max_in_flight: int = 256
    """Requests this backend may have open at once; more are refused, not queued."""
    credentials: CredentialSpec | None = None
    """OAuth credentials for an HTTP backend (client credentials or token exchange)."""
    isolated_idle_s: float = 300.0
    restart_delays_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    replicas: tuple[StdioSettings | HttpSettings, ...] = ()
    """Every endpoint when there are several (`urls`, or `replicas` for stdio); empty: just
    `transport`."""
    health: HealthSettings = field(default_factory=HealthSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    retries: RetrySettings = field(default_factory=RetrySettings)
    unavailable_grace_s: float = 30.0
    """How long a backend with no live endpoint keeps its tools listed (calls fail fast)."""

    @property
    def transports(self) -> tuple[StdioSettings | HttpSettings, ...]:
        return self.replicas or (self.transport,)


@dataclass(slots=True)
class BackendStatus:
    state: str = "starting"
    last_error: str | None = None
    restarts: int = 0
    since: float = field(default_factory=time.time)


class Backend:
    def __init__(
        self,
        settings: BackendSettings,
        on_change: Callable[[Backend], None],
        on_event: Callable[[Backend, str, bytes | None, OwnerKey | None], None] | None = None,
        on_unattributed: Callable[[Backend, str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.status = BackendStatus()
        self.endpoints: list[Endpoint] = endpoints.build(settings.transports, settings.breaker)
        self._endpoint_of: weakref.WeakKeyDictionary[Any, Endpoint] = weakref.WeakKeyDictionary()
        """The endpoint each isolated session was opened on: it stays there (pinned)."""
        self._rng = random.Random()
        self._subscribed_on: Connection | None = None
        self._grace: asyncio.Task[None] | None = None
        self._reads = SingleFlight[tuple[Any, ...], Reply]()
        self._side: set[asyncio.Task[None]] = set()
        self.listing: catalog.Listing | None = None
        self.first_attempt = asyncio.Event()
        self._on_change = on_change
        self._on_event = on_event
        self._on_unattributed = on_unattributed
        self._pool = IsolatedPool(
            self.name,
            PoolLimits(
                max_total=settings.max_isolated,
                per_principal=settings.max_isolated_per_principal,
                idle_s=settings.isolated_idle_s,
                spawn_burst=settings.spawn_burst,
                spawns_per_s=settings.spawns_per_s,
            ),
            self._open_isolated,
        )
        self.session_check: Callable[[catalog.Listing, catalog.Listing | None], str | None] | None
        self.session_check = None
        """Judges what a client's own session lists against the shared listing (tool pinning):
        a reason refuses that session."""
        self._levels: dict[OwnerKey, bytes] = {}
        """`logging/setLevel` params per owner: replayed when its isolated session opens."""
        self.in_flight = 0
        self._credential: Credential | None = None
        self._token_http: aiohttp.ClientSession | None = None
        self.subscribed: set[str] = set()
        """Resource URIs some client subscribed to: re-subscribed after every restart."""
        self._stopping = asyncio.Event()
        self._refresh_task: asyncio.Task[None] | None = None
        self._stale: set[str] = set()
        self._walking: frozenset[str] = frozenset()
        """The kinds being listed again right now."""
        self._relist_after = 0.0
        """A re-listing for an expired lifetime failed: not tried again before this."""
        self._detected: tuple[str, str] | None = None
        self.known_capabilities: dict[str, Any] = {}
        """Capability names seen at the last successful start; kept while the backend is down."""

    @property
    def is_up(self) -> bool:
        return self.status.state == "up"

    @property
    def connection(self) -> Connection | None:
        """The first connected endpoint's connection: listings, subscriptions and the era
        facts come from it."""
        for ep in self.endpoints:
            if ep.connected:
                return ep.connection
        return None

    @property
    def facts(self) -> ServerFacts | None:
        conn = self.connection
        return conn.facts if conn is not None else None

    @property
    def listed(self) -> bool:
        """Are this backend's capabilities in the catalog? While it is up, and for the grace
        period after its last endpoint went away."""
        if self.listing is None:
            return False
        return self.is_up or (self._grace is not None and not self._grace.done())

    # -- supervision ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._supervise(ep) for ep in self.endpoints))
        finally:
            if self._grace is not None:
                self._grace.cancel()
            self._set_state("stopped", None)

    async def _supervise(self, ep: Endpoint) -> None:
        attempt = 0
        label = self._label(ep)
        while not self._stopping.is_set():
            conn = await self._connect(ep)
            if conn is not None:
                started = time.monotonic()
                ep.connection = conn
                ep.breaker.success()
                ep.set_state("up", None)
                self.known_capabilities = dict(conn.facts.capabilities)
                self._endpoints_changed()
                self.first_attempt.set()
                prober = Prober(
                    label,
                    self.settings.health,
                    lambda ok, failed, why: self._probed(ep, ok, failed, why),
                )
                probing = asyncio.create_task(prober.run(conn, self._stopping.wait))
                await self._until_closed_or_stopped(conn)
                probing.cancel()
                ep.connection = None
                if self._subscribed_on is conn:
                    self._subscribed_on = None
                with contextlib.suppress(Exception):
                    await conn.aclose()
                if self._stopping.is_set():
                    break
                ep.set_state("down", "connection lost")
                log.warning("%s: connection lost; restarting", label)
                self._endpoints_changed()
                if time.monotonic() - started > HEALTHY_RESET_S:
                    attempt = 0
            self.first_attempt.set()
            delays = self.settings.restart_delays_s
            delay = delays[min(attempt, len(delays) - 1)]
            attempt += 1
            ep.restarts += 1
            self.status.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        ep.set_state("stopped", None)

    def _label(self, ep: Endpoint) -> str:
        if len(self.endpoints) == 1:
            return f"backend {self.name!r}"
        return f"backend {self.name!r} ({ep.label})"

    def _probed(self, ep: Endpoint, alive: bool, failed_in_row: int, why: str | None) -> None:
        """A health probe's verdict: enough failures in a row make the endpoint unhealthy and
        open its breaker; one answer makes it healthy again and closes the breaker."""
        if alive:
            if ep.state == "unhealthy" or ep.breaker.state != "closed":
                log.info("%s: answering again; healthy", self._label(ep))
                ep.breaker.success()
                ep.set_state("up", None)
                self._endpoints_changed()
            return
        if ep.state == "up" and failed_in_row >= self.settings.health.unhealthy_after:
            reason = why or "health probes failed"
            log.warning("%s: unhealthy: %s", self._label(ep), reason)
            ep.set_state("unhealthy", reason)
            if ep.breaker.state != OPEN:
                ep.breaker.trip()
            self._endpoints_changed()

    def _endpoints_changed(self) -> None:
        """Recompute the backend's state from its endpoints; keep its capabilities listed
        through the grace period when the last endpoint goes; tell the gateway."""
        was_up = self.is_up
        states = [ep.state for ep in self.endpoints]
        errors = [
            f"{ep.label}: {ep.last_error}" if len(self.endpoints) > 1 else ep.last_error
            for ep in self.endpoints
            if ep.last_error and ep.state != "up"
        ]
        if "up" in states:
            state = "up"
        elif "unhealthy" in states:
            state = "unhealthy"
        elif all(s == "stopped" for s in states):
            state = "stopped"
        elif all(s == "starting" for s in states):
            state = "starting"
        else:
            state = "down"
        error = "; ".join(e for e in errors if e) or None
        if state != self.status.state or error != self.status.last_error:
            self._set_state(state, error if state != "up" else None)
        self._ensure_subscriptions()
        if self.is_up:
            if self._grace is not None:
                self._grace.cancel()
                self._grace = None
        elif was_up and self.listing is not None and not self._stopping.is_set():
            grace = self.settings.unavailable_grace_s
            if grace > 0:
                log.info(
                    "backend %r: unavailable; its capabilities stay listed for %g s",
                    self.name,
                    grace,
                )
                self._grace = asyncio.create_task(self._end_of_grace(grace))
            else:
                self.listing = None
        self._on_change(self)

    async def _end_of_grace(self, grace: float) -> None:
        await asyncio.sleep(grace)
        if self.is_up:
            return
        log.warning("backend %r: still unavailable after %g s; delisted", self.name, grace)
        self.listing = None
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        self._grace = None
        self._on_change(self)

    def _ensure_subscriptions(self) -> None:
        """Subscriptions (and a modern backend's listen stream) live on the first connected
        endpoint; when that changes they are opened on the new one."""
        conn = self.connection
        if conn is None or conn is self._subscribed_on:
            return
        self._subscribed_on = conn
        # Serving first: re-subscribing (any number of URIs) must not hold it back.
        task = asyncio.create_task(self._open_subscriptions(conn))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def state_detail(self) -> dict[str, Any]:
        """Endpoints, breakers and the grace period, for readiness and metrics."""
        not_closed = [ep.breaker.state for ep in self.endpoints if ep.breaker.state != "closed"]
        detail: dict[str, Any] = {
            # The backend's breaker: open only when no endpoint's is closed.
            "breaker": "closed" if len(not_closed) < len(self.endpoints) else not_closed[0],
            "endpoints": [ep.status() for ep in self.endpoints],
            "inFlight": self.in_flight,
            "listed": self.listed,
        }
        if self._grace is not None and not self._grace.done():
            detail["delistingInGrace"] = True
        return detail

    async def _until_closed_or_stopped(self, conn: Connection) -> None:
        closed = asyncio.create_task(conn.wait_closed())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            stopping.cancel()

    def _candidates(
        self,
        notify: NotificationHandler | None = None,
        transport: StdioSettings | HttpSettings | None = None,
    ) -> list[Connection]:
        """Connections to try, in order: what worked last time first, then detection."""
        transport = transport or self.settings.transport
        notify = notify or self._notification
        if isinstance(transport, StdioSettings):
            fresh: list[Connection] = [StdioConnection(self.name, transport, notify)]
        elif transport.transport == "sse":
            fresh = [SseConnection(self.name, transport, notify)]
        elif transport.transport == "auto":
            fresh = [
                StreamableHttpConnection(self.name, transport, notify),
                SseConnection(self.name, transport, notify),
            ]
        else:
            fresh = [StreamableHttpConnection(self.name, transport, notify)]
        for conn in fresh:
            self._attach_credential(conn)
        cached = self._detected
        if cached is None:
            return fresh
        kind, era = cached
        pinned = replace(transport, era=era)
        if isinstance(pinned, StdioSettings):
            first: Connection = StdioConnection(self.name, pinned, notify)
        elif kind == "sse":
            first = SseConnection(self.name, pinned, notify)
        else:
            first = StreamableHttpConnection(self.name, pinned, notify)
        self._attach_credential(first)
        return [first, *fresh]

    def _attach_credential(self, conn: Connection) -> None:
        """One credential (one token cache) per backend, shared by all its connections; and
        where each reports a message it could not attribute to any single client."""
        conn.on_unattributed = self._unattributed
        spec = self.settings.credentials
        if spec is None or not isinstance(conn, StreamableHttpConnection):
            return
        if self._credential is None:
            self._token_http = token_session()
            self._credential = spec.build(self._token_http)
        conn.credential = self._credential

    def _unattributed(self, method: str, why: str) -> None:
        if self._on_unattributed is not None:
            self._on_unattributed(self, method, why)

    async def _connect(self, ep: Endpoint) -> Connection | None:
        candidates = self._candidates(transport=ep.transport)
        for candidate in candidates:
            candidate.client_timeout_s = self.settings.timeout_s
        errors: list[str] = []
        for conn in candidates:
            try:
                await conn.open()
                listing = await self._list_all(conn)
                if self.listing is None or not self.is_up:
                    self.listing = listing
                # Cache the detected transport and era: a restart skips the probe.
                kind = "sse" if isinstance(conn, SseConnection) else "stdio-or-streamable"
                self._detected = (kind, conn.facts.era.value)
                log.info(
                    "%s: up (%s %s), %s",
                    self._label(ep),
                    conn.facts.era.value,
                    conn.facts.version,
                    ", ".join(f"{len(v)} {k}" for k, v in listing.items.items()),
                )
                return conn
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.aclose())
                raise
            except Exception as exc:  # any failure to start is this backend's, never the gateway's
                errors.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                with contextlib.suppress(Exception):
                    await conn.aclose()
        ep.set_state("down", "; ".join(errors))
        log.warning("%s: failed to start: %s", self._label(ep), ep.last_error)
        self._endpoints_changed()
        return None

    def _set_state(self, state: str, error: str | None) -> None:
        self.status.state = state
        self.status.last_error = error
        self.status.since = time.time()

    async def stop(self) -> None:
        self._stopping.set()
        closing = [self._pool.close_all()]
        closing.extend(ep.connection.aclose() for ep in self.endpoints if ep.connection)
        await asyncio.gather(*closing, return_exceptions=True)
        if self._credential is not None:
            await self._credential.aclose()
        if self._token_http is not None:
            await self._token_http.close()

    # -- listing -------------------------------------------------------------------------------

    async def _list_all(
        self, conn: Connection, kinds: tuple[str, ...] = catalog.KINDS
    ) -> catalog.Listing:
        items: dict[str, tuple[dict[str, Raw], ...]] = {}
        fresh: dict[str, Freshness] = {}
        previous = self.listing if self.listing is not None else None
        for kind in catalog.KINDS:
            if kind not in kinds:
                items[kind] = previous.items.get(kind, ()) if previous else ()
                if previous is not None and kind in previous.fresh:
                    fresh[kind] = previous.fresh[kind]
                continue
            method, capability = LIST_METHODS[kind]
            if capability not in conn.facts.capabilities:
                items[kind] = ()
                continue
            pages: list[tuple[int | None, bool]] = []
            fetched = time.monotonic()
            items[kind] = await self._walk(conn, kind, method, pages)
            fresh[kind] = Freshness.of_pages(pages, fetched)
        return catalog.Listing(self.name, self.settings.prefix, items, fresh)

    async def _walk(
        self, conn: Connection, kind: str, method: str, pages: list[tuple[int | None, bool]]
    ) -> tuple[dict[str, Raw], ...]:
        def page(cursor: str | None) -> Awaitable[Reply]:
            params = self.list_params(conn, cursor)
            return conn.request(Outbound(method, params, timeout_s=self.settings.list_timeout_s))

        return await walk_pages(self.name, kind, method, page, pages)

    @staticmethod
    def list_params(conn: Connection, cursor: str | None) -> bytes | None:
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if conn.facts.era is Era.MODERN:
            params["_meta"] = handshake.modern_meta(conn.facts.version)
        return frame.encode(params) if params else None

    def _notification(self, method: str, params: bytes | None) -> None:
        kinds = CHANGED_KIND.get(method)
        if kinds is None:
            if self._on_event is not None:
                self._on_event(self, method, eras.untagged(params), None)
            return
        self._stale.update(kinds)
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        # Notifications that arrive while re-listing mark more kinds stale; loop until none are.
        while self._stale:
            conn = self.connection
            if conn is None:
                return
            kinds = tuple(self._stale)
            self._stale.clear()
            self._walking = frozenset(kinds)
            try:
                self.listing = await self._list_all(conn, kinds)
            except Exception as exc:
                log.warning("backend %r: re-listing after list_changed failed: %s", self.name, exc)
                return
            finally:
                self._walking = frozenset()
            self._on_change(self)

    def expired(self, kind: str, now: float) -> bool:
        """Has this backend's own lifetime for its `kind` list run out (and may it be listed
        again now: a failed re-listing waits a moment before the next)?"""
        listing = self.listing
        fresh = listing.fresh.get(kind) if listing is not None else None
        return fresh is not None and fresh.expired(now) and now >= self._relist_after

    async def freshen(self, kind: str) -> None:
        """List `kind` again if its lifetime ran out; however many callers ask at once, one
        re-listing runs (the list_changed one, shared). Bounded: on a failure or a timeout the
        listing in hand keeps serving."""
        if not self.expired(kind, time.monotonic()):
            return
        listing = self.listing
        before = listing.fresh.get(kind) if listing is not None else None
        if kind not in self._walking:
            # Callers arriving while it is being listed wait for that listing.
            self._stale.add(kind)
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh())
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(self._refresh_task), self.settings.list_timeout_s)
        listing = self.listing
        if listing is None or listing.fresh.get(kind) is before:
            # Not listed again (a failure or a timeout): the next try waits a moment. A
            # successful listing with `ttlMs` 0 is expired at once, and that is no failure.
            self._relist_after = time.monotonic() + RELIST_BACKOFF_S

    def invalidate_listing(self) -> None:
        """Every kind is listed again when a client next asks (a reload)."""
        listing = self.listing
        if listing is None:
            return
        self._relist_after = 0.0
        fresh = {kind: f.invalidated() for kind, f in listing.fresh.items()}
        self.listing = catalog.Listing(listing.backend, listing.prefix, listing.items, fresh)

    # -- subscriptions and logging --------------------------------------------------------------

    @property
    def supports_subscribe(self) -> bool:
        facts = self.facts
        if facts is None:
            return False
        resources = facts.capabilities.get("resources")
        return isinstance(resources, dict) and bool(resources.get("subscribe"))

    async def _open_subscriptions(self, conn: Connection) -> None:
        """What this backend must send us: list changes (modern) and subscribed resources."""
        try:
            await self._subscribe_all(conn)
        except Exception as exc:  # a backend refusing subscriptions still serves requests
            log.warning("backend %r: could not open its subscriptions: %s", self.name, exc)

    async def _subscribe_all(self, conn: Connection) -> None:
        if conn.facts.era is Era.MODERN:
            await conn.listen(self._listen_params(conn))
            return
        pending = iter(sorted(self.subscribed))
        refused: list[str] = []

        async def worker() -> None:
            # Workers share one iterator: at most RESUBSCRIBE_CONCURRENCY requests in flight.
            for uri in pending:
                reply = await conn.request(
                    Outbound(
                        methods.SUBSCRIBE,
                        frame.encode({"uri": uri}),
                        timeout_s=self.settings.timeout_s,
                    )
                )
                if reply.error is not None:
                    refused.append(uri)

        await asyncio.gather(*(worker() for _ in range(RESUBSCRIBE_CONCURRENCY)))
        if refused:
            log.warning(
                "backend %r: %d of %d subscriptions not renewed after a restart",
                self.name,
                len(refused),
                len(self.subscribed),
            )

    def _listen_params(self, conn: Connection) -> bytes:
        caps = conn.facts.capabilities
        wanted: dict[str, Any] = {}
        for capability, flag in (
            ("tools", "toolsListChanged"),
            ("prompts", "promptsListChanged"),
            ("resources", "resourcesListChanged"),
        ):
            if capability in caps:
                wanted[flag] = True
        if self.subscribed:
            wanted["resourceSubscriptions"] = sorted(self.subscribed)
        meta = handshake.modern_meta(conn.facts.version)
        return frame.encode({"notifications": wanted, "_meta": meta})

    async def subscribe(self, uri: str, on: bool) -> Reply:
        """Start (or stop) receiving updates of `uri` from this backend."""
        if on == (uri in self.subscribed):
            return Reply(result=b"{}")
        if on and len(self.subscribed) >= MAX_SUBSCRIBED:
            return frame.error_reply(
                codes.BACKEND_BUSY,
                f"backend {self.name!r} already has {len(self.subscribed)} subscribed resources "
                f"(limit {MAX_SUBSCRIBED})",
                {"source": "gateway", "backend": self.name},
            )
        if on:
            self.subscribed.add(uri)
        else:
            self.subscribed.discard(uri)
        conn = self.connection
        if conn is None or not self.is_up:
            return Reply(result=b"{}")  # applied when it comes back
        if conn.facts.era is Era.MODERN:
            await conn.listen(self._listen_params(conn))
            return Reply(result=b"{}")
        method = methods.SUBSCRIBE if on else methods.UNSUBSCRIBE
        return await conn.request(
            Outbound(method, frame.encode({"uri": uri}), timeout_s=self.settings.timeout_s)
        )

    async def subscribe_many(self, uris: list[str], on: bool) -> None:
        """Start (or stop) receiving updates of several URIs: a modern backend's listen stream
        is reopened once for the whole batch, not once per URI."""
        changed = [uri for uri in uris if on != (uri in self.subscribed)]
        if not changed:
            return
        conn = self.connection
        if conn is not None and self.is_up and conn.facts.era is Era.MODERN:
            if on:
                self.subscribed.update(changed)
            else:
                self.subscribed.difference_update(changed)
            await conn.listen(self._listen_params(conn))
            return
        for uri in changed:
            await self.subscribe(uri, on)

    def isolates(self) -> bool:
        conn = self.connection
        # Connected is enough: an unhealthy backend's calls must still never share a session.
        return conn is not None and self._isolates(conn)

    async def set_level(self, out: Outbound) -> Reply | None:
        """Forward a legacy `logging/setLevel`, to the caller's own session when isolated;
        None when this backend takes levels per request (2026-07-28) or has no logging."""
        conn = self.connection
        if conn is None or not self.is_up or "logging" not in conn.facts.capabilities:
            return None
        if conn.facts.era is Era.MODERN:
            return None
        owner = self.owner_for(out.session, out.principal) if self._isolates(conn) else None
        if owner is not None and out.params is not None:
            # Kept for a session opened later: setting a level never starts one.
            self._levels[owner] = out.params
        reply = await self.request_if_open(out)
        return reply if reply is not None else Reply(result=b"{}")

    # -- forwarding ----------------------------------------------------------------------------

    async def request(self, out: Outbound) -> Reply:
        """Forward one request; its session or principal picks an isolated upstream session,
        which declares the client's capabilities and reaches its session stream."""
        reply = await self._forward(out, open_session=True)
        assert reply is not None  # opening allowed: always an answer
        return reply

    async def request_if_open(self, out: Outbound) -> Reply | None:
        """Forward `out` only where it already has somewhere to go: the shared connection, or
        the caller's isolated session if one is open. None, and nothing started, when the
        caller has none: for what only concerns a session that exists (an unsubscribe, a log
        level)."""
        return await self._forward(out, open_session=False)

    async def _forward(self, out: Outbound, *, open_session: bool) -> Reply | None:
        if self.connection is None:
            return self._refusal()
        if self.in_flight >= self.settings.max_in_flight:
            return frame.error_reply(
                codes.BACKEND_BUSY,
                f"backend {self.name!r} has {self.in_flight} requests in flight; retry shortly",
                {"source": "gateway", "backend": self.name},
            )
        out.timeout_s = self.settings.timeout_s
        out.max_s = max(self.settings.max_request_s, self.settings.timeout_s)
        self.in_flight += 1
        try:
            if self.isolates():
                return await self._isolated(out, open_session)
            if self._coalescible(out):
                return await self._reads.run(self._read_key(out), lambda: self._shared(out))
            return await self._shared(out)
        finally:
            self.in_flight -= 1

    def _coalescible(self, out: Outbound) -> bool:
        """A read on the shared connection that nobody follows: no progress to relay, no log
        lines asked for (those go to one client), nothing per-request in its `_meta`."""
        return (
            out.method == methods.RESOURCES_READ
            and out.log_level is None
            and not _has_progress_token(out.params)
        )

    def _read_key(self, out: Outbound) -> tuple[Any, ...]:
        # With per-caller credentials the backend may answer each principal differently.
        spec = self.settings.credentials
        per_caller = spec is not None and spec.kind == "token_exchange"
        return (
            out.method,
            out.params,
            out.name,
            out.extra_headers,
            out.principal if per_caller else None,
        )

    async def _shared(self, out: Outbound) -> Reply:
        """Send on a shared connection: the less busy of two random endpoints; on a failure,
        again only if `retries.py` says that cannot execute anything twice."""
        retry = self.settings.retries
        tried: set[int] = set()
        last: Reply | None = None
        for attempt in range(max(1, retry.attempts)):
            if attempt and not any(
                ep.index not in tried and ep.connected and ep.breaker.state == "closed"
                for ep in self.endpoints
            ):
                # Nowhere else to go now: back off, then any endpoint may take it again.
                await asyncio.sleep(retry.delay(attempt - 1, self._rng))
                tried.clear()
            ep = endpoints.choose(self.endpoints, tried, self._rng)
            if ep is None:
                return last if last is not None else self._refusal()
            reply = await self._attempt(ep, ep.connection, out)
            failure = failure_of(reply)
            if failure is None or (failure.delivered and not out.idempotent):
                return reply
            last = reply
            tried.add(ep.index)
            log.info(
                "%s: %s %s; re-sending",
                self._label(ep),
                out.method,
                "never reached it" if not failure.delivered else "failed (safe to repeat)",
            )
        assert last is not None
        return last

    async def _attempt(self, ep: Endpoint, conn: Connection | None, out: Outbound) -> Reply:
        """One send on one endpoint; its outcome feeds the endpoint's breaker."""
        if conn is None:
            return undelivered(self.name, ep.last_error or "endpoint not connected")
        ep.in_flight += 1
        started = time.monotonic()
        try:
            reply = await conn.request(out)
        except BaseException:
            ep.breaker.release()
            raise
        finally:
            ep.in_flight -= 1
        failure = failure_of(reply)
        if failure is None or failure.delivered:
            ep.observe(time.monotonic() - started)  # a timeout is a (long) latency too
        if failure is None:
            if ep.breaker.state != OPEN:  # an open breaker is closed by a trial or a probe
                ep.breaker.success()
            return reply
        ep.failures += 1
        if ep.breaker.failure():
            log.warning(
                "%s: circuit breaker open after %d failures; next trial in %.1f s",
                self._label(ep),
                ep.breaker.consecutive,
                ep.breaker.retry_in(),
            )
            self._endpoints_changed()
        return reply

    def _refusal(self) -> Reply:
        """The answer when no endpoint takes a request: a breaker that is open says so, and
        when it will let a call through again."""
        open_eps = [ep for ep in self.endpoints if ep.connected and ep.breaker.state == OPEN]
        if open_eps:
            retry_in = min(ep.breaker.retry_in() for ep in open_eps)
            why = next((ep.last_error for ep in open_eps if ep.last_error), None)
            return frame.error_reply(
                codes.BACKEND_UNAVAILABLE,
                f"backend {self.name!r} is unavailable: circuit breaker open after repeated "
                f"failures{f' ({why})' if why else ''}; next attempt in {retry_in:.1f} s",
                {
                    "source": "gateway",
                    "backend": self.name,
                    "breaker": "open",
                    "retryAfterMs": int(retry_in * 1000),
                    "delivered": False,
                },
            )
        return undelivered(self.name, self.status.last_error or self.status.state)

    async def _isolated(self, out: Outbound, open_session: bool) -> Reply | None:
        principal = principal_key(out.principal)
        owner = self.owner_for(out.session, out.principal)
        if not open_session:
            found = self._pool.peek(owner) if owner is not None else None
            if found is None:
                return None
            found.busy += 1
            try:
                return await self._on_session(found.connection, out)
            finally:
                self._pool.give_back(found)
        retry = self.settings.retries
        reply: Reply | None = None
        for attempt in range(max(1, retry.attempts)):
            if attempt:
                await asyncio.sleep(retry.delay(attempt - 1, self._rng))
            try:
                if owner is None:
                    # A 2026-07-28 caller keeps no session: one of its principal's warm
                    # sessions serves this call, exclusively, and goes back to the pool after.
                    isolated = await self._pool.borrow(
                        principal, out.client_capabilities, self.settings.timeout_s
                    )
                else:
                    isolated = await self._pool.acquire(
                        owner, principal, out.client_capabilities, out.session_link
                    )
            except PoolRefused as exc:
                log.warning("backend %r: %s", self.name, exc)
                return frame.error_reply(
                    codes.BACKEND_BUSY, str(exc), {"source": "gateway", "backend": self.name}
                )
            except _NoEndpoint:
                return self._refusal()
            except _ViewRefused as exc:
                log.warning("backend %r: a client's session refused: %s", self.name, exc)
                return frame.error_reply(
                    codes.SESSION_VIEW_REFUSED,
                    f"backend {self.name!r} refused: {exc}",
                    {"source": "gateway", "backend": self.name},
                )
            except Exception as exc:
                log.warning("backend %r: isolated session for a client failed: %s", self.name, exc)
                return reply or unavailable(self.name, "no isolated session could be opened")
            try:
                reply = await self._on_session(isolated.connection, out)
            finally:
                self._pool.give_back(isolated)
            failure = failure_of(reply)
            if failure is None or (failure.delivered and not out.idempotent):
                return reply
        assert reply is not None
        return reply

    async def _on_session(self, conn: Connection, out: Outbound) -> Reply:
        """A request on an isolated session, which stays on the endpoint it was opened on.
        An HTTP endpoint's breaker guards its sessions too; a stdio session is its own
        process, judged by its own failures."""
        ep = self._endpoint_of.get(conn)
        if ep is None or not isinstance(ep.transport, HttpSettings):
            return await conn.request(out)
        if not ep.breaker.allows():
            return self._refusal()
        return await self._attempt(ep, conn, out)

    # -- isolation -----------------------------------------------------------------------------

    def _isolates(self, conn: Connection) -> bool:
        # A 2026-07-28 backend keeps no protocol session: nothing to isolate.
        return self.settings.isolation != "shared" and conn.facts.era is Era.LEGACY

    @property
    def isolated_sessions(self) -> int:
        return len(self._pool)

    def owner_for(self, session: str | None, principal: str | None) -> OwnerKey | None:
        """Whose isolated session serves a request; None: a warm pooled one (a caller with no
        session on a `per_session` backend), or the shared one when not isolating."""
        isolation = self.settings.isolation
        if isolation == "per_principal":
            return principal_key(principal)
        if isolation == "per_session" and session:
            return OwnerKey("session", session)
        return None

    async def _open_isolated(
        self, owner: OwnerKey, capabilities: Raw | None, session_link: ClientLink | None
    ) -> Connection:
        # A new session goes to the endpoint with fewer sessions (of two random ones), and
        # stays there: a legacy session exists only where it was initialized.
        ep = endpoints.choose(self.endpoints, set(), self._rng, load="sessions")
        if ep is None:
            raise _NoEndpoint(self.name)
        conn = self._candidates(
            lambda m, p: self._isolated_notification(owner, m, p), ep.transport
        )[0]
        self._endpoint_of[conn] = ep
        ep.isolated += 1
        watch = asyncio.create_task(_count_down(ep, conn))
        self._side.add(watch)
        watch.add_done_callback(self._side.discard)
        conn.client_timeout_s = self.settings.timeout_s
        conn.owner = session_link
        conn.exclusive_owner = str(owner)
        # One client's session: it offers the backend exactly what that client supports.
        conn.declared = frame.decode_any(capabilities) if capabilities is not None else {}
        try:
            await conn.open()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.aclose())
            raise
        check = self.session_check
        if check is not None:
            try:
                own = await self._list_all(conn, PINNED_LISTS)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.aclose())
                raise
            reason = check(own, self.listing)
            if reason is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.aclose())
                raise _ViewRefused(reason)
        level = self._levels.get(owner)
        if level is not None and "logging" in conn.facts.capabilities:
            # The level its owner set before this session existed.
            reply = await conn.request(
                Outbound(methods.SET_LEVEL, level, timeout_s=self.settings.timeout_s)
            )
            if reply.error is not None:
                log.info("backend %r: a client's log level was refused", self.name)
        return conn

    def _isolated_notification(self, owner: OwnerKey, method: str, params: bytes | None) -> None:
        """What an isolated session says outside a request concerns its owner alone."""
        if method in CHANGED_KIND:
            self._notification(method, params)  # the catalog is shared: re-list it
        elif self._on_event is not None:
            self._on_event(self, method, eras.untagged(params), owner)

    def release(self, session: str) -> None:
        """A client session is gone: close its isolated session."""
        owner = OwnerKey("session", session)
        self._levels.pop(owner, None)
        self._pool.release(owner)

    def reap_isolated(self) -> int:
        """Close isolated sessions idle past their time."""
        return self._pool.reap()


async def _count_down(ep: Endpoint, conn: Connection) -> None:
    try:
        await conn.wait_closed()
    finally:
        ep.isolated -= 1


async def walk_pages(
    backend: str,
    kind: str,
    method: str,
    page: Callable[[str | None], Awaitable[Reply]],
    pages: list[tuple[int | None, bool]],
) -> tuple[dict[str, Raw], ...]:
    """Every item of a list, page after page (`page(cursor)` asks for one), each page's cache
    hints appended to `pages`. Stops at a repeated cursor or after MAX_PAGES, with what it has:
    a backend that pages forever must not hold a listing forever."""
    out: list[dict[str, Raw]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        reply = await page(cursor)
        if reply.result is None:
            err = frame.decode_error(reply.error or b'{"code":0,"message":"?"}')
            raise RuntimeError(f"{method} failed: {err.message} ({err.code})")
        result = frame.decode_object(reply.result)
        pages.append(cache_hints(result))
        if kind in result:
            out.extend(frame.decode_object(item) for item in frame.decode_array(result[kind]))
        next_raw = result.get("nextCursor")
        cursor = frame.decode_any(next_raw) if next_raw is not None else None
        if not isinstance(cursor, str):
            return tuple(out)
        if cursor in seen:
            log.warning(
                "backend %r: %s cursor %r repeated; stopped paging with %d items",
                backend,
                method,
                cursor,
                len(out),
            )
            return tuple(out)
        seen.add(cursor)
    log.warning("backend %r: %s still paging after %d pages; stopped", backend, method, MAX_PAGES)
    return tuple(out)


def cache_hints(result: dict[str, Raw]) -> tuple[int | None, bool]:
    """A list page's (`ttlMs`, `cacheScope` is public). A legacy page, or a `ttlMs` that is
    not a number of 0 or more, promises nothing (None); 0 is immediately stale."""
    raw = frame.decode_any(result["ttlMs"]) if "ttlMs" in result else None
    scope = frame.decode_any(result["cacheScope"]) if "cacheScope" in result else None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= 0:
        return None, scope == "public"
    return int(min(raw, MAX_LIST_TTL_MS)), scope == "public"


def _has_progress_token(params: bytes | None) -> bool:
    if params is None:
        return False
    try:
        meta = frame.decode_object(params).get("_meta")
        return meta is not None and "progressToken" in frame.decode_object(meta)
    except (frame.DecodeError, frame.ValidationError):
        return True


class _ViewRefused(Exception):
    """A client's own session lists something else than the catalog was built from."""


class _NoEndpoint(Exception):
    """No endpoint takes a new isolated session now (all down, or their breakers open)."""
