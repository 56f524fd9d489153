"""Health probes, circuit breakers and the grace period, against real backends that are hung,
killed and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import FIXTURES, PYTHON, Gateway, Proc, free_port, start_port_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FLAKY = str(FIXTURES / "flaky.py")


def _flaky(port: int, name: str = "solo") -> Proc:
    proc, _ = start_port_fixture([PYTHON, FLAKY, "--port", str(port), "--name", name], name)
    return proc


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def _control(port: int, **mode: Any) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/control/mode", json=mode) as resp,
    ):
        assert resp.status == 200


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_backend_answering_ping_with_method_not_found_stays_healthy(
    gateway_factory: Callable[..., Gateway],
) -> None:
    port = free_port()
    proc = _flaky(port)
    try:
        await _control(port, ping="missing")
        gw = gateway_factory(
            {
                "servers": {
                    "svc": {
                        "url": f"http://127.0.0.1:{port}/mcp",
                        "health": {"interval": 0.05, "timeout": 1, "unhealthy_after": 1},
                    }
                }
            }
        )
        gw.wait_backend("svc")
        deadline = time.monotonic() + 60
        while (await _get(f"http://127.0.0.1:{port}/control/stats"))["pings"] < 100:
            assert time.monotonic() < deadline, "fewer than 100 probes in 60 s"
            await asyncio.sleep(0.2)
        backend = gw.readyz()["backends"]["svc"]
        assert backend["state"] == "up" and backend["breaker"] == "closed"
        assert backend["endpoints"][0]["state"] == "up"
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            result = await client.result(
                "tools/call", {"name": "svc_count", "arguments": {"tag": "x"}}
            )
        assert result["content"][0]["text"] == "solo counted x"
    finally:
        proc.stop()


async def test_a_hung_http_backend_is_detected_answered_fast_and_taken_back(
    gateway_factory: Callable[..., Gateway],
) -> None:
    port = free_port()
    proc = _flaky(port)
    try:
        gw = gateway_factory(
            {
                "gateway": {"request_timeout": 20},
                "servers": {
                    "svc": {
                        "url": f"http://127.0.0.1:{port}/mcp",
                        "health": {"interval": 0.2, "timeout": 0.5, "unhealthy_after": 2},
                        "breaker": {"open": 30},
                    }
                },
            }
        )
        gw.wait_backend("svc")
        await _control(port, hang=True)  # accepts every request, answers none
        gw.wait_backend("svc", "unhealthy", timeout=20)
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            started = time.monotonic()
            resp = await client.request(
                "tools/call", {"name": "svc_count", "arguments": {"tag": "during"}}
            )
            elapsed = time.monotonic() - started
            error = resp.json["error"]
            assert error["code"] == -31000
            assert error["message"].startswith(
                "backend 'svc' is unavailable: circuit breaker open after repeated failures"
            )
            assert "next attempt in" in error["message"]
            assert error["data"]["breaker"] == "open" and error["data"]["backend"] == "svc"
            assert 0 < error["data"]["retryAfterMs"] <= 45_000
            assert elapsed < 5, elapsed  # not the 20 s request timeout
            # Its tools stay listed (grace period): no list churn for a hiccup.
            tools = await client.list_all("tools/list", "tools")
            assert "svc_count" in {t["name"] for t in tools}
            # It answers again: the next probe (which bypasses the breaker) closes it.
            await _control(port, hang=False)
            gw.wait_backend("svc", "up", timeout=20)
            assert gw.readyz()["backends"]["svc"]["breaker"] == "closed"
            result = await client.result(
                "tools/call", {"name": "svc_count", "arguments": {"tag": "after"}}
            )
            assert result["content"][0]["text"] == "solo counted after"
        stats = await _get(f"http://127.0.0.1:{port}/control/stats")
        assert stats["executions"] == {"after": 1}  # the refused call never reached it
    finally:
        proc.stop()


async def test_a_hung_stdio_backend_is_detected(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        {
            "servers": {
                "svc": {
                    "command": PYTHON,
                    "args": [FLAKY],
                    "isolation": "shared",
                    "timeout": 1,
                    "health": {"interval": 0.2, "timeout": 0.5, "unhealthy_after": 2},
                }
            }
        }
    )
    gw.wait_backend("svc")
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        resp = await client.request("tools/call", {"name": "svc_hang", "arguments": {}})
        assert resp.json["error"]["code"] == -31001  # timed out: the process stopped answering
        gw.wait_backend("svc", "unhealthy", timeout=20)
        backend = gw.readyz()["backends"]["svc"]
        assert backend["breaker"] == "open"
        assert (
            "no answer" in backend["endpoints"][0]["error"]
            or "did not answer" in (backend["endpoints"][0]["error"])
        )
        started = time.monotonic()
        resp = await client.request("tools/call", {"name": "svc_count", "arguments": {"tag": "x"}})
        assert resp.json["error"]["data"]["breaker"] == "open"
        assert time.monotonic() - started < 0.9  # at once, not after the 1 s timeout


async def test_the_breaker_opens_on_failing_calls_and_its_trial_closes_it(
    gateway_factory: Callable[..., Gateway],
) -> None:
    port = free_port()
    proc = _flaky(port)
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "svc": {
                        "url": f"http://127.0.0.1:{port}/mcp",
                        "timeout": 0.3,
                        "isolation": "shared",
                        "health": {"enabled": False},
                        "breaker": {"failures": 3, "open": 1, "jitter": 0},
                    }
                }
            }
        )
        gw.wait_backend("svc")
        await _control(port, hang=True)
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            codes = []
            for i in range(5):
                started = time.monotonic()
                resp = await client.request(
                    "tools/call", {"name": "svc_count", "arguments": {"tag": f"t{i}"}}
                )
                codes.append(resp.json["error"]["code"])
                # Answered at its timeout: the cancellation the hung backend will not take
                # either is not waited for.
                assert time.monotonic() - started < 3, (i, time.monotonic() - started)
            # Three time-outs, then refused at once without reaching the backend.
            assert codes == [-31001, -31001, -31001, -31000, -31000]
            assert gw.readyz()["backends"]["svc"]["breaker"] == "open"
            await _control(port, hang=False)
            # After the open period, one trial goes through and closes it (no wedge).
            deadline = time.monotonic() + 10
            while True:
                resp = await client.request(
                    "tools/call", {"name": "svc_count", "arguments": {"tag": "trial"}}
                )
                if "result" in resp.json:
                    break
                assert resp.json["error"]["data"].get("breaker") == "open"
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert gw.readyz()["backends"]["svc"]["breaker"] == "closed"
        stats = await _get(f"http://127.0.0.1:{port}/control/stats")
        # A hung backend runs nothing (t0..t2 timed out unexecuted), t3 and t4 were refused
        # before being sent, and the trial ran once: no call was ever re-sent.
        assert stats["executions"] == {"trial": 1}
        assert stats["calls"] == 1
    finally:
        proc.stop()


async def test_a_backend_gone_briefly_keeps_its_tools_and_one_gone_for_good_leaves_once(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    brief, gone = free_port(), free_port()
    procs = {"brief": _flaky(brief, "brief"), "gone": _flaky(gone, "gone")}
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "brief": {"url": f"http://127.0.0.1:{brief}/mcp", "unavailable_grace": 60},
                    "gone": {"url": f"http://127.0.0.1:{gone}/mcp", "unavailable_grace": 2},
                }
            }
        )
        gw.wait_backend("brief")
        gw.wait_backend("gone")
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            async with http.get(
                gw.url,
                headers={"Accept": "text/event-stream", "Mcp-Session-Id": client.session_id or ""},
            ) as stream:
                assert stream.status == 200
                procs["brief"].stop()
                procs["gone"].stop()
                gw.wait_backend("brief", "down", timeout=20)
                gw.wait_backend("gone", "down", timeout=20)
                names = {t["name"] for t in await client.list_all("tools/list", "tools")}
                assert {"brief_count", "gone_count"} <= names
                resp = await client.request(
                    "tools/call", {"name": "brief_count", "arguments": {"tag": "x"}}
                )
                assert resp.json["error"]["code"] == -31000
                assert "'brief'" in resp.json["error"]["message"]
                procs["brief"] = _flaky(brief, "brief")
                gw.wait_backend("brief", "up", timeout=60)
                seen = b""
                deadline = time.monotonic() + 20
                while b"list_changed" not in seen and time.monotonic() < deadline:
                    seen += await asyncio.wait_for(stream.content.readany(), 20)
                # Exactly one change: `gone` left after its 2 s grace; `brief` never did.
                assert seen.count(b"notifications/tools/list_changed") == 1
            names = {t["name"] for t in await client.list_all("tools/list", "tools")}
            assert "brief_count" in names and "gone_count" not in names
            result = await client.result(
                "tools/call", {"name": "brief_count", "arguments": {"tag": "y"}}
            )
            assert result["content"][0]["text"] == "brief counted y"
    finally:
        for proc in procs.values():
            proc.stop()
