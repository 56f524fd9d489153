"""One request on its way to a backend: everything the upstream side needs to know about it.

A single object travels from the terminal handler through the backend (isolation, in-flight
limit) to the connection (id, deadline, credentials, the way back), instead of the same clump of
arguments being unpacked at every door.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.protocol.link import ClientLink
from switchyard.wire.frame import Raw


@dataclass(frozen=True, slots=True)
class Caller:
    """On whose behalf a request goes upstream."""

    principal: str | None
    """The qualified principal key; None for an anonymous caller (authentication off)."""
    token: str | None = field(default=None, repr=False)
    """The caller's verified bearer token, for RFC 8693 exchange; None when the caller proved
    who it is some other way (an API key) and so has nothing a backend could accept."""


@dataclass(slots=True)
class Outbound:
    method: str
    params: bytes | None
    name: str | None = None
    """The routed name (tool, prompt) in the backend's own terms: the `Mcp-Name` header."""
    extra_headers: tuple[tuple[str, str], ...] = ()
    """`Mcp-Param-*` headers for a 2026-07-28 HTTP backend, already encoded (a value that is
    not plain ASCII is carried base64); never sent to a legacy backend."""
    trace_headers: tuple[tuple[str, str], ...] = ()
    """W3C trace context (`traceparent`, `tracestate`) for an HTTP backend, in either era."""
    link: ClientLink | None = None
    """The way back to the client for this request's notifications and server requests."""
    caller: Caller | None = None
    """None marks the gateway's own connection-level traffic (handshake, listings,
    subscriptions): the only traffic that may carry the gateway's own credential."""
    session: str | None = None
    """The client's legacy session id: picks its isolated upstream session."""
    client_capabilities: Raw | None = None
    session_link: ClientLink | None = None
    """The client's session stream: where an isolated session reaches it between requests."""
    log_level: str | None = None
    """The client wants log lines of this request (at or above this level); None: none."""
    idempotent: bool = False
    """Safe to send twice (a read, or a tool annotated read-only and idempotent): re-sent
    after a failure even when it may have reached the backend."""
    timeout_s: float = 60.0
    """How long the backend may stay silent; progress pushes the deadline back ..."""
    max_s: float | None = None
    """... but never beyond this (None: `timeout_s`)."""
    result_fields: bool = False
    """The result's top level will be read (an era translation): decoded with the envelope,
    in one pass over the frame (`Reply.take_fields`)."""

    @property
    def principal(self) -> str | None:
        return self.caller.principal if self.caller is not None else None
