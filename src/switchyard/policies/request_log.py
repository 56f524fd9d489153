"""Request logging with timing: one line per request, after it completes."""

from __future__ import annotations

import logging
import time

from switchyard.policies.base import Call, Policy
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.requests")


class RequestLog(Policy):
    async def __call__(self, call: Call) -> Reply:
        reply = await self.next(call)
        if log.isEnabledFor(logging.INFO):
            elapsed_ms = (time.perf_counter() - call.started) * 1000.0
            log.info(
                "%s %s%s -> %s in %.2f ms",
                call.method,
                call.target or "",
                f" @{call.backend}" if call.backend else "",
                "error" if reply.error is not None else "ok",
                elapsed_ms,
            )
        return reply
