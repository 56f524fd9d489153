"""The access log: one JSON record per request that no client-chosen byte can split or forge."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, create_key, free_port, start_gateway
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FORGED = "2030-01-01 00:00:00,000 WARNING switchyard.auth: FORGED RECORD principal=admin"
METHOD_CHARS = 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("access-log")
    data = tmp / "keys"
    keys = {name: create_key(data, name, "user") for name in ("alice", "carol")}
    port = free_port()
    config = {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data),
            "rules": [{"effect": "allow", "principals": ["alice"]}],
        },
        "servers": {"clock": {"command": "switchyard", "args": ["demo", "clock"]}},
    }
    gw = start_gateway(config, tmp, port=port)
    try:
        gw.wait_backend("clock")
        yield {"gw": gw, "keys": keys}
    finally:
        gw.stop()


async def _open(gw: Gateway, http: aiohttp.ClientSession, key: str) -> RawClient:
    return await RawClient(gw.url, http, extra_headers={"Authorization": f"Bearer {key}"}).open()


async def test_a_hostile_method_name_yields_exactly_one_escaped_capped_json_record(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    alice = await _open(gw, http, setup["keys"]["alice"])
    method = "x\r\n" + FORGED + "\x1b[31m\r\n\u2028" + "y" * 200_000
    resp = await alice.request(method, request_id="hostile-1")
    assert resp.status == 200 and resp.json["error"]["code"] == -32601
    lines = await gw.log_lines("FORGED")
    assert len(lines) == 1, lines  # no line of its own: the CR/LF never reached the log raw
    record = json.loads(lines[0])
    expected = method[:METHOD_CHARS] + f"…[+{len(method) - METHOD_CHARS} chars]"
    assert record["method"] == expected
    assert record["id"] == '"hostile-1"'
    assert record["principal"] == "alice" and record["via"] == "api_key"
    assert record["face"] == "streamable-http" and record["era"] == "legacy"
    assert record["decision"] == "allow" and record["outcome"] == -32601
    assert isinstance(record["latency_ms"], float)
    text = gw.log_text()
    assert "\x1b" not in text and "\u2028" not in text
    assert not any(line.startswith("2030-01-01") for line in text.splitlines())


async def test_a_denied_call_is_recorded_with_its_principal_and_decision(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = setup["gw"]
    carol = await _open(gw, http, setup["keys"]["carol"])
    alice = await _open(gw, http, setup["keys"]["alice"])
    tools = await alice.list_all("tools/list", "tools")
    name = tools[0]["name"]
    resp = await carol.request("tools/call", {"name": name, "arguments": {}}, "carol-2")
    [denied] = [json.loads(line) for line in await gw.log_lines("carol-2")]
    assert denied["principal"] == "carol" and denied["decision"] == "deny"
    assert denied["method"] == "tools/call" and denied["outcome"] == resp.json["error"]["code"]
    resp = await alice.request("tools/call", {"name": name, "arguments": {}}, "alice-2")
    [allowed] = [json.loads(line) for line in await gw.log_lines("alice-2")]
    assert allowed["principal"] == "alice" and allowed["decision"] == "allow"
    assert allowed["backend"] == "clock" and allowed["target"] == name


async def test_http_level_refusals_leave_the_same_kind_of_record(
    setup: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """A 401 (no credential) and a 415 (wrong content type) are refused before any JSON-RPC
    handling, and each still leaves one structured record with the decision, the HTTP status
    as its outcome, and the principal when there was one."""
    gw: Gateway = setup["gw"]
    async with http.post(gw.url, data=b"{}", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 401
    alice = setup["keys"]["alice"]
    async with http.post(
        gw.url,
        data=b"{}",
        headers={
            "Content-Type": "text/plain",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {alice}",
        },
    ) as resp:
        assert resp.status == 415
    await gw.log_lines("Content-Type must be")  # the log is buffered: wait for the last one
    by_status: dict[int, dict[str, Any]] = {}
    for line in (await asyncio.to_thread(gw.log_text)).splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("status") in (401, 415):
                by_status[record["status"]] = record
    assert by_status[401]["decision"] == "deny" and by_status[401]["outcome"] == 401
    assert by_status[401]["principal"] is None
    assert by_status[415]["decision"] == "deny" and by_status[415]["principal"] == "alice"
    assert all(r["face"] == "http" for r in by_status.values())
