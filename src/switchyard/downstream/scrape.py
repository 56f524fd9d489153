"""The /metrics page: the request histograms, and gauges read from the gateway's own state at
scrape time (nothing about them is recorded per request). Also the optional listener of the
metrics' own (`metrics.listen`).

Label values come from the configuration (backend names, rule names, endpoint indexes) or from
fixed sets (states); nothing a caller sends becomes a label here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Final

import switchyard
from switchyard.gateway import Gateway
from switchyard.observability.metrics import BACKEND, gauge, metrics
from switchyard.observability.settling import settling
from switchyard.observability.tracing import tracer
from switchyard.upstream.stdio import StdioSettings

log = logging.getLogger("switchyard.metrics")

CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"
BACKEND_STATES: Final = ("starting", "up", "unhealthy", "down", "stopped")
BREAKER_STATES: Final = ("closed", "open", "half_open")

Labels = tuple[tuple[str, str], ...]


def exposition(gateway: Gateway) -> bytes:
    settling.settle()  # counts of requests answered in this pass of the loop too
    return "".join(_families(gateway)).encode()


def _families(gateway: Gateway) -> Iterator[str]:
    yield from metrics.render()
    yield from gauge(
        "switchyard_build_info",
        "The running version.",
        [((("version", switchyard.__version__),), 1)],
    )
    ready, _ = gateway.readiness()
    yield from gauge("switchyard_ready", "1 when /readyz says ready.", [((), int(ready))])
    yield from gauge(
        "switchyard_sessions", "Open legacy client sessions.", [((), len(gateway.sessions))]
    )
    backends = list(gateway.backends.values())
    states: list[tuple[Labels, float]] = []
    for b in backends:
        current = b.status.state
        known = (*BACKEND_STATES, current) if current not in BACKEND_STATES else BACKEND_STATES
        states += [(((BACKEND, b.name), ("state", s)), int(s == current)) for s in known]
    yield from gauge("switchyard_backend_state", "1 for each backend's current state.", states)
    yield from gauge(
        "switchyard_backend_up",
        "1 when the backend serves requests.",
        [(((BACKEND, b.name),), int(b.is_up)) for b in backends],
    )
    yield from gauge(
        "switchyard_backend_in_flight",
        "Requests in flight to each backend.",
        [(((BACKEND, b.name),), b.in_flight) for b in backends],
    )
    breakers: list[tuple[Labels, float]] = []
    connections: list[tuple[Labels, float]] = []
    processes: list[tuple[Labels, float]] = []
    for b in backends:
        stdio = 0
        for ep in b.endpoints:
            state = ep.breaker.state
            breaker_states: tuple[str, ...] = BREAKER_STATES
            if state not in breaker_states:
                breaker_states = (*breaker_states, state)
            breakers += [
                (((BACKEND, b.name), ("endpoint", str(ep.index)), ("state", s)), int(s == state))
                for s in breaker_states
            ]
            open_here = int(ep.connection is not None) + ep.isolated
            connections.append((((BACKEND, b.name), ("endpoint", str(ep.index))), open_here))
            if isinstance(ep.transport, StdioSettings):
                stdio += open_here
        processes.append((((BACKEND, b.name),), stdio))
    yield from gauge(
        "switchyard_backend_breaker_state", "1 for each endpoint's breaker state.", breakers
    )
    yield from gauge(
        "switchyard_upstream_connections",
        "Open upstream connections per endpoint, isolated sessions included.",
        connections,
    )
    yield from gauge(
        "switchyard_stdio_processes", "Running stdio server processes per backend.", processes
    )
    yield from gauge(
        "switchyard_backend_restarts_total",
        "Times each backend was restarted or reconnected.",
        [(((BACKEND, b.name),), b.status.restarts) for b in backends],
        "counter",
    )
    # Families of features that are off are declared without samples: dashboards and alerts
    # find every name, and no made-up zero claims a feature is running.
    limits = gateway.settings.limits
    refused = sorted(limits.refused.items()) if limits is not None else []
    shadow = sorted(limits.shadow_refused.items()) if limits is not None else []
    yield from gauge(
        "switchyard_rate_limit_refusals_total",
        "Calls refused by a rate-limit rule.",
        [((("rule", r),), n) for r, n in refused],
        "counter",
    )
    yield from gauge(
        "switchyard_rate_limit_shadow_refusals_total",
        "Calls a shadow rule would have refused.",
        [((("rule", r),), n) for r, n in shadow],
        "counter",
    )
    audit = gateway.audit
    yield from gauge(
        "switchyard_audit_pending",
        "Audit records not yet written.",
        [((), audit.pending)] if audit is not None else [],
    )
    yield from gauge(
        "switchyard_audit_dropped_total",
        "Audit records dropped (the queue was full).",
        [((), audit.dropped)] if audit is not None else [],
        "counter",
    )
    gate = gateway.settings.approvals
    yield from gauge(
        "switchyard_approval_events_total",
        "Approval events by kind (requested, approved, consumed, refused, expired, ...).",
        [((("event", e),), n) for e, n in sorted(gate.events.items())] if gate is not None else [],
        "counter",
    )
    cache = gateway.result_cache()
    figures = cache.status() if cache is not None else None
    for name, key, text, kind in (
        ("switchyard_result_cache_hits_total", "hits", "Calls answered from the result cache.",
         "counter"),
        ("switchyard_result_cache_misses_total", "misses",
         "Cacheable calls that ran (nothing cached, or expired).", "counter"),
        ("switchyard_result_cache_entries", "entries", "Results held in the cache.", "gauge"),
        ("switchyard_result_cache_bytes", "bytes", "Bytes of results held in the cache.", "gauge"),
    ):  # fmt: skip
        yield from gauge(name, text, [((), figures[key])] if figures is not None else [], kind)
    yield from gauge(
        "switchyard_undelivered_total",
        "Messages to clients dropped, by reason.",
        [((("reason", r),), n) for r, n in sorted(gateway.delivery.dropped.items())],
        "counter",
    )
    yield from gauge(
        "switchyard_tracing_spans_dropped_total",
        "Spans not exported (queue full or collector failing).",
        [((), tracer.dropped)] if tracer.enabled else [],
        "counter",
    )


class MetricsListener:
    """`metrics.listen`: GET /metrics on an address of its own, without authentication (the
    operator binds it where only the scraper reaches). Anything else gets 404."""

    HEAD_BYTES: Final = 8192
    READ_S: Final = 5.0

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        bound = self._server.sockets[0].getsockname()
        log.info("metrics on http://%s:%d/metrics", self.host, bound[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.READ_S)
            request_line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(request_line) == 3 and request_line[0] in (b"GET", b"HEAD"):
                path = request_line[1].split(b"?", 1)[0]
                if path == b"/metrics":
                    body = exposition(self.gateway)
                    _answer(writer, b"200 OK", CONTENT_TYPE, body, request_line[0] == b"HEAD")
                else:
                    _answer(writer, b"404 Not Found", b"text/plain", b"Not Found", False)
            else:
                _answer(writer, b"405 Method Not Allowed", b"text/plain", b"GET only", False)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _answer(
    writer: asyncio.StreamWriter, status: bytes, kind: bytes, body: bytes, head_only: bool
) -> None:
    writer.write(
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + kind
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + (b"" if head_only else body)
    )
