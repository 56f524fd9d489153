"""Pin events: every first pin, quarantine, drift, block, approval and rejection. They all
leave through `record_pin_event`, the one place an audit sink attaches to."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from switchyard.audit.record import AuditEvent

log = logging.getLogger("switchyard.pins")

KINDS: Final = frozenset(
    {
        "pinned",
        "pending_new",
        "drifted",
        "quarantined",
        "blocked",
        "warned",
        "approved",
        "rejected",
        "session_mismatch",
    }
)
# Events a reviewer must act on are warnings; the rest are information.
_WARNINGS: Final = frozenset(
    {"pending_new", "drifted", "quarantined", "blocked", "warned", "session_mismatch"}
)


@dataclass(frozen=True, slots=True)
class PinEvent:
    event: str
    key: str
    """`backend/kind/name`."""
    fingerprint: str | None
    """The definition the event is about (the candidate, or what became the pin)."""
    previous: str | None = None
    """The pinned fingerprint it replaces or differs from, if any."""
    state: str | None = None
    reason: str | None = None
    findings: tuple[dict[str, str], ...] = ()
    actor: str | None = None
    """Who approved or rejected; None for what a gateway decided itself."""
    ts: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": round(self.ts, 3),
            "event": self.event,
            "key": self.key,
            "fingerprint": self.fingerprint,
        }
        for name in ("previous", "state", "reason", "actor"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        if self.findings:
            record["findings"] = list(self.findings)
        return record


sinks: list[Callable[[PinEvent], None]] = []
"""Extra receivers of every pin event (tests, an audit trail); each must not raise."""


def record_pin_event(event: PinEvent) -> None:
    """The single exit of pin events: one structured log record (`switchyard.pins`, JSON), then
    every registered sink."""
    level = logging.WARNING if event.event in _WARNINGS else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "pin event %s", json.dumps(event.as_json(), ensure_ascii=True))
    for sink in sinks:
        try:
            sink(event)
        except Exception:
            log.exception("a pin event sink failed")


def audit_sink(submit: Callable[[AuditEvent], None]) -> Callable[[PinEvent], None]:
    """A sink that records each pin event in the audit trail (`submit`: the writer's)."""

    def sink(event: PinEvent) -> None:
        fields = event.as_json()
        fields.pop("ts", None)
        fields["pin_event"] = fields.pop("event")
        submit(AuditEvent("pin", event.ts, fields))

    return sink
