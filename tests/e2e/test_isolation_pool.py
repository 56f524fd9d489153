"""Isolated upstream sessions are pooled and bounded: 2026-07-28 callers reuse them, nobody can
make the gateway spawn without limit, and one caller never costs another its backend state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_subscriptions import Stream
from tests.harness import Gateway, children_of, create_key, free_port, stdio_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def _stateful(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """The raw fixture with per-process memory; every process it starts is logged."""
    return stdio_fixture(
        "stateful", env={"FIXTURE_STARTS_FILE": str(tmp_path / "starts.txt")}, **extra
    )


def _starts(tmp_path: Path) -> int:
    path = tmp_path / "starts.txt"
    return len(path.read_text().split()) if path.exists() else 0


async def _call(client: RawClient, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    resp = await client.request("tools/call", {"name": name, "arguments": arguments})
    assert resp.status == 200, (resp.status, resp.body)
    return resp.json  # type: ignore[no-any-return]


async def _text(client: RawClient, name: str, arguments: dict[str, Any]) -> str:
    msg = await _call(client, name, arguments)
    assert "result" in msg, msg
    return str(msg["result"]["content"][0]["text"])


def _keyed(gw_port: int, data: Path, servers: dict[str, Any]) -> dict[str, Any]:
    return {
        "auth": {
            "enabled": True,
            "public_url": f"http://127.0.0.1:{gw_port}",
            "data_dir": str(data),
            "rules": [{"effect": "allow"}],
        },
        "servers": servers,
    }


def _client(gw: Gateway, http: aiohttp.ClientSession, key: str, era: str) -> RawClient:
    return RawClient(gw.url, http, era=era, extra_headers={"Authorization": f"Bearer {key}"})


async def _peak_children(pid: int, done: asyncio.Event) -> int:
    """The most descendants `pid` had at once until `done` (polling /proc, 20 ms apart)."""
    peak = 0
    while not done.is_set():
        peak = max(peak, len(await asyncio.to_thread(children_of, pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.02)
    return peak


async def test_concurrent_modern_calls_share_a_bounded_warm_pool(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Thirty concurrent anonymous 2026-07-28 calls to a `per_session` stdio backend are all
    answered by a handful of processes, and the next thirty mostly reuse them."""
    gw = gateway_factory({"servers": {"fx": _stateful(tmp_path, isolation="per_session")}})
    assert _starts(tmp_path) == 1  # the backend's own session
    done = asyncio.Event()
    peak = asyncio.create_task(_peak_children(gw.process.pid, done))
    clients = [RawClient(gw.url, http, era="modern") for _ in range(30)]
    texts = await asyncio.gather(*(_text(c, "fx_sleep", {"ms": 300}) for c in clients))
    done.set()
    assert texts == ["slept 300"] * 30
    first_round = _starts(tmp_path)
    # Default spawn burst (10) plus what the bucket refills while the calls run.
    assert 2 <= first_round <= 1 + 10 + 5
    assert await peak <= 1 + 10 + 5
    texts = await asyncio.gather(*(_text(c, "fx_sleep", {"ms": 50}) for c in clients))
    assert texts == ["slept 50"] * 30
    # The warm sessions served them: new ones only as the spawn allowance refilled (1/s), and
    # never past the principal's share (a quarter of max_isolated: 16).
    second_round = _starts(tmp_path)
    assert second_round - first_round <= 5
    assert second_round <= 1 + 16
    assert gw.readyz()["backends"]["fx"]["isolatedSessions"] == second_round - 1


