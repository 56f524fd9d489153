"""Upstream isolation: a stateful legacy backend's state never crosses clients."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import FIXTURES, PYTHON, Gateway, children_of, pid_alive, stdio_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _notes(isolation: str) -> dict[str, Any]:
    # The demo notebook keeps notes in process memory; forced to the legacy era it is a
    # stateful session-based backend.
    return {
        "command": "switchyard",
        "args": ["demo", "notes"],
        "era": "legacy",
        "isolation": isolation,
    }


async def _text(client: RawClient, name: str, arguments: dict[str, Any]) -> str:
    result = await client.result("tools/call", {"name": name, "arguments": arguments})
    return str(result["content"][0]["text"])


@pytest.mark.parametrize(("isolation", "leaks"), [("per_session", False), ("shared", True)])
async def test_one_clients_state_is_invisible_to_another(
    gateway_factory: Callable[..., Gateway], isolation: str, leaks: bool
) -> None:
    gw = gateway_factory({"servers": {"notes": _notes(isolation)}})
    async with aiohttp.ClientSession() as http:
        alice = await RawClient(gw.url, http).open()
        bob = await RawClient(gw.url, http).open()
        await _text(alice, "notes_add_note", {"title": "alice-secret", "body": "only alice"})
        assert "alice-secret" in await _text(alice, "notes_list_notes", {})
        assert ("alice-secret" in await _text(bob, "notes_list_notes", {})) is leaks
    expected = 2 if isolation == "per_session" else 0
    assert gw.readyz()["backends"]["notes"]["isolatedSessions"] == expected


async def test_two_hundred_short_sessions_leave_no_processes(
    gateway_factory: Callable[..., Gateway],
) -> None:
    # Two hundred sessions, one after another: above the per-caller spawn rate on purpose,
    # which this test lifts (it checks what is left behind, not how fast callers may spawn).
    fx = stdio_fixture("crashy", isolation="per_session", spawn_burst=200)
    gw = gateway_factory({"servers": {"fx": fx}})
    baseline = children_of(gw.process.pid)
    pids: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for i in range(200):
            client = await RawClient(gw.url, http).open()
            pids.add(await _text(client, "fx_whoami", {}))
            assert await _text(client, "fx_echo", {"text": f"s{i}"}) == f"s{i}"
            async with http.delete(
                gw.url, headers={"Mcp-Session-Id": client.session_id or ""}
            ) as resp:
                assert resp.status == 200
    assert len(pids) == 200  # every session had a process of its own
    for _ in range(200):  # polling /proc: process exit has no event to wait on (20 s bound)
        if not children_of(gw.process.pid) - baseline:
            break
        await asyncio.sleep(0.1)
    assert children_of(gw.process.pid) - baseline == set()
    assert gw.readyz()["backends"]["fx"]["isolatedSessions"] == 0


async def test_a_crashed_isolated_session_is_replaced_and_others_are_untouched(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory({"servers": {"fx": stdio_fixture("crashy", isolation="per_session")}})
    async with aiohttp.ClientSession() as http:
        victim = await RawClient(gw.url, http).open()
        bystander = await RawClient(gw.url, http).open()
        before = await _text(victim, "fx_whoami", {})
        other = await _text(bystander, "fx_whoami", {})
        crashed = await victim.request("tools/call", {"name": "fx_crash", "arguments": {}})
        assert crashed.json["error"]["code"] == -31000
        # The backend stays up, the bystander keeps its process, the victim gets a new one.
        assert gw.readyz()["backends"]["fx"]["state"] == "up"
        assert await _text(bystander, "fx_whoami", {}) == other
        after = await _text(victim, "fx_whoami", {})
        assert after != before and after != other


async def test_sessions_released_just_before_shutdown_leave_no_process(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    # The first process (the backend's own session) exits when its stdin closes; later ones
    # (isolated sessions) linger and ignore SIGTERM, like a server with timers running. A
    # session released just before the gateway stops is still in its close sequence then,
    # and must still end with SIGKILL, not as an orphan.
    first = tmp_path / "first-started"
    lingering = tmp_path / "lingering.py"
    lingering.write_text(
        "import os, runpy, signal, sys, time\n"
        f"first = {str(first)!r}\n"
        "linger = os.path.exists(first)\n"
        "open(first, 'a').close()\n"
        "if linger:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"sys.argv = [{str(FIXTURES / 'raw_stdio.py')!r}, '--scenario', 'crashy']\n"
        f"runpy.run_path({str(FIXTURES / 'raw_stdio.py')!r}, run_name='__main__')\n"
        "if linger:\n"
        "    time.sleep(60)\n"
    )
    # Through a shell that forks it, as launchers do: killing only the shell would orphan it.
    launch = {
        "command": "/bin/sh",
        "args": ["-c", f"{PYTHON} {lingering}; true"],
        "isolation": "per_session",  # the client's session ends: its own process is released
    }
    gw = gateway_factory({"servers": {"fx": launch}})
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert await _text(client, "fx_echo", {"text": "x"}) == "x"
        descendants = children_of(gw.process.pid)
        async with http.delete(gw.url, headers={"Mcp-Session-Id": client.session_id or ""}) as resp:
            assert resp.status == 200
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(30) == 0
    for _ in range(100):  # polling /proc: process exit has no event to wait on (10 s bound)
        if not any(pid_alive(p) for p in descendants):
            break
        await asyncio.sleep(0.1)
    assert [p for p in descendants if pid_alive(p)] == []
