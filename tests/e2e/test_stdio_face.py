"""`switchyard stdio`: the gateway on its own stdin/stdout, driven as a raw JSON-RPC client."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.auth import keys
from tests.harness import BIN, create_key, keys_cli, log_path, stdio_fixture
from tests.rpc import LEGACY

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 30.0


class StdioClient:
    """One `switchyard stdio` process; the test decides when (and whether) to read its stdout."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.ids = iter(range(1, 1_000_000))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        request_id = next(self.ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return request_id

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT_S):
            line = await self.process.stdout.readline()
        assert line, f"switchyard stdio closed stdout:\n{self.log.read_text()[-3000:]}"
        message: dict[str, Any] = json.loads(line)
        return message

    async def until_answer(self, request_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read until the answer to `request_id`; returns it and everything read before it."""
        before: list[dict[str, Any]] = []
        while True:
            message = await self.read()
            if message.get("id") == request_id and "method" not in message:
                return message, before
            before.append(message)

    async def initialize(self) -> None:
        request_id = await self.request(
            "initialize",
            {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}},
        )
        answer, _ = await self.until_answer(request_id)
        assert "result" in answer, answer
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


@asynccontextmanager
async def stdio_gateway(
    tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> AsyncIterator[StdioClient]:
    os.makedirs(tmp, exist_ok=True)
    config_path = tmp / "stdio.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = log_path("stdio-face")
    process = await asyncio.create_subprocess_exec(
        str(BIN / "switchyard"),
        "stdio",
        "--config",
        str(config_path),
        "--log-file",
        str(log),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        # Small, so an unread stdout backs up into the gateway rather than into this reader.
        limit=256 * 1024,
    )
    client = StdioClient(process, log)
    try:
        yield client
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _has_content(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def _wait_for_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_has_content, path):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_client_that_stops_reading_stdout_never_stalls_the_backend_reader(
    tmp_path: Path,
) -> None:
    # The backend writes far more progress than every pipe and queue between it and an
    # unread stdout hold; the gateway must keep reading it (dropping what the client
    # cannot take) so the backend finishes, and later answers still get through.
    count, size = 400, 32 * 1024
    done = tmp_path / "flood-done"
    config = {
        # A small upstream line limit keeps the gateway's own read buffer from absorbing it all.
        "gateway": {"max_message_bytes": 256 * 1024},
        "servers": {"fx": stdio_fixture("chatty", isolation="shared")},
    }
    async with stdio_gateway(tmp_path, config) as client:
        await client.initialize()
        flood = await client.request(
            "tools/call",
            {
                "name": "fx_flood",
                "arguments": {"count": count, "size": size, "done_file": str(done)},
                "_meta": {"progressToken": "flood"},
            },
        )
        # Not reading stdout from here on.
        assert await _wait_for_file(done, WAIT_S), "the backend was stalled by an unread stdout"
        echo = await client.request(
            "tools/call", {"name": "fx_echo", "arguments": {"text": "still here"}}
        )
        answer, before = await client.until_answer(echo)
        assert answer["result"]["content"][0]["text"] == "still here"
        answers = [m for m in before if m.get("id") == flood and "method" not in m]
        assert len(answers) == 1 and answers[0]["result"]["content"][0]["text"] == "flooded 400"
        progress = [m for m in before if m.get("method") == "notifications/progress"]
        assert all(m["params"]["progressToken"] == "flood" for m in progress)
        assert 0 < len(progress) < count  # what an unread stdout could not take was dropped


async def test_a_revoked_key_is_refused_by_a_running_stdio_process_which_then_exits(
    tmp_path: Path,
) -> None:
    data = tmp_path / "keys"
    key = create_key(data, "alice", "user")
    parsed = keys.parse(key)
    assert parsed is not None
    config = {
        "auth": {"enabled": True, "data_dir": str(data), "rules": [{"effect": "allow"}]},
        "servers": {"fx": stdio_fixture("chatty", isolation="shared")},
    }
    env = {**os.environ, "SWITCHYARD_API_KEY": key}
    async with stdio_gateway(tmp_path, config, env) as client:
        await client.initialize()
        answer, _ = await client.until_answer(await client.request("tools/list"))
        assert "fx_echo" in [t["name"] for t in answer["result"]["tools"]]
        keys_cli("revoke", parsed.prefix, "--data-dir", str(data))
        revoked_at = time.monotonic()
        refusal: dict[str, Any] | None = None
        while refusal is None and time.monotonic() - revoked_at < WAIT_S:
            answer, _ = await client.until_answer(await client.request("ping"))
            if "error" in answer:
                refusal = answer
            else:
                await asyncio.sleep(0.25)
        assert refusal is not None, "the revoked key kept working"
        assert time.monotonic() - revoked_at < 10.0  # checked again every 5 s
        assert refusal["error"]["code"] == -32600
        assert "Authentication failed" in refusal["error"]["message"]
        async with asyncio.timeout(WAIT_S):
            status = await client.process.wait()
            assert client.process.stderr is not None
            stderr = await client.process.stderr.read()
        assert status != 0
        assert b"SWITCHYARD_API_KEY" in stderr and b"exiting" in stderr


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
LINES = [
    {"level": "debug", "data": "line-debug"},
    {"level": "info", "data": "line-info"},
    {"level": "warning", "data": "line-warning"},
    {"level": "error", "data": "line-error"},
]


async def _say(client: StdioClient, level: str | None) -> tuple[int, list[str]]:
    meta: dict[str, Any] = dict(MODERN_META)
    if level is not None:
        meta["io.modelcontextprotocol/logLevel"] = level
    request_id = await client.request(
        "tools/call", {"name": "fx_say", "arguments": {"lines": LINES}, "_meta": meta}
    )
    answer, before = await client.until_answer(request_id)
    assert answer["result"]["content"][0]["text"] == "said 4", answer
    logs = [m["params"]["data"] for m in before if m.get("method") == "notifications/message"]
    return request_id, logs


async def test_a_modern_request_gets_log_lines_only_when_it_opts_in_at_its_level(
    tmp_path: Path,
) -> None:
    config = {"servers": {"fx": stdio_fixture("chatty", isolation="per_principal")}}
    async with (
        stdio_gateway(tmp_path / "a", config) as quiet,
        stdio_gateway(tmp_path / "b", config) as chatty,
    ):
        # Two clients, each on its own gateway process, one request each way and back.
        _, unasked = await _say(quiet, None)
        _, warned = await _say(chatty, "warning")
        _, unasked_again = await _say(chatty, None)
        _, everything = await _say(quiet, "debug")
    assert unasked == [] and unasked_again == []
    assert warned == ["line-warning", "line-error"]
    assert everything == ["line-debug", "line-info", "line-warning", "line-error"]


async def test_a_malformed_log_level_is_invalid_params(tmp_path: Path) -> None:
    config = {"servers": {"fx": stdio_fixture("chatty", isolation="per_principal")}}
    async with stdio_gateway(tmp_path, config) as client:
        meta = {**MODERN_META, "io.modelcontextprotocol/logLevel": 5}
        answer, _ = await client.until_answer(
            await client.request(
                "tools/call", {"name": "fx_say", "arguments": {"lines": LINES}, "_meta": meta}
            )
        )
        assert answer["error"]["code"] == -32602
        assert "logLevel" in answer["error"]["message"]


async def test_subscriptions_listen_on_stdio_is_acknowledged_tagged_and_ends_with_stdin(
    tmp_path: Path,
) -> None:
    # No grace period: the backend's tools leave the lists the moment it dies.
    fx = {**stdio_fixture("chatty", isolation="shared"), "unavailable_grace": 0}
    config = {"servers": {"fx": fx}}
    async with stdio_gateway(tmp_path, config) as client:
        listen = await client.request(
            "subscriptions/listen",
            {
                "notifications": {
                    "toolsListChanged": True,
                    "promptsListChanged": False,
                    "resourceSubscriptions": ["fixture://nowhere"],
                },
                "_meta": MODERN_META,
            },
        )
        ack = await client.read()
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"toolsListChanged": True}
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen
        # The backend dies: its tools leave the list, and the listener hears of it.
        crash = await client.request("tools/call", {"name": "fx_crash", "_meta": MODERN_META})
        seen: list[dict[str, Any]] = []
        while not any(m.get("method") == "notifications/tools/list_changed" for m in seen):
            seen.append(await client.read())
        changed = next(m for m in seen if m.get("method") == "notifications/tools/list_changed")
        assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen
        assert not any(m.get("id") == listen for m in seen)  # the listen request stays open
        if not any(m.get("id") == crash for m in seen):
            await client.until_answer(crash)
        assert client.process.stdin is not None
        client.process.stdin.close()
        answer, _ = await client.until_answer(listen)
        assert answer["result"]["resultType"] == "complete"
        assert answer["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen
