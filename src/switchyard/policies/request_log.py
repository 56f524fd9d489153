"""The access log: one structured record per request, after it completes."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from switchyard.call import Call
from switchyard.observability import decisions
from switchyard.observability.logging import access_log, decisions_wanted, write_decision
from switchyard.observability.metrics import error_type, metrics
from switchyard.observability.settling import settling
from switchyard.observability.trace_context import trace_id
from switchyard.observability.tracing import Span, meta_context, tracer
from switchyard.policies.base import Policy
from switchyard.protocol import methods
from switchyard.wire import frame
from switchyard.wire.frame import Reply


class RequestLog(Policy):
    """The access record at the end of a request; metrics and the request's span are taken
    from the same outcome and latency, and made once the reply is out (`settling`).
    `settings` False: no record, only metrics and spans (`gateway.log_requests: false` with
    either on)."""

    async def __call__(self, call: Call) -> Reply:
        records = self.settings is not False and decisions_wanted()
        measured = metrics.enabled
        if not (records or measured or tracer.enabled):
            return await self.next(call)
        if tracer.enabled:
            call.span = _server_span(call)
        if measured:
            metrics.in_flight += 1
        try:
            reply = await self.next(call)
        except asyncio.CancelledError:
            _finish(call, "allow", "cancelled", None, records, measured, _elapsed(call))
            raise
        except Exception:
            _finish(call, "error", "exception", None, records, measured, _elapsed(call))
            raise
        denied = call.denied and call.method not in methods.LIST_METHODS  # lists filter
        decision = "deny" if denied else "allow"
        outcome = _outcome(call, reply)
        if records or call.span is not None:
            # A record (or a span) is worth a pass of the loop; a histogram's count alone is
            # not (a loop callback per call costs more than the count).
            settling.add(_finish, call, decision, outcome, reply, records, measured, _elapsed(call))
        else:
            _finish(call, decision, outcome, reply, records, measured, _elapsed(call))
        return reply


def _elapsed(call: Call) -> float:
    return time.perf_counter() - call.started


def _finish(
    call: Call,
    decision: str,
    outcome: str | int,
    reply: Reply | None,
    records: bool,
    measured: bool,
    elapsed: float,
) -> None:
    if records:
        _write(call, decision, outcome, reply, elapsed)
    if measured:
        metrics.in_flight -= 1
        metrics.request(call.method, _tool(call), call.backend, error_type(outcome), elapsed)
    span = call.span
    if span is not None:
        if decision != "allow":
            span.attributes["switchyard.decision"] = decision  # a policy refused, or a failure
        _end_span(call, span, outcome)


def _tool(call: Call) -> str | None:
    """The catalog name a tool call reached (a bounded label); None for anything else."""
    route = call.route
    return route.public if route is not None and call.method == methods.TOOLS_CALL else None


def _server_span(call: Call) -> Span:
    ctx = call.ctx
    parent, state = meta_context(_fields(call))
    if parent is None or trace_id(parent) is None:
        parent, state = ctx.traceparent, ctx.tracestate
    return tracer.server_span(call.method, parent, state)


def _end_span(call: Call, span: Span, outcome: str | int) -> None:
    attributes = span.attributes
    route = call.route
    if route is not None and call.method in _NAMED:
        attributes[_NAMED[call.method]] = route.public
        span.name = f"{call.method} {route.public}"
    if call.backend is not None:
        attributes["switchyard.backend"] = call.backend
    ctx = call.ctx
    if ctx.request_id is not None:
        attributes["jsonrpc.request.id"] = ctx.request_id.decode("utf-8", "replace")[:128]
    attributes["mcp.protocol.version"] = ctx.version
    if ctx.view is not None:
        attributes["switchyard.view"] = ctx.view
    if outcome != "ok":
        if type(outcome) is int:
            attributes["rpc.response.status_code"] = str(outcome)
        span.fail(error_type(outcome))
    tracer.end(span)


_NAMED: Final = {methods.TOOLS_CALL: "gen_ai.tool.name", methods.PROMPTS_GET: "gen_ai.prompt.name"}


def _outcome(call: Call, reply: Reply) -> str | int:
    if reply.error is not None:
        try:
            return frame.decode_error(reply.error).code
        except (frame.DecodeError, frame.ValidationError):
            return "error"
    if call.method == methods.TOOLS_CALL and reply.result is not None:
        flagged = reply.flagged
        if flagged is None:
            flagged = frame.tool_flagged(reply.result)
        return "isError" if flagged else "ok"
    return "ok"


def _write(
    call: Call, decision: str, outcome: str | int, reply: Reply | None, elapsed: float
) -> None:
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
            "trace_id": (call.span.trace_id if call.span is not None else None)
            or trace_id(ctx.traceparent)
            or _meta_trace_id(fields),
            "request_bytes": len(call.params) if call.params is not None else 0,
            "result_bytes": len(body) if body is not None else None,
            "arguments": call.recorded_arguments or fields.get("arguments"),
        }
    if not extra and access_log.enabled:
        # The access line's trace id: what is known without decoding anything more.
        span = call.span
        tid = span.trace_id if span is not None else trace_id(ctx.traceparent)
        if tid is None and call._fields is not None:
            tid = _meta_trace_id(call._fields)
        if tid is not None:
            extra = {"trace_id": tid}
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
        latency_ms=elapsed * 1000.0,
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
