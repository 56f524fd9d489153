"""SIGHUP reloads the config file: validated first, then swapped in one step. Unchanged
backends keep their process, changed ones are replaced, removed ones stopped, added ones
started; a bad file is refused and the old config keeps serving; access rules and virtual
servers follow; clients whose lists changed are told; no request fails meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from tests.e2e.test_telemetry import OtlpReceiver
from tests.harness import (
    FIXTURES,
    PYTHON,
    Gateway,
    create_key,
    http_get,
    pid_alive,
    stdio_fixture,
)
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pids(gw: Gateway) -> dict[str, list[int]]:
    """Every stdio process the gateway started, by backend, oldest first (from its log)."""
    out: dict[str, list[int]] = {}
    for name, pid in re.findall(r"backend '([^']+)': started pid (\d+)", gw.log_text()):
        out.setdefault(name, []).append(int(pid))
    return out


async def _reload(gw: Gateway, config: dict[str, Any], outcome: str) -> str:
    """Write `config` over the gateway's file, send SIGHUP, and return the log line saying
    how it went (`outcome`: the line's start, e.g. "config reloaded")."""
    before = len(re.findall(re.escape(outcome), gw.log_text()))
    gw.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in gw.log_text().splitlines() if outcome in line]
        if len(lines) > before:
            return lines[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {outcome!r} after SIGHUP:\n{gw.log_text()[-3000:]}")


async def _tool_names(client: RawClient) -> set[str]:
    return {t["name"] for t in await client.list_all("tools/list", "tools")}


async def _call(client: RawClient, name: str, request_id: int = 1) -> dict[str, Any]:
    resp = await client.request(
        "tools/call", {"name": name, "arguments": {"text": "x"}}, request_id
    )
    assert resp.status == 200, resp.body
    return resp.json  # type: ignore[no-any-return]


async def test_sighup_keeps_unchanged_backends_and_replaces_removes_and_adds_the_others(
    gateway_factory: Callable[..., Gateway],
) -> None:
    config: dict[str, Any] = {
        "servers": {
            "keep": stdio_fixture("crashy"),
            "change": stdio_fixture("crashy"),
            "drop": stdio_fixture("crashy"),
        }
    }
    gw = gateway_factory(config)
    for name in ("keep", "change", "drop"):
        gw.wait_backend(name)
    await gw.log_lines("backend 'drop': started pid")
    before = _pids(gw)
    config["servers"]["change"] = stdio_fixture("crashy", env={"FIXTURE_MARK": "v2"})
    del config["servers"]["drop"]
    config["servers"]["add"] = stdio_fixture("crashy")
    line = await _reload(gw, config, "config reloaded")
    assert line.endswith(
        "switchyard.reload: config reloaded: 1 servers unchanged; added ['add']; "
        "replaced ['change']; removed ['drop']"
    )
    gw.wait_backend("add")
    gw.wait_backend("change")
    after = _pids(gw)
    assert after["keep"] == before["keep"] and pid_alive(before["keep"][0])
    assert len(after["change"]) == 2 and pid_alive(after["change"][1])
    assert set(gw.readyz()["backends"]) == {"keep", "change", "add"}
    for _ in range(400):  # a process's end has no event to wait on: polled, 20 s bound
        if not (pid_alive(before["drop"][0]) or pid_alive(before["change"][0])):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(before["drop"][0]), "the removed backend is still running"
    assert not pid_alive(before["change"][0]), "the replaced backend is still running"
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        assert await _tool_names(client) >= {"keep_echo", "change_echo", "add_echo"}
        assert not any(n.startswith("drop_") for n in await _tool_names(client))


async def test_a_bad_file_is_refused_with_the_reason_and_the_old_config_keeps_serving(
    gateway_factory: Callable[..., Gateway],
) -> None:
    config: dict[str, Any] = {"servers": {"fx": stdio_fixture("crashy")}}
    gw = gateway_factory(config)
    await gw.log_lines("backend 'fx': started pid")
    pid = _pids(gw)["fx"][0]
    line = await _reload(
        gw, {"servers": {"fx": {"command": "x", "url": "http://h/"}}}, "config reload refused"
    )
    assert line.endswith(
        "switchyard.reload: config reload refused, the running configuration stays: "
        "invalid configuration:"
    )
    assert "servers.fx: set exactly one of `command` (stdio) or `url` (HTTP)" in gw.log_text()
    gw.config_path.write_text("servers: [unclosed\n")
    gw.process.send_signal(signal.SIGHUP)
    lines = await gw.log_lines("not valid YAML/JSON")
    assert "config reload refused, the running configuration stays: " in lines[-1]
    line = await _reload(
        gw,
        {**config, "gateway": {"allowed_origins": ["http://x.example"]}},
        "config reload refused",
    )
    assert line.endswith(
        f"config reload refused, the running configuration stays: {gw.config_path}: these keys "
        "changed and need a restart: gateway.allowed_origins"
    )
    assert gw.process.poll() is None
    assert _pids(gw)["fx"] == [pid] and pid_alive(pid)
    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        result = (await _call(client, "fx_echo"))["result"]
        assert result["content"][0]["text"] == "x"


async def test_access_rules_and_views_follow_a_reload_for_each_caller(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    alice = create_key(keys, "alice", "dev")
    bob = create_key(keys, "bob", "ops")
    auth = {
        "enabled": True,
        "data_dir": str(keys),
        "rules": [
            {"effect": "allow", "principals": ["alice"], "backends": ["one"]},
            {"effect": "allow", "principals": ["bob"], "backends": ["one", "two"]},
            {"effect": "allow", "principals": ["readyz-probe"]},
        ],
    }
    config: dict[str, Any] = {
        "auth": auth,
        "servers": {"one": stdio_fixture("crashy"), "two": stdio_fixture("crashy")},
        "virtual_servers": {"team": {"tools": [{"backends": ["one"]}]}},
    }
    gw = gateway_factory(config)
    gw.wait_backend("one")
    gw.wait_backend("two")
    async with aiohttp.ClientSession() as http:
        as_alice = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {alice}"}
        ).open()
        as_bob = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {bob}"}
        ).open()
        team = await RawClient(
            f"{gw.base}/servers/team/mcp", http, extra_headers={"Authorization": f"Bearer {alice}"}
        ).open()
        assert {n for n in await _tool_names(as_alice) if n.endswith("_echo")} == {"one_echo"}
        assert {n for n in await _tool_names(team) if n.endswith("_echo")} == {"one_echo"}
        async with (
            http.get(
                gw.url,
                headers={
                    **as_alice.headers(),
                    "Accept": "text/event-stream",
                },
            ) as alice_stream,
            http.get(
                f"{gw.base}/servers/team/mcp",
                headers={**team.headers(), "Accept": "text/event-stream"},
            ) as team_stream,
        ):
            assert alice_stream.status == 200 and team_stream.status == 200
            config["auth"]["rules"][0]["backends"] = ["one", "two"]
            config["auth"]["rules"][1]["backends"] = ["one"]
            config["virtual_servers"]["team"]["tools"] = [{"backends": ["two"]}]
            await _reload(gw, config, "config reloaded")
            for stream in (alice_stream, team_stream):
                seen = b""
                deadline = time.monotonic() + 20
                while b"notifications/tools/list_changed" not in seen:
                    assert time.monotonic() < deadline, seen
                    seen += await asyncio.wait_for(stream.content.readany(), 20)
        # The same processes, the new rules: alice gains `two`, bob loses it, and the
        # virtual server shows `two` instead of `one`.
        assert {n for n in await _tool_names(as_alice) if n.endswith("_echo")} == {
            "one_echo",
            "two_echo",
        }
        assert "result" in await _call(as_alice, "two_echo")
        assert {n for n in await _tool_names(as_bob) if n.endswith("_echo")} == {"one_echo"}
        denied = await _call(as_bob, "two_echo")
        assert "error" in denied, denied
        assert {n for n in await _tool_names(team) if n.endswith("_echo")} == {"two_echo"}


