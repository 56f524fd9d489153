"""Switchyard in front of the reference MCP server (server-everything), three times at once.

server-everything (npm, pinned in tests/node) runs behind one gateway over stdio, over
Streamable HTTP and over legacy HTTP+SSE, next to the bundled `clock` demo. The official
TypeScript SDK client (tests/node/ts_client.mjs) and the official Python SDK client then use
the gateway over each of its faces, and what they get is checked against what
server-everything answers directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.harness import BIN, NODE_DIR, Gateway, Proc, free_port, log_path, start_gateway

pytestmark = [pytest.mark.e2e]

NODE = NODE_DIR / "node_modules" / ".bin" / "node"
EVERYTHING = (
    NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
LOOPBACK_ONLY = NODE_DIR / "loopback-only.cjs"  # absolute: `--require` needs ./ or /
TS_CLIENT = NODE_DIR / "ts_client.mjs"

EV = ("ev_stdio", "ev_http", "ev_sse")
STATIC_DOC = "demo://resource/static/document/architecture.md"
DYNAMIC_TEXT = "demo://resource/dynamic/text/{resourceId}"
SUM_TEXT = "The sum of 2 and 3 is 5."  # what server-everything's get-sum answers for (2, 3)
START_S = 30.0
STOP_S = 5.0


# --- server-everything over HTTP, as fixtures we start and stop ourselves -------------------


def _wait_listening(proc: Proc, port: int, what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(
                f"{what} exited with {proc.process.returncode}:\n{proc.log_text()[-2000:]}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise AssertionError(
        f"{what} is not listening on {port} after {START_S} s:\n{proc.log_text()[-2000:]}"
    )


@contextlib.contextmanager
def everything_http(mode: str) -> Iterator[int]:
    """server-everything in `mode` (streamableHttp | sse), bound to 127.0.0.1; yields its port."""
    port = free_port()
    log = log_path(f"everything-{mode}-{port}")
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"} | {"PORT": str(port)}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(NODE), "--require", str(LOOPBACK_ONLY), str(EVERYTHING), mode],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    proc = Proc(process, log)
    try:
        _wait_listening(proc, port, f"server-everything {mode}")
        yield port
    finally:
        proc.stop(timeout=STOP_S)


def everything_stdio() -> StdioServerParameters:
    return StdioServerParameters(command=str(NODE), args=[str(EVERYTHING), "stdio"])


# --- the shared gateway ------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> Iterator[dict[str, Any]]:
    with everything_http("streamableHttp") as http_port, everything_http("sse") as sse_port:
        yield {
            "servers": {
                "ev_stdio": {"command": str(NODE), "args": [str(EVERYTHING), "stdio"]},
                "ev_http": {"url": f"http://127.0.0.1:{http_port}/mcp", "type": "streamable-http"},
                "ev_sse": {"url": f"http://127.0.0.1:{sse_port}/sse", "type": "sse"},
                "clock": {"command": "switchyard", "args": ["demo", "clock"]},
            }
        }


@pytest.fixture(scope="module")
def gateway(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(config, tmp_path_factory.mktemp("reference"))
    try:
        for name in config["servers"]:
            gw.wait_backend(name)
        yield gw
    finally:
        gw.stop(timeout=STOP_S)


# --- what server-everything says directly ------------------------------------------------


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")  # type: ignore[no-any-return]


async def _listings(client: Client) -> dict[str, list[dict[str, Any]]]:
    return {
        "tools": [_dump(t) for t in (await client.list_tools()).tools],
        "resources": [_dump(r) for r in (await client.list_resources()).resources],
        "templates": [
            _dump(t) for t in (await client.list_resource_templates()).resource_templates
        ],
        "prompts": [_dump(p) for p in (await client.list_prompts()).prompts],
    }


async def _long_running(client: Client, prefix: str) -> list[tuple[float, float | None]]:
    """Call trigger-long-running-operation (1 s, 2 steps) with a progress token; the progress
    notifications received for it, as (progress, total)."""
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    result = await client.call_tool(
        f"{prefix}trigger-long-running-operation",
        {"duration": 1, "steps": 2},
        progress_callback=on_progress,
    )
    assert not result.is_error, result
    assert _dump(result)["content"] == [
        {"type": "text", "text": "Long running operation completed. Duration: 1 seconds, Steps: 2."}
    ]
    return seen


def _keys(items: list[dict[str, Any]], field: str) -> list[str]:
    return [item[field] for item in items]


@pytest.fixture(scope="module")
def direct() -> dict[str, Any]:
    """server-everything's own answers over stdio (official Python SDK client, legacy era)."""

    async def collect() -> dict[str, Any]:
        with anyio.fail_after(START_S):
            async with Client(everything_stdio(), mode="legacy") as client:
                return {
                    **await _listings(client),
                    "progress": await _long_running(client, ""),
                    "sum": _dump(await client.call_tool("get-sum", {"a": 2, "b": 3})),
                    "echo": _dump(await client.call_tool("echo", {"message": "hello switchyard"})),
                    "image": _dump(await client.call_tool("get-tiny-image", {})),
                    "weather": _dump(
                        await client.call_tool("get-structured-content", {"location": "Chicago"})
                    ),
                    "doc": _dump(await client.read_resource(STATIC_DOC)),
                    "prompt": _dump(
                        await client.get_prompt("args-prompt", {"city": "Paris", "state": "TX"})
                    ),
                }

    return anyio.run(collect)


