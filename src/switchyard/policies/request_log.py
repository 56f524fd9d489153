"""The access log: one structured record per request, after it completes."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import msgspec

from switchyard.call import Call
from switchyard.observability import decisions
from switchyard.observability.logging import decisions_wanted, write_decision
from switchyard.observability.trace_context import trace_id
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
        if not decisions_wanted():
            return await self.next(call)
        try:
            reply = await self.next(call)
        except asyncio.CancelledError:
            _write(call, "allow", "cancelled", None)
            raise
        except Exception:
            _write(call, "error", "exception", None)
            raise
        denied = call.denied and call.method not in methods.LIST_METHODS  # lists filter
        _write(call, "deny" if denied else "allow", _outcome(call, reply), reply)
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


def _write(call: Call, decision: str, outcome: str | int, reply: Reply | None) -> None:
    ctx = call.ctx
    identity = ctx.identity
    extra: dict[str, object] = {}
    if decisions.wanted():
        # Only sinks (the audit trail) take these; the access log line stays as it was.
        fields = _fields(call)
        route = call.route
        body = None if reply is None else reply.result if reply.error is None else reply.error
        extra = {
            "name": route.name if route is not None else None,
            "trace_id": trace_id(ctx.traceparent) or _meta_trace_id(fields),
            "request_bytes": len(call.params) if call.params is not None else 0,
            "result_bytes": len(body) if body is not None else None,
            "arguments": call.recorded_arguments or fields.get("arguments"),
        }
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
        target=call.target if call.route is not None else _requested(call),
        latency_ms=(time.perf_counter() - call.started) * 1000.0,
        **extra,  # type: ignore[arg-type]
    )


_REQUESTED_CHARS = 256


def _requested(call: Call) -> str | None:
    """The name or URI a call asked for when it matched nothing (an unknown, hidden or
    quarantined tool): the record says what was asked, not just that it failed."""
    if call.params is None:
        return None
    fields = _fields(call)
    raw = fields.get("name") or fields.get("uri")
    if raw is None:
        return None
    try:
        return frame.decode_str(raw)[:_REQUESTED_CHARS]
    except (frame.DecodeError, frame.ValidationError):
        return None


def _fields(call: Call) -> dict[str, frame.Raw]:
    try:
        return call.fields()
    except (frame.DecodeError, frame.ValidationError):
        return {}


def _meta_trace_id(fields: dict[str, frame.Raw]) -> str | None:
    """The trace id of the request's `_meta.traceparent` (MCP's place for trace context)."""
    raw = fields.get("_meta")
    if raw is None:
        return None
    try:
        value = frame.decode_object(raw).get("traceparent")
        return trace_id(frame.decode_str(value)) if value is not None else None
    except (frame.DecodeError, frame.ValidationError):
        return None
