"""Resource subscriptions and list changes, for legacy sessions and modern listen streams,
against a backend of either era."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.harness import FIXTURES, PYTHON, Gateway, start_port_fixture
from tests.rpc import MODERN, MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WATCHED = "test://watched-resource"


@pytest.fixture(params=["modern", "legacy"])
def gateway(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> Gateway:
    backend = {
        "command": PYTHON,
        "args": [str(FIXTURES / "conformance_server.py")],
        "prefix": "",
        "era": request.param,
    }
    if request.param == "legacy":
        backend["isolation"] = "shared"  # updates of one shared upstream session, fanned out
    return gateway_factory({"servers": {"cf": backend}})


class Stream:
    """An open SSE response, read message by message."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.buffer = b""

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while b"\n\n" not in self.buffer or not self._has_data():
                self.buffer += await self.resp.content.readany()
        while True:
            event, _, self.buffer = self.buffer.partition(b"\n\n")
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    return json.loads(line[6:])  # type: ignore[no-any-return]

    def _has_data(self) -> bool:
        return any(
            line.startswith(b"data: ")
            for event in self.buffer.split(b"\n\n")[:-1]
            for line in event.split(b"\n")
        )


async def _get_stream(http: aiohttp.ClientSession, gw: Gateway, client: RawClient) -> Stream:
    resp = await http.get(
        gw.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": client.session_id or ""}
    )
    assert resp.status == 200
    return Stream(resp)


async def _listen(
    http: aiohttp.ClientSession, url: str, listen_id: str, notifications: dict[str, Any]
) -> Stream:
    """A 2026-07-28 `subscriptions/listen` stream, open (its first event not yet read)."""
    params = {"notifications": notifications, "_meta": MODERN_META}
    body = {"jsonrpc": "2.0", "id": listen_id, "method": "subscriptions/listen", "params": params}
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "subscriptions/listen",
    }
    resp = await http.post(url, data=json.dumps(body).encode(), headers=headers)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    return Stream(resp)


async def test_updates_reach_only_subscribed_legacy_sessions(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    alice = await RawClient(gateway.url, http).open()
    bob = await RawClient(gateway.url, http).open()
    alice_stream, bob_stream = (
        await _get_stream(http, gateway, alice),
        await _get_stream(http, gateway, bob),
    )
    assert await alice.result("resources/subscribe", {"uri": WATCHED}) == {}
    await alice.result("tools/call", {"name": "update_watched_resource", "arguments": {}})
    update = await alice_stream.next()
    assert update == {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": WATCHED},
    }
    # Bob subscribes only now: the first update must not have reached him, the second must.
    assert await bob.result("resources/subscribe", {"uri": WATCHED}) == {}
    await bob.result("tools/call", {"name": "update_watched_resource", "arguments": {}})
    assert (await bob_stream.next())["params"] == {"uri": WATCHED}
    assert (await alice_stream.next())["params"] == {"uri": WATCHED}
    assert b"resources/updated" not in bob_stream.buffer
    # After unsubscribing, alice hears nothing more while bob still does.
    assert await alice.result("resources/unsubscribe", {"uri": WATCHED}) == {}
    await bob.result("tools/call", {"name": "update_watched_resource", "arguments": {}})
    assert (await bob_stream.next())["params"] == {"uri": WATCHED}
    assert b"resources/updated" not in alice_stream.buffer
    alice_stream.resp.close()
    bob_stream.resp.close()


async def test_a_modern_listen_stream_is_acknowledged_and_tagged(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    notifications = {
        "toolsListChanged": True,
        "resourceSubscriptions": [WATCHED, "nowhere://x"],
        "extra": True,
    }
    stream = await _listen(http, gateway.url, "listen-1", notifications)
    resp = stream.resp
    ack = await stream.next()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    # Only what Switchyard will honour comes back: not the unknown URI, not the unknown key.
    assert ack["params"]["notifications"] == {
        "toolsListChanged": True,
        "resourceSubscriptions": [WATCHED],
    }
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-1"
    caller = RawClient(gateway.url, http, era="modern")
    await caller.result("tools/call", {"name": "update_watched_resource", "arguments": {}})
    update = await stream.next()
    assert update["method"] == "notifications/resources/updated"
    assert update["params"]["uri"] == WATCHED
    assert update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-1"
    resp.close()


@pytest.fixture
def slow_listening_backend() -> Iterator[str]:
    """A 2026-07-28 SDK backend that takes up each `subscriptions/listen` 400 ms late."""
    proc, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--name", "web"],
        "sdk-http-slow-listen",
        env={"FIXTURE_LISTEN_DELAY_MS": "400"},
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop()


async def test_a_change_right_after_subscribing_is_not_lost_when_the_backend_listens_late(
    slow_listening_backend: str,
    gateway_factory: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    """Subscribing answers only once the backend's listen stream is there: a modern listener
    and a legacy session each change their own board right after subscribing, and each hears
    of its own change, never of the other's."""
    gw = gateway_factory({"servers": {"web": {"url": slow_listening_backend, "prefix": ""}}})
    alice_uri, bob_uri = "fixture://web/board/alice", "fixture://web/board/bob"
    bob = await RawClient(gw.url, http).open()
    bob_stream = await _get_stream(http, gw, bob)

    async def alice_flow() -> dict[str, Any]:
        stream = await _listen(http, gw.url, "l-1", {"resourceSubscriptions": [alice_uri]})
        ack = await stream.next()
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        alice = RawClient(gw.url, http, era="modern")
        await alice.result("tools/call", {"name": "touch", "arguments": {"tag": "alice"}})
        update = await stream.next()
        assert b"board/bob" not in stream.buffer
        stream.resp.close()
        return update

    async def bob_flow() -> dict[str, Any]:
        assert await bob.result("resources/subscribe", {"uri": bob_uri}) == {}
        await bob.result("tools/call", {"name": "touch", "arguments": {"tag": "bob"}})
        return await bob_stream.next()

    alice_update, bob_update = await asyncio.gather(alice_flow(), bob_flow())
    assert alice_update["method"] == "notifications/resources/updated"
    assert alice_update["params"]["uri"] == alice_uri
    assert bob_update == {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": bob_uri},
    }
    assert b"board/alice" not in bob_stream.buffer
    bob_stream.resp.close()