def test_direct_baseline(direct: dict[str, Any]) -> None:
    """Pin what the rest of this file relies on from server-everything itself."""
    assert {"echo", "get-sum", "get-structured-content", "get-tiny-image"} <= set(
        _keys(direct["tools"], "name")
    )
    assert direct["sum"]["content"] == [{"type": "text", "text": SUM_TEXT}]
    assert direct["echo"]["content"] == [{"type": "text", "text": "Echo: hello switchyard"}]
    assert "image" in [c["type"] for c in direct["image"]["content"]]
    assert direct["weather"]["structuredContent"] == {
        "temperature": 36,
        "conditions": "Light rain / drizzle",
        "humidity": 82,
    }
    assert STATIC_DOC in _keys(direct["resources"], "uri")
    assert DYNAMIC_TEXT in _keys(direct["templates"], "uriTemplate")
    assert {"simple-prompt", "args-prompt"} <= set(_keys(direct["prompts"], "name"))
    assert direct["prompt"]["messages"][0]["content"]["text"] == "What's weather in Paris, TX?"
    assert direct["doc"]["contents"][0]["text"].startswith("# Everything Server")
    assert direct["progress"] == [(1.0, 2.0), (2.0, 2.0)]


# --- 1. readiness ------------------------------------------------------------------------


def test_readyz_all_backends_up_with_their_era(gateway: Gateway) -> None:
    backends = gateway.readyz()["backends"]
    assert set(backends) == {*EV, "clock"}
    for name in EV:
        b = backends[name]
        assert b["state"] == "up", (name, b)
        assert b["era"] == "legacy", (name, b)
        assert str(b["protocolVersion"]).startswith("2025-"), (name, b)
        assert b["error"] is None, (name, b)
    assert backends["clock"]["state"] == "up"
    assert backends["clock"]["era"] == "modern"
    assert backends["clock"]["protocolVersion"] == "2026-07-28"


# --- 2. the official TypeScript SDK client, over each gateway face ------------------------

TS_CALLS = [
    {"tool": "ev_stdio_get-sum", "arguments": {"a": 2, "b": 3}},
    {"tool": "ev_http_echo", "arguments": {"message": "hello switchyard"}},
    {"tool": "ev_sse_get-sum", "arguments": {"a": 2, "b": 3}},
    {"tool": "ev_http_get-sum", "arguments": {"a": 2, "b": 3}},
    {"tool": "ev_sse_echo", "arguments": {"message": "hello switchyard"}},
    {"tool": "ev_stdio_echo", "arguments": {"message": "hello switchyard"}},
    {"tool": "clock_now", "arguments": {"timezone": "UTC"}},
]


