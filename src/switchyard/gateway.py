"""Gateway: turns a compiled plan into backends, a catalog, chains and sessions; owns the
lifecycle. Listeners (HTTP, stdio) sit on top and only call `dispatcher` and `sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from switchyard.bridge import ParkedCalls
from switchyard.call import Identity
from switchyard.delivery import ClientMessage, Delivery, OutboundHook, Push
from switchyard.dispatcher import Dispatcher
from switchyard.forwarder import Forwarder
from switchyard.policies.access import AccessRules
from switchyard.policies.base import PolicySpec
from switchyard.policies.rate_limits import Limiter
from switchyard.policies.request_log import RequestLog
from switchyard.protocol import methods
from switchyard.protocol.link import log_wanted
from switchyard.redaction.engine import Redactor
from switchyard.routing import catalog
from switchyard.routing.router import Route, Router
from switchyard.routing.views import ViewSpec, build_view
from switchyard.sessions import SessionLimits, SessionRegistry
from switchyard.storage.settings import StorageSettings
from switchyard.subscriptions import Subscriptions
from switchyard.tasks import TaskRoutes
from switchyard.upstream.backend import Backend, BackendSettings
from switchyard.upstream.pool import OwnerKey
from switchyard.wire import frame
from switchyard.wire.frame import Raw

log = logging.getLogger("switchyard.gateway")

_CHANGED: dict[str, str] = {
    catalog.TOOLS: methods.TOOLS_CHANGED,
    catalog.PROMPTS: methods.PROMPTS_CHANGED,
    catalog.RESOURCES: methods.RESOURCES_CHANGED,
    catalog.TEMPLATES: methods.RESOURCES_CHANGED,
}


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    separator: str = "_"
    page_size: int = 100
    startup_wait_s: float = 15.0
    instructions: str | None = None
    session_idle_timeout_s: float = 3600.0
    max_sessions: int = 10000
    sessions: SessionLimits = field(default_factory=SessionLimits)
    policies: tuple[PolicySpec, ...] = field(default_factory=lambda: (PolicySpec(RequestLog),))
    access: AccessRules | None = None
    """The access rules when authentication is on: the chain's policy and every message that
    does not travel the chain (listen streams, out-of-call deliveries) decide by the same."""
    redaction: Redactor | None = None
    """The redaction engine when rules are configured: the chain's policy, and
    `redact_notification` for every client-bound message outside a result."""
    limits: Limiter | None = None
    """The rate limits' rules and counters, when `rate_limits:` has rules (the chain's policy)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated configuration, compiled into each component's own settings."""

    gateway: GatewaySettings
    backends: tuple[BackendSettings, ...]
    views: tuple[ViewSpec, ...] = ()
    storage: StorageSettings = field(default_factory=StorageSettings)


