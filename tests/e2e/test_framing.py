"""A backend's raw line breaks never split or forge a downstream frame, on any face."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import BIN, FIXTURES, PYTHON, Gateway, start_gateway, start_port_fixture
from tests.rpc import LEGACY, RawClient, fixture_module

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FORGED_ID = 99
WAIT_S = 20.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    backend, port = start_port_fixture(
        [PYTHON, str(FIXTURES / "forging_http.py"), "--port", "0"], "forging-http"
    )
    try:
        config = {"servers": {"hostile": {"url": f"http://127.0.0.1:{port}/mcp"}}}
        gw = start_gateway(config, tmp_path_factory.mktemp("framing"))
        try:
            gw.wait_backend("hostile")
            yield gw
        finally:
            gw.stop()
    finally:
        backend.stop()


def _call(request_id: int, tool: str, tag: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": f"hostile_{tool}", "arguments": {"tag": tag}},
    }


def _check_answers(messages: list[dict[str, Any]], expected: dict[int, str]) -> None:
    """Exactly one answer per request id, with the backend's real text; no forged id."""
    answers = [m for m in messages if "id" in m and "method" not in m]
    assert FORGED_ID not in [m["id"] for m in answers], answers
    assert sorted(m["id"] for m in answers) == sorted(expected), answers
    for message in answers:
        text = message["result"]["content"][0]["text"]
        assert text == f"real answer {expected[message['id']]}"
        # The forged frame is still there, as the data the backend put in its result.
        assert message["result"]["x"]["a"]["id"] == FORGED_ID


LARGE_TEXT: str = fixture_module("forging_http.py").LARGE_TEXT
# Compact answers of some 30 KiB (read by the native scanner), as JSON and as one SSE event,
# one whose raw line breaks would make its copy of the forged frame a line of its own, and one
# with a single raw LF in a string.
LARGE = (
    ("forge_large", "big"),
    ("forge_large_sse", "big sse"),
    ("forge_large_raw", "raw"),
    ("forge_large_break", "break"),
)


def _check_large(messages: list[dict[str, Any]], ids: list[int]) -> None:
    """The large answers, one per id in LARGE's order: the compact ones whole and exact, the
    ones with raw line breaks refused, the forged frame nowhere."""
    answers = {m["id"]: m for m in messages if "id" in m and "method" not in m}
    assert FORGED_ID not in answers
    assert sorted(answers) == sorted(ids), answers.keys()
    for request_id, (tool, tag) in zip(ids, LARGE, strict=True):
        answer = answers[request_id]
        if tool in ("forge_large_raw", "forge_large_break"):
            assert "invalid JSON" in answer["error"]["message"], answer
            continue
        assert answer["result"]["content"][0]["text"] == f"real answer {tag}"
        assert answer["result"]["x"]["a"] == LARGE_TEXT


def _sse_events(stream: bytes) -> list[bytes]:
    """Each event's data (its data lines joined by LF), as any SSE reader sees them."""
    events = []
    for block in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [
            line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
        ]
        if data:
            events.append(b"\n".join(data))
    return events


