"""`servers.<name>`: endpoints (`urls`, `replicas`), `health`, `breaker`, `retries` and
`unavailable_grace`, compiled into a backend's settings or refused with a message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchyard.config.load import ConfigError, load_plan
from switchyard.upstream.backend import BackendSettings
from switchyard.upstream.http import HttpSettings
from switchyard.upstream.stdio import StdioSettings


def _plan_of(tmp_path: Path, server: dict[str, object]) -> BackendSettings:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": {"svc": server}}), encoding="utf-8")
    plan, _, _ = load_plan(path)
    return plan.backends[0]


def test_urls_become_one_endpoint_each(tmp_path: Path) -> None:
    backend = _plan_of(
        tmp_path,
        {"urls": ["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"], "type": "http"},
    )
    urls = [t.url for t in backend.transports if isinstance(t, HttpSettings)]
    assert urls == ["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"]
    assert all(
        isinstance(t, HttpSettings) and t.transport == "streamable-http" for t in backend.transports
    )


def test_stdio_replicas_and_resilience_settings(tmp_path: Path) -> None:
    backend = _plan_of(
        tmp_path,
        {
            "command": "python3",
            "replicas": 3,
            "health": {"interval": 0.5, "timeout": 0.2, "unhealthy_after": 4},
            "breaker": {"failures": 2, "open": 1, "max_open": 10, "jitter": 0},
            "retries": {"attempts": 2, "backoff": 0.05},
            "unavailable_grace": 0,
        },
    )
    assert len(backend.transports) == 3
    assert all(isinstance(t, StdioSettings) for t in backend.transports)
    assert (backend.health.interval_s, backend.health.timeout_s) == (0.5, 0.2)
    assert backend.health.unhealthy_after == 4
    assert (backend.breaker.failures, backend.breaker.open_s, backend.breaker.max_open_s) == (
        2,
        1.0,
        10.0,
    )
    assert (backend.retries.attempts, backend.retries.backoff_s) == (2, 0.05)
    assert backend.unavailable_grace_s == 0


def test_defaults_are_one_endpoint_and_the_documented_values(tmp_path: Path) -> None:
    backend = _plan_of(tmp_path, {"url": "http://127.0.0.1:1/mcp"})
    assert len(backend.transports) == 1
    assert backend.health.interval_s == 15 and backend.health.timeout_s == 5
    assert backend.breaker.failures == 5 and backend.breaker.open_s == 5
    assert backend.retries.attempts == 3 and backend.unavailable_grace_s == 30


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            {"url": "http://127.0.0.1:1/mcp", "urls": ["http://127.0.0.1:2/mcp"]},
            "servers.svc: set `url` or `urls`, not both",
        ),
        ({"url": "http://127.0.0.1:1/mcp", "replicas": 2}, "servers.svc.replicas: only for"),
        ({"command": "x", "urls": ["http://127.0.0.1:2/mcp"]}, "servers.svc.urls: a stdio"),
        ({"urls": ["ftp://x"]}, "servers.svc.urls[0]: must be an http:// or https:// URL"),
        ({"command": "x", "breaker": {"failures": 0}}, "failures"),
        ({"command": "x", "health": {"surprise": 1}}, "surprise"),
    ],
)
def test_bad_endpoint_and_resilience_settings_are_refused(
    tmp_path: Path, server: dict[str, object], message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": {"svc": server}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert message in str(info.value)