async def test_no_request_fails_while_the_config_changes_under_load(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    callers = {
        "alice": create_key(keys, "alice", "dev"),
        "bob": create_key(keys, "bob", "dev"),
    }
    config: dict[str, Any] = {
        "auth": {
            "enabled": True,
            "data_dir": str(keys),
            "rules": [{"effect": "allow", "roles": ["dev", "probe"]}],
        },
        # Shared: one process per backend, so the pids below count replacements alone.
        "servers": {
            "steady": stdio_fixture("crashy", isolation="shared"),
            "moving": stdio_fixture("crashy", isolation="shared"),
        },
    }
    gw = gateway_factory(config)
    gw.wait_backend("steady")
    gw.wait_backend("moving")
    failures: list[Any] = []
    answered: dict[str, int] = {"alice": 0, "bob": 0}
    stop = asyncio.Event()

    async def caller(who: str, http: aiohttp.ClientSession) -> None:
        client = await RawClient(
            gw.url, http, extra_headers={"Authorization": f"Bearer {callers[who]}"}
        ).open()
        deadline = time.monotonic() + 60
        for i in range(5000):  # bounded in count and in time
            if stop.is_set() or time.monotonic() > deadline:
                return
            name = "steady_echo" if i % 2 else "moving_echo"
            answer = await _call(client, name, i)
            if answer.get("result", {}).get("content", [{}])[0].get("text") != "x":
                failures.append((who, name, answer))
            answered[who] += 1

    async with aiohttp.ClientSession() as http:
        load = [asyncio.create_task(caller(who, http)) for who in callers]
        try:
            for version in range(3):
                while sum(answered.values()) < 20 * (version + 1):
                    assert not any(t.done() for t in load), [t.exception() for t in load]
                    await asyncio.sleep(0.01)
                config["servers"]["moving"] = stdio_fixture(
                    "crashy", isolation="shared", env={"FIXTURE_MARK": str(version)}
                )
                config["servers"][f"extra{version}"] = stdio_fixture("crashy")
                await _reload(gw, config, "config reloaded")
            target = sum(answered.values()) + 20
            while sum(answered.values()) < target:
                assert not any(t.done() for t in load), [t.exception() for t in load]
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.gather(*load)
    assert failures == []
    assert answered["alice"] > 20 and answered["bob"] > 20
    assert len(_pids(gw)["moving"]) == 4 and len(_pids(gw)["steady"]) == 1
    assert json.dumps(gw.readyz()["backends"]["moving"]["state"]) == '"up"'


# -- metrics, tracing and logging -------------------------------------------------------------


async def _traced_call(client: RawClient) -> tuple[str, str, str]:
    """A call carrying a fresh trace: (trace id, the traceparent sent, the one the backend
    received)."""
    trace_id = os.urandom(16).hex()
    sent = f"00-{trace_id}-00f067aa0ba902b7-01"
    params = {"name": "local_trace_context", "arguments": {}, "_meta": {"traceparent": sent}}
    result = await client.result("tools/call", params)
    return trace_id, sent, json.loads(result["content"][0]["text"])["traceparent"]


async def test_sighup_applies_metrics_tracing_and_logging_and_a_bad_file_keeps_them(
    gateway_factory: Callable[..., Gateway],
) -> None:
    first, second = OtlpReceiver(), OtlpReceiver()
    config: dict[str, Any] = {
        "metrics": {"enabled": False},
        "tracing": {"enabled": True, "otlp_endpoint": first.url},
        "servers": {
            "local": {
                "command": PYTHON,
                "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "local"],
                "env": {"FIXTURE_TRACE_TOOL": "1"},
            }
        },
    }
    try:
        gw = gateway_factory(config)
        gw.wait_backend("local")
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http, era="modern").open()
            # As started: spans go to the first collector; no /metrics.
            trace_id, sent, seen = await _traced_call(client)
            assert seen != sent and seen.split("-")[1] == trace_id
            await first.trace(trace_id, 2)
            assert http_get(f"{gw.base}/metrics")[0] == 404

            fresh = await client.result("tools/call", {"name": "local_trace_context"})
            assert json.loads(fresh["content"][0]["text"])["traceparent"].endswith("-01")

            # Another collector, no new traces sampled, metrics on, JSON log lines: all
            # without a restart.
            config["tracing"]["otlp_endpoint"] = second.url
            config["tracing"]["sample_ratio"] = 0.0
            config["metrics"]["enabled"] = True
            config["logging"] = {"format": "json"}
            line = await _reload(gw, config, "observability reloaded")
            port1, port2 = (urlsplit(r.url).port for r in (first, second))
            assert line.endswith(
                "observability reloaded: metrics: off -> on; tracing.otlp_endpoint: "
                f"http://127.0.0.1:{port1} -> http://127.0.0.1:{port2}; "
                "tracing.sample_ratio: 1 -> 0; log format: text -> json"
            )
            trace_id, _, _ = await _traced_call(client)  # the caller's sampled flag is followed
            await second.trace(trace_id, 2)
            assert not [s for s in first.spans() if s["traceId"] == trace_id]
            fresh = await client.result("tools/call", {"name": "local_trace_context"})
            assert json.loads(fresh["content"][0]["text"])["traceparent"].endswith("-00")
            status, body = http_get(f"{gw.base}/metrics")
            assert status == 200
            assert 'gen_ai_tool_name="local_trace_context"' in body.decode()

            # A bad file changes nothing: the same collector, metrics still served.
            bad = {**config, "tracing": {"enabled": True, "otlp_endpoint": "ftp://127.0.0.1/"}}
            line = await _reload(gw, bad, "config reload refused")
            record = json.loads(line[line.index("{") :])  # JSON lines since the last reload
            assert record["level"] == "ERROR"
            assert "tracing.otlp_endpoint: must be an http:// or https:// URL" in record["message"]
            trace_id, _, _ = await _traced_call(client)
            await second.trace(trace_id, 2)
            assert http_get(f"{gw.base}/metrics")[0] == 200
            # Nor does one that changes what only a restart can.
            moved = {**config, "metrics": {"enabled": True, "listen": "127.0.0.1:1"}}
            line = await _reload(gw, moved, "config reload refused")
            assert "need a restart: metrics.listen" in line

            # Tracing off: the call reaches the backend with the caller's own context; the
            # level `warning` hides the next reload's info lines, not its refusal.
            config["tracing"]["enabled"] = False
            config["logging"]["level"] = "warning"
            line = await _reload(gw, config, "observability reloaded")
            assert "tracing: on -> off" in line and "log level: info -> warning" in line
            _, sent, seen = await _traced_call(client)
            assert seen == sent
            reloading = gw.log_text().count("SIGHUP: reloading")
            await _reload(gw, bad, "config reload refused")
            assert gw.log_text().count("SIGHUP: reloading") == reloading
    finally:
        first.close()
        second.close()
