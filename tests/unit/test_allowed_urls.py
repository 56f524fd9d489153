"""`gateway.allowed_backends.urls`: scheme, host, port, path and query are matched separately,
and a refusal never shows a secret the URL carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.config.allowed_urls import UrlPattern, redacted
from switchyard.config.load import ConfigError, load_plan


@pytest.mark.parametrize(
    ("pattern", "url", "allowed"),
    [
        # `*` in a host is one DNS label, never a path, userinfo or query.
        ("https://*.example.com/mcp", "https://api.example.com/mcp", True),
        ("https://*.example.com/mcp", "https://attacker.test/x/.example.com/mcp", False),
        ("https://*.example.com/mcp", "https://attacker.test/?.example.com/mcp", False),
        ("https://*.example.com/mcp", "https://api.example.com@attacker.test/mcp", False),
        ("https://*.example.com/mcp", "https://a.b.example.com/mcp", False),
        ("https://*.example.com/mcp", "https://example.com/mcp", False),
        ("https://*.example.com/mcp", "https://evil-example.com/mcp", False),
        ("https://*.example.com/mcp", "https://api.example.com.attacker.test/mcp", False),
        ("https://*.example.com/mcp", "https://API.Example.COM/mcp", True),
        ("https://mcp-*.example.com/mcp", "https://mcp-eu.example.com/mcp", True),
        # Scheme exactly.
        ("https://*.example.com/mcp", "http://api.example.com/mcp", False),
        # Port: the scheme's default when absent, `*` for any.
        ("https://*.example.com/mcp", "https://api.example.com:443/mcp", True),
        ("https://*.example.com/mcp", "https://api.example.com:8443/mcp", False),
        ("http://127.0.0.1:*/mcp", "http://127.0.0.1:8123/mcp", True),
        ("http://127.0.0.1:*/mcp", "http://127.0.0.1/mcp", True),
        ("http://127.0.0.1:*/mcp", "http://127.0.0.2:8123/mcp", False),
        ("http://127.0.0.1:8123/mcp", "http://127.0.0.1:8124/mcp", False),
        # Path: a glob of its own.
        ("https://api.example.com/mcp", "https://api.example.com/mcp/other", False),
        ("https://api.example.com/v*/mcp", "https://api.example.com/v2/mcp", True),
        ("https://api.example.com/*", "https://api.example.com/any/path", True),
        ("https://api.example.com/*", "https://api.example.com.attacker.test/any", False),
        # Query: none unless the pattern allows one.
        ("https://api.example.com/mcp", "https://api.example.com/mcp?key=1", False),
        ("https://api.example.com/mcp?*", "https://api.example.com/mcp?key=1", True),
        # IPv6 literals compare exactly.
        ("http://[::1]:*/mcp", "http://[::1]:9000/mcp", True),
        ("http://[::1]:*/mcp", "http://[::2]:9000/mcp", False),
    ],
)
def test_url_patterns(pattern: str, url: str, allowed: bool) -> None:
    assert UrlPattern.parse(pattern).matches(url) is allowed


def test_redacted_drops_userinfo_and_query() -> None:
    shown = redacted("https://user:pw@other.example/mcp?api_key=TOPSECRET")
    assert shown == "https://other.example/mcp?[redacted]"


def _refusal(tmp_path: Path, server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SECRET_KEY", "TOPSECRET-123")
    config = {
        "gateway": {"allowed_backends": {"urls": ["https://*.example.com/mcp"]}},
        "servers": {"x": server},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    return str(info.value)


def test_a_refusal_shows_the_url_as_written_never_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _refusal(
        tmp_path, {"url": "https://other.example/mcp?api_key=${SECRET_KEY}"}, monkeypatch
    )
    assert "servers.x.url" in message and "https://other.example/mcp" in message
    assert "TOPSECRET" not in message
    message = _refusal(tmp_path, {"url": "https://${SECRET_KEY}@other.example/mcp"}, monkeypatch)
    assert "TOPSECRET" not in message


def test_the_path_trick_is_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(tmp_path, {"url": "https://attacker.test/x/.example.com/mcp"}, monkeypatch)
    assert "is not in gateway.allowed_backends.urls" in message


def test_an_unusable_pattern_is_named(tmp_path: Path) -> None:
    config = {
        "gateway": {"allowed_backends": {"urls": ["ftp://*.example.com/"]}},
        "servers": {"x": {"url": "https://a.example.com/mcp"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"allowed_backends.urls\[0\]"):
        load_plan(path)