class Gateway:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.settings = plan.gateway
        self.backends: dict[str, Backend] = {
            b.name: Backend(b, self._backend_changed, self._backend_event, self._unattributed)
            for b in plan.backends
        }
        self.catalog = catalog.Catalog()
        self.sessions = SessionRegistry(
            self.settings.session_idle_timeout_s,
            self.settings.max_sessions,
            limits=self.settings.sessions,
        )
        self.views: dict[str, catalog.Catalog] = {v.name: catalog.Catalog() for v in plan.views}
        # State that outlives a request is the gateway's, not the terminal's: the forwarder
        # and dispatcher can be rebuilt at any time.
        self.parked = ParkedCalls()
        access = self.settings.access
        # Every client-bound message outside a result passes here, addressed and judged.
        self.delivery = Delivery(access.may_reach if access is not None else None)
        if self.settings.redaction is not None:
            self.delivery.add_hook("redaction", _redaction_hook(self.settings.redaction))
        self.subscriptions = Subscriptions(self.backends, self.delivery)
        self.tasks = TaskRoutes(delivery=self.delivery)
        self.forwarder = Forwarder(
            self.backends,
            self.catalog_for,
            self.settings.page_size,
            self.settings.instructions,
            self.parked,
            self.subscriptions,
            self.tasks,
            self.delivery,
        )
        self.router = Router(self.catalog_for, self.forwarder.sole_server)
        self.dispatcher = Dispatcher(self.forwarder, self.settings.policies, self.router)
        self.sessions.on_removed = self._session_removed
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.started = False

    async def start(self) -> None:
        """Start every backend; wait (bounded) until each has made its first attempt."""
        for backend in self.backends.values():
            self._tasks.append(asyncio.create_task(backend.run(), name=f"backend-{backend.name}"))
        self._tasks.append(asyncio.create_task(self._reap_sessions(), name="session-reaper"))
        waits = [b.first_attempt.wait() for b in self.backends.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.settings.startup_wait_s)
        self.started = True
        up = sum(b.is_up for b in self.backends.values())
        log.info("gateway started: %d of %d backends up", up, len(self.backends))

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.backends.values()), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.settings.limits is not None:
            await self.settings.limits.close()

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(
                min(
                    60.0,
                    self.settings.session_idle_timeout_s,
                    self.settings.sessions.max_lifetime_s,
                )
            )
            if reaped := self.sessions.reap():
                log.info("reaped %d idle sessions", reaped)
            self.parked.expire()
            for backend in self.backends.values():
                backend.reap_isolated()

    def view_roles(self, view: str | None) -> frozenset[str] | None:
        """The roles a virtual server requires of its callers (None: no requirement)."""
        for spec in self.plan.views:
            if spec.name == view:
                return spec.roles
        return None

    def catalog_for(self, view: str | None) -> catalog.Catalog:
        """The full catalog, or a virtual server's view of it (empty for an unknown name)."""
        if view is None:
            return self.catalog
        return self.views.get(view) or catalog.Catalog()

    def _backend_changed(self, backend: Backend) -> None:
        # A backend that went away stays listed through its grace period (calls fail fast).
        listings = [b.listing for b in self.backends.values() if b.listed and b.listing is not None]
        new = catalog.build(listings, self.settings.separator)
        old, self.catalog = self.catalog, new
        for spec in self.plan.views:
            self.views[spec.name] = build_view(new, spec)
        announced: set[str] = set()
        for kind in catalog.KINDS:
            if _items(old, kind) != _items(new, kind):
                announced.add(_CHANGED[kind])
        for method in sorted(announced):
            for session in self.sessions.values():
                if session.initialized:
                    self.delivery.push(session.notify, session.recipient, None, method, None)
            self.subscriptions.list_changed(method)

    def _backend_event(
        self, backend: Backend, method: str, params: bytes | None, owner: OwnerKey | None
    ) -> None:
        """A backend's notification outside any request; `owner` when it came from an isolated
        session, which concerns its owner alone (a session, or a principal's sessions)."""
        if method == methods.RESOURCE_UPDATED:
            self.subscriptions.resource_updated(backend.name, params, str(owner) if owner else None)
        elif method == methods.TASK_STATUS:
            task_id = _task_id(params)
            if task_id is None:
                self.delivery.unattributed(backend.name, method, "a status naming no task")
            else:
                self.tasks.on_status(
                    backend.name, task_id, str(owner) if owner else None, method, params
                )
        elif method == methods.MESSAGE:
            delivered = False
            # Only a client's own isolated session can say whose a log line outside any call
            # is; a shared connection's belongs to nobody provably and is dropped, never
            # broadcast to whoever asked for logs.
            for session_id in self._owner_sessions(owner) if owner is not None else ():
                session = self.sessions.peek(session_id)
                if session is None:
                    continue
                if log_wanted(params, session.log_level):
                    self.delivery.push(
                        session.notify, session.recipient, backend.name, method, params
                    )
                    delivered = True
            if owner is None:
                self.delivery.unattributed(backend.name, method, "a shared connection's log line")
            elif not delivered:
                log.debug("backend %r: a log line nobody of its owner wanted", backend.name)
        else:
            log.debug("backend %r: notification %s not routed", backend.name, method)

    def _unattributed(self, backend: Backend, method: str, why: str) -> None:
        self.delivery.unattributed(backend.name, method, why)

    def _owner_sessions(self, owner: OwnerKey) -> list[str]:
        if owner.kind == "session":
            return [owner.value]
        principal = owner.value if owner.kind == "principal" else None
        return [s.id for s in self.sessions.values() if s.principal == principal]

    def permits(self, identity: Identity | None, route: Route) -> bool:
        """The access decision the chain's policy makes, for traffic outside the chain."""
        rules = self.settings.access
        return rules is None or identity is None or rules.permits(identity, route)

    async def open_listen(
        self,
        key: str,
        push: Push,
        flags: frozenset[str],
        uris: list[object],
        identity: Identity | None,
        view: str | None,
        capabilities: Raw | None = None,
    ) -> list[str]:
        """A modern listen stream: each URI is routed and judged like `resources/subscribe`
        (denied and unknown look alike), within the per-stream and per-caller bounds."""
        wanted: list[tuple[str, Backend]] = []
        for uri in uris:
            if not isinstance(uri, str):
                continue
            route = self.router.listed_resource(uri, view)
            if route is None or not self.permits(identity, route):
                continue
            wanted.append((uri, self.backends[route.backend]))
        return await self.subscriptions.listen(key, push, flags, identity, wanted, capabilities)

    def _session_removed(self, session_id: str) -> None:
        for backend in self.backends.values():
            backend.release(session_id)
        task = asyncio.create_task(self.subscriptions.drop(session_id))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        backends = {
            name: {
                "state": b.status.state,
                "era": b.facts.era.value if b.facts else None,
                "protocolVersion": b.facts.version if b.facts else None,
                "error": b.status.last_error,
                "restarts": b.status.restarts,
                "isolatedSessions": b.isolated_sessions,
                **b.state_detail(),
            }
            for name, b in self.backends.items()
        }
        ready = self.started and any(b.is_up for b in self.backends.values())
        body: dict[str, Any] = {
            "ready": ready,
            "backends": backends,
            "undelivered": dict(self.delivery.dropped),
        }
        if self.settings.limits is not None:
            body["limits"] = self.settings.limits.status()
        return ready, body


def _redaction_hook(redactor: Redactor) -> OutboundHook:
    """Every client-bound notification and server->client request, redacted by the rules for
    notifications; one a `block` rule catches is dropped (a request: answered as refused)."""

    def hook(message: ClientMessage) -> ClientMessage | None:
        params = message.params
        if params is None:
            return message
        redacted = redactor.redact_notification(
            message.recipient.identity, message.backend, message.method, params
        )
        if redacted is None:
            return None
        return message if redacted is params else message.with_params(redacted)

    return hook


def _task_id(params: bytes | None) -> str | None:
    try:
        return frame.decode_str(frame.decode_object(params or b"{}")["taskId"])
    except (KeyError, frame.DecodeError, frame.ValidationError):
        return None


def _items(cat: catalog.Catalog, kind: str) -> tuple[bytes, ...]:
    return tuple(e.item for e in cat.entries[kind])