async def test_spawns_beyond_the_backend_bound_are_refused_not_queued(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Legacy sessions past `max_isolated` get a gateway -31005 at once; those already open
    keep working."""
    fx = _stateful(tmp_path, isolation="per_session", max_isolated=3, max_isolated_per_principal=3)
    gw = gateway_factory({"servers": {"fx": fx}})
    kept = [await RawClient(gw.url, http).open() for _ in range(3)]
    for i, client in enumerate(kept):
        assert await _text(client, "fx_remember", {"value": f"v{i}"}) == "ok"
    extra = await RawClient(gw.url, http).open()
    async with asyncio.timeout(10):
        refused = await _call(extra, "fx_recall", {})
    assert refused["error"]["code"] == -31005
    assert refused["error"]["data"] == {"source": "gateway", "backend": "fx"}
    for i, client in enumerate(kept):
        assert await _text(client, "fx_recall", {}) == f"v{i}"
    assert _starts(tmp_path) == 1 + 3


async def test_a_principal_past_its_spawn_rate_is_refused(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """One caller opening sessions faster than its spawn rate gets -31005 for the excess;
    another caller still gets its own session at once."""
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "carol")}
    port = free_port()
    fx = _stateful(tmp_path, isolation="per_session", spawn_burst=3, spawns_per_second=0.01)
    gw = gateway_factory(_keyed(port, data, {"fx": fx}), port=port)
    outcomes: list[str] = []
    for _ in range(5):
        carol = await _client(gw, http, keys["carol"], "legacy").open()
        msg = await _call(carol, "fx_whoami", {})
        outcomes.append("ok" if "result" in msg else str(msg["error"]["code"]))
        if "error" in msg:
            assert msg["error"]["data"]["source"] == "gateway"
    assert outcomes == ["ok", "ok", "ok", "-31005", "-31005"]
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    assert await _text(alice, "fx_remember", {"value": "mine"}) == "ok"


async def test_each_principal_keeps_its_own_state_across_modern_calls(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`per_principal`: a 2026-07-28 caller's calls share its principal's session, and
    another principal's calls never see it."""
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "bob")}
    port = free_port()
    fx = _stateful(tmp_path, isolation="per_principal")
    gw = gateway_factory(_keyed(port, data, {"fx": fx}), port=port)
    alice = _client(gw, http, keys["alice"], "modern")
    bob = _client(gw, http, keys["bob"], "modern")
    assert await _text(alice, "fx_remember", {"value": "alice-state"}) == "ok"
    assert await _text(bob, "fx_recall", {}) == ""
    assert await _text(bob, "fx_remember", {"value": "bob-state"}) == "ok"
    assert await _text(alice, "fx_recall", {}) == "alice-state"
    assert await _text(bob, "fx_recall", {}) == "bob-state"
    # A legacy session of alice's is served by the same principal session.
    alice_legacy = await _client(gw, http, keys["alice"], "legacy").open()
    assert await _text(alice_legacy, "fx_recall", {}) == "alice-state"
    assert _starts(tmp_path) == 1 + 2


async def test_by_default_anonymous_callers_are_one_principal(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Default isolation (`per_principal`) with authentication off: every caller, legacy or
    2026-07-28, is the one anonymous principal, served by one isolated process whose state
    lasts between calls."""
    gw = gateway_factory({"servers": {"fx": _stateful(tmp_path)}})
    first = RawClient(gw.url, http, era="modern")
    second = RawClient(gw.url, http, era="modern")
    legacy = await RawClient(gw.url, http).open()
    assert await _text(first, "fx_remember", {"value": "kept"}) == "ok"
    texts = await asyncio.gather(*(_text(c, "fx_recall", {}) for c in (first, second, legacy)))
    assert texts == ["kept"] * 3
    assert _starts(tmp_path) == 1 + 1
    assert gw.readyz()["backends"]["fx"]["isolatedSessions"] == 1


async def test_a_churning_principal_never_closes_another_principals_session(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """carol opens session after session, far past the backend's bound: she recycles her own
    (her share is 2 of 8), and alice's backend state survives."""
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "carol")}
    port = free_port()
    fx = _stateful(tmp_path, isolation="per_session", max_isolated=8, spawn_burst=100)
    gw = gateway_factory(_keyed(port, data, {"fx": fx}), port=port)
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    assert await _text(alice, "fx_remember", {"value": "alice-state"}) == "ok"
    for i in range(12):
        carol = await _client(gw, http, keys["carol"], "legacy").open()
        assert await _text(carol, "fx_remember", {"value": f"carol-{i}"}) == "ok"
        assert await _text(carol, "fx_recall", {}) == f"carol-{i}"
    assert await _text(alice, "fx_recall", {}) == "alice-state"
    assert gw.readyz()["backends"]["fx"]["isolatedSessions"] == 1 + 2


async def test_at_the_backend_bound_a_caller_is_refused_rather_than_evicting_another(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "carol")}
    port = free_port()
    fx = _stateful(tmp_path, isolation="per_session", max_isolated=3, max_isolated_per_principal=3)
    gw = gateway_factory(_keyed(port, data, {"fx": fx}), port=port)
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    assert await _text(alice, "fx_remember", {"value": "alice-state"}) == "ok"
    outcomes = []
    for _ in range(3):
        carol = await _client(gw, http, keys["carol"], "legacy").open()
        msg = await _call(carol, "fx_whoami", {})
        outcomes.append(msg.get("error", {}).get("code", "ok"))
    assert outcomes == ["ok", "ok", -31005]
    assert await _text(alice, "fx_recall", {}) == "alice-state"


async def _stream(gw: Gateway, http: aiohttp.ClientSession, client: RawClient) -> Stream:
    resp = await http.get(
        gw.url,
        headers={
            "Accept": "text/event-stream",
            "Mcp-Session-Id": client.session_id or "",
            **client.extra_headers,
        },
    )
    assert resp.status == 200
    return Stream(resp)


