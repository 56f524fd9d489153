"""Prometheus metrics: request histograms recorded at the end of a request, from what the
access record already holds, and the exposition text (format 0.0.4).

The hot path costs a dict lookup, a bisect and three additions per request: no label objects,
no locks (one event loop writes), no formatting until a scrape. Gauges (sessions, backends,
breakers, queues) are not recorded at all: the scrape reads them from the gateway's own state.

Names follow the OpenTelemetry MCP semantic conventions (`mcp.server.operation.duration`,
`mcp.client.operation.duration`; attributes `mcp.method.name`, `gen_ai.tool.name`,
`error.type`) translated as Prometheus does (dots to underscores, unit suffix). The
conventions are still in development: every name lives here, so a rename is one line.

Cardinality is bounded by construction: a method label is a known MCP method or `other`; a
tool label is a catalog name (the caller reached a listed tool) or `other`, and at most
MAX_TOOLS distinct ones; backends come from the configuration. Nothing about the caller (the
principal, the session, arguments, URIs) is ever a label.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from typing import Final

SERVER_DURATION: Final = "mcp_server_operation_duration_seconds"
CLIENT_DURATION: Final = "mcp_client_operation_duration_seconds"
IN_FLIGHT: Final = "switchyard_requests_in_flight"
HTTP_REFUSALS: Final = "switchyard_http_refusals_total"

METHOD: Final = "mcp_method_name"
TOOL: Final = "gen_ai_tool_name"
ERROR: Final = "error_type"
BACKEND: Final = "switchyard_backend"

OTHER: Final = "other"
TOOL_ERROR: Final = "tool_error"
"""`error.type` of a tool result flagged `isError`: a success to JSON-RPC, a failure to users."""
MAX_TOOLS: Final = 1000
"""Distinct tool labels kept; later names count as `other` (a backend may list any number)."""

# The OpenTelemetry MCP conventions' advice for these histograms (seconds).
BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

KNOWN_METHODS: Final = frozenset(
    {
        "initialize",
        "notifications/initialized",
        "server/discover",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "tasks/get",
        "tasks/result",
        "tasks/cancel",
        "tasks/update",
        "tasks/list",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)


class Histogram:
    """Bucket counts per label tuple; rendered cumulative, as the format wants."""

    __slots__ = ("help", "labels", "name", "series")

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.series: dict[tuple[str, ...], list[float]] = {}
        """label values -> [count per bucket..., +Inf count, sum]"""

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        cells = self.series.get(key)
        if cells is None:
            cells = self.series[key] = [0.0] * (len(BUCKETS) + 2)
        cells[bisect.bisect_left(BUCKETS, seconds)] += 1
        cells[-1] += seconds

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n"
        for key, cells in sorted(self.series.items()):
            labels = ",".join(f'{n}="{escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            sep = "," if labels else ""
            running = 0.0
            for bound, count in zip(BUCKETS, cells, strict=False):
                running += count
                yield f'{self.name}_bucket{{{labels}{sep}le="{bound}"}} {int(running)}\n'
            running += cells[len(BUCKETS)]
            yield f'{self.name}_bucket{{{labels}{sep}le="+Inf"}} {int(running)}\n'
            yield f"{self.name}_count{{{labels}}} {int(running)}\n"
            yield f"{self.name}_sum{{{labels}}} {_number(cells[-1])}\n"


class Metrics:
    """What requests record. `enabled` is checked by the caller before any work."""

    def __init__(self) -> None:
        self.enabled = False
        self.in_flight = 0
        self.server = Histogram(
            SERVER_DURATION,
            "MCP request duration as the gateway's clients see it.",
            (METHOD, TOOL, BACKEND, ERROR),
        )
        self.client = Histogram(
            CLIENT_DURATION,
            "Duration of the gateway's requests to its backends.",
            (BACKEND, METHOD, ERROR),
        )
        self._tools: set[str] = set()
        self.refusals: dict[int, int] = {}
        """HTTP status -> requests refused before any JSON-RPC handling (401, 403, 413, 429...)."""

    def refused(self, status: int) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1

    def reset(self) -> None:
        self.in_flight = 0
        self.server.series.clear()
        self.client.series.clear()
        self._tools.clear()
        self.refusals.clear()

    def tool_label(self, name: str | None) -> str:
        if name is None:
            return ""
        tools = self._tools
        if name in tools:
            return name
        if len(tools) >= MAX_TOOLS:
            return OTHER
        tools.add(name)
        return name

    def request(
        self,
        method: str,
        tool: str | None,
        backend: str | None,
        error_type: str,
        seconds: float,
    ) -> None:
        """One request the gateway answered. `tool` is a catalog name (None: not a tool
        call, or one that reached no listed tool)."""
        self.server.observe(
            (
                method if method in KNOWN_METHODS else OTHER,
                self.tool_label(tool),
                backend or "",
                error_type,
            ),
            seconds,
        )

    def by_backend(self) -> dict[str, tuple[int, int]]:
        """Requests answered and how many of them failed (a JSON-RPC error or a tool's
        `isError`), per backend, since this process started: the console's error rates."""
        totals: dict[str, tuple[int, int]] = {}
        for (_, _, backend, error), cells in self.server.series.items():
            if not backend:
                continue
            count = int(sum(cells[:-1]))
            requests, errors = totals.get(backend, (0, 0))
            totals[backend] = (requests + count, errors + (count if error else 0))
        return totals

    def upstream(self, backend: str, method: str, error_type: str, seconds: float) -> None:
        """One request sent to a backend (its answer, or the failure to get one)."""
        self.client.observe(
            (backend, method if method in KNOWN_METHODS else OTHER, error_type), seconds
        )

    def render(self) -> Iterator[str]:
        yield from self.server.render()
        yield from self.client.render()
        yield from gauge(IN_FLIGHT, "Requests being handled now.", [((), self.in_flight)])
        yield from gauge(
            HTTP_REFUSALS,
            "HTTP requests refused before reaching MCP (authentication, origin, size, load).",
            [((("status", str(code)),), n) for code, n in sorted(self.refusals.items())],
            "counter",
        )


def error_type(outcome: str | int) -> str:
    """`error.type` of an access record's outcome: empty for success, `tool_error` for a
    tool's `isError`, else the JSON-RPC error code (or `cancelled`, `exception`)."""
    if outcome == "ok":
        return ""
    if outcome == "isError":
        return TOOL_ERROR
    return str(outcome)


def gauge(
    name: str,
    help_text: str,
    samples: Iterable[tuple[tuple[tuple[str, str], ...], float]],
    kind: str = "gauge",
) -> Iterator[str]:
    """One metric family of plain samples: (((label, value), ...), number) each. A counter's
    `name` ends in `_total`, as the text format writes it."""
    yield f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
    for labels, value in samples:
        text = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
        yield f"{name}{{{text}}} {_number(value)}\n" if text else f"{name} {_number(value)}\n"


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))


metrics = Metrics()
