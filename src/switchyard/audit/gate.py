"""`fail_closed`: while the audit trail cannot record, new calls are refused, not run
unrecorded. The refusal itself is a decision like any other (recorded once the store is back,
within the buffer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from switchyard.audit.writer import AuditWriter
from switchyard.policies.base import Call, Policy, PolicySpec
from switchyard.policies.request_log import RequestLog
from switchyard.protocol import codes, methods
from switchyard.wire import frame
from switchyard.wire.frame import Reply

# The handshake and liveness carry no data and reach no backend's tools.
EXEMPT: Final = frozenset({methods.INITIALIZE, methods.DISCOVER, methods.PING})


class AuditGate(Policy):
    settings: AuditWriter

    async def __call__(self, call: Call) -> Reply:
        if call.method not in EXEMPT:
            reason = self.settings.unavailable()
            if reason is not None:
                call.denied = True
                return frame.error_reply(
                    codes.AUDIT_UNAVAILABLE,
                    f"Audit trail unavailable ({reason}): calls are refused until it records again",
                    {"source": "gateway"},
                )
        return await self.next(call)


def audited(policies: Sequence[PolicySpec], writer: AuditWriter) -> tuple[PolicySpec, ...]:
    """The chain with the decision record outermost (every outcome is recorded, the gate's
    refusals too) and, when failing closed, the gate right inside it."""
    rest = tuple(p for p in policies if p.cls is not RequestLog)
    gate = (PolicySpec(AuditGate, writer),) if writer.fail_closed else ()
    return (PolicySpec(RequestLog), *gate, *rest)
