"""One signature for every policy, composed once per method at startup.

Code before `await self.next(call)` runs on the way in, code after it on the way out (reverse
order for free); returning a `Reply` without calling `next` is a local answer. List results pass
every filter a policy attached to the call, so a denied item is absent, not merely uncallable.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from switchyard.protocol.link import ClientLink
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

Handler = Callable[["Call"], Awaitable[Reply]]
ListFilter = Callable[[Entry], bool]


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller, however it proved who it is (API key or token)."""

    name: str
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] | None = None
    """A token's scopes; None for credentials that carry none (API keys)."""
    via: str = "api_key"
    token: str | None = field(default=None, repr=False)
    """The verified bearer token itself, for exchanging it for a backend's (RFC 8693)."""


@dataclass(slots=True)
class RequestContext:
    """Who is asking and over what: everything a request carries, in either era."""

    era: Era
    version: str
    transport: str
    session_id: str | None = None
    client_capabilities: Raw | None = None
    link: ClientLink | None = None
    """The way back to this request's client: notifications and server->client requests."""
    principal: str | None = None
    """The authenticated caller's name, when authentication is on."""
    identity: Identity | None = None
    session_link: ClientLink | None = None
    """The client's session stream: for a backend reaching it between requests."""
    session_push: Callable[[str, bytes | None], None] | None = None
    """Queues a notification on the client's session stream (legacy sessions only)."""
    log_level: str | None = None
    """The level the client set with `logging/setLevel` (legacy sessions)."""
    view: str | None = None
    """The virtual server the request came through; None: the full gateway."""
    request_id: bytes | None = None
    """The request's JSON-RPC id as encoded on the wire (for the access log)."""


@dataclass(slots=True)
class Call:
    method: str
    params: Raw | None
    ctx: RequestContext
    started: float = field(default_factory=time.perf_counter)
    backend: str | None = None
    target: str | None = None
    list_filters: list[ListFilter] | None = None
    denied: bool = False
    """A filter refused an entry this call looked up (for a list: hid one)."""
    _fields: dict[str, Raw] | None = None

    def fields(self) -> dict[str, Raw]:
        """`params` decoded one level deep, once; values stay raw."""
        if self._fields is None:
            self._fields = frame.decode_object(self.params) if self.params is not None else {}
        return self._fields

    def allowed(self, entry: Entry) -> bool:
        if self.list_filters is None or all(f(entry) for f in self.list_filters):
            return True
        self.denied = True
        return False

    def add_list_filter(self, allowed: ListFilter) -> None:
        """Hide list entries `allowed` rejects (and make them uncallable by name)."""
        if self.list_filters is None:
            self.list_filters = []
        self.list_filters.append(allowed)


class Policy:
    """Base of every policy. Subclasses override `__call__` and may narrow `methods`."""

    methods: ClassVar[frozenset[str] | None] = None
    """The methods this policy applies to; None means every method."""

    def __init__(self, next_: Handler, settings: Any = None) -> None:
        self.next = next_
        self.settings = settings

    async def __call__(self, call: Call) -> Reply:
        return await self.next(call)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    cls: type[Policy]
    settings: Any = None

    def applies_to(self, method: str) -> bool:
        return self.cls.methods is None or method in self.cls.methods

    def bind(self, next_: Handler) -> Handler:
        return self.cls(next_, self.settings)


def build_chain(specs: Sequence[PolicySpec], method: str, terminal: Handler) -> Handler:
    handler = terminal
    for spec in reversed(specs):
        if spec.applies_to(method):
            handler = spec.bind(handler)
    return handler
