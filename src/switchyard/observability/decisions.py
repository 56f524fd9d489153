"""Decision records for sinks beyond the access log (the audit trail first): the same record
`write_decision` logs, uncapped and typed, with what the log line leaves out.

A sink is called on the request's own path, so it must only hand the record over (append to a
queue) and return; it never raises. With no sink registered, nothing is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from switchyard.wire.frame import Raw


# Not frozen: one is built per request while the audit trail is on, and a frozen dataclass
# costs about four times as much to build (every field set through object.__setattr__).
# Sinks treat it as read-only.
@dataclass(slots=True)
class Decision:
    at: float
    """Wall-clock time of the decision (seconds since the epoch)."""
    decision: str
    outcome: str | int
    method: str | None = None
    request_id: bytes | None = None
    principal: str | None = None
    via: str | None = None
    issuer: str | None = None
    view: str | None = None
    face: str | None = None
    era: str | None = None
    backend: str | None = None
    target: str | None = None
    """The public name or URI the client used."""
    name: str | None = None
    """The backend's own name of the tool or prompt, or the resource URI."""
    latency_ms: float | None = None
    status: int | None = None
    reason: str | None = None
    trace_id: str | None = None
    request_bytes: int | None = None
    result_bytes: int | None = None
    arguments: Raw | None = None
    """The request's `arguments` as received (JSON): sinks digest them, never log them."""

    @property
    def qualified_principal(self) -> str | None:
        """`Identity.key`: the issuer and the name, as every per-caller table keys on."""
        if self.principal is None or self.issuer is None:
            return self.principal
        return f"{self.issuer}#{self.principal}"


DecisionSink = Callable[[Decision], None]

_sinks: list[DecisionSink] = []


def add_sink(sink: DecisionSink) -> None:
    _sinks.append(sink)


def remove_sink(sink: DecisionSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def wanted() -> bool:
    """Whether any sink takes decision records."""
    return bool(_sinks)


def deliver(decision: Decision) -> None:
    for sink in tuple(_sinks):
        sink(decision)
