"""Failure and concurrency: crashes, restarts, timeouts, colliding ids, shutdown hygiene."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    children_of,
    free_port,
    pid_alive,
    start_port_fixture,
    stdio_fixture,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def _text(
    client: RawClient, name: str, arguments: dict[str, Any], request_id: Any = 1
) -> str:
    result = await client.result("tools/call", {"name": name, "arguments": arguments}, request_id)
    return str(result["content"][0]["text"])


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_fifty_clients_with_the_same_ids_each_get_their_own_answer(
    gateway_factory: Callable[..., Gateway], era: str
) -> None:
    with_http = start_port_fixture(
        [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", "0", "--json-response"], "ids-http"
    )
    proc, port = with_http
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "stdio": stdio_fixture("crashy"),
                    "web": {"url": f"http://127.0.0.1:{port}/mcp", "type": "streamable-http"},
                }
            }
        )
        async with aiohttp.ClientSession() as http:
            clients = [await RawClient(gw.url, http, era=era).open() for _ in range(50)]

            async def one(i: int, client: RawClient) -> tuple[str, str]:
                # Every client uses id 1 for both calls, at the same time as the others.
                a = await _text(client, "stdio_echo", {"text": f"client-{i}"}, request_id=1)
                b = await _text(client, "web_echo", {"text": f"client-{i}"}, request_id=1)
                return a, b

            results = await asyncio.wait_for(
                asyncio.gather(*(one(i, c) for i, c in enumerate(clients))), 60
            )
        assert results == [(f"client-{i}", f"client-{i}") for i in range(50)]
    finally:
        proc.stop()


async def test_backend_crash_mid_call_is_an_error_then_the_backend_comes_back(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    gw = gateway_factory(
        {
            "servers": {
                # Shared: the crash takes the backend's one connection down, not an isolated copy.
                "crashy": stdio_fixture(
                    "crashy", env={"FIXTURE_STARTS_FILE": str(starts)}, isolation="shared"
                ),
                "steady": stdio_fixture(script="sdk_stdio.py"),
            }
        }
    )
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert await _text(client, "crashy_echo", {"text": "before"}) == "before"
        t0 = time.monotonic()
        resp = await asyncio.wait_for(
            client.request("tools/call", {"name": "crashy_crash", "arguments": {}}, 7), 10
        )
        assert time.monotonic() - t0 < 5
        error = resp.json["error"]
        assert resp.json["id"] == 7
        assert error["code"] == -31000
        assert "crashy" in error["message"] and error["data"] == {
            "source": "gateway",
            "backend": "crashy",
        }
        # The other backend never noticed.
        assert await _text(client, "steady_add", {"a": 1, "b": 2}) == "3"
        # The crashed one is restarted and its tools return. The start file is written when
        # the process starts, before its handshake: only the gateway's own view says it is up.
        deadline = time.monotonic() + 20
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = gw.readyz()["backends"]["crashy"]
            if status["state"] == "up" and status["restarts"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert status["state"] == "up", status
        names = [t["name"] for t in await client.list_all("tools/list", "tools")]
        assert "crashy_echo" in names
        assert await _text(client, "crashy_echo", {"text": "after"}) == "after"
        assert len(starts.read_text().split()) == 2
        assert gw.readyz()["backends"]["crashy"]["restarts"] >= 1


async def test_list_changed_reaches_a_listening_legacy_client_when_a_backend_leaves_and_returns(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        {
            "servers": {
                # No grace: its tools leave the lists the moment it goes.
                "crashy": stdio_fixture("crashy", isolation="shared", unavailable_grace=0),
                "steady": stdio_fixture(script="sdk_stdio.py"),
            }
        }
    )
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        async with http.get(
            gw.url,
            headers={"Accept": "text/event-stream", "Mcp-Session-Id": client.session_id or ""},
        ) as stream:
            assert stream.status == 200
            resp = await client.request("tools/call", {"name": "crashy_crash", "arguments": {}})
            assert resp.json["error"]["code"] == -31000
            seen = b""
            deadline = time.monotonic() + 20
            while (
                seen.count(b"notifications/tools/list_changed") < 2 and time.monotonic() < deadline
            ):
                seen += await asyncio.wait_for(stream.content.readany(), 20)
            assert seen.count(b"notifications/tools/list_changed") >= 2


async def test_backend_timeout_answers_in_bound_and_backend_stays_usable(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory({"servers": {"slow": stdio_fixture("crashy", timeout=1)}})
    async with aiohttp.ClientSession() as http:
        for era in ("legacy", "modern"):
            client = await RawClient(gw.url, http, era=era).open()
            t0 = time.monotonic()
            resp = await client.request(
                "tools/call", {"name": "slow_sleep", "arguments": {"ms": 5000}}
            )
            elapsed = time.monotonic() - t0
            assert 0.9 <= elapsed < 3, elapsed
            assert resp.json["error"]["code"] == -31001
            assert resp.json["error"]["data"]["backend"] == "slow"
            assert await _text(client, "slow_echo", {"text": "still here"}) == "still here"


async def test_http_backend_down_answers_fast_and_recovers(
    gateway_factory: Callable[..., Gateway],
) -> None:
    port = free_port()
    args = [PYTHON, str(FIXTURES / "sdk_http.py"), "--port", str(port), "--json-response"]
    proc, _ = start_port_fixture(args, "flaky-http")
    gw = gateway_factory(
        {
            "servers": {
                "web": {"url": f"http://127.0.0.1:{port}/mcp"},
                "steady": stdio_fixture("crashy"),
            }
        }
    )
    try:
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            assert await _text(client, "web_echo", {"text": "up"}) == "up"
            proc.stop()
            t0 = time.monotonic()
            resp = await client.request(
                "tools/call", {"name": "web_echo", "arguments": {"text": "down"}}
            )
            assert time.monotonic() - t0 < 6
            assert resp.json["error"]["code"] == -31000
            assert "web" in resp.json["error"]["message"]
            gw.wait_backend("web", "down")
            proc, _ = start_port_fixture(args, "flaky-http-again")
            gw.wait_backend("web", "up", timeout=40)
            assert await _text(client, "web_echo", {"text": "back"}) == "back"
    finally:
        proc.stop()


async def test_a_backend_that_cannot_start_does_not_take_the_gateway_down(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        {
            "servers": {
                "missing": {"command": "/nonexistent/mcp-server"},
                "refused": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
                "steady": stdio_fixture("crashy"),
            }
        }
    )
    ready = gw.readyz()
    assert ready["ready"] is True
    assert ready["backends"]["missing"]["state"] == "down"
    assert "nonexistent" in ready["backends"]["missing"]["error"]
    assert ready["backends"]["refused"]["state"] == "down"
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert await _text(client, "steady_echo", {"text": "fine"}) == "fine"


def test_readyz_is_503_when_no_backend_is_up(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory({"servers": {"missing": {"command": "/nonexistent/x"}}}, ready=False)
    status_body = gw.readyz()
    assert status_body["ready"] is False
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{gw.base}/readyz", timeout=5)
    assert info.value.code == 503
    with urllib.request.urlopen(f"{gw.base}/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_graceful_shutdown_leaves_no_child_process(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    stubborn = tmp_path / "stubborn.py"
    # A backend that ignores EOF and SIGTERM, behind a shell that forks it: only a group kill works.
    stubborn.write_text(
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"fixture = {str(FIXTURES / 'raw_stdio.py')!r}\n"
        "child = subprocess.Popen([sys.executable, fixture, '--scenario', 'crashy'])\n"
        "child.wait()\n"
    )
    gw = gateway_factory(
        {
            "servers": {
                "a": stdio_fixture("crashy"),
                "b": stdio_fixture(script="sdk_stdio.py"),
                "stubborn": {"command": "/bin/sh", "args": ["-c", f"{PYTHON} {stubborn}"]},
            }
        }
    )
    for name in ("a", "b", "stubborn"):
        gw.wait_backend(name)
    descendants = children_of(gw.process.pid)
    assert len(descendants) >= 5, descendants  # a, b, sh, stubborn, its child
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in descendants):
        time.sleep(0.05)
    assert [p for p in descendants if pid_alive(p)] == []
