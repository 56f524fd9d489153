"""Who a caller is, by address: its TCP peer, unless a proxy named in `gateway.trusted_proxies`
says otherwise. A client cannot pick the address it is counted under (the per-address session
cap with authentication off), and a request relayed by a proxy on this machine is not a local
caller of the admin API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway, start_gateway
from tests.rpc import INIT, JSON_HEADERS

pytestmark = pytest.mark.e2e

CAP = 3
"""Sessions one address may hold here (`limits.max_sessions_per_principal`)."""
INITIALIZE = json.dumps(INIT).encode()


def _config(tmp: Path, **gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {"limits": {"max_sessions_per_principal": CAP}, **gateway},
        "storage": {"data_dir": str(tmp / "db")},
        "admin": {"local_unauthenticated": True},
        "servers": {"clock": {"command": "switchyard", "args": ["demo", "clock"]}},
    }


def _post(gw: Gateway, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    request = urllib.request.Request(
        gw.base + path, data=body, method="POST" if body is not None else "GET"
    )
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def initialize(gw: Gateway, headers: dict[str, str] | None = None) -> int:
    return _post(gw, "/mcp", {**JSON_HEADERS, **(headers or {})}, INITIALIZE)


def admin_status(gw: Gateway, headers: dict[str, str] | None = None) -> int:
    return _post(gw, "/admin/v1/status", headers or {})


def test_forwarding_headers_from_an_untrusted_peer_change_nothing(tmp_path: Path) -> None:
    gw = start_gateway(_config(tmp_path), tmp_path)
    try:
        # A new X-Forwarded-For per session: still one caller (the TCP peer), at its cap.
        opened = [initialize(gw, {"X-Forwarded-For": f"10.0.0.{n}"}) for n in range(1, CAP + 1)]
        assert opened == [200] * CAP
        assert initialize(gw, {"X-Forwarded-For": "10.0.0.99"}) == 429
        assert initialize(gw, {"Forwarded": "for=10.0.0.98"}) == 429
        assert initialize(gw) == 429
        # The admin API's local callers connect directly: a relayed request is not one.
        assert admin_status(gw) == 200
        assert admin_status(gw, {"X-Forwarded-For": "203.0.113.7"}) == 403
        assert admin_status(gw, {"Forwarded": "for=203.0.113.7"}) == 403
        assert admin_status(gw, {"X-Real-IP": "203.0.113.7"}) == 403
    finally:
        gw.stop()


def test_a_trusted_proxy_names_each_caller_and_one_callers_cap_is_its_own(
    tmp_path: Path,
) -> None:
    gw = start_gateway(_config(tmp_path, trusted_proxies=["127.0.0.1"]), tmp_path)
    try:
        alice, bob = {"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "10.0.0.2"}
        assert [initialize(gw, alice) for _ in range(CAP)] == [200] * CAP
        assert initialize(gw, alice) == 429
        # What the client wrote to the left of what the proxy appended is not believed.
        assert initialize(gw, {"X-Forwarded-For": "10.0.0.2, 10.0.0.1"}) == 429
        # Bob, another caller behind the same proxy, has all of his own places.
        assert [initialize(gw, bob) for _ in range(CAP)] == [200] * CAP
        assert initialize(gw, bob) == 429
        # A relayed request is still no local caller of the admin API.
        assert admin_status(gw, {"X-Forwarded-For": "127.0.0.1"}) == 403
        assert admin_status(gw) == 200
    finally:
        gw.stop()


def test_a_trusted_proxy_that_is_no_address_is_refused_at_load(tmp_path: Path) -> None:
    from switchyard.config.load import ConfigError, load_plan

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"gateway": {"trusted_proxies": ["proxy.internal"]}, "servers": {}}))
    with pytest.raises(ConfigError, match=r"'proxy\.internal' is not an IP address or network"):
        load_plan(path)
