"""What the operator chose to observe: metrics, tracing and the log format, compiled."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from switchyard.observability.tracing import TracingSettings


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    metrics: bool = False
    """Off for a plan built in code; the config file's default is on."""
    metrics_listen: tuple[str, int] | None = None
    """A listener of the metrics' own (host, port); None: /metrics on the main port."""
    tracing: TracingSettings = field(default_factory=TracingSettings)
    log_format: str = "text"


def changes(old: ObservabilitySettings, new: ObservabilitySettings) -> list[str]:
    """What a reload changes of metrics and tracing, as `key: old -> new` phrases for the log.
    An exporter URL is shown as its host and port (its path or query may carry a secret)."""
    out: list[str] = []
    if old.metrics != new.metrics:
        out.append(f"metrics: {_on(old.metrics)} -> {_on(new.metrics)}")
    was, now = old.tracing, new.tracing
    if was.enabled != now.enabled:
        out.append(f"tracing: {_on(was.enabled)} -> {_on(now.enabled)}")
    if was.endpoint != now.endpoint:
        out.append(f"tracing.otlp_endpoint: {_where(was.endpoint)} -> {_where(now.endpoint)}")
    if was.headers != now.headers:
        out.append("tracing.otlp_headers changed")
    if was.sample_ratio != now.sample_ratio:
        out.append(f"tracing.sample_ratio: {was.sample_ratio:g} -> {now.sample_ratio:g}")
    if was.service_name != now.service_name:
        out.append(f"tracing.service_name: {was.service_name} -> {now.service_name}")
    return out


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _where(url: str | None) -> str:
    if url is None:
        return "none"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(not a URL)"
    return f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}"
