"""Who listens for what: legacy resource subscriptions per session, modern listen streams.

Upstream, each (backend, URI) is subscribed once however many clients want it, and
unsubscribed when the last one leaves; a listen stream's URIs reach each backend in one batch,
never one re-subscription per URI. Downstream, an update reaches only the clients subscribed to
its URI; list changes reach every listener that asked for them. Every subscriber and every
principal holds a bounded number of URIs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from switchyard.call import ANONYMOUS, Identity
from switchyard.delivery import Delivery, Push, Recipient
from switchyard.protocol import codes, methods
from switchyard.storage.counters import Counters, MemoryCounters
from switchyard.upstream.backend import Backend
from switchyard.upstream.outbound import Caller, Outbound
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

log = logging.getLogger("switchyard.subscriptions")

MAX_URIS_PER_SUBSCRIBER: Final = 1024
MAX_URIS_PER_PRINCIPAL: Final = 4096

_LIST_FLAGS = {
    methods.TOOLS_CHANGED: "toolsListChanged",
    methods.PROMPTS_CHANGED: "promptsListChanged",
    methods.RESOURCES_CHANGED: "resourcesListChanged",
}


@dataclass(slots=True)
class _Subscriber:
    push: Push
    principal: str | None = None
    identity: Identity | None = None
    uris: set[str] = field(default_factory=set)
    flags: frozenset[str] = frozenset()
    isolated: dict[str, str] = field(default_factory=dict)
    """URI -> backend, for subscriptions held by the client's own isolated upstream session."""
    owners: set[str] = field(default_factory=set)
    """The isolated upstream sessions (owner keys) holding those subscriptions."""

    def recipient(self, key: str) -> Recipient:
        return Recipient(self.principal or key or ANONYMOUS, self.identity)


class SubscriptionStore(Protocol):
    """Which subscribers want each URI on a shared upstream connection, and which backend holds
    its upstream subscription: what decides when to subscribe and unsubscribe upstream. (A
    subscriber's stream stays with the process its client is connected to.)"""

    def join(self, uri: str, key: str, backend: str) -> bool:
        """`key` wants `uri` of `backend`; True when it is the first, so upstream must hear."""
        ...

    def leave(self, uri: str, key: str) -> bool:
        """`key` no longer wants `uri`; True when it was the last, so upstream must hear."""
        ...

    def wanting(self, uri: str) -> list[str]: ...

    def holder(self, uri: str) -> str | None:
        """The backend holding the upstream subscription to `uri`."""
        ...


class MemorySubscriptionStore:
    def __init__(self) -> None:
        self._by_uri: dict[str, set[str]] = {}
        self._holder: dict[str, str] = {}

    def join(self, uri: str, key: str, backend: str) -> bool:
        keys = self._by_uri.setdefault(uri, set())
        first = not keys
        if first:
            self._holder[uri] = backend
        keys.add(key)
        return first

    def leave(self, uri: str, key: str) -> bool:
        keys = self._by_uri.get(uri)
        if keys is None or key not in keys:
            return False
        keys.discard(key)
        if keys:
            return False
        del self._by_uri[uri]
        self._holder.pop(uri, None)
        return True

    def wanting(self, uri: str) -> list[str]:
        return list(self._by_uri.get(uri, ()))

    def holder(self, uri: str) -> str | None:
        return self._holder.get(uri)


