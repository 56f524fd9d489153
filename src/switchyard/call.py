"""One request inside the gateway: who asks (`Identity`), over what (`RequestContext`), and
where it goes (`Call.route`, resolved before any policy runs).

The faces build the context, the dispatcher resolves the route, policies read both, and the
terminal forwards; nothing about the request is passed around beside this object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from switchyard.observability.tracing import Span
from switchyard.protocol.link import ClientLink
from switchyard.protocol.versions import Era
from switchyard.routing.catalog import Entry
from switchyard.routing.router import Route
from switchyard.wire import frame
from switchyard.wire.frame import Raw, Reply

Handler = Callable[["Call"], Awaitable[Reply]]
ListFilter = Callable[[Entry], bool]

API_KEYS: Final = "api_key"
"""The issuer of every API-key identity (the gateway's own key store)."""
ANONYMOUS: Final = "anonymous"
"""The principal key shared by every caller when authentication is off."""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller, however it proved who it is (API key or token)."""

    name: str
    """The subject as its issuer names it (an API key's principal, a token's `sub`)."""
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] | None = None
    """A token's scopes; None for credentials that carry none (API keys)."""
    via: str = "api_key"
    token: str | None = field(default=None, repr=False)
    """The verified bearer token itself, for exchanging it for a backend's (RFC 8693)."""
    issuer: str = API_KEYS
    """Who vouches for `name`: the key store, or a token's `iss`. Two issuers' `alice` are two
    principals."""

    @property
    def key(self) -> str:
        """The qualified principal: what sessions, isolation, tasks and quotas key on. An
        issuer never contains `#` (RFC 8414: no fragment; checked at load) nor is `api_key`, so
        the first `#` splits it unambiguously."""
        return f"{self.issuer}#{self.name}"


def selects_caller(
    who: Identity | None,
    principals: re.Pattern[str] | None,
    issuers: re.Pattern[str] | None,
    roles: frozenset[str] | None,
) -> bool:
    """Whether a rule's caller selectors (principal and issuer globs, roles; all that are set
    must hold) select `who`. A rule with none selects every caller; a rule with any never
    selects a caller nobody authenticated."""
    if principals is None and issuers is None and roles is None:
        return True
    if who is None:
        return False
    if issuers is not None and issuers.fullmatch(who.issuer) is None:
        return False
    if principals is not None and principals.fullmatch(who.name) is None:
        return False
    return roles is None or not roles.isdisjoint(who.roles)


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
    """The authenticated caller's qualified key (`Identity.key`), when authentication is on."""
    identity: Identity | None = None
    session_link: ClientLink | None = None
    """The client's session stream: for a backend reaching it between requests."""
    session_push: Callable[[str, bytes | None], None] | None = None
    """Queues a notification on the client's session stream (legacy sessions only)."""
    log_level: str | None = None
    """The log level the client asked for: set with `logging/setLevel` (legacy sessions), or
    the request's own `logLevel` opt-in (2026-07-28)."""
    view: str | None = None
    """The virtual server the request came through; None: the full gateway."""
    request_id: bytes | None = None
    """The request's JSON-RPC id as encoded on the wire (for the access log)."""
    traceparent: str | None = None
    """The HTTP request's W3C `traceparent` header (for the audit record's trace id)."""
    tracestate: str | None = None
    """The HTTP request's W3C `tracestate` header lines, joined (checked where it is used)."""

    @property
    def caller(self) -> str:
        """Who owns what this request leaves behind (tasks, parked calls): the principal, else
        the session, else the one anonymous principal."""
        return self.principal or self.session_id or ANONYMOUS


@dataclass(slots=True)
class Call:
    method: str
    params: Raw | None
    ctx: RequestContext
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    """Where the request goes; resolved before the chain (None: answered locally, or unknown)."""
    list_filters: list[ListFilter] | None = None
    denied: bool = False
    """A policy refused this call's target (or, for a list, hid an entry from it)."""
    reachable: Callable[[str], bool] | None = None
    """Which backends the caller may reach at all (None: every one): traffic fanned out to
    every backend (`logging/setLevel`, `tasks/list`) skips the others, never starting them."""
    recorded_arguments: Raw | None = None
    """The arguments as records (audit) may keep them, when redaction changed them; None:
    as received."""
    span: Span | None = None
    """This request's server span, when tracing is on: upstream calls are its children."""
    _fields: dict[str, Raw] | None = None

    @property
    def backend(self) -> str | None:
        return self.route.backend if self.route is not None else None

    @property
    def target(self) -> str | None:
        return self.route.public if self.route is not None else None

    def fields(self) -> dict[str, Raw]:
        """`params` decoded one level deep, once; values stay raw."""
        if self._fields is None:
            self._fields = frame.decode_object(self.params) if self.params is not None else {}
        return self._fields

    def reaches(self, backend: str) -> bool:
        return self.reachable is None or self.reachable(backend)

    def allowed(self, entry: Entry) -> bool:
        if self.list_filters is None or all(f(entry) for f in self.list_filters):
            return True
        self.denied = True
        return False

    def add_list_filter(self, allowed: ListFilter) -> None:
        """Hide list entries `allowed` rejects."""
        if self.list_filters is None:
            self.list_filters = []
        self.list_filters.append(allowed)
