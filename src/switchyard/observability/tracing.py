"""Tracing: a server span per request and a client span per upstream call, continued from the
caller's W3C trace context and handed on to backends; exported as OTLP/HTTP JSON.

The exporter is the gateway's own (no OpenTelemetry SDK): finishing a span appends a tuple to
a bounded queue, and a thread batches, encodes and posts them, so the request path never waits
on the collector, and a collector that is down costs dropped spans (counted), not latency.

Attribute names follow the OpenTelemetry MCP semantic conventions (`mcp.method.name`,
`gen_ai.tool.name`, `mcp.session.id`, `jsonrpc.request.id`, `error.type`,
`rpc.response.status_code`); span names are `{mcp.method.name} {target}` when the target is a
catalog name, else the method alone (URIs would make span names unbounded).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

from switchyard.observability.trace_context import trace_id as valid_trace_id
from switchyard.observability.trace_context import tracestate as valid_tracestate
from switchyard.wire import frame
from switchyard.wire.frame import Raw

log = logging.getLogger("switchyard.tracing")

SERVER: Final = 2  # OTLP SpanKind
CLIENT: Final = 3
STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2

QUEUE_SPANS: Final = 8192
BATCH_SPANS: Final = 512
EXPORT_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class TracingSettings:
    enabled: bool = False
    endpoint: str | None = None
    """The OTLP/HTTP traces URL (`…/v1/traces`); None: spans are made and propagated, not sent."""
    headers: tuple[tuple[str, str], ...] = ()
    sample_ratio: float = 1.0
    service_name: str = "switchyard"
    flush_s: float = 1.0


@dataclass(slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    sampled: bool
    tracestate: str | None = None
    attributes: dict[str, str | int] = field(default_factory=dict)
    status: int = STATUS_UNSET
    message: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def fail(self, error_type: str, message: str | None = None) -> None:
        self.status = STATUS_ERROR
        self.attributes["error.type"] = error_type
        self.message = message


def _new_id(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


class Tracer:
    def __init__(self) -> None:
        self.enabled = False
        self.settings = TracingSettings()
        self._exporter: OtlpExporter | None = None

    def configure(self, settings: TracingSettings) -> None:
        """Trace by `settings` from now on (at start, and on a reload): the new exporter is
        made before the swap, so spans ending from here on go by the new settings, and the
        old one finishes sending what it holds in its own thread (the caller, the event
        loop, never waits on a collector). Unchanged settings keep the exporter as it is."""
        if settings == self.settings and self.enabled == settings.enabled:
            return
        old = self._exporter
        exporter = OtlpExporter(settings) if settings.enabled and settings.endpoint else None
        self._exporter, self.settings, self.enabled = exporter, settings, settings.enabled
        if old is not None:
            old.retire()

    def close(self) -> None:
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None
        self.enabled = False
        self.settings = TracingSettings()

    @property
    def dropped(self) -> int:
        return self._exporter.dropped if self._exporter is not None else 0

    def server_span(self, method: str, traceparent: str | None, tracestate: str | None) -> Span:
        """The span of one request, continuing the caller's trace when it sent a valid
        `traceparent` (its sampled flag is followed, its `tracestate` kept if valid, dropped
        whole if not), else a new trace (sampled by ratio) with no `tracestate`."""
        parent_trace = valid_trace_id(traceparent)
        if parent_trace is not None:
            assert traceparent is not None
            value = traceparent.strip()
            parent_id: str | None = value[36:52]
            sampled = int(value[53:55], 16) & 1 == 1
            tracestate = valid_tracestate(tracestate)
        else:
            parent_trace = _new_id(16)
            parent_id = None
            tracestate = None
            sampled = random.random() < self.settings.sample_ratio
        return Span(
            parent_trace,
            _new_id(8),
            parent_id,
            method,
            SERVER,
            time.time_ns(),
            sampled,
            tracestate,
            {"mcp.method.name": method},
        )

    def client_span(self, parent: Span, method: str, backend: str, target: str | None) -> Span:
        return Span(
            parent.trace_id,
            _new_id(8),
            parent.span_id,
            f"{method} {target}" if target else method,
            CLIENT,
            time.time_ns(),
            parent.sampled,
            parent.tracestate,
            {"mcp.method.name": method, "server.address": backend},
        )

    def end(self, span: Span) -> None:
        if span.sampled and self._exporter is not None:
            self._exporter.submit(span, time.time_ns())


class OtlpExporter:
    """Batches finished spans off the request path and posts them as OTLP/HTTP JSON."""

    def __init__(self, settings: TracingSettings) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        self.dropped = 0
        self.exported = 0
        self._queue: collections.deque[tuple[Span, int]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def submit(self, span: Span, end_ns: int) -> None:
        if len(self._queue) >= QUEUE_SPANS:
            self.dropped += 1
            return
        self._queue.append((span, end_ns))
        if len(self._queue) >= BATCH_SPANS:
            self._wake.set()

    def close(self) -> None:
        self.retire()
        self._thread.join(EXPORT_TIMEOUT_S + 1.0)

    def retire(self) -> None:
        """Send what is queued, then stop, without waiting for it."""
        self._stop = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_s)
            self._wake.clear()
            while self._queue:
                batch: list[tuple[Span, int]] = []
                while self._queue and len(batch) < BATCH_SPANS:
                    batch.append(self._queue.popleft())
                self._post(batch)
            if self._stop:
                return

    def _post(self, batch: list[tuple[Span, int]]) -> None:
        body = json.dumps(self._payload(batch), separators=(",", ":")).encode()
        assert self.settings.endpoint is not None
        request = urllib.request.Request(
            self.settings.endpoint,
            data=body,
            headers={"Content-Type": "application/json", **dict(self.settings.headers)},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S) as response:
                response.read()
            self.exported += len(batch)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.dropped += len(batch)
            # The reason only: the URL may carry a credential in its query.
            log.warning("OTLP export of %d spans failed: %s", len(batch), _reason(exc))

    def _payload(self, batch: list[tuple[Span, int]]) -> dict[str, Any]:
        spans = []
        for span, end_ns in batch:
            item: dict[str, Any] = {
                "traceId": span.trace_id,
                "spanId": span.span_id,
                "name": span.name,
                "kind": span.kind,
                "startTimeUnixNano": str(span.start_ns),
                "endTimeUnixNano": str(end_ns),
                "attributes": [_attribute(k, v) for k, v in span.attributes.items()],
                "status": {"code": span.status},
            }
            if span.message:
                item["status"]["message"] = span.message
            if span.parent_id is not None:
                item["parentSpanId"] = span.parent_id
            if span.tracestate:
                item["traceState"] = span.tracestate
            spans.append(item)
        return {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [_attribute("service.name", self.settings.service_name)]
                    },
                    "scopeSpans": [{"scope": {"name": "switchyard"}, "spans": spans}],
                }
            ]
        }


def _attribute(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)[:200]
    return type(exc).__name__


tracer = Tracer()


def with_trace_meta(fields: dict[str, Raw], span: Span) -> dict[str, Raw]:
    """`fields` (a request's params) with `_meta.traceparent` (and `tracestate`) naming `span`
    as the parent: MCP's carrier, the only one a stdio backend has. The rest of `_meta`
    (a progress token, ...) is kept."""
    meta: dict[str, Raw] = {}
    raw = fields.get("_meta")
    if raw is not None:
        try:
            meta = frame.decode_object(raw)
        except (frame.DecodeError, frame.ValidationError):
            meta = {}
    meta["traceparent"] = Raw(frame.encode(span.traceparent))
    if span.tracestate:
        meta["tracestate"] = Raw(frame.encode(span.tracestate))
    else:
        meta.pop("tracestate", None)
    return {**fields, "_meta": Raw(frame.encode_object(meta))}


def meta_context(fields: dict[str, Raw]) -> tuple[str | None, str | None]:
    """The `traceparent` and `tracestate` a request's `_meta` carries (None where absent or
    not a string), as sent: `Tracer.server_span` judges them."""
    raw = fields.get("_meta")
    if raw is None:
        return None, None
    try:
        meta = frame.decode_object(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None, None
    return _meta_str(meta.get("traceparent")), _meta_str(meta.get("tracestate"))


def _meta_str(raw: Raw | None) -> str | None:
    if raw is None:
        return None
    try:
        return frame.decode_str(raw)
    except (frame.DecodeError, frame.ValidationError):
        return None