class Subscriptions:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        delivery: Delivery | None = None,
        store: SubscriptionStore | None = None,
        per_principal: Counters | None = None,
    ) -> None:
        self._backends = backends
        self.delivery = delivery if delivery is not None else Delivery()
        self._subscribers: dict[str, _Subscriber] = {}
        self._store: SubscriptionStore = store if store is not None else MemorySubscriptionStore()
        self._per_principal: Counters = (
            per_principal if per_principal is not None else MemoryCounters()
        )

    def _room(self, subscriber: _Subscriber) -> bool:
        if len(subscriber.uris) >= MAX_URIS_PER_SUBSCRIBER:
            return False
        return self._per_principal.get(subscriber.principal or "") < MAX_URIS_PER_PRINCIPAL

    def _hold(self, subscriber: _Subscriber, uri: str) -> None:
        subscriber.uris.add(uri)
        self._per_principal.add(subscriber.principal or "")

    def _release(self, subscriber: _Subscriber, uri: str) -> None:
        if uri not in subscriber.uris:
            return
        subscriber.uris.discard(uri)
        self._per_principal.release(subscriber.principal or "")

    async def add(
        self,
        key: str,
        push: Push,
        uri: str,
        backend: Backend,
        out: Outbound,
        identity: Identity | None = None,
    ) -> Reply:
        """Subscribe session `key` to `uri`. `out` is the caller's own `resources/subscribe`:
        on an isolating backend it goes to the caller's session (opening it with the caller's
        capabilities and session stream, like any first request would)."""
        subscriber = self._subscribers.setdefault(key, _Subscriber(push, out.principal, identity))
        if uri in subscriber.uris:
            return Reply(result=b"{}")
        if not self._room(subscriber):
            return _too_many()
        self._hold(subscriber, uri)
        owner = backend.owner_for(out.session, out.principal) if backend.isolates() else None
        if owner is not None:
            # The client's own upstream session subscribes; its updates come back to it alone.
            subscriber.isolated[uri] = backend.name
            subscriber.owners.add(str(owner))
            reply = await backend.request(out)
            return reply if reply.error is not None else Reply(result=b"{}")
        await self._upstream(backend, [uri], key, on=True)
        return Reply(result=b"{}")

    async def _upstream(self, backend: Backend, uris: Iterable[str], key: str, on: bool) -> None:
        """Subscribe the shared connection to whichever of `uris` nobody wanted before (or
        unsubscribe those nobody wants any more), in one batch."""
        store = self._store
        if on:
            changed = [uri for uri in uris if store.join(uri, key, backend.name)]
        else:
            changed = [uri for uri in uris if store.leave(uri, key)]
        if changed:
            await backend.subscribe_many(changed, on)

    async def remove(self, key: str, uri: str) -> None:
        subscriber = self._subscribers.get(key)
        if subscriber is None:
            return
        self._release(subscriber, uri)
        isolated = subscriber.isolated.pop(uri, None)
        if isolated is not None:
            backend = self._backends.get(isolated)
            if backend is not None:
                # Only the session that subscribed hears it; none is opened just to unsubscribe.
                await backend.request_if_open(
                    Outbound(
                        methods.UNSUBSCRIBE,
                        frame.encode({"uri": uri}),
                        caller=Caller(subscriber.principal),
                        session=key,
                    )
                )
            return
        backend = self._backends.get(self._store.holder(uri) or "")
        if backend is not None:
            await self._upstream(backend, [uri], key, on=False)

    async def listen(
        self,
        key: str,
        push: Push,
        flags: frozenset[str],
        identity: Identity | None = None,
        uris: Iterable[tuple[str, Backend]] = (),
        capabilities: Raw | None = None,
    ) -> list[str]:
        """Register a modern listen stream and the URIs it may watch (already routed and
        allowed); returns those accepted, within the per-stream and per-principal bounds."""
        principal = identity.key if identity is not None else None
        subscriber = _Subscriber(push, principal, identity, flags=flags)
        self._subscribers[key] = subscriber
        by_backend: dict[str, list[str]] = {}
        accepted: list[str] = []
        for uri, backend in uris:
            if uri in subscriber.uris or not backend.supports_subscribe:
                continue
            if not self._room(subscriber):
                break
            owner = backend.owner_for(None, principal) if backend.isolates() else None
            if owner is not None:
                # The caller's own upstream session is where its calls change things: only it
                # can tell of those changes.
                reply = await backend.request(
                    Outbound(
                        methods.SUBSCRIBE,
                        frame.encode({"uri": uri}),
                        caller=Caller(principal),
                        client_capabilities=capabilities,
                    )
                )
                if reply.error is not None:
                    continue
                subscriber.isolated[uri] = backend.name
                subscriber.owners.add(str(owner))
            else:
                by_backend.setdefault(backend.name, []).append(uri)
            self._hold(subscriber, uri)
            accepted.append(uri)
        for name, wanted in by_backend.items():
            await self._upstream(self._backends[name], wanted, key, on=True)
        return accepted

    async def drop(self, key: str) -> None:
        """A session or listen stream is gone: forget it and what only it wanted."""
        subscriber = self._subscribers.get(key)
        if subscriber is None:
            return
        shared: dict[str, list[str]] = {}
        for uri in list(subscriber.uris):
            if uri in subscriber.isolated:
                await self.remove(key, uri)
                continue
            self._release(subscriber, uri)
            holder = self._store.holder(uri)
            if holder is not None:
                shared.setdefault(holder, []).append(uri)
        for name, uris in shared.items():
            backend = self._backends.get(name)
            if backend is not None:
                await self._upstream(backend, uris, key, on=False)
        self._subscribers.pop(key, None)

    def resource_updated(
        self, backend: str, params: bytes | None, owner: str | None = None
    ) -> None:
        """Deliver `backend`'s update to the subscribers of its URI; from an isolated session
        (`owner`, its owner key), to the subscribers that subscribed through that session
        only."""
        try:
            uri: Any = frame.decode_any(frame.decode_object(params)["uri"]) if params else None
        except (frame.DecodeError, frame.ValidationError, KeyError):
            return
        if owner is not None:
            # From an isolated session: only the subscribers it holds subscriptions for.
            for key, held in self._subscribers.items():
                if owner in held.owners and held.isolated.get(uri) == backend:
                    self._deliver(key, held, backend, methods.RESOURCE_UPDATED, params)
            return
        if not isinstance(uri, str) or self._store.holder(uri) != backend:
            return  # a backend speaks only for the subscriptions it holds
        for key in self._store.wanting(uri):
            subscriber = self._subscribers.get(key)
            if subscriber is not None:
                self._deliver(key, subscriber, backend, methods.RESOURCE_UPDATED, params)

    def list_changed(self, method: str) -> None:
        flag = _LIST_FLAGS.get(method)
        for key, subscriber in self._subscribers.items():
            if flag in subscriber.flags:
                self._deliver(key, subscriber, None, method, None)

    def _deliver(
        self,
        key: str,
        subscriber: _Subscriber,
        backend: str | None,
        method: str,
        params: bytes | None,
    ) -> None:
        recipient = subscriber.recipient(key)
        self.delivery.push(subscriber.push, recipient, backend, method, params)


def _too_many() -> Reply:
    return frame.error_reply(
        codes.QUOTA_EXCEEDED,
        f"too many resource subscriptions (at most {MAX_URIS_PER_SUBSCRIBER} per session and "
        f"{MAX_URIS_PER_PRINCIPAL} per caller)",
        {"source": "gateway"},
    )
