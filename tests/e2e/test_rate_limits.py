"""Rate limits, concurrency caps and budgets through real gateways, real Redis, real clients.

The exactness tests fire 1,000 calls at once; with Redis, at two `switchyard serve` processes
sharing it. Every other test asserts what a client sees: the error, its data, the HTTP status
and headers, and that one caller's limits never reach another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
import redis
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.harness import Gateway, create_key, start_gateway, stdio_fixture
from tests.rpc import RawClient, Response

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

REDIS_URL = "redis://127.0.0.1:6379/0"
RATE_LIMITED = -31020
CALLS = 1000
FLEET_MAX = 100
BUDGET_CALLS, BUDGET_COST = 50, 3
BYTES_BUDGET = 3000
GENEROUS = {"max_in_flight_per_client": 2000, "max_in_flight_per_backend": 2000}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _prefix() -> str:
    return f"sytest-e2e-{secrets.token_hex(6)}"


def _drop(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _bytes_used(prefix: str) -> int:
    """What Redis holds as today's result bytes of the `bytes` rule (everyone's)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        value = client.hget(f"{prefix}:result_bytes:bytes:*", "u")
        return int(value) if value is not None else 0
    finally:
        client.close()


async def _call(
    http: aiohttp.ClientSession,
    gw: Gateway,
    tool: str,
    arguments: dict[str, Any] | None = None,
    token: str | None = None,
    request_id: int = 1,
) -> Response:
    extra = {"Authorization": f"Bearer {token}"} if token else {}
    client = RawClient(gw.url, http, era="modern", extra_headers=extra)
    return await client.request(
        "tools/call", {"name": tool, "arguments": arguments or {}}, request_id
    )


def _limited(resp: Response) -> dict[str, Any] | None:
    """The refusal's error data, if the call was rate-limited (checked to be a full 429)."""
    body = resp.json
    if "error" not in body or body["error"]["code"] != RATE_LIMITED:
        return None
    assert resp.status == 429, (resp.status, body)
    assert int(resp.headers["Retry-After"]) >= 1
    data: dict[str, Any] = body["error"]["data"]
    assert data["retryAfterMs"] >= 1 and data["source"] == "gateway"
    return data


def _text(resp: Response) -> str:
    body = resp.json
    assert resp.status == 200 and "result" in body, (resp.status, body)
    return str(body["result"]["content"][0]["text"])


# -- exact admission over 1,000 concurrent calls ----------------------------------------------


def _fleet_config(prefix: str, store: str) -> dict[str, Any]:
    backend = stdio_fixture("crashy", isolation="shared")
    backend["args"].append("--annotated")
    config: dict[str, Any] = {
        "gateway": {"limits": GENEROUS},
        "servers": {"fx": backend},
        "rate_limits": {
            "store": store,
            "key_prefix": prefix,
            "defaults": {"per": "rule"},
            "rules": [
                {
                    "name": "fleet",
                    "tools": ["echo"],
                    "windows": [{"period": "hour", "max": FLEET_MAX}],
                },
                {
                    "name": "budget",
                    "tools": ["whoami"],
                    "cost": BUDGET_COST,
                    "budget": {"calls": BUDGET_CALLS},
                },
                {
                    "name": "bytes",
                    "tools": ["wipe"],
                    "budget": {"result_bytes": BYTES_BUDGET, "reserve_bytes": 64},
                },
            ],
        },
    }
    if store == "redis":
        config["storage"] = {"redis_url": REDIS_URL}
    return config


