"""A misbehaving Streamable HTTP backend (tests/fixtures/servers/hostile_http.py) costs only the
request it misbehaves on: compressed bombs, expired sessions, streams that end early."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ListRootsResult, Root

from switchyard.protocol import codes
from tests.harness import FIXTURES, PYTHON, Gateway, Proc, free_port, start_port_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

BOMB_MIB = 48
LIMIT = 1024 * 1024


@pytest.fixture
def hostile() -> Iterator[tuple[Proc, str]]:
    proc, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "hostile_http.py"), "--port", "0", "--bomb-mib", str(BOMB_MIB)],
        "hostile-http",
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def config(base: str, **server: Any) -> dict[str, Any]:
    return {
        "gateway": {"max_message_bytes": LIMIT},
        "servers": {
            "web": {
                "url": f"{base}/mcp",
                "type": "streamable-http",
                "isolation": "shared",
                **server,
            }
        },
    }


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def call(client: RawClient, name: str, request_id: int = 1, **args: Any) -> Any:
    resp = await client.request("tools/call", {"name": name, "arguments": args}, request_id)
    assert resp.status == 200, (resp.status, resp.body[:300])
    return resp.json


@pytest.mark.parametrize("tool", ["web_bomb_json", "web_bomb_sse"])
async def test_a_gzip_bomb_fails_its_request_without_inflating_the_gateway(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str], tool: str
) -> None:
    _, base = hostile
    gw = gateway_factory(config(base))
    gw.wait_backend("web")
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert (await call(client, "web_echo", text="warm"))["result"]["content"][0]["text"]
        before = peak_rss_kib(gw.process.pid)
        answer = await call(client, tool, request_id=2)
        grown_mib = (peak_rss_kib(gw.process.pid) - before) / 1024
        assert "result" not in answer, "the decompressed body was forwarded"
        assert answer["error"]["code"] == codes.RESULT_TOO_LARGE
        assert answer["error"]["data"]["source"] == "gateway"
        assert grown_mib < 16, f"peak RSS grew {grown_mib:.1f} MiB for a {BOMB_MIB} MiB bomb"
        # Only that request failed: the connection still serves the next one.
        echo = await call(client, "web_echo", request_id=3, text="after")
        assert echo["result"]["content"][0]["text"] == "after"
    assert gw.readyz()["backends"]["web"]["restarts"] == 0


async def stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/control/stats") as resp:
        return json.loads(await resp.read())  # type: ignore[no-any-return]


async def control(http: aiohttp.ClientSession, base: str, action: str, **query: Any) -> None:
    async with http.post(f"{base}/control/{action}", params=query) as resp:
        assert resp.status == 204


async def test_no_upstream_client_session_is_left_unclosed(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str]
) -> None:
    _, base = hostile
    sse_proc, sse_port = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_sse.py"), "--port", "0", "--name", "old"], "unclosed-sse"
    )
    try:
        gw = gateway_factory(
            {
                "servers": {
                    # Transport detection: Streamable HTTP wins, the SSE candidate is never opened.
                    "fresh": {"url": f"{base}/mcp"},
                    # Streamable HTTP fails its handshake, then SSE is used.
                    "old": {"url": f"http://127.0.0.1:{sse_port}/sse"},
                    # Every candidate fails, again and again.
                    "dead": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
                }
            }
        )
        gw.wait_backend("fresh")
        gw.wait_backend("old")
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                client = await RawClient(gw.url, http).open()
                # Each call opens an isolated upstream session for this client's session ...
                echo = await call(client, "fresh_echo", text="one")
                assert echo["result"]["content"][0]["text"] == "one"
                echo = await call(client, "old_echo", request_id=2, text="two")
                assert echo["result"]["content"][0]["text"] == "two"
                # ... released when the client ends its session.
                async with http.delete(gw.url, headers=client.headers()) as resp:
                    assert resp.status in (200, 204)
        assert gw.readyz()["backends"]["dead"]["state"] == "down"
    finally:
        sse_proc.stop()
    assert gw.stop() == 0
    log = gw.log_text()
    assert "Unclosed client session" not in log
    assert "Unclosed connector" not in log


async def wait_stats(
    http: aiohttp.ClientSession, base: str, key: str, value: int, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the fixture's counters until `key` reaches `value` (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            got = await stats(http, base)
            if got[key] >= value:
                return got
            await asyncio.sleep(0.02)


async def test_an_expired_session_is_renewed_once_for_all_concurrent_requests(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str]
) -> None:
    _, base = hostile
    gw = gateway_factory(config(base))
    gw.wait_backend("web")
    async with aiohttp.ClientSession() as http:
        clients = [await RawClient(gw.url, http).open() for _ in range(8)]
        assert (await call(clients[0], "web_echo", text="warm"))["result"]
        before = await stats(http, base)
        assert before["initializes"] == 1
        # The backend forgets its sessions; its next initialize takes a while.
        await control(http, base, "expire", init_delay_ms=600)
        first = [
            asyncio.create_task(call(c, "web_echo", i, text=f"first-{i}"))
            for i, c in enumerate(clients[:4])
        ]
        # Once the renewal is under way, more requests arrive.
        await wait_stats(http, base, "initializes", 2)
        second = [
            asyncio.create_task(call(c, "web_echo", i, text=f"second-{i}"))
            for i, c in enumerate(clients[4:])
        ]
        answers = await asyncio.wait_for(asyncio.gather(*first, *second), 20)
        texts = [a.get("result", a)["content"][0]["text"] for a in answers]
        assert texts == [f"first-{i}" for i in range(4)] + [f"second-{i}" for i in range(4)]
        after = await stats(http, base)
        assert after["initializes"] == 2  # exactly one re-initialization
        assert after["sessionless"] == 0  # nothing went out without a session meanwhile
        await wait_stats(http, base, "deleted_count", 1)  # the superseded session is ended
    assert gw.readyz()["backends"]["web"]["restarts"] == 0


async def test_a_failed_renewal_fails_the_request_and_restarts_the_backend(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str]
) -> None:
    _, base = hostile
    gw = gateway_factory(config(base))
    gw.wait_backend("web")
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert (await call(client, "web_echo", text="warm"))["result"]
        await control(http, base, "expire")
        await control(http, base, "refuse-init")
        answer = await call(client, "web_echo", 2, text="lost")
        assert answer["error"]["code"] == codes.BACKEND_UNAVAILABLE
        assert answer["error"]["data"]["source"] == "gateway"
        gw.wait_backend("web", "down")
        await control(http, base, "allow-init")
        gw.wait_backend("web", "up")
        assert gw.readyz()["backends"]["web"]["restarts"] >= 1
        answer = await call(client, "web_echo", 3, text="back")
        assert answer["result"]["content"][0]["text"] == "back"


async def test_a_response_stream_cut_after_its_priming_event_is_resumed(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str]
) -> None:
    _, base = hostile  # the fixture's priming events ask for `retry: 500`
    gw = gateway_factory(config(base))
    gw.wait_backend("web")
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        answer = await call(client, "web_resume")
        assert answer["result"]["content"][0]["text"] == "resumed"
        [resume] = (await stats(http, base))["resumes"]
    # The GET named the priming event's id (the fixture only answers that one) ...
    assert resume["last_event_id"].startswith("ev-")
    assert resume["session"] is not None
    # ... and came no sooner than the backend asked.
    assert resume["after_s"] >= 0.5


def roots_of(owner: str) -> Callable[[Any], Any]:
    async def roots(ctx: Any) -> ListRootsResult:
        asked.append(owner)
        return ListRootsResult(roots=[Root(uri=f"file:///{owner}")])

    return roots


asked: list[str] = []


async def test_a_get_stream_request_reaches_only_the_client_whose_session_it_is(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str]
) -> None:
    _, base = hostile
    gw = gateway_factory(
        {
            "servers": {
                "own": {
                    "url": f"{base}/mcp",
                    "type": "streamable-http",
                    "isolation": "per_session",
                },
                "all": {"url": f"{base}/mcp", "type": "streamable-http", "isolation": "shared"},
            }
        }
    )
    gw.wait_backend("own")
    gw.wait_backend("all")
    asked.clear()

    async def ask(owner: str, tool: str) -> str:
        transport = streamable_http_client(gw.url)
        async with Client(transport, mode="legacy", list_roots_callback=roots_of(owner)) as c:
            result = await asyncio.wait_for(c.call_tool(tool, {}), 20)
            return str(result.content[0].text)  # type: ignore[union-attr]

    # Each client's own upstream session: the backend's GET-stream request is theirs alone.
    texts = await asyncio.gather(ask("alice", "own_roots_via_get"), ask("bob", "own_roots_via_get"))
    assert texts == ["file:///alice", "file:///bob"]
    assert sorted(asked) == ["alice", "bob"]
    # One session shared by everyone: nobody can be proven to be the one asked.
    asked.clear()
    text = await ask("carol", "all_roots_via_get")
    assert text.startswith("refused:")
    assert asked == []


def messages_of(resp: Any) -> list[dict[str, Any]]:
    """Every JSON-RPC message of an answer, JSON body or event stream, each read as a client
    reads it: UTF-8 (strict), then JSON."""
    text = resp.body.decode("utf-8")  # raises on a single byte that is not UTF-8
    if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
        return [json.loads(text)]
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return [json.loads(d) for d in data if d]


@pytest.mark.parametrize(
    ("unreadable", "mark"),
    [
        # A result was spliced into the client's frame as the backend sent it: bytes no JSON
        # text may hold went through verbatim, with the secret beside them.
        ("bad_utf8", b"lovelace"),
        # msgspec raised RecursionError, which no reader expected: a gateway error for the
        # call, and on a stream the end of its reader.
        ("deep", b"[[[["),
    ],
)
async def test_a_frame_no_reader_can_read_fails_only_its_own_request(
    gateway_factory: Callable[..., Gateway], hostile: tuple[Proc, str], unreadable: str, mark: bytes
) -> None:
    _, base = hostile
    gw = gateway_factory(config(base))
    gw.wait_backend("web")
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        await client.result("logging/setLevel", {"level": "debug"}, request_id=1)
        resp = await client.request("tools/call", {"name": f"web_{unreadable}"}, 2)
        [answer] = messages_of(resp)
        assert answer["id"] == 2
        assert answer["error"]["code"] == codes.BACKEND_PROTOCOL_ERROR
        assert answer["error"]["data"] == {"source": "gateway", "backend": "web"}
        assert mark not in resp.body

        # On a response stream the unreadable message alone is dropped; the rest arrives.
        resp = await client.request("tools/call", {"name": f"web_{unreadable}_sse"}, 3)
        messages = messages_of(resp)
        logs = [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]
        assert logs == ["note fine"]
        assert messages[-1] == {
            "jsonrpc": "2.0",
            "id": 3,
            "result": {"content": [{"type": "text", "text": "clean answer"}]},
        }
        echo = await call(client, "web_echo", request_id=4, text="after")
        assert echo["result"]["content"][0]["text"] == "after"
    assert gw.readyz()["backends"]["web"]["restarts"] == 0