def run_ts_client(*args: str) -> dict[str, Any]:
    cmd = [str(NODE), str(TS_CLIENT), *args, "--calls", json.dumps(TS_CALLS), "--timeout", "30"]
    done = subprocess.run(cmd, capture_output=True, timeout=60, cwd=NODE_DIR, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"ts_client exited {done.returncode}:\n{stderr[-3000:]}"
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _ts_args(face: str, gateway: Gateway) -> list[str]:
    if face == "streamable-http":
        return ["--transport", "streamable-http", "--url", gateway.url]
    if face == "sse":
        return ["--transport", "sse", "--url", f"{gateway.base}/sse"]
    switchyard_args = ["stdio", "--config", str(gateway.config_path), "--log-level", "warning"]
    return [
        "--transport",
        "stdio",
        "--command",
        str(BIN / "switchyard"),
        "--args",
        json.dumps(switchyard_args),
    ]


@pytest.mark.parametrize("face", ["streamable-http", "sse", "stdio"])
def test_typescript_sdk_client(face: str, gateway: Gateway, direct: dict[str, Any]) -> None:
    out = run_ts_client(*_ts_args(face, gateway))
    assert out["serverInfo"]["name"] == "switchyard"

    tools = set(out["tools"])
    for prefix in EV:
        missing = {f"{prefix}_{name}" for name in _keys(direct["tools"], "name")} - tools
        assert not missing, (face, missing)
    assert "clock_now" in tools

    # Resources and templates: server-everything's (all three instances offer the same URIs;
    # one of them owns each) and the clock's; prompts from every instance and from the clock.
    resources = set(out["resources"])
    assert set(_keys(direct["resources"], "uri")) <= resources
    assert "clock://zones" in resources
    templates = set(out["resourceTemplates"])
    assert set(_keys(direct["templates"], "uriTemplate")) <= templates
    assert "clock://zone/{+name}" in templates
    prompts = set(out["prompts"])
    assert {
        f"{prefix}_{name}" for prefix in EV for name in _keys(direct["prompts"], "name")
    } <= prompts
    assert "clock_plan_meeting" in prompts

    calls = {c["tool"]: c for c in out["calls"]}
    assert list(calls) == [c["tool"] for c in TS_CALLS]
    for call in calls.values():
        assert "error" not in call, (face, call)
        assert not call["result"].get("isError"), (face, call)
    for prefix in EV:
        assert calls[f"{prefix}_get-sum"]["result"]["content"] == [
            {"type": "text", "text": SUM_TEXT}
        ], prefix
        assert calls[f"{prefix}_get-sum"]["result"]["content"] == direct["sum"]["content"], prefix
        assert calls[f"{prefix}_echo"]["result"]["content"] == direct["echo"]["content"], prefix
    now = calls["clock_now"]["result"]
    assert now["structuredContent"]["timezone"] == "UTC", now
    assert now["content"][0]["type"] == "text" and '"timezone"' in now["content"][0]["text"], now


# --- 3. the official Python SDK client through /mcp, both eras ----------------------------


def _client(gateway: Gateway, era: str) -> Client:
    if era == "modern":
        return Client(gateway.url)
    return Client(streamable_http_client(gateway.url), mode="legacy")


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_python_sdk_client(era: str, gateway: Gateway, direct: dict[str, Any]) -> None:
    with anyio.fail_after(30):
        async with _client(gateway, era) as client:
            assert client.protocol_version == ("2026-07-28" if era == "modern" else "2025-11-25")
            for i, prefix in enumerate(EV):
                summed = await client.call_tool(f"{prefix}_get-sum", {"a": 2, "b": 3})
                assert not summed.is_error, (prefix, summed)
                assert _dump(summed)["content"] == [{"type": "text", "text": SUM_TEXT}], prefix
                echoed = await client.call_tool(f"{prefix}_echo", {"message": f"{era} {i}"})
                assert _dump(echoed)["content"] == [{"type": "text", "text": f"Echo: {era} {i}"}], (
                    prefix
                )
                image = await client.call_tool(f"{prefix}_get-tiny-image", {})
                assert _dump(image)["content"] == direct["image"]["content"], prefix
                weather = await client.call_tool(
                    f"{prefix}_get-structured-content", {"location": "Chicago"}
                )
                assert weather.structured_content == direct["weather"]["structuredContent"], prefix
                assert _dump(weather)["content"] == direct["weather"]["content"], prefix

            doc = await client.read_resource(STATIC_DOC)
            assert _dump(doc)["contents"] == direct["doc"]["contents"]
            dynamic = await client.read_resource("demo://resource/dynamic/text/7")
            (text,) = _dump(dynamic)["contents"]
            assert text["uri"] == "demo://resource/dynamic/text/7"
            assert text["text"].startswith("Resource 7: This is a plaintext resource"), text

            for prefix in EV:
                prompt = await client.get_prompt(
                    f"{prefix}_args-prompt", {"city": "Paris", "state": "TX"}
                )
                assert _dump(prompt)["messages"] == direct["prompt"]["messages"], prefix


@pytest.mark.anyio
async def test_progress_notifications_are_relayed(gateway: Gateway, direct: dict[str, Any]) -> None:
    """A client that sends a progressToken gets the backend's progress for that request, as it
    does directly (2025-11-25 basic/utilities/progress; RequestContext.emit is meant for this)."""
    seen: dict[str, list[tuple[float, float | None]]] = {}

    async def one(client: Client, prefix: str) -> None:
        seen[prefix] = await _long_running(client, f"{prefix}_")

    with anyio.fail_after(30):
        async with _client(gateway, "legacy") as client, anyio.create_task_group() as tg:
            for prefix in EV:
                tg.start_soon(one, client, prefix)
    assert seen == dict.fromkeys(EV, direct["progress"])


# --- 4. tool metadata fidelity -------------------------------------------------------------


def _without(item: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != field}


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_metadata_is_forwarded_verbatim(
    era: str, gateway: Gateway, direct: dict[str, Any]
) -> None:
    """Every tool (and prompt, resource, template) of ev_stdio is listed as server-everything
    lists it, but for the public name."""
    with anyio.fail_after(30):
        async with _client(gateway, era) as client:
            through = await _listings(client)

    tools = {t["name"]: t for t in through["tools"]}
    assert len(direct["tools"]) >= 10
    for original in direct["tools"]:
        public = f"ev_stdio_{original['name']}"
        assert public in tools, public
        assert _without(tools[public], "name") == _without(original, "name"), public

    prompts = {p["name"]: p for p in through["prompts"]}
    for original in direct["prompts"]:
        public = f"ev_stdio_{original['name']}"
        assert public in prompts, public
        assert _without(prompts[public], "name") == _without(original, "name"), public

    # Resources and templates keep their URIs. All three instances offer the same ones and
    # one of them owns each (the first in the config file; the harness writes it with sorted
    # keys, so that is ev_http): identical listings either way.
    resources = {r["uri"]: r for r in through["resources"]}
    for original in direct["resources"]:
        assert resources.get(original["uri"]) == original
    templates = {t["uriTemplate"]: t for t in through["templates"]}
    for original in direct["templates"]:
        assert templates.get(original["uriTemplate"]) == original