@pytest.fixture(scope="module", params=["redis-two-processes", "memory-one-process"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    prefix = _prefix()
    shared = request.param.startswith("redis")
    config = _fleet_config(prefix, "redis" if shared else "memory")
    gateways: list[Gateway] = []
    try:
        for _ in range(2 if shared else 1):
            gw = start_gateway(config, tmp_path_factory.mktemp("fleet"))
            gateways.append(gw)
            gw.wait_backend("fx")
        yield {"gateways": gateways, "prefix": prefix, "shared": shared}
    finally:
        for gw in gateways:
            gw.stop()
        _drop(prefix)


async def _burst(gateways: list[Gateway], tool: str, arguments: dict[str, Any]) -> list[Response]:
    """CALLS calls at once, spread evenly over the gateways; bounded in time."""
    connector = aiohttp.TCPConnector(limit=CALLS)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        calls = [
            _call(http, gateways[i % len(gateways)], f"fx_{tool}", arguments, request_id=i)
            for i in range(CALLS)
        ]
        return await asyncio.wait_for(asyncio.gather(*calls), 120)


async def test_exactly_the_configured_number_of_a_thousand_concurrent_calls(
    fleet: dict[str, Any],
) -> None:
    replies = await _burst(fleet["gateways"], "echo", {"text": "hi"})
    admitted = [r for r in replies if r.status == 200 and "result" in r.json]
    limited = [data for r in replies if (data := _limited(r)) is not None]
    assert len(admitted) == FLEET_MAX and len(limited) == CALLS - FLEET_MAX
    assert all(_text(r) == "hi" for r in admitted)
    assert {(d["rule"], d["limit"], d["window"], d["max"]) for d in limited} == {
        ("fleet", "window", "1h", FLEET_MAX)
    }
    assert all(0 < d["retryAfterMs"] <= 3_600_000 for d in limited)
    refused = next(r for r in replies if r.status == 429)
    assert refused.headers["ratelimit-policy"] == f'"fleet-1h";q={FLEET_MAX};w=3600'
    assert refused.headers["ratelimit"].startswith('"fleet-1h";r=0;t=')


async def test_a_daily_budget_never_overshoots_under_concurrency(fleet: dict[str, Any]) -> None:
    replies = await _burst(fleet["gateways"], "whoami", {})
    admitted = [r for r in replies if r.status == 200 and "result" in r.json]
    limited = [data for r in replies if (data := _limited(r)) is not None]
    # 16 calls of cost 3 use 48 of 50 units; a 17th would make 51.
    assert len(admitted) == BUDGET_CALLS // BUDGET_COST
    assert len(limited) == CALLS - len(admitted)
    assert {(d["rule"], d["limit"]) for d in limited} == {("budget", "calls")}
    assert all(_text(r).isdigit() for r in admitted)


async def test_a_result_bytes_budget_never_overshoots(fleet: dict[str, Any]) -> None:
    target = "t" * 100
    replies = await _burst(fleet["gateways"], "wipe", {"target": target})
    delivered = [r for r in replies if r.status == 200 and "result" in r.json]
    limited = [data for r in replies if (data := _limited(r)) is not None]
    assert len(delivered) + len(limited) == CALLS and delivered
    assert {(d["rule"], d["limit"]) for d in limited} == {("bytes", "result_bytes")}
    # The relayed answer is the backend's bytes: the fixture writes compact JSON.
    size = len(json.dumps(delivered[0].json["result"], separators=(",", ":")).encode())
    assert all(_text(r) == f"wiped {target}" for r in delivered)
    assert len(delivered) * size <= BYTES_BUDGET
    if fleet["shared"]:
        assert _bytes_used(fleet["prefix"]) == len(delivered) * size


# -- one gateway, no authentication: windows, caps, annotations, shadow ------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    annotated = stdio_fixture("crashy", isolation="shared")
    annotated["args"].append("--annotated")
    config = {
        "gateway": {"limits": GENEROUS},
        "servers": {"fx": annotated, "fy": stdio_fixture("crashy", isolation="shared")},
        "rate_limits": {
            "rules": [
                {
                    "name": "destructive",
                    "backends": ["fx"],
                    "annotations": {"destructiveHint": True},
                    "windows": [{"period": "minute", "max": 2}],
                },
                {
                    "name": "roll",
                    "backends": ["fy"],
                    "tools": ["whoami"],
                    "windows": [{"period": "second", "max": 3}],
                },
                {"name": "slow", "backends": ["fy"], "tools": ["sleep"], "concurrency": 1},
                {
                    "name": "watch",
                    "backends": ["fy"],
                    "tools": ["echo"],
                    "mode": "shadow",
                    "windows": [{"period": "minute", "max": 1}],
                },
            ]
        },
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("single"))
    try:
        gw.wait_backend("fx")
        gw.wait_backend("fy")
        yield gw
    finally:
        gw.stop()


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_a_rule_selects_tools_by_their_destructive_hint(
    single: Gateway, http: aiohttp.ClientSession
) -> None:
    for i in range(5):  # declared read-only: no rule selects it
        assert _text(await _call(http, single, "fx_peek", {"target": str(i)})) == f"peeked {i}"
    assert _text(await _call(http, single, "fx_wipe", {"target": "a"})) == "wiped a"
    assert _text(await _call(http, single, "fx_wipe", {"target": "b"})) == "wiped b"
    data = _limited(await _call(http, single, "fx_wipe", {"target": "c"}))
    assert data is not None and (data["rule"], data["window"], data["max"]) == (
        "destructive",
        "1m",
        2,
    )
    # A tool that declares nothing is destructive by MCP's defaults: the same rule holds it.
    assert _limited(await _call(http, single, "fx_echo", {"text": "x"})) is not None
    assert _text(await _call(http, single, "fx_peek", {"target": "z"})) == "peeked z"


async def test_windows_roll_over(single: Gateway, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        _text(await _call(http, single, "fy_whoami"))
    data = _limited(await _call(http, single, "fy_whoami"))
    assert data is not None and data["window"] == "1s" and data["retryAfterMs"] <= 1000
    # Waiting the time the refusal named is exactly what a client is asked to do.
    await asyncio.sleep(data["retryAfterMs"] / 1000 + 0.05)
    _text(await _call(http, single, "fy_whoami"))


async def _until_admitted(http: aiohttp.ClientSession, gw: Gateway) -> str:
    """A short sleep call, retried while the concurrency cap refuses it (bounded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = await _call(http, gw, "fy_sleep", {"ms": 1})
        data = _limited(resp)
        if data is None:
            return _text(resp)
        assert data["limit"] == "concurrency" and data["retryAfterMs"] == 1000
        await asyncio.sleep(0.05)
    raise AssertionError("the concurrency slot never came back")


@contextlib.asynccontextmanager
async def _holding(gw: Gateway, ms: int) -> AsyncIterator[asyncio.Task[Response]]:
    """A long sleep call holding the one slot, proven by a short call being refused. The probe
    goes only once the long call's body is on the wire; should the probe still take the slot
    first, the long call is refused and tried again. Leaving closes the long call's
    connection (a 2026-07-28 cancellation, if it is still running)."""
    sent = asyncio.Event()

    async def on_sent(*_: Any) -> None:
        sent.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_sent)
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        aiohttp.ClientSession() as probing,
    ):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sent.clear()
            held = asyncio.create_task(_call(session, gw, "fy_sleep", {"ms": ms}))
            await asyncio.wait_for(sent.wait(), 10)
            while not held.done() and time.monotonic() < deadline:
                if _limited(await _call(probing, gw, "fy_sleep", {"ms": 1})) is not None:
                    try:
                        yield held
                    finally:
                        held.cancel()
                    return
            assert _limited(await held) is not None, "the long call ended too early"
        raise AssertionError("the long call never took the slot")


async def test_a_concurrency_cap_releases_on_completion_error_and_cancel(
    single: Gateway, http: aiohttp.ClientSession
) -> None:
    # Completion: a call in flight holds the one slot; once it answers, the next gets it.
    async with _holding(single, 1500) as running:
        assert _text(await running) == "slept 1500"
    assert await _until_admitted(http, single) == "slept 1"
    # Error: the backend refuses the arguments; the slot comes back with the error.
    bad = (await _call(http, single, "fy_sleep", {"ms": "soon"})).json
    assert bad["error"]["code"] == -32602
    assert await _until_admitted(http, single) == "slept 1"
    # Client cancel: a 2026-07-28 client closing its request's connection cancels the call.
    async with _holding(single, 60_000) as held:
        assert not held.done()
    assert await _until_admitted(http, single) == "slept 1"


async def test_shadow_mode_refuses_nothing_and_logs(
    single: Gateway, http: aiohttp.ClientSession
) -> None:
    before = single.readyz()["limits"]["shadowRefused"].get("watch", 0)
    for i in range(4):
        resp = await _call(http, single, "fy_echo", {"text": f"s{i}"})
        assert _text(resp) == f"s{i}" and "ratelimit" not in resp.headers
    limits = single.readyz()["limits"]
    assert limits["shadowRefused"]["watch"] - before == 3 and limits["store"] == "memory"
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while len(lines) < 3 and time.monotonic() < deadline:
        lines = [ln for ln in single.log_text().splitlines() if "shadow: rule watch" in ln]
        await asyncio.sleep(0.1)  # the log is flushed every half second
    assert len(lines) >= 3 and "would refuse tools/call fy_echo" in lines[0]


# -- two principals, authentication on, counters in Redis ---------------------------------------


@pytest.fixture(scope="module")
def principals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("principals")
    data = tmp / "keys"
    keys = {name: create_key(data, name, "user") for name in ("alice", "bob", "carol", "dave")}
    prefix = _prefix()
    config = {
        "gateway": {"limits": GENEROUS},
        "auth": {
            "enabled": True,
            "data_dir": str(data),
            "rules": [
                {"effect": "allow", "principals": ["alice", "bob", "dave", "readyz-probe"]},
            ],
        },
        "storage": {"redis_url": REDIS_URL},
        "servers": {"fx": stdio_fixture("crashy", isolation="shared")},
        "rate_limits": {
            "key_prefix": prefix,
            "rules": [
                {
                    "name": "per-caller",
                    "tools": ["echo"],
                    "windows": [{"period": "minute", "max": 3}],
                },
                {
                    "name": "team",
                    "per": "rule",
                    "tools": ["whoami"],
                    "windows": [{"period": "minute", "max": 4}],
                },
            ],
        },
    }
    gw = start_gateway(config, tmp)
    try:
        gw.wait_backend("fx")
        yield {"gw": gw, "keys": keys}
    finally:
        gw.stop()
        _drop(prefix)


async def test_one_principal_exhausting_its_limit_does_not_limit_another(
    principals: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = principals["gw"]
    keys = principals["keys"]

    async def caller(name: str) -> list[Response]:
        return list(
            await asyncio.gather(
                *(_call(http, gw, "fx_echo", {"text": name}, keys[name], i) for i in range(10))
            )
        )

    alice, bob = await asyncio.gather(caller("alice"), caller("bob"))
    for name, replies in (("alice", alice), ("bob", bob)):
        texts = [_text(r) for r in replies if r.status == 200]
        assert texts == [name] * 3
        refusals = [_limited(r) for r in replies if r.status != 200]
        assert len(refusals) == 7 and all(d and d["rule"] == "per-caller" for d in refusals)
    # Each sees its own standing in the headers, never the other's.
    last = await _call(http, gw, "fx_echo", {"text": "again"}, keys["alice"], 99)
    assert last.status == 429 and last.headers["ratelimit"].startswith('"per-caller-1m";r=0;')


async def test_a_denied_caller_never_burns_a_shared_window(
    principals: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = principals["gw"]
    keys = principals["keys"]
    for i in range(10):  # carol may call nothing: answered as an unknown tool, never counted
        denied = (await _call(http, gw, "fx_whoami", None, keys["carol"], i)).json
        assert denied["error"]["code"] == -32602 and "Unknown tool" in denied["error"]["message"]
    outcomes = []
    for name in ("alice", "bob", "alice", "bob", "alice"):
        resp = await _call(http, gw, "fx_whoami", None, keys[name])
        outcomes.append(resp.status)
    assert outcomes == [200, 200, 200, 200, 429]


async def test_an_official_sdk_client_sees_the_exact_error_and_the_429(
    principals: dict[str, Any],
) -> None:
    gw: Gateway = principals["gw"]
    seen: list[httpx2.Response] = []

    async def record(response: httpx2.Response) -> None:
        if response.request.method == "POST":
            seen.append(response)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {principals['keys']['dave']}"},
        event_hooks={"response": [record]},
    )
    async with Client(streamable_http_client(gw.url, http_client=http)) as client:  # type: ignore[arg-type]
        for i in range(3):
            result = await client.call_tool("fx_echo", {"text": f"d{i}"})
            assert result.content[0].text == f"d{i}"  # type: ignore[union-attr]
        ok = seen[-1]
        assert ok.status_code == 200
        assert ok.headers["ratelimit-policy"] == '"per-caller-1m";q=3;w=60'
        assert ok.headers["ratelimit"].startswith('"per-caller-1m";r=0;t=')
        with pytest.raises(MCPError) as info:
            await client.call_tool("fx_echo", {"text": "d3"})
    error = info.value.error
    assert error.code == RATE_LIMITED
    assert error.message.startswith("Rate limit exceeded: 3 per 1m (rule per-caller)")
    assert error.data["rule"] == "per-caller" and error.data["window"] == "1m"
    assert error.data["limit"] == "window" and error.data["max"] == 3
    assert 0 < error.data["retryAfterMs"] <= 60_000
    refused = seen[-1]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == -(-error.data["retryAfterMs"] // 1000)
    assert refused.headers["ratelimit-policy"] == '"per-caller-1m";q=3;w=60'
    assert refused.headers["ratelimit"].startswith('"per-caller-1m";r=0;t=')


def test_with_refusal_status_200_the_typescript_client_reads_the_error_itself(
    tmp_path: Path,
) -> None:
    """The TypeScript SDK (1.x) turns any non-2xx answer into a transport error; with
    `refusal_status: 200` it gets the JSON-RPC error, code and data, as an MCP error. Two
    callers: the limit is each one's own."""
    from tests.e2e.test_reference_servers import NODE
    from tests.harness import NODE_DIR

    data = tmp_path / "keys"
    keys = {name: create_key(data, name, "user") for name in ("erin", "fred")}
    config = {
        "auth": {
            "enabled": True,
            "data_dir": str(data),
            "rules": [{"effect": "allow", "roles": ["user", "probe"]}],
        },
        "servers": {"fx": stdio_fixture("crashy", isolation="shared")},
        "rate_limits": {
            "store": "memory",
            "refusal_status": 200,
            "rules": [{"name": "each", "windows": [{"period": "minute", "max": 1}]}],
        },
    }
    gw = start_gateway(config, tmp_path)
    try:
        gw.wait_backend("fx")
        plan = json.dumps([{"tool": "fx_echo", "arguments": {"text": f"t{i}"}} for i in range(2)])
        for who in ("erin", "fred"):
            done = subprocess.run(
                [
                    str(NODE), str(NODE_DIR / "ts_client.mjs"), "--transport", "streamable-http",
                    "--url", gw.url, "--bearer-env", "RL_TOKEN", "--calls", plan,
                    "--timeout", "30",
                ],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "RL_TOKEN": keys[who]},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            first, second = json.loads(done.stdout)["calls"]
            assert first["result"]["content"][0]["text"] == "t0"
            error = second["error"]
            assert error["code"] == RATE_LIMITED and error["data"]["rule"] == "each", error
            assert 0 < error["data"]["retryAfterMs"] <= 60_000
        # On the wire: 200, with the retry hint still in the headers.
        request = urllib.request.Request(
            gw.url,
            data=json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 9,
                    "method": "tools/call",
                    "params": {
                        "name": "fx_echo",
                        "arguments": {"text": "again"},
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                            "io.modelcontextprotocol/clientCapabilities": {},
                        },
                    },
                }
            ).encode(),
            headers={
                "Authorization": f"Bearer {keys['erin']}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/call",
                "Mcp-Name": "fx_echo",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200 and int(resp.headers["Retry-After"]) >= 1
            assert json.loads(resp.read())["error"]["code"] == RATE_LIMITED
    finally:
        gw.stop()
