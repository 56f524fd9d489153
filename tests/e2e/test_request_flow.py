"""Request-scoped traffic in both eras: progress, cancellation, progress-extended timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from tests.harness import BIN, FIXTURES, PYTHON, Gateway, start_gateway
from tests.rpc import MODERN, MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _sdk_stdio(events: Path, **extra: Any) -> dict[str, Any]:
    return {
        "command": PYTHON,
        "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "io"],
        "env": {"FIXTURE_EVENTS_FILE": str(events)},
        **extra,
    }


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events") / "events.log"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, events: Path) -> Iterator[Gateway]:
    config = {"servers": {"io": _sdk_stdio(events)}}
    gw = start_gateway(config, tmp_path_factory.mktemp("flow"))
    try:
        gw.wait_backend("io")
        yield gw
    finally:
        gw.stop()


def _events(path: Path) -> list[str]:
    return path.read_text().split("\n") if path.exists() else []


async def _wait_event(path: Path, event: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while event not in _events(path):
        assert time.monotonic() < deadline, f"{event!r} never recorded: {_events(path)}"
        await asyncio.sleep(0.05)


def _sse_messages(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(b"data: ") :])
        for line in body.split(b"\n")
        if line.startswith(b"data: ")
    ]


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_progress_turns_the_post_answer_into_an_sse_stream(
    gateway: Gateway, http: aiohttp.ClientSession, era: str
) -> None:
    client = await RawClient(gateway.url, http, era=era).open()
    params = {
        "name": "io_ticks",
        "arguments": {"count": 3, "interval_ms": 10},
        "_meta": {"progressToken": 1},
    }
    resp = await client.request("tools/call", params, request_id=1)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    messages = _sse_messages(resp.body)
    progress = [m["params"] for m in messages if m.get("method") == "notifications/progress"]
    # The client's own token comes back, whatever token went upstream.
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
        (1, 1, 3),
        (1, 2, 3),
        (1, 3, 3),
    ]
    assert messages[-1]["id"] == 1 and messages[-1]["result"]["content"][0]["text"] == "ticked 3"
    # Without a token nothing switches: a plain JSON answer.
    plain = await client.request(
        "tools/call", {"name": "io_echo", "arguments": {"text": "x"}}, request_id=2
    )
    assert plain.headers["Content-Type"].startswith("application/json")


async def test_two_clients_with_the_same_progress_token_each_get_only_their_own(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    a = await RawClient(gateway.url, http).open()
    b = await RawClient(gateway.url, http).open()

    def call(count: int) -> dict[str, Any]:
        return {
            "name": "io_ticks",
            "arguments": {"count": count, "interval_ms": 20},
            "_meta": {"progressToken": "same"},
        }

    ra, rb = await asyncio.gather(
        a.request("tools/call", call(2)), b.request("tools/call", call(4))
    )
    totals_a = {m["params"]["total"] for m in _sse_messages(ra.body) if m.get("method")}
    totals_b = {m["params"]["total"] for m in _sse_messages(rb.body) if m.get("method")}
    assert (totals_a, totals_b) == ({2}, {4})
    assert _sse_messages(ra.body)[-1]["result"]["content"][0]["text"] == "ticked 2"
    assert _sse_messages(rb.body)[-1]["result"]["content"][0]["text"] == "ticked 4"


@pytest.mark.parametrize("face", ["sse", "stdio"])
async def test_progress_reaches_sdk_clients_on_the_other_faces(gateway: Gateway, face: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    if face == "sse":
        transport: Any = sse_client(f"{gateway.base}/sse")
    else:
        transport = StdioServerParameters(
            command=str(BIN / "switchyard"),
            args=["stdio", "--config", str(gateway.config_path), "--log-level", "warning"],
        )
    async with Client(transport, mode="legacy") as client:
        result = await client.call_tool(
            "io_ticks", {"count": 2, "interval_ms": 10}, progress_callback=on_progress
        )
    assert result.content[0].text == "ticked 2"  # type: ignore[union-attr]
    assert seen == [(1, 2), (2, 2)]


async def test_legacy_cancel_reaches_the_backend_and_the_post_is_answered(
    gateway: Gateway, http: aiohttp.ClientSession, events: Path
) -> None:
    client = await RawClient(gateway.url, http).open()
    call = asyncio.create_task(
        client.request(
            "tools/call", {"name": "io_hold", "arguments": {"tag": "legacy", "ms": 20000}}, 5
        )
    )
    await asyncio.sleep(0.3)  # let the call reach the backend; the assertion below is on events
    cancel = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 5, "reason": "user"},
    }
    assert (await client.post(cancel, client.headers())).status == 202
    resp = await asyncio.wait_for(call, 10)
    assert resp.json["error"]["code"] == -32800
    await _wait_event(events, "cancelled legacy")


async def test_a_foreign_session_cannot_cancel_someone_elses_request(
    gateway: Gateway, http: aiohttp.ClientSession, events: Path
) -> None:
    owner = await RawClient(gateway.url, http).open()
    other = await RawClient(gateway.url, http).open()
    call = asyncio.create_task(
        owner.request(
            "tools/call", {"name": "io_hold", "arguments": {"tag": "owned", "ms": 1500}}, 6
        )
    )
    await asyncio.sleep(0.3)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 6}}
    assert (await other.post(cancel, other.headers())).status == 202
    resp = await asyncio.wait_for(call, 10)
    assert resp.json["result"]["content"][0]["text"] == "held owned"
    assert "cancelled owned" not in _events(events)


async def test_modern_client_closing_its_stream_cancels_the_backend_request(
    gateway: Gateway, events: Path
) -> None:
    params = {"name": "io_hold", "arguments": {"tag": "modern", "ms": 20000}, "_meta": MODERN_META}
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "io_hold",
    }
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    headers |= {"Host": f"127.0.0.1:{gateway.port}", "Content-Length": str(len(body))}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /mcp HTTP/1.1\r\n{head}\r\n".encode() + body)
    await writer.drain()
    await asyncio.sleep(1.0)  # past the gateway's disconnect-watch delay, with the call in flight
    writer.close()
    await _wait_event(events, "cancelled modern")


async def test_progress_keeps_a_long_call_alive_up_to_the_hard_limit(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory({"servers": {"io": _sdk_stdio(tmp_path / "ev", timeout=1)}})
    gw_hard = gateway_factory(
        {"servers": {"io": _sdk_stdio(tmp_path / "ev2", timeout=1, max_request_time=1.5)}}
    )
    client = await RawClient(gw.url, http).open()
    # 6 ticks 400 ms apart: 2.4 s in all, beyond the 1 s timeout, but never 1 s without progress.
    params = {
        "name": "io_ticks",
        "arguments": {"count": 6, "interval_ms": 400},
        "_meta": {"progressToken": "t"},
    }
    resp = await client.request("tools/call", params)
    assert _sse_messages(resp.body)[-1]["result"]["content"][0]["text"] == "ticked 6", resp.body
    # Without a progress token there is no progress to extend it: the timeout holds.
    del params["_meta"]
    resp = await client.request("tools/call", params)
    assert resp.json["error"]["code"] == -31001
    # With progress flowing, the hard maximum still ends it.
    hard = await RawClient(gw_hard.url, http).open()
    params["_meta"] = {"progressToken": "t"}
    t0 = time.monotonic()
    resp = await hard.request("tools/call", params)
    assert 1.4 <= time.monotonic() - t0 < 2.3
    last = _sse_messages(resp.body)[-1]
    assert last["error"]["code"] == -31001
    assert len(_sse_messages(resp.body)) == 4  # three ticks made it out before the limit
