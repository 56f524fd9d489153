"""Legacy session limits on a running gateway: per caller, gateway-wide, and their lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, create_key, free_port, start_gateway
from tests.rpc import LEGACY, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SESSION_LIMIT = -31010
PER_CALLER = 3


def _config(data: Path, port: int, lifetime: float = 86400, **limits: Any) -> dict[str, Any]:
    return {
        "gateway": {"limits": limits, "session_max_lifetime": lifetime},
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            # Carol has no allow rule at all: sessions cost her nothing but the handshake.
            "rules": [{"effect": "allow", "principals": ["alice", "bob"]}],
        },
        "servers": {"clock": {"command": "switchyard", "args": ["demo", "clock"]}},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sessions")
    data = tmp / "keys"
    keys = {name: create_key(data, name, "user") for name in ("alice", "bob", "carol")}
    port = free_port()
    gw = start_gateway(
        _config(data, port, max_sessions=8, max_sessions_per_principal=PER_CALLER), tmp, port=port
    )
    try:
        gw.wait_backend("clock")
        yield {"gw": gw, "keys": keys}
    finally:
        gw.stop()


def _client(gw: Gateway, http: aiohttp.ClientSession, key: str) -> RawClient:
    return RawClient(gw.url, http, extra_headers={"Authorization": f"Bearer {key}"})


async def _initialize(client: RawClient) -> tuple[int, Any]:
    resp = await client.post(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        client.headers(),
    )
    return resp.status, resp.json


async def _delete(client: RawClient, session_id: str) -> None:
    headers = {**client.headers(), "Mcp-Session-Id": session_id}
    async with client.http.delete(client.url, headers=headers) as resp:
        assert resp.status == 200


async def test_a_caller_at_its_session_cap_is_refused_and_another_can_still_initialize(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    carol = _client(gw, http, setup["keys"]["carol"])
    opened: list[str] = []
    for _ in range(PER_CALLER):
        resp = await carol.post(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {}},
            },
            carol.headers(),
        )
        assert resp.status == 200, resp.body
        opened.append(resp.headers["mcp-session-id"])
    status, body = await _initialize(carol)
    assert status == 429
    assert body["id"] == 7
    assert body["error"]["code"] == SESSION_LIMIT
    assert body["error"]["data"] == {"source": "gateway"}
    # HTTP+SSE sessions count against the same cap.
    async with http.get(
        f"{gw.base}/sse", headers={"Authorization": f"Bearer {setup['keys']['carol']}"}
    ) as resp:
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == SESSION_LIMIT
    alice = await _client(gw, http, setup["keys"]["alice"]).open()
    assert alice.session_id is not None
    tools = await alice.list_all("tools/list", "tools")
    assert tools, "alice's new session works"
    for session_id in opened:
        await _delete(carol, session_id)
    status, _ = await _initialize(carol)
    assert status == 200  # closing her sessions gave carol her places back


async def test_a_session_past_its_lifetime_ends_its_open_stream(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    data = tmp_path / "keys"
    key = create_key(data, "bob", "user")
    port = free_port()
    gw = start_gateway(_config(data, port, lifetime=1), tmp_path, port=port)
    try:
        bob = await _client(gw, http, key).open()
        headers = {**bob.headers(), "Accept": "text/event-stream"}
        async with http.get(gw.url, headers=headers) as resp:
            assert resp.status == 200
            # The stream would stay open (keep-alives) for good: the session's lifetime ends it.
            async with asyncio.timeout(15):
                await resp.read()
        answer = await bob.request("tools/list")
        assert answer.status == 404
    finally:
        gw.stop()
