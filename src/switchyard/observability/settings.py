"""What the operator chose to observe: metrics, tracing and the log format, compiled."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.observability.tracing import TracingSettings


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    metrics: bool = False
    """Off for a plan built in code; the config file's default is on."""
    metrics_listen: tuple[str, int] | None = None
    """A listener of the metrics' own (host, port); None: /metrics on the main port."""
    tracing: TracingSettings = field(default_factory=TracingSettings)
    log_format: str = "text"