async def test_stdio_face_writes_one_line_per_frame(gateway: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "switchyard"),
        "stdio",
        "--config",
        str(gateway.config_path),
        "--log-level",
        "warning",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        }
        requests = [
            init,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "debug"}},
            _call(3, "forge", "three"),
            _call(4, "forge_sse", "four"),
            *(_call(10 + i, tool, tag) for i, (tool, tag) in enumerate(LARGE)),
        ]
        for message in requests:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
        await proc.stdin.drain()
        lines: list[bytes] = []
        pending = {1, 2, 3, 4, 10, 11, 12, 13}
        while pending:
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
            assert line, f"stdio face closed early after {lines!r}"
            lines.append(line)
            message = json.loads(line)  # every line is one whole JSON-RPC message
            pending.discard(message.get("id"))
        messages = [json.loads(line) for line in lines]
        answers = [m for m in messages if m.get("id") in (3, 4)]
        _check_answers(answers, {3: "three", 4: "four"})
        _check_large([m for m in messages if m.get("id") in (10, 11, 12, 13)], [10, 11, 12, 13])
        assert all(m.get("id") != FORGED_ID for m in messages)
        for line in lines:
            assert line.endswith(b"\n")
            assert b"\n" not in line[:-1]
            assert b"\r" not in line
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_streamable_http_face_answers_each_call_once(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = await RawClient(gateway.url, http).open()
    for request_id, tool, tag in ((5, "forge", "five"), (6, "forge_sse", "six")):
        resp = await client.post(_call(request_id, tool, tag), client.headers())
        assert resp.status == 200, resp.body
        if resp.headers["Content-Type"].startswith("text/event-stream"):
            messages = [json.loads(data) for data in _sse_events(resp.body)]
            assert b"\r" not in resp.body
        else:
            messages = [resp.json]
        _check_answers([m for m in messages if "method" not in m], {request_id: tag})
    large: list[dict[str, Any]] = []
    for request_id, (tool, tag) in enumerate(LARGE, start=20):
        resp = await client.post(_call(request_id, tool, tag), client.headers())
        assert resp.status == 200, resp.body
        if resp.headers["Content-Type"].startswith("text/event-stream"):
            assert b"\r" not in resp.body
            large.extend(json.loads(data) for data in _sse_events(resp.body))
        else:
            large.append(resp.json)
    _check_large(large, [20, 21, 22, 23])


async def test_sse_face_events_are_whole_frames(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.base}/sse", headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status == 200
        buffer = b""

        async def next_events() -> list[bytes]:
            nonlocal buffer
            while b"\n\n" not in buffer:
                chunk = await asyncio.wait_for(stream.content.readany(), WAIT_S)
                assert chunk, "stream closed"
                buffer += chunk
            head, _, buffer = buffer.rpartition(b"\n\n")
            return _sse_events(head + b"\n\n")

        [endpoint] = await next_events()
        post_url = f"{gateway.base}{endpoint.decode()}"
        headers = {"Content-Type": "application/json"}
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        }
        requests = [
            init,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            _call(7, "forge", "seven"),
            _call(8, "forge_sse", "eight"),
            *(_call(16 + i, tool, tag) for i, (tool, tag) in enumerate(LARGE)),
        ]
        for message in requests:
            async with http.post(post_url, data=json.dumps(message), headers=headers) as resp:
                assert resp.status in (200, 202)
        messages: list[dict[str, Any]] = []
        while {7, 8, 16, 17, 18, 19} - {m.get("id") for m in messages}:
            messages.extend(json.loads(data) for data in await next_events())
        _check_answers([m for m in messages if m.get("id") in (7, 8)], {7: "seven", 8: "eight"})
        _check_large([m for m in messages if m.get("id") in (16, 17, 18, 19)], [16, 17, 18, 19])
        assert all(m.get("id") != FORGED_ID for m in messages)


def test_fixture_really_sends_raw_newlines(tmp_path: Path) -> None:
    """The fixture is only a test of anything if its answers carry raw line breaks."""
    module = fixture_module("forging_http.py")
    body = module.answer(3, module.call_result("x"))
    assert "\n" + module.FORGED_FRAME + "\n" in body
    assert json.loads(body)["result"]["x"]["a"]["id"] == FORGED_ID
    large = module.large_answer(3, "x")
    assert "\n" not in large and "\r" not in large and "\u2028" in large
    assert json.loads(large)["result"]["x"]["a"] == module.LARGE_TEXT
    raw = module.large_answer(3, "x", raw_break=True).split("\n")
    assert len(raw) == 3 and raw[1] == module.FORGED_FRAME
    broken = module.large_answer(3, "x", one_break=True)
    assert broken.count("\n") == 1
    assert json.loads(broken, strict=False)["result"]["x"]["a"] == module.LARGE_TEXT
