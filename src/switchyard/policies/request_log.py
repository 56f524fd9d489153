"""Request logging with timing: one access-log line per request, after it completes."""

from __future__ import annotations

import time

from switchyard.observability.logging import access_log
from switchyard.policies.base import Call, Policy
from switchyard.wire.frame import Reply


class RequestLog(Policy):
    async def __call__(self, call: Call) -> Reply:
        reply = await self.next(call)
        if access_log.enabled:
            elapsed_ms = (time.perf_counter() - call.started) * 1000.0
            outcome = "error" if reply.error is not None else "ok"
            backend = f" @{call.backend}" if call.backend else ""
            access_log.write(
                f"{call.method} {call.target or ''}{backend} -> {outcome} in {elapsed_ms:.2f} ms"
            )
        return reply
