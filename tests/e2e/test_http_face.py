"""The HTTP face: DNS-rebinding guards, and each era's transport rules on /mcp and /sse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, start_gateway, stdio_fixture
from tests.rpc import INIT, JSON_HEADERS, MODERN, MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "gateway": {"allowed_origins": ["http://localhost:6274"], "max_body_bytes": 65536},
        "servers": {"fx": stdio_fixture("crashy")},
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("face"))
    try:
        gw.wait_backend("fx")
        yield gw
    finally:
        gw.stop()


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, **headers: str
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers={**JSON_HEADERS, **headers}) as resp:
        raw = await resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return resp.status, dict(resp.headers), parsed


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://localhost:6274", 200),
        ("null", 403),
        ("http://evil.example", 403),
        ("http://localhost:6274.evil.example", 403),
        ("http://localhost:6274/", 403),
        ("https://localhost:6274", 403),
        ("http://127.0.0.1:evil.example", 403),
    ],
)
async def test_origin_is_matched_exactly(
    gateway: Gateway, http: aiohttp.ClientSession, origin: str, status: int
) -> None:
    for path in ("/mcp", "/sse"):
        if path == "/mcp":
            got, _, _ = await _post(http, gateway.base + path, INIT, Origin=origin)
        else:
            async with http.get(gateway.base + path, headers={"Origin": origin}) as resp:
                got = resp.status
        assert got == status, (path, origin)


async def test_the_gateways_own_loopback_origin_is_allowed(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    got, _, _ = await _post(http, gateway.url, INIT, Origin=f"http://127.0.0.1:{gateway.port}")
    assert got == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.2:1", "localhost.evil.example"]
)
async def test_foreign_host_is_misdirected(
    gateway: Gateway, http: aiohttp.ClientSession, host: str
) -> None:
    got, _, body = await _post(http, gateway.url, INIT, Host=host)
    assert got == 421
    assert body["error"]["code"] == -32600


async def test_legacy_initialize_negotiates_and_mints_a_session(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await _post(http, gateway.url, INIT)
    assert status == 200
    assert body["result"]["protocolVersion"] == "2025-06-18"
    assert body["result"]["serverInfo"]["name"] == "switchyard"
    session = headers["mcp-session-id"]
    assert len(session) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in session)
    unknown = dict(INIT, params=dict(INIT["params"], protocolVersion="1999-01-01"))
    _, _, body = await _post(http, gateway.url, unknown)
    assert body["result"]["protocolVersion"] == "2025-11-25"
    # Requests need the session; an unknown one is 404 so the client re-initializes.
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert (await _post(http, gateway.url, ping))[0] == 400
    assert (await _post(http, gateway.url, ping, **{"Mcp-Session-Id": "nope"}))[0] == 404
    status, _, body = await _post(http, gateway.url, ping, **{"Mcp-Session-Id": session})
    assert (status, body) == (200, {"jsonrpc": "2.0", "id": 2, "result": {}})
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await _post(http, gateway.url, note, **{"Mcp-Session-Id": session}))[0] == 202
    async with http.delete(gateway.url, headers={"Mcp-Session-Id": session}) as resp:
        assert resp.status == 200
    assert (await _post(http, gateway.url, ping, **{"Mcp-Session-Id": session}))[0] == 404


async def test_malformed_messages_get_jsonrpc_errors_never_500(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    cases = [
        (b"{not json", 400, -32700),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1}', 400, -32600),
    ]
    for body, status, code in cases:
        got, _, parsed = await _post(http, gateway.url, body)
        assert (got, parsed["error"]["code"], parsed["id"]) == (status, code, None), body


async def test_transport_header_rules(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    got, _, _ = await _post(http, gateway.url, INIT, **{"Content-Type": "text/plain"})
    assert got == 415
    # Either answer kind may come back, so a POST must accept both (wildcards count).
    for accept, status in (
        ("text/html", 406),
        ("application/json", 406),
        ("text/event-stream", 406),
        ("", 406),
        ("application/json, text/event-stream", 200),
        ("text/event-stream;q=0.9, Application/JSON;q=1", 200),
        ("*/*", 200),
        ("application/*, text/*", 200),
    ):
        got, _, body = await _post(http, gateway.url, INIT, Accept=accept)
        assert got == status, accept
        if status == 406:
            assert body["error"]["code"] == -32600
    got, _, _ = await _post(http, gateway.url, json.dumps({**INIT, "pad": "x" * 70000}).encode())
    assert got == 413
    async with http.put(gateway.url) as resp:
        assert resp.status == 405


async def test_modern_requests_are_validated_against_their_headers(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    def call(**overrides: Any) -> dict[str, Any]:
        params = {"name": "fx_echo", "arguments": {"text": "x"}, "_meta": MODERN_META}
        params.update(overrides)
        return {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}

    modern = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "fx_echo"}
    status, _, body = await _post(http, gateway.url, call(), **modern)
    assert status == 200 and body["result"]["content"][0]["text"] == "x"
    assert body["result"]["resultType"] == "complete"
    # Mismatched or missing mirrors.
    for headers in (
        {**modern, "Mcp-Name": "fx_other"},
        {**modern, "Mcp-Method": "tools/list"},
        {k: v for k, v in modern.items() if k != "Mcp-Name"},
    ):
        status, _, body = await _post(http, gateway.url, call(), **headers)
        assert (status, body["error"]["code"], body["id"]) == (400, -32020, 9)
    # Body version differs from the header.
    status, _, body = await _post(
        http,
        gateway.url,
        call(_meta={**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2025-11-25"}),
        **modern,
    )
    assert (status, body["error"]["code"]) == (400, -32020)
    # Missing envelope keys.
    status, _, body = await _post(http, gateway.url, call(_meta={}), **modern)
    assert (status, body["error"]["code"]) == (400, -32602)
    # An unsupported version.
    future = {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    status, _, body = await _post(
        http, gateway.url, call(_meta=future), **{**modern, "MCP-Protocol-Version": "2099-01-01"}
    )
    assert (status, body["error"]["code"]) == (400, -32022)
    assert (
        MODERN in body["error"]["data"]["supported"]
        and body["error"]["data"]["requested"] == "2099-01-01"
    )
    # Unknown methods are 404 with -32601; legacy-only methods are unknown here.
    for method in ("nope/nothing", "initialize", "logging/setLevel"):
        req = {"jsonrpc": "2.0", "id": 3, "method": method, "params": {"_meta": MODERN_META}}
        status, _, body = await _post(
            http, gateway.url, req, **{"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
        )
        assert (status, body["error"]["code"]) == (404, -32601), method
    # No sessions in this era: GET and DELETE are 405, and no session id is minted.
    async with http.get(
        gateway.url, headers={"MCP-Protocol-Version": MODERN, "Accept": "text/event-stream"}
    ) as resp:
        assert resp.status == 405
    async with http.delete(gateway.url, headers={"MCP-Protocol-Version": MODERN}) as resp:
        assert resp.status == 405
    disc = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {"_meta": MODERN_META},
    }
    status, headers, body = await _post(
        http, gateway.url, disc, **{"MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"}
    )
    assert status == 200 and "mcp-session-id" not in headers
    result = body["result"]
    assert result["supportedVersions"] == [MODERN]
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "switchyard"
    assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == (
        "complete",
        0,
        "private",
    )


async def test_modern_name_header_may_be_base64(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = RawClient(
        gateway.url, http, era="modern", extra_headers={"Mcp-Name": "=?base64?ZnhfZWNobw==?="}
    )
    result = await client.result("tools/call", {"name": "fx_echo", "arguments": {"text": "b64"}})
    assert result["content"][0]["text"] == "b64"


async def test_ping_is_answered_in_each_era_with_that_eras_result(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    modern = await RawClient(gateway.url, http, era="modern").request("ping", request_id=5)
    assert (modern.status, modern.json) == (
        200,
        {"jsonrpc": "2.0", "id": 5, "result": {"resultType": "complete"}},
    )
    legacy = await RawClient(gateway.url, http).open()
    answer = await legacy.request("ping", request_id=6)
    assert (answer.status, answer.json) == (200, {"jsonrpc": "2.0", "id": 6, "result": {}})


async def test_readyz_without_authentication_lists_the_backends(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.base}/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["ready"] is True and body["backends"]["fx"]["state"] == "up"


async def test_modern_tool_arguments_must_be_an_object(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = RawClient(gateway.url, http, era="modern")
    for arguments in (["x"], "x", 3):
        answer = await client.request(
            "tools/call", {"name": "fx_echo", "arguments": arguments}, request_id=12
        )
        assert answer.status == 400
        assert (answer.json["id"], answer.json["error"]["code"]) == (12, -32602)
