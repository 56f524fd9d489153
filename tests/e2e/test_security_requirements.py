"""security.md §2, requirement by requirement: one row per case, each asserting the exact HTTP
status, the JSON-RPC code, and whether the backend (which records every request) heard of it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_auth_server import AuthServer, client_token, start_auth_server
from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    create_key,
    free_port,
    start_gateway,
    start_port_fixture,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


@dataclass
class World:
    gw: Gateway
    record: Path
    keys: dict[str, str]
    issuer: AuthServer
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("security")
    record = tmp / "backend-headers.jsonl"
    args = [
        PYTHON,
        str(FIXTURES / "sdk_http.py"),
        "--port",
        "0",
        "--json-response",
        "--name",
        "web",
    ]
    backend, backend_port = start_port_fixture(
        args, "security-backend", env={"FIXTURE_HEADERS_FILE": str(record)}
    )
    issuer = start_auth_server("auth-for-security")
    data = tmp / "keys"

    def key(principal: str, role: str) -> str:
        return create_key(data, principal, role)

    keys = {
        "user": key("user", "user"),
        "other": key("other", "user"),
        "nobody": key("nobody", "none"),
    }
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "issuers": [{"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri}],
            "scopes": {"call": ["mcp:write"]},
            "rules": [
                {"effect": "allow", "roles": ["user", "viewer"], "backends": ["web"]},
                {"effect": "deny", "names": ["add"]},
            ],
        },
        "gateway": {"max_body_bytes": 65536},
        "servers": {
            "web": {
                "url": f"http://127.0.0.1:{backend_port}/mcp",
                "isolation": "shared",
                "timeout": 2,
            }
        },
    }
    gw = start_gateway(config, tmp, port=port)
    try:
        gw.wait_backend("web")
        yield World(gw, record, keys, issuer)
    finally:
        gw.stop()
        issuer.proc.stop()
        backend.stop()


def _received(world: World) -> int:
    return len(world.record.read_text().splitlines()) if world.record.exists() else 0


def _headers(world: World, who: str | None = "user", **extra: str) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
    }
    if who is not None:
        h["Authorization"] = f"Bearer {world.keys.get(who) or world.tokens[who]}"
    h.update(extra)
    return h


def _call(name: str, **params: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"text": "x"}, "_meta": META, **params},
    }


def _unsigned(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@dataclass(frozen=True)
class Case:
    requirement: str
    name: str
    body: Any
    headers: dict[str, str] | None = None  # built per world when None
    who: str | None = "user"
    status: int = 200
    code: int | None = None
    reaches_backend: bool = False
    method: str = "POST"
    extra: tuple[tuple[str, str], ...] = ()
    path: str = "/mcp"


CASES = [
    Case("R-A1", "no credentials", _call("web_echo"), who=None, status=401),
    Case("R-A1", "unknown API key", _call("web_echo"), who="bogus", status=401),
    Case("R-A2", "unsigned token (alg none)", _call("web_echo"), who="alg-none", status=401),
    Case("R-A2", "token for another audience", _call("web_echo"), who="foreign-aud", status=401),
    Case(
        "R-A3",
        "token in the query string",
        _call("web_echo"),
        who=None,
        status=400,
        path="/mcp?access_token=x",
    ),
    Case(
        "R-A3",
        "two Authorization headers",
        _call("web_echo"),
        status=400,
        extra=(("Authorization", "Bearer sy_x"),),
    ),
    Case(
        "R-A4/A5",
        "client credentials and identity headers are not forwarded",
        _call("web_echo"),
        reaches_backend=True,
        extra=(("Cookie", "s=1"), ("X-Forwarded-For", "10.0.0.1"), ("X-User-Id", "root")),
    ),
    Case(
        "R-B1",
        "default deny: a caller no rule allows sees nothing",
        _call("web_echo"),
        who="nobody",
        code=-32602,
    ),
    Case(
        "R-B1",
        "decisions use the body, not the mirrored header",
        _call("web_add"),
        status=400,
        code=-32020,
        extra=(("Mcp-Name", "web_echo"),),
    ),
    Case("R-B2", "a denied tool answers like a missing one", _call("web_add"), code=-32602),
    Case("R-B2", "a missing tool", _call("web_nothing"), code=-32602),
    Case("R-B3", "insufficient scope", _call("web_echo"), who="reader-token", status=403),
    Case("R-B4", "no case variant of a name", _call("WEB_ECHO"), code=-32602),
    Case(
        "R-B5",
        "duplicate keys",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}',
        status=400,
        code=-32700,
    ),
    Case("R-C1", "a batch", [_call("web_echo")], status=400, code=-32600),
    Case("R-C1", "a null id", {**_call("web_echo"), "id": None}, status=400, code=-32600),
    Case("R-C1", "a boolean id", {**_call("web_echo"), "id": True}, status=400, code=-32600),
    Case("R-C1", "not JSON", b"{nope", status=400, code=-32700),
    Case(
        "R-C1",
        "NaN",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":NaN}}',
        status=400,
        code=-32700,
    ),
    Case(
        "R-C1",
        "invalid UTF-8",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/\xfflist"}',
        status=400,
        code=-32700,
    ),
    Case(
        "R-C1",
        "an unknown method",
        {"jsonrpc": "2.0", "id": 1, "method": "nope", "params": {"_meta": META}},
        status=404,
        code=-32601,
        extra=(("Mcp-Method", "nope"),),
    ),
    Case(
        "R-C2",
        "header and body disagree",
        _call("web_echo"),
        status=400,
        code=-32020,
        extra=(("Mcp-Method", "tools/list"),),
    ),
    Case(
        "R-C2",
        "an unsupported version",
        _call("web_echo", _meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}),
        status=400,
        code=-32022,
        extra=(("MCP-Protocol-Version", "2099-01-01"),),
    ),
    Case(
        "R-C3",
        "Accept without JSON",
        _call("web_echo"),
        status=406,
        extra=(("Accept", "text/html"),),
    ),
    Case(
        "R-C3",
        "Accept with JSON but no event stream",
        _call("web_echo"),
        status=406,
        code=-32600,
        extra=(("Accept", "application/json"),),
    ),
    Case(
        "R-C3",
        "Accept with an event stream but no JSON",
        _call("web_echo"),
        status=406,
        code=-32600,
        extra=(("Accept", "text/event-stream"),),
    ),
    Case(
        "R-C1",
        "tools/call arguments not an object",
        _call("web_echo", arguments=["x"]),
        status=400,
        code=-32602,
        extra=(("Mcp-Method", "tools/call"), ("Mcp-Name", "web_echo")),
    ),
    Case(
        "R-C3",
        "not application/json",
        _call("web_echo"),
        status=415,
        extra=(("Content-Type", "text/plain"),),
    ),
    Case("R-D3", "GET on the modern path", None, status=405, method="GET"),
    Case("R-D3", "DELETE on the modern path", None, status=405, method="DELETE"),
    Case(
        "R-E1",
        "a foreign Origin",
        _call("web_echo"),
        status=403,
        extra=(("Origin", "http://evil.example"),),
    ),
    Case("R-E1", "the null Origin", _call("web_echo"), status=403, extra=(("Origin", "null"),)),
    Case(
        "R-E1", "a foreign Host", _call("web_echo"), status=421, extra=(("Host", "evil.example"),)
    ),
    Case("R-I1", "a body over the limit", {**_call("web_echo"), "pad": "x" * 70000}, status=413),
    Case(
        "R-I1",
        "headers over the limit",
        _call("web_echo"),
        status=431,
        extra=(("X-Pad", "y" * 40000),),
    ),
    Case(
        "R-I1",
        "nesting over the limit",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":' + b"[" * 70 + b"]" * 70 + b"}",
        status=400,
        code=-32600,
    ),
]


async def _tokens(world: World, http: aiohttp.ClientSession) -> None:
    if world.tokens:
        return
    world.tokens["bogus"] = "sy_aaaaaaaa_" + "b" * 43
    world.tokens["alg-none"] = _unsigned(
        {"iss": world.issuer.issuer, "sub": "x", "aud": world.gw.url, "exp": 4102444800}
    )
    world.tokens["foreign-aud"] = await client_token(
        http, world.issuer, "gateway", "http://127.0.0.1:1/mcp"
    )
    world.tokens["reader-token"] = await client_token(http, world.issuer, "reader", world.gw.url)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.requirement} {c.name}" for c in CASES])
async def test_requirement(world: World, http: aiohttp.ClientSession, case: Case) -> None:
    await _tokens(world, http)
    headers = _headers(world, case.who)
    pairs = list(headers.items())
    for name, value in case.extra:
        pairs = [
            (k, v) for k, v in pairs if k.lower() != name.lower() or name.lower() == "authorization"
        ]
        pairs.append((name, value))
    if isinstance(case.body, bytes):
        body: bytes | None = case.body
    elif case.body is None:
        body = None
    else:
        body = json.dumps(case.body).encode()
    if case.body is not None and not isinstance(case.body, bytes | list) and "params" in case.body:
        name_value = case.body["params"].get("name")
        if name_value is not None and not any(k == "Mcp-Name" for k, _ in pairs):
            pairs.append(("Mcp-Name", name_value))
        if not any(k == "Mcp-Method" for k, _ in pairs):
            pairs.append(("Mcp-Method", case.body["method"]))
    before = _received(world)
    async with http.request(
        case.method, world.gw.base + case.path, data=body, headers=pairs
    ) as resp:
        status, raw = resp.status, await resp.read()
    assert status == case.status, (status, raw[:300])
    if case.code is not None:
        assert json.loads(raw)["error"]["code"] == case.code, raw[:300]
    reached = _received(world) > before
    assert reached == case.reaches_backend
    if reached:
        seen = [
            dict(json.loads(line)["headers"])
            for line in world.record.read_text().splitlines()[before:]
        ]
        for headers_seen in seen:
            for name in ("authorization", "cookie", "x-forwarded-for", "x-user-id"):
                assert name not in headers_seen, (name, headers_seen)


async def test_r_c4_gateway_errors_are_marked_and_outside_the_reserved_range(
    world: World, http: aiohttp.ClientSession
) -> None:
    slow = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "web_slow", "arguments": {"ms": 4000}, "_meta": META},
    }
    headers = {**_headers(world), "Mcp-Method": "tools/call", "Mcp-Name": "web_slow"}
    async with http.post(world.gw.url, data=json.dumps(slow).encode(), headers=headers) as resp:
        answer = await resp.json()
    # The backend's 2 s timeout: a gateway error, outside -32768..-32000, marked as the gateway's.
    assert answer["id"] == 7
    assert answer["error"]["code"] == -31001
    assert answer["error"]["data"] == {"source": "gateway", "backend": "web"}


async def test_r_d1_r_d2_sessions(world: World, http: aiohttp.ClientSession) -> None:
    legacy = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "s", "version": "1"},
        },
    }
    async with http.post(
        world.gw.url, json=init, headers={**legacy, "Authorization": f"Bearer {world.keys['user']}"}
    ) as resp:
        sid = resp.headers["Mcp-Session-Id"]
    assert len(base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4))) >= 16  # ≥128 random bits
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    for who, status in (("other", 404), ("user", 200)):
        auth = {"Authorization": f"Bearer {world.keys[who]}", "Mcp-Session-Id": sid}
        async with http.post(world.gw.url, json=ping, headers={**legacy, **auth}) as resp:
            assert resp.status == status
    user = {"Authorization": f"Bearer {world.keys['user']}"}
    async with http.post(world.gw.url, json=ping, headers={**legacy, **user}) as resp:
        assert resp.status == 400  # R-D2: no session id
    async with http.delete(world.gw.url, headers={**user, "Mcp-Session-Id": sid}) as resp:
        assert resp.status == 200
    async with http.post(
        world.gw.url, json=ping, headers={**legacy, **user, "Mcp-Session-Id": sid}
    ) as resp:
        assert resp.status == 404


async def test_r_e2_no_permissive_cors(world: World, http: aiohttp.ClientSession) -> None:
    origin = f"http://127.0.0.1:{world.gw.port}"
    headers = {
        **_headers(world),
        "Origin": origin,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "web_echo",
    }
    async with http.post(
        world.gw.url, data=json.dumps(_call("web_echo")).encode(), headers=headers
    ) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_readyz_shows_backend_details_only_to_an_authenticated_caller(
    world: World, http: aiohttp.ClientSession
) -> None:
    url = f"{world.gw.base}/readyz"
    for headers in ({}, {"Authorization": "Bearer sy_not-a-real-key"}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200
            # Whether it serves, and the lifecycle word (starting/ready/unavailable): nothing
            # about any backend.
            assert await resp.json() == {"ready": True, "status": "ready"}
            assert "WWW-Authenticate" not in resp.headers
    # Any valid credential, even one no rule allows anything, sees the details.
    for who in ("nobody", "user"):
        auth = {"Authorization": f"Bearer {world.keys[who]}"}
        async with http.get(url, headers=auth) as resp:
            body = await resp.json()
        assert body["ready"] is True
        assert body["backends"]["web"]["state"] == "up"
        assert body["backends"]["web"]["era"] in ("legacy", "modern")
