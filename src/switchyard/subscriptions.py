"""Who listens for what: legacy resource subscriptions per session, modern listen streams.

Upstream, each (backend, URI) is subscribed once however many clients want it, and
unsubscribed when the last one leaves. Downstream, an update reaches only the clients
subscribed to its URI; list changes reach every listener that asked for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchyard.protocol import methods
from switchyard.upstream.backend import Backend
from switchyard.upstream.outbound import Caller, Outbound
from switchyard.wire import frame

log = logging.getLogger("switchyard.subscriptions")

# Delivers one notification (method, raw params) to one subscriber; must not block.
Push = Callable[[str, bytes | None], None]

_LIST_FLAGS = {
    methods.TOOLS_CHANGED: "toolsListChanged",
    methods.PROMPTS_CHANGED: "promptsListChanged",
    methods.RESOURCES_CHANGED: "resourcesListChanged",
}


@dataclass(slots=True)
class _Subscriber:
    push: Push
    uris: set[str] = field(default_factory=set)
    flags: frozenset[str] = frozenset()
    isolated: dict[str, str] = field(default_factory=dict)
    """URI -> backend, for subscriptions held by the client's own isolated upstream session."""
    principal: str | None = None


class Subscriptions:
    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self._backends = backends
        self._subscribers: dict[str, _Subscriber] = {}
        self._by_uri: dict[str, set[str]] = {}
        self._owner: dict[str, str] = {}

    async def add(
        self, key: str, push: Push, uri: str, backend: Backend, principal: str | None = None
    ) -> None:
        subscriber = self._subscribers.setdefault(key, _Subscriber(push))
        subscriber.uris.add(uri)
        if backend.isolates():
            # The client's own upstream session subscribes; its updates come back to it alone.
            subscriber.isolated[uri] = backend.name
            subscriber.principal = principal
            await backend.request(
                Outbound(
                    methods.SUBSCRIBE,
                    frame.encode({"uri": uri}),
                    caller=Caller(principal),
                    session=key,
                )
            )
            return
        keys = self._by_uri.setdefault(uri, set())
        first = not keys
        keys.add(key)
        self._owner[uri] = backend.name
        if first:
            await backend.subscribe(uri, True)

    async def remove(self, key: str, uri: str) -> None:
        subscriber = self._subscribers.get(key)
        if subscriber is not None:
            subscriber.uris.discard(uri)
            isolated = subscriber.isolated.pop(uri, None)
            backend = self._backends.get(isolated) if isolated else None
            if backend is not None:
                # To the session that subscribed, if it is still open; never a new one.
                await backend.request_if_open(
                    Outbound(
                        methods.UNSUBSCRIBE,
                        frame.encode({"uri": uri}),
                        caller=Caller(subscriber.principal),
                        session=key,
                    )
                )
                return
        keys = self._by_uri.get(uri)
        if keys is None or key not in keys:
            return
        keys.discard(key)
        if not keys:
            del self._by_uri[uri]
            backend = self._backends.get(self._owner.pop(uri, ""))
            if backend is not None:
                await backend.subscribe(uri, False)

    def listen(self, key: str, push: Push, flags: frozenset[str]) -> None:
        self._subscribers[key] = _Subscriber(push, flags=flags)

    async def drop(self, key: str) -> None:
        """A session or listen stream is gone: forget it and what only it wanted."""
        subscriber = self._subscribers.pop(key, None)
        if subscriber is None:
            return
        for uri in list(subscriber.uris):
            await self.remove(key, uri)

    def resource_updated(self, params: bytes | None, owner: str | None = None) -> None:
        """Deliver an update to the subscribers of its URI; from an isolated session (`owner`),
        to that session's client only."""
        try:
            uri: Any = frame.decode_any(frame.decode_object(params)["uri"]) if params else None
        except (frame.DecodeError, frame.ValidationError, KeyError):
            return
        if owner is not None:
            subscriber = self._subscribers.get(owner)
            if subscriber is not None and uri in subscriber.isolated:
                subscriber.push(methods.RESOURCE_UPDATED, params)
            return
        for key in self._by_uri.get(uri, ()) if isinstance(uri, str) else ():
            subscriber = self._subscribers.get(key)
            if subscriber is not None:
                subscriber.push(methods.RESOURCE_UPDATED, params)

    def list_changed(self, method: str) -> None:
        flag = _LIST_FLAGS.get(method)
        for subscriber in self._subscribers.values():
            if flag in subscriber.flags:
                subscriber.push(method, None)