async def test_a_principals_session_reaches_that_principal_and_unsubscribing_starts_nothing(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`per_principal`: what alice's isolated session says outside a call (a log line, a
    resource update) reaches alice's session and never bob's; unsubscribing goes to the
    session that subscribed and starts no process."""
    data = tmp_path / "keys"
    keys = {p: create_key(data, p, "user") for p in ("alice", "bob")}
    port = free_port()
    events = tmp_path / "events.txt"
    fx = stdio_fixture(
        "stateful",
        isolation="per_principal",
        env={
            "FIXTURE_STARTS_FILE": str(tmp_path / "starts.txt"),
            "FIXTURE_EVENTS_FILE": str(events),
        },
    )
    gw = gateway_factory(_keyed(port, data, {"fx": fx}), port=port)
    alice = await _client(gw, http, keys["alice"], "legacy").open()
    bob = await _client(gw, http, keys["bob"], "legacy").open()
    streams = {"alice": await _stream(gw, http, alice), "bob": await _stream(gw, http, bob)}
    for client in (alice, bob):
        assert await client.result("logging/setLevel", {"level": "debug"}) == {}
        assert await client.result("resources/subscribe", {"uri": "slow://1"}) == {}
    assert _starts(tmp_path) == 1 + 2
    assert await _text(alice, "fx_poke", {"text": "alice-log", "uri": "slow://1"}) == "poked"
    got = [await streams["alice"].next(), await streams["alice"].next()]
    assert got == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "error", "logger": "fixture", "data": "alice-log"},
        },
        {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": "slow://1"},
        },
    ]
    # Had alice's lines reached bob, they would come before his own.
    assert await _text(bob, "fx_poke", {"text": "bob-log", "uri": "slow://1"}) == "poked"
    first = await streams["bob"].next()
    assert first["params"]["data"] == "bob-log"
    assert await alice.result("resources/unsubscribe", {"uri": "slow://1"}) == {}
    assert _starts(tmp_path) == 1 + 2
    lines = events.read_text().splitlines()
    subscribed_by = {line.split()[0] for line in lines if "resources/subscribe " in line}
    unsubscribed_by = [line.split()[0] for line in lines if "resources/unsubscribe" in line]
    assert len(unsubscribed_by) == 1 and unsubscribed_by[0] in subscribed_by
    for stream in streams.values():
        stream.resp.close()


async def test_a_restarted_backend_serves_at_once_while_its_subscriptions_are_renewed(
    gateway_factory: Callable[..., Gateway], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """500 subscribed URIs, each answered by the backend after 100 ms: after a restart the
    backend is up within seconds (not 500 round trips later), calls work while the
    subscriptions are renewed, and all of them are renewed."""
    events = tmp_path / "events.txt"
    fx = stdio_fixture(
        "stateful",
        isolation="shared",  # the backend's own session holds the subscriptions
        env={
            "FIXTURE_STARTS_FILE": str(tmp_path / "starts.txt"),
            "FIXTURE_EVENTS_FILE": str(events),
            "FIXTURE_SUBSCRIBE_DELAY_MS": "100",
        },
    )
    gw = gateway_factory({"servers": {"fx": fx}})
    client = await RawClient(gw.url, http).open()
    gate = asyncio.Semaphore(16)  # under the per-client in-flight limit

    async def subscribe(n: int) -> Any:
        async with gate:
            return await client.result("resources/subscribe", {"uri": f"slow://{n}"})

    assert await asyncio.gather(*(subscribe(n) for n in range(500))) == [{}] * 500
    first_pid = (tmp_path / "starts.txt").read_text().split()[0]
    crashed = await _call(client, "fx_crash", {})
    assert crashed["error"]["code"] == -31000
    t0 = time.monotonic()
    for _ in range(100):  # polling readiness: the restart has no event to wait on (10 s bound)
        if _starts(tmp_path) == 2 and gw.readyz()["backends"]["fx"]["state"] == "up":
            break
        await asyncio.sleep(0.1)
    assert gw.readyz()["backends"]["fx"]["state"] == "up"
    assert await _text(client, "fx_echo", {"text": "served"}) == "served"
    assert time.monotonic() - t0 < 5
    second_pid = (tmp_path / "starts.txt").read_text().split()[1]

    def renewed() -> int:
        lines = events.read_text().splitlines()
        return sum(1 for line in lines if line.startswith(f"{second_pid} resources/subscribe "))

    assert renewed() < 500  # still renewing when the call above was answered
    for _ in range(300):  # (30 s bound) 500 renewals, 8 at a time, 100 ms each
        if renewed() == 500:
            break
        await asyncio.sleep(0.1)
    assert renewed() == 500
    assert first_pid != second_pid
