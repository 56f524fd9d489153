"""Gateway: turns a compiled plan into backends, a catalog, chains and sessions; owns the
lifecycle. Listeners (HTTP, stdio) sit on top and only call `dispatcher` and `sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from switchyard.dispatcher import Dispatcher
from switchyard.downstream.session import SessionRegistry
from switchyard.forwarder import Forwarder
from switchyard.policies.base import PolicySpec
from switchyard.policies.request_log import RequestLog
from switchyard.protocol import methods
from switchyard.protocol.link import log_wanted
from switchyard.routing import catalog
from switchyard.routing.views import ViewSpec, build_view
from switchyard.upstream.backend import Backend, BackendSettings
from switchyard.upstream.pool import OwnerKey
from switchyard.wire import frame

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
    policies: tuple[PolicySpec, ...] = field(default_factory=lambda: (PolicySpec(RequestLog),))


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated configuration, compiled into each component's own settings."""

    gateway: GatewaySettings
    backends: tuple[BackendSettings, ...]
    views: tuple[ViewSpec, ...] = ()


class Gateway:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.settings = plan.gateway
        self.backends: dict[str, Backend] = {
            b.name: Backend(b, self._backend_changed, self._backend_event) for b in plan.backends
        }
        self.catalog = catalog.Catalog()
        self.sessions = SessionRegistry(
            self.settings.session_idle_timeout_s, self.settings.max_sessions
        )
        self.views: dict[str, catalog.Catalog] = {v.name: catalog.Catalog() for v in plan.views}
        self.forwarder = Forwarder(
            self.backends, self.catalog_for, self.settings.page_size, self.settings.instructions
        )
        self.dispatcher = Dispatcher(self.forwarder, self.settings.policies)
        self.subscriptions = self.forwarder.subscriptions
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

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.settings.session_idle_timeout_s))
            if reaped := self.sessions.reap():
                log.info("reaped %d idle sessions", reaped)
            self.forwarder.parked.expire()
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
        listings = [b.listing for b in self.backends.values() if b.is_up and b.listing is not None]
        new = catalog.build(listings, self.settings.separator)
        old, self.catalog = self.catalog, new
        for spec in self.plan.views:
            self.views[spec.name] = build_view(new, spec)
        announced: set[str] = set()
        for kind in catalog.KINDS:
            if _items(old, kind) != _items(new, kind):
                announced.add(_CHANGED[kind])
        for method in sorted(announced):
            self.sessions.broadcast(frame.notification_bytes(method, None))
            self.subscriptions.list_changed(method)

    def _backend_event(
        self, backend: Backend, method: str, params: bytes | None, owner: OwnerKey | None
    ) -> None:
        """A backend's notification outside any request; `owner` when it came from an isolated
        session, which concerns its owner alone (a session, or a principal's sessions)."""
        targets = self._owner_sessions(owner) if owner is not None else None
        if method == methods.RESOURCE_UPDATED:
            if targets is None:
                self.subscriptions.resource_updated(params, None)
            for session_id in targets or ():
                self.subscriptions.resource_updated(params, session_id)
        elif method == methods.TASK_STATUS:
            self.forwarder.task_status(params)
        elif method == methods.MESSAGE:
            if targets is not None:
                for session_id in targets:
                    session = self.sessions.peek(session_id)
                    if session is not None and log_wanted(params, session.log_level):
                        session.notify(method, params)
                return
            # A shared session's log line goes to the sessions that asked for logs.
            for session in self.sessions.values():
                if session.log_level is not None and log_wanted(params, session.log_level):
                    session.notify(method, params)
        else:
            log.debug("backend %r: notification %s not routed", backend.name, method)

    def _owner_sessions(self, owner: OwnerKey) -> list[str]:
        if owner.kind == "session":
            return [owner.value]
        principal = owner.value if owner.kind == "principal" else None
        return [s.id for s in self.sessions.values() if s.principal == principal]

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
            }
            for name, b in self.backends.items()
        }
        ready = self.started and any(b.is_up for b in self.backends.values())
        return ready, {"ready": ready, "backends": backends}


def _items(cat: catalog.Catalog, kind: str) -> tuple[bytes, ...]:
    return tuple(e.item for e in cat.entries[kind])
