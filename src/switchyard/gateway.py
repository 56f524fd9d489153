"""Gateway: turns a compiled plan into backends, a catalog, chains and sessions; owns the
lifecycle. Listeners (HTTP, stdio) sit on top and only call `dispatcher` and `sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from switchyard.audit.gate import audited
from switchyard.audit.record import AuditEvent
from switchyard.audit.settings import AuditSettings
from switchyard.audit.writer import AuditWriter
from switchyard.bridge import ParkedCalls
from switchyard.call import Identity, RequestContext
from switchyard.caller_lists import CallerLists, private_kinds
from switchyard.delivery import ClientMessage, Delivery, OutboundHook, Push
from switchyard.dispatcher import Dispatcher
from switchyard.forwarder import Forwarder
from switchyard.observability.metrics import metrics
from switchyard.observability.settings import ObservabilitySettings
from switchyard.observability.tracing import tracer
from switchyard.pins import events as pin_events
from switchyard.pins.events import PinEvent
from switchyard.pins.guard import PinGuard
from switchyard.pins.settings import PinningSettings
from switchyard.policies.access import AccessRules
from switchyard.policies.approvals import Approvals
from switchyard.policies.base import PolicySpec
from switchyard.policies.rate_limits import Limiter
from switchyard.policies.request_log import RequestLog
from switchyard.policies.result_cache import ResultCache, ResultCaching
from switchyard.protocol import methods
from switchyard.protocol.link import log_wanted
from switchyard.protocol.versions import Era
from switchyard.redaction.engine import Redactor
from switchyard.routing import catalog, freshness
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
    approvals: Approvals | None = None
    """The approval gate's tickets, events and webhook, when `approvals:` is enabled."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What a reload did to the backends, by name."""

    added: tuple[str, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]
    kept: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated configuration, compiled into each component's own settings."""

    gateway: GatewaySettings
    backends: tuple[BackendSettings, ...]
    views: tuple[ViewSpec, ...] = ()
    storage: StorageSettings = field(default_factory=StorageSettings)
    pinning: PinningSettings = field(default_factory=PinningSettings.disabled)
    """Off unless configured: a plan built in code pins nothing (the config file's default,
    `tofu`, is applied when it is compiled)."""
    audit: AuditSettings | None = None
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)


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
        self.forwarder.freshen = self._freshen_lists
        self.forwarder.list_hints = self._list_hints
        self.router = Router(self.catalog_for, self.forwarder.sole_server)
        self.audit = AuditWriter(plan.audit, plan.storage) if plan.audit is not None else None
        self.dispatcher = Dispatcher(self.forwarder, self._chain(self.settings), self.router)
        self.sessions.on_removed = self._session_removed
        self.pins = (
            PinGuard(plan.pinning, plan.storage, self.settings.separator)
            if plan.pinning.enabled
            else None
        )
        for backend in self.backends.values():
            self._watch_sessions(backend)
        self._trusted: list[catalog.Listing] = []
        """What the pin check let through of every backend's listing, when pinning is on."""
        self._pins_stale = False
        self._pins_task: asyncio.Task[None] | None = None
        self._pins_idle = asyncio.Event()
        self._pins_idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.started = False
        self.public_base: str | None = None
        """Where clients reach this gateway over HTTP (set by the HTTP listener)."""
        self._pin_events: Callable[[PinEvent], None] | None = None
        """Records pin events in the audit trail while this gateway runs."""
        self._started = asyncio.Event()
        self._observing = False
        self.caller_lists: CallerLists | None = None
        """Each caller's own catalog, when some backend lists per caller (token_exchange)."""
        self._adopt_caller_lists()

    def _adopt_caller_lists(self) -> None:
        """Per-caller lists when some backend acts on each caller's identity; otherwise none,
        and the request path stays exactly as it was."""
        old = self.caller_lists
        if old is not None:
            old.close()
        lists = None
        if CallerLists.needed(self.backends.values()):
            pins = self.pins
            lists = CallerLists(
                self.backends,
                self.settings.separator,
                self.plan.views,
                self._client_listings,
                self.router,
                self.forwarder.sole_server,
                pins.caller_view if pins is not None else None,
            )
        self.caller_lists = lists
        self.forwarder.caller_catalog = lists.catalog if lists is not None else None
        self.dispatcher.caller_router = lists.router if lists is not None else None

    def _client_listings(self) -> list[catalog.Listing]:
        """What the shared catalog is built from (pin-checked when pinning is on)."""
        return list(self._trusted) if self.pins is not None else self._listings()

    async def until_started(self) -> None:
        """Wait for `start` to finish (it is bounded by `startup_wait`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started.wait(), self.settings.startup_wait_s + 1.0)

    async def start(self) -> None:
        """Start every backend; wait (bounded) until each has made its first attempt."""
        self._observe()
        if self.audit is not None:
            await self.audit.start()
            self._pin_events = pin_events.audit_sink(self.audit.submit)
            pin_events.sinks.append(self._pin_events)
        self._tasks.append(asyncio.create_task(self._reap_sessions(), name="session-reaper"))
        self._adopt_approvals(self.settings.approvals)
        if self.pins is not None:
            self._tasks.append(asyncio.create_task(self._poll_pins(), name="pin-poll"))
        await self._start_backends(list(self.backends.values()), self.settings.startup_wait_s)
        if self.pins is not None:
            with contextlib.suppress(TimeoutError):
                # The first listings are shown once checked against their pins.
                await asyncio.wait_for(self._pins_idle.wait(), self.settings.startup_wait_s)
        self.started = True
        self._started.set()
        up = sum(b.is_up for b in self.backends.values())
        log.info("gateway started: %d of %d backends up", up, len(self.backends))

    def _watch_sessions(self, backend: Backend) -> None:
        """With pinning on, a client's own session of a backend must list what the catalog
        was built from (a backend may show each session something else)."""
        if self.pins is not None:
            backend.session_check = self.pins.session_view

    def _observe(self) -> None:
        """Turn on what the plan observes: metrics and tracing are process-wide (one gateway
        per process), recorded by the chain's request log and the forwarder. On a reload too:
        a gateway that observed anything follows the new plan, turning either off."""
        observed = self.plan.observability
        if self._observing or observed.metrics or observed.tracing.enabled:
            self._observing = True
            metrics.enabled = observed.metrics
            tracer.configure(observed.tracing)

    def _chain(self, settings: GatewaySettings) -> tuple[PolicySpec, ...]:
        """The policies in the order they run: the audit gate wrapped around them when on."""
        if self.audit is None:
            return settings.policies
        return audited(settings.policies, self.audit)

    async def _start_backends(self, backends: list[Backend], wait_s: float) -> None:
        for backend in backends:
            self._tasks.append(asyncio.create_task(backend.run(), name=f"backend-{backend.name}"))
        waits = [b.first_attempt.wait() for b in backends]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), wait_s)

    async def apply(self, plan: Plan, restart: frozenset[str] = frozenset()) -> Changes:
        """Serve `plan` from now on (a config reload). Backends whose settings did not change
        keep running untouched; changed and added ones are started first (bounded by
        `startup_wait`), then everything is swapped in one step of the event loop, so a request
        sees either the old configuration or the new one. Replaced and removed backends finish
        the requests they have in flight (up to their `max_request_time`) before they stop.
        Sessions whose lists may have changed get `list_changed`. Backends named in `restart`
        are replaced even when their settings did not change."""
        current = dict(self.backends)
        wanted = {b.name: b for b in plan.backends}
        kept = {
            n
            for n, s in wanted.items()
            if n in current and current[n].settings == s and n not in restart
        }
        fresh = {
            n: Backend(s, self._backend_changed, self._backend_event, self._unattributed)
            for n, s in wanted.items()
            if n not in kept
        }
        for name in kept:
            # What a kept backend listed is listed again when a client next asks.
            current[name].invalidate_listing()
        for name, backend in fresh.items():
            self._watch_sessions(backend)
            if name in current:
                # Client subscriptions carry over: the replacement renews them once up.
                backend.subscribed |= current[name].subscribed
        await self._start_backends(list(fresh.values()), plan.gateway.startup_wait_s)
        old_settings = self.settings
        policy_changed = (
            old_settings.access is not plan.gateway.access
            or old_settings.redaction is not plan.gateway.redaction
            or old_settings.policies != plan.gateway.policies
        )
        # -- the swap: no await from here to the end of the block --------------------------
        self.backends.clear()
        self.backends.update({n: current[n] if n in kept else fresh[n] for n in wanted})
        self.plan = plan
        self.settings = plan.gateway
        access = plan.gateway.access
        self.delivery.set_may_use(access.may_reach if access is not None else None)
        redactor = plan.gateway.redaction
        self.delivery.set_hook(
            "redaction", _redaction_hook(redactor) if redactor is not None else None
        )
        self.forwarder.page_size = plan.gateway.page_size
        self.forwarder.instructions = plan.gateway.instructions
        self.dispatcher = Dispatcher(self.forwarder, self._chain(plan.gateway), self.router)
        # Every principal lists again under the new configuration.
        self._adopt_caller_lists()
        # Metrics and tracing as the new plan says, for every request from here on.
        self._observe()
        if self.pins is None:
            self._rebuild(self._listings(), announce_all=policy_changed)
        else:
            # What stays trusted shows at once; new backends' listings once checked.
            live = set(self.backends)
            self._rebuild([t for t in self._trusted if t.backend in live], policy_changed)
            self._check_pins()
        # -- end of the swap ---------------------------------------------------------------
        retired = [b for n, b in current.items() if n not in kept]
        old_limits = old_settings.limits
        closing = (
            old_limits if old_limits is not None and old_limits is not plan.gateway.limits else None
        )
        old_gate = old_settings.approvals
        if old_gate is not None and old_gate is not plan.gateway.approvals:
            self._side_task(old_gate.close(), "retire-approvals")
        self._adopt_approvals(plan.gateway.approvals)
        task = asyncio.create_task(self._retire(retired, closing), name="retire-backends")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return Changes(
            added=tuple(sorted(n for n in fresh if n not in current)),
            replaced=tuple(sorted(n for n in fresh if n in current)),
            removed=tuple(sorted(n for n in current if n not in wanted)),
            kept=tuple(sorted(kept)),
        )

    async def _retire(self, backends: list[Backend], limits: Limiter | None) -> None:
        """Stop backends nothing routes to any more, once their requests in flight are done."""

        async def drained(backend: Backend) -> None:
            deadline = asyncio.get_running_loop().time() + backend.settings.max_request_s
            # Polled: a backend has no event for "idle", and this runs once per reload.
            while backend.in_flight and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await backend.stop()

        await asyncio.gather(*(drained(b) for b in backends), return_exceptions=True)
        if limits is not None:
            await limits.close()

    async def stop(self) -> None:
        for task in list(self._side_tasks):
            task.cancel()
        if self.caller_lists is not None:
            self.caller_lists.close()
        await asyncio.gather(*(b.stop() for b in self.backends.values()), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.settings.limits is not None:
            await self.settings.limits.close()
        if self.settings.approvals is not None:
            await self.settings.approvals.close()
        if self._pins_task is not None:
            self._pins_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pins_task
        if self.pins is not None:
            await self.pins.aclose()
        if self._pin_events is not None:
            pin_events.sinks.remove(self._pin_events)
            self._pin_events = None
        if self.audit is not None:
            # Last: the calls that ended while backends stopped are recorded too.
            await self.audit.stop()
        if self._observing:
            self._observing = False
            metrics.enabled = False
            tracer.close()

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

    def _adopt_approvals(self, approvals: Approvals | None) -> None:
        """Approval events go to the audit trail; the approval page is linked at this
        gateway's address unless `approvals.public_url` says otherwise."""
        if approvals is None or approvals.sinks:
            return
        if self.audit is not None:
            submit = self.audit.submit
            approvals.sinks.append(
                lambda fields: submit(AuditEvent("approval", time.time(), fields))
            )
        if approvals.base_url is None:
            approvals.base_url = self.public_base
        approvals.start()

    def _side_task(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def view_roles(self, view: str | None) -> frozenset[str] | None:
        """The roles a virtual server requires of its callers (None: no requirement)."""
        for spec in self.plan.views:
            if spec.name == view:
                return spec.roles
        return None

    async def router_for(self, identity: Identity | None, view: str | None) -> Router:
        """The router over what this caller is shown: their own catalog where some backend
        lists per caller (caller_lists.py), else the one every caller shares."""
        lists = self.caller_lists
        if lists is None:
            return self.router
        return await lists.router(RequestContext(Era.MODERN, "", "", identity=identity, view=view))

    def catalog_for(self, view: str | None) -> catalog.Catalog:
        """The full catalog, or a virtual server's view of it (empty for an unknown name)."""
        if view is None:
            return self.catalog
        return self.views.get(view) or catalog.Catalog()

    def _backend_changed(self, backend: Backend) -> None:
        if self.caller_lists is not None:
            self._caller_lists_changed(self.caller_lists, backend)
        if self.pins is None:
            self._rebuild(self._listings())
            return
        self._check_pins()

    def _caller_lists_changed(self, lists: CallerLists, backend: Backend) -> None:
        """A backend listing per caller listed again (list_changed, or it came or went):
        every principal lists it again, and their sessions hear that their lists changed."""
        principals = lists.invalidate(backend.name)
        if not principals:
            return
        wanted = sorted({_CHANGED[k] for k in private_kinds(backend.listing) or catalog.KINDS})
        for session in self.sessions.values():
            if session.initialized and session.principal in principals:
                for method in wanted:
                    self.delivery.push(session.notify, session.recipient, None, method, None)
        for method in wanted:
            self.subscriptions.list_changed(method)

    async def _freshen_lists(self, kind: str) -> None:
        """Before a `kind` list is served: list again every backend whose own lifetime for it
        has run out (concurrently; each backend shares one re-listing among its callers). A
        kind listed per caller is listed again per caller instead (caller_lists.py)."""
        now = time.monotonic()
        lists = self.caller_lists
        due = [
            b
            for b in self.backends.values()
            if b.listed
            and b.expired(kind, now)
            and (lists is None or not lists.per_caller_kind(b, kind))
        ]
        if not due:
            return
        await asyncio.gather(*(b.freshen(kind) for b in due))
        if self.pins is not None:
            with contextlib.suppress(TimeoutError):
                # A changed listing shows once checked against its pins.
                await asyncio.wait_for(self._pins_idle.wait(), self.settings.startup_wait_s)

    def _list_hints(self, view: str | None, kind: str) -> tuple[int, bool]:
        """(`ttlMs`, public) of the `kind` list a view serves: every backend that offers the
        kind is a part of the full list; a virtual server's parts are the backends it shows."""
        shown = None if view is None else {e.backend for e in self.catalog_for(view).entries[kind]}
        parts = [
            b.listing.fresh[kind]
            for b in self.backends.values()
            if b.listed
            and b.listing is not None
            and kind in b.listing.fresh
            and (shown is None or b.name in shown)
        ]
        return freshness.aggregate(parts, time.monotonic())

    def _listings(self) -> list[catalog.Listing]:
        # A backend that went away stays listed through its grace period (calls fail fast).
        return [b.listing for b in self.backends.values() if b.listed and b.listing is not None]

    def _check_pins(self) -> None:
        """Check every listing against its pins again, then rebuild; one check at a time, and
        a change arriving meanwhile gets one more."""
        self._pins_stale = True
        self._pins_idle.clear()
        if self._pins_task is None or self._pins_task.done():
            self._pins_task = asyncio.create_task(self._settle_pins(), name="pin-check")

    async def _settle_pins(self) -> None:
        assert self.pins is not None
        try:
            while self._pins_stale:
                self._pins_stale = False
                try:
                    self._trusted = await self.pins.visible(self._listings())
                except Exception:
                    log.exception("pin check failed; nothing new is shown until it succeeds")
                    live = {listing.backend for listing in self._listings()}
                    self._trusted = [t for t in self._trusted if t.backend in live]
                self._rebuild(self._trusted)
        finally:
            self._pins_idle.set()

    async def _poll_pins(self) -> None:
        """Approvals and rejections are made elsewhere (the CLI, other processes): notice them."""
        assert self.pins is not None
        while True:
            await asyncio.sleep(self.pins.settings.poll_s)
            try:
                if await self.pins.changed():
                    self._check_pins()
            except Exception:
                log.exception("pin store poll failed")

    def _rebuild(self, listings: list[catalog.Listing], announce_all: bool = False) -> None:
        """Rebuild the catalog and the views from `listings` (checked against their pins when
        pinning is on); tell sessions whose lists changed (every session, when `announce_all`:
        new access rules or policies)."""
        new = catalog.build(listings, self.settings.separator)
        old, self.catalog = self.catalog, new
        if self.caller_lists is not None:
            self.caller_lists.shared_changed()
        old_views = self.views
        self.views = {spec.name: build_view(new, spec) for spec in self.plan.views}
        announced: set[str] = set()
        for kind in catalog.KINDS:
            if announce_all or _items(old, kind) != _items(new, kind):
                announced.add(_CHANGED[kind])
        per_view: dict[str, set[str]] = {}
        for name, view in self.views.items():
            before = old_views.get(name) or catalog.Catalog()
            per_view[name] = {
                _CHANGED[kind]
                for kind in catalog.KINDS
                if _items(before, kind) != _items(view, kind)
            }
        for session in self.sessions.values():
            if not session.initialized:
                continue
            for method in sorted(announced | per_view.get(session.view or "", set())):
                self.delivery.push(session.notify, session.recipient, None, method, None)
        for method in sorted(announced.union(*per_view.values())):
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
        router = await self.router_for(identity, view)
        for uri in uris:
            if not isinstance(uri, str):
                continue
            route = router.listed_resource(uri, view)
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

    def result_cache(self) -> ResultCache | None:
        """The result cache of the running configuration, when `cache:` has rules."""
        return _result_cache(self.settings.policies)

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
        status = "ready" if ready else "starting" if not self.started else "unavailable"
        body: dict[str, Any] = {
            "ready": ready,
            "status": status,
            "backends": backends,
            "undelivered": dict(self.delivery.dropped),
        }
        if self.settings.limits is not None:
            body["limits"] = self.settings.limits.status()
        results = self.result_cache()
        if results is not None:
            body["resultCache"] = results.status()
        if self.pins is not None:
            body["pins"] = self.pins.status()
        if self.caller_lists is not None:
            body["callerLists"] = self.caller_lists.status()
        audit = self.audit
        if audit is not None:
            unavailable = audit.unavailable()
            # Failing closed, a gateway that cannot record serves no call: not ready.
            if unavailable is not None and audit.fail_closed:
                ready = body["ready"] = False
            body["audit"] = {
                "writer": audit.writer_id,
                "recording": unavailable is None,
                "pending": audit.pending,
                "dropped": audit.dropped,
            }
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


def _result_cache(policies: tuple[PolicySpec, ...]) -> ResultCache | None:
    for spec in policies:
        if spec.cls is ResultCaching:
            settings: ResultCache = spec.settings
            return settings
    return None


def _task_id(params: bytes | None) -> str | None:
    try:
        return frame.decode_str(frame.decode_object(params or b"{}")["taskId"])
    except (KeyError, frame.DecodeError, frame.ValidationError):
        return None


def _items(cat: catalog.Catalog, kind: str) -> tuple[bytes, ...]:
    return tuple(e.item for e in cat.entries[kind])
