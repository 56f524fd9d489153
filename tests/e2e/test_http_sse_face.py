"""The HTTP faces under hostile or careless clients: every accepted request gets exactly one
JSON-RPC answer, with the request's id, on `/mcp` in both eras and on the detached `/messages`
path of the 2024-11-05 transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.harness import FIXTURES, PYTHON, Gateway, start_gateway, stdio_fixture
from tests.rpc import MODERN_META, RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT_S = 10.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "servers": {
            "fx": stdio_fixture("crashy", isolation="shared"),
            "rich": stdio_fixture("rich", isolation="shared"),
            # A legacy SDK backend whose tools ask the client: parked calls for modern callers.
            "l": {
                "command": PYTHON,
                "args": [str(FIXTURES / "sdk_stdio.py"), "--name", "l"],
                "era": "legacy",
            },
        },
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("sseface"))
    try:
        gw.wait_backend("fx")
        gw.wait_backend("rich")
        gw.wait_backend("l")
        yield gw
    finally:
        gw.stop()


class SseClient:
    """A raw 2024-11-05 client: one GET `/sse` stream, messages POSTed to the endpoint it names,
    answers collected from the stream by id."""

    def __init__(self, http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
        self.http = http
        self.base = base
        self.headers = headers
        self.endpoint = ""
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._stream: aiohttp.ClientResponse | None = None

    async def open(self) -> SseClient:
        stream = await self.http.get(
            self.base + "/sse", headers={**self.headers, "Accept": "text/event-stream"}
        )
        assert stream.status == 200
        self._stream = stream
        endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(stream, endpoint))
        self.endpoint = await asyncio.wait_for(endpoint, WAIT_S)
        await self.post(
            {
                "jsonrpc": "2.0",
                "id": "init",
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-sse", "version": "1"},
                },
            }
        )
        assert "result" in await self.answer("init")
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    async def _read(self, stream: aiohttp.ClientResponse, endpoint: asyncio.Future[str]) -> None:
        event, data = "message", b""
        async for line in stream.content:
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
            elif not line and data:
                if event == "endpoint":
                    endpoint.set_result(data.decode())
                else:
                    self.messages.put_nowait(json.loads(data))
                event, data = "message", b""

    async def post(self, message: dict[str, Any] | bytes) -> aiohttp.ClientResponse:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.http.post(self.base + self.endpoint, data=body, headers=headers) as resp:
            await resp.read()
            return resp

    async def answer(self, request_id: Any, timeout: float = WAIT_S) -> dict[str, Any]:
        """The stream's answer to `request_id`; answers to others are kept for later calls."""
        kept: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.messages.get()
                    if message.get("id") == request_id and "method" not in message:
                        return message
                    kept.append(message)
        finally:
            for message in kept:
                self.messages.put_nowait(message)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._stream is not None:
            self._stream.close()


@contextlib.asynccontextmanager
async def sse_client(
    http: aiohttp.ClientSession, gw: Gateway, headers: dict[str, str] | None = None
) -> AsyncIterator[SseClient]:
    client = await SseClient(http, gw.base, headers or {}).open()
    try:
        yield client
    finally:
        await client.close()


ECHO = {"name": "fx_echo", "arguments": {"text": "x"}}
COMPLETE_ARG = {"name": "style", "value": ""}
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
# (method, params, a request of the handshake era too, its 2026-07-28 HTTP status or None):
# each a shape error in the client's params. Shapes the face checks before dispatch are 400 on
# the 2026-07-28 path; shapes a handler finds are a JSON-RPC error in a 200 answer.
MALFORMED: list[tuple[str, Any, bool, int | None]] = [
    ("tools/call", [1], True, 400),
    ("tools/call", {**ECHO, "_meta": "progressToken"}, True, 400),
    ("tools/call", {**ECHO, "_meta": "x"}, True, 400),
    ("tools/call", {"name": "fx_echo", "arguments": [1]}, False, 400),
    ("ping", {"_meta": 1}, True, 400),
    ("completion/complete", {"ref": "x", "argument": COMPLETE_ARG}, True, 200),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": 5}, "argument": 1}, True, 200),
    ("prompts/get", {"name": "rich_review", "arguments": [1]}, True, 200),
    ("resources/read", {"uri": 7}, True, None),
    ("logging/setLevel", {"level": 5}, True, None),
    ("tools/call", {**ECHO, "_meta": {LOG_LEVEL: 5}}, False, 400),
]


def _modern_params(params: dict[str, Any]) -> dict[str, Any]:
    meta = params.get("_meta", {})
    if not isinstance(meta, dict):
        return {**params, "_meta": meta}
    return {**params, "_meta": {**MODERN_META, **meta}}


@pytest.mark.parametrize(("method", "params", "legacy_too", "modern_status"), MALFORMED)
async def test_malformed_params_get_exactly_one_invalid_params_answer_on_every_face(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    method: str,
    params: Any,
    legacy_too: bool,
    modern_status: int | None,
) -> None:
    if legacy_too:
        # Streamable HTTP, legacy session.
        legacy = await RawClient(gateway.url, http).open()
        body = {"jsonrpc": "2.0", "id": 41, "method": method, "params": params}
        resp = await legacy.post(body, legacy.headers())
        assert resp.status == 200, resp.body
        assert (resp.json["id"], resp.json["error"]["code"]) == (41, -32602), resp.json
        # HTTP+SSE: accepted with 202, answered on the stream, and the session still works.
        async with sse_client(http, gateway) as sse:
            message = {"jsonrpc": "2.0", "id": 43, "method": method, "params": params}
            assert (await sse.post(message)).status == 202
            answer = await sse.answer(43)
            assert answer["error"]["code"] == -32602, answer
            await sse.post({"jsonrpc": "2.0", "id": 44, "method": "ping"})
            assert (await sse.answer(44))["result"] == {}
    if modern_status is not None:
        client = RawClient(gateway.url, http, era="modern")
        full = _modern_params(params) if isinstance(params, dict) else params
        resp = await client.post(
            {"jsonrpc": "2.0", "id": 42, "method": method, "params": full},
            client.headers(method, full),
        )
        assert resp.status == modern_status, resp.body
        assert (resp.json["id"], resp.json["error"]["code"]) == (42, -32602), resp.json


async def test_a_legacy_session_over_streamable_http_is_untouched_by_a_malformed_request(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = await RawClient(gateway.url, http).open()
    bad = await client.request("tools/call", {**ECHO, "_meta": "x"}, request_id=1)
    assert bad.json["error"]["code"] == -32602
    good = await client.result("tools/call", ECHO, request_id=2)
    assert good["content"][0]["text"] == "x"


async def test_input_responses_of_the_wrong_shape_are_invalid_params(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    client = RawClient(gateway.url, http, era="modern")
    caps = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
    first = await client.result(
        "tools/call", {"name": "l_introduce", "arguments": {}, "_meta": caps}
    )
    assert first["resultType"] == "input_required"
    resumed = {
        "name": "l_introduce",
        "arguments": {},
        "requestState": first["requestState"],
        "_meta": caps,
    }
    for wrong in (1, ["x"], "x"):
        answer = await client.request(
            "tools/call", {**resumed, "inputResponses": wrong}, request_id=31
        )
        assert answer.status == 200, answer.body
        assert (answer.json["id"], answer.json["error"]["code"]) == (31, -32602)
