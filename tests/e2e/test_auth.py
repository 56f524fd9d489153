"""Authentication on: every MCP endpoint needs an API key or a JWT, and access rules decide
what each caller sees and may use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.test_auth_server import AuthServer, client_token, start_auth_server
from tests.harness import (
    BIN,
    FIXTURES,
    Gateway,
    free_port,
    keys_cli,
    start_gateway,
    start_port_fixture,
    stdio_fixture,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _keys(data_dir: Path, *args: str) -> str:
    return keys_cli(*args, "--data-dir", str(data_dir))


@pytest.fixture(scope="module")
def issuer() -> Iterator[AuthServer]:
    server = start_auth_server("auth-for-gateway")
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, issuer: AuthServer) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("auth")
    data = tmp / "keys"
    keys = {
        "alice": _keys(data, "create", "--principal", "alice", "--role", "reader"),
        "bob": _keys(data, "create", "--principal", "bob", "--role", "reader"),
        "carol": _keys(data, "create", "--principal", "carol", "--role", "admin"),
        "doomed": _keys(data, "create", "--principal", "doomed", "--role", "admin"),
    }
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
            "scopes": {"list": ["mcp:read"], "call": ["mcp:write"]},
            "rules": [
                # Readers: the demo clock only, but never add_duration. Admins: everything.
                {"effect": "allow", "roles": ["reader", "viewer"], "backends": ["clock"]},
                {"effect": "deny", "roles": ["reader", "viewer"], "names": ["add_duration"]},
                {"effect": "allow", "roles": ["admin", "ops"]},
            ],
        },
        "servers": {
            "clock": {"command": "switchyard", "args": ["demo", "clock"]},
            "fx": stdio_fixture("crashy"),
        },
    }
    gw = start_gateway(config, tmp, port=port)
    try:
        gw.wait_backend("clock")
        gw.wait_backend("fx")
        yield {"gw": gw, "keys": keys, "data": data}
    finally:
        gw.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _sdk_tools(url: str, token: str, mode: str) -> list[str]:
    http = httpx2.AsyncClient(headers=_bearer(token))
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        return sorted(t.name for t in (await client.list_tools()).tools)


async def test_no_credentials_no_entry_on_any_endpoint(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    metadata_url = f"{gw.base}/.well-known/oauth-protected-resource/mcp"
    for method, path in (
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("GET", "/sse"),
        ("POST", "/messages?session_id=x"),
    ):
        async with http.request(
            method, gw.base + path, data=b"{}", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata_url}"'
    async with http.get(metadata_url) as resp:
        meta = await resp.json()
    assert meta["resource"] == gw.url and meta["bearer_methods_supported"] == ["header"]


async def test_bad_credentials_are_refused_precisely(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    alice: str = setup["keys"]["alice"]
    client = RawClient(gw.url, http, extra_headers=_bearer(alice[:-2] + "xx"))
    resp = await client.post(b"{}", client.headers())
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    query = await http.post(gw.url + "?access_token=" + alice, data=b"{}", headers=client.headers())
    assert query.status == 400
    two = [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {alice}")]
    async with http.post(gw.url, data=b"{}", headers=two) as resp:
        assert resp.status == 400 and 'error="invalid_request"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_each_caller_sees_exactly_its_allowed_tools(setup: dict[str, Any], mode: str) -> None:
    gw: Gateway = setup["gw"]
    assert await _sdk_tools(gw.url, setup["keys"]["alice"], mode) == [
        "clock_convert_time",
        "clock_now",
    ]
    everything = await _sdk_tools(gw.url, setup["keys"]["carol"], mode)
    assert {"clock_add_duration", "clock_now", "fx_echo", "fx_crash"} <= set(everything)


async def test_a_denied_tool_answers_like_a_missing_one(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    client = await RawClient(gw.url, http, extra_headers=_bearer(setup["keys"]["alice"])).open()
    denied = await client.request("tools/call", {"name": "clock_add_duration", "arguments": {}})
    missing = await client.request("tools/call", {"name": "clock_nothing", "arguments": {}})
    assert denied.status == missing.status == 200
    assert denied.json["error"] == {"code": -32602, "message": "Unknown tool: clock_add_duration"}
    assert missing.json["error"] == {"code": -32602, "message": "Unknown tool: clock_nothing"}
    other = await client.request("tools/call", {"name": "fx_echo", "arguments": {"text": "x"}})
    assert other.json["error"]["message"] == "Unknown tool: fx_echo"


async def test_another_callers_session_id_is_unknown(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    alice = await RawClient(gw.url, http, extra_headers=_bearer(setup["keys"]["alice"])).open()
    thief = RawClient(
        gw.url, http, extra_headers=_bearer(setup["keys"]["bob"]), session_id=alice.session_id
    )
    stolen = await thief.request("tools/list")
    assert stolen.status == 404
    assert (await alice.request("tools/list")).status == 200


async def test_a_revoked_key_stops_working_within_five_seconds(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    key: str = setup["keys"]["doomed"]
    client = RawClient(gw.url, http, extra_headers=_bearer(key))
    assert (
        await client.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "d", "version": "1"},
            },
        )
    ).status == 200
    _keys(setup["data"], "revoke", key.split("_")[1])
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    status = 200
    for _ in range(60):  # polling a running gateway; bounded at 6 s
        status = (await client.post(b"{}", client.headers())).status
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401 and loop.time() - revoked_at < 5.0


async def test_jwts_from_a_real_authorization_server(
    setup: dict[str, Any], issuer: AuthServer, http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    viewer = await client_token(http, issuer, "reader", gw.url)
    assert await _sdk_tools(gw.url, viewer, "auto") == ["clock_convert_time", "clock_now"]
    ops = await client_token(http, issuer, "gateway", gw.url)
    assert "fx_echo" in await _sdk_tools(gw.url, ops, "legacy")
    elsewhere = await client_token(http, issuer, "gateway", "http://127.0.0.1:1/mcp")
    client = RawClient(gw.url, http, extra_headers=_bearer(elsewhere))
    resp = await client.post(b"{}", client.headers())
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_the_clients_credentials_never_reach_a_backend(
    gateway_factory: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    record = tmp_path / "headers.jsonl"
    data = tmp_path / "keys"
    key = _keys(data, "create", "--principal", "erin", "--role", "admin")
    args = [str(BIN / "python"), str(FIXTURES / "sdk_http.py"), "--port", "0", "--json-response"]
    proc, port = start_port_fixture(
        args, "recording-backend", env={"FIXTURE_HEADERS_FILE": str(record)}
    )
    try:
        gw = gateway_factory(
            {
                "auth": {"enabled": True, "data_dir": str(data), "rules": [{"effect": "allow"}]},
                "servers": {
                    "web": {
                        "url": f"http://127.0.0.1:{port}/mcp",
                        "headers": {"X-Backend-Key": "configured"},
                    }
                },
            }
        )
        sneaky = {
            **_bearer(key),
            "Cookie": "session=stolen",
            "X-Forwarded-For": "10.0.0.1",
            "X-User-Id": "root",
            "X-Switchyard-Principal": "root",
        }
        client = await RawClient(gw.url, http, extra_headers=sneaky).open()
        result = await client.result(
            "tools/call", {"name": "web_echo", "arguments": {"text": "hi"}}
        )
        assert result["content"][0]["text"] == "hi"
    finally:
        proc.stop()
    seen = [dict(line["headers"]) for line in map(json.loads, record.read_text().splitlines())]
    assert seen, "the backend recorded no request"
    secret = key.split("_", 2)[2]
    for headers in seen:
        assert headers.get("x-backend-key") == "configured"  # what the config says, and only that
        for name in (
            "authorization",
            "cookie",
            "x-forwarded-for",
            "x-user-id",
            "x-switchyard-principal",
        ):
            assert name not in headers, (name, headers)
        assert all(secret not in value for value in headers.values())


async def test_scopes_gate_classes_of_operations(
    setup: dict[str, Any], issuer: AuthServer, http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    reader = await client_token(http, issuer, "reader", gw.url)  # scope mcp:read only
    client = await RawClient(gw.url, http, extra_headers=_bearer(reader)).open()
    listed = await client.result("tools/list")
    assert [t["name"] for t in listed["tools"]] == ["clock_now", "clock_convert_time"]
    call = await client.request("tools/call", {"name": "clock_now", "arguments": {}})
    assert call.status == 403
    challenge = call.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:write"' in challenge
    # API keys carry no scopes: access rules alone govern them.
    key_client = await RawClient(gw.url, http, extra_headers=_bearer(setup["keys"]["alice"])).open()
    assert "content" in await key_client.result(
        "tools/call", {"name": "clock_now", "arguments": {}}
    )
    async with http.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp") as resp:
        assert (await resp.json())["scopes_supported"] == ["mcp:read", "mcp:write"]


async def test_api_keys_in_postgresql(gateway_factory: Any, http: aiohttp.ClientSession) -> None:
    dsn = "postgresql://postgres@127.0.0.1:5432/test"

    def keys(*args: str) -> str:
        return keys_cli(*args, "--dsn", dsn)

    key = keys("create", "--principal", "pg-user", "--role", "admin")
    gw = gateway_factory(
        {
            "auth": {"enabled": True, "database_url": dsn, "rules": [{"effect": "allow"}]},
            "servers": {"fx": stdio_fixture("crashy")},
        }
    )
    client = await RawClient(gw.url, http, extra_headers=_bearer(key)).open()
    assert (await client.result("tools/call", {"name": "fx_echo", "arguments": {"text": "pg"}}))[
        "content"
    ][0]["text"] == "pg"
    keys("revoke", key.split("_")[1])
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    status = 200
    for _ in range(60):  # polling a running gateway; bounded at 6 s
        status = (await client.post(b"{}", client.headers())).status
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401 and loop.time() - revoked_at < 5.0
