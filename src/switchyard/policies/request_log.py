"""The access log: one structured record per request, after it completes."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import msgspec

from switchyard.call import Call
from switchyard.observability.logging import access_log, write_decision
from switchyard.policies.base import Policy
from switchyard.protocol import methods
from switchyard.wire import frame
from switchyard.wire.frame import Reply


class _ToolOutcome(msgspec.Struct, forbid_unknown_fields=False):
    isError: bool = False


# Reads only `isError` of a tool result; the rest is skipped, not built into objects.
_tool_outcome: Final = msgspec.json.Decoder(_ToolOutcome)


class RequestLog(Policy):
    async def __call__(self, call: Call) -> Reply:
        if not access_log.enabled:
            return await self.next(call)
        try:
            reply = await self.next(call)
        except asyncio.CancelledError:
            _write(call, "allow", "cancelled")
            raise
        except Exception:
            _write(call, "error", "exception")
            raise
        denied = call.denied and call.method not in methods.LIST_METHODS  # lists filter
        _write(call, "deny" if denied else "allow", _outcome(call, reply))
        return reply


def _outcome(call: Call, reply: Reply) -> str | int:
    if reply.error is not None:
        try:
            return frame.decode_error(reply.error).code
        except (frame.DecodeError, frame.ValidationError):
            return "error"
    if call.method == methods.TOOLS_CALL and reply.result is not None:
        try:
            if _tool_outcome.decode(reply.result).isError:
                return "isError"
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return "ok"


def _write(call: Call, decision: str, outcome: str | int) -> None:
    ctx = call.ctx
    identity = ctx.identity
    write_decision(
        decision=decision,
        outcome=outcome,
        method=call.method,
        request_id=ctx.request_id,
        principal=identity.name if identity is not None else ctx.principal,
        via=identity.via if identity is not None else None,
        issuer=identity.issuer if identity is not None else None,
        view=ctx.view,
        face=ctx.transport,
        era=ctx.era.value,
        backend=call.backend,
        target=call.target,
        latency_ms=(time.perf_counter() - call.started) * 1000.0,
    )
