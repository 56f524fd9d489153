"""Server->client requests (sampling, elicitation, roots) across faces and eras, both bridges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

from tests.harness import BIN, FIXTURES, PYTHON, Gateway, sdk_http_backend, start_gateway
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def elicit(ctx: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "Ada"})


async def sample(ctx: Any, params: Any) -> CreateMessageResult:
    text = TextContent(type="text", text="old pond")
    return CreateMessageResult(role="assistant", content=text, model="fixture-model")


async def roots(ctx: Any) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///work")])


CALLBACKS = {
    "elicitation_callback": elicit,
    "sampling_callback": sample,
    "list_roots_callback": roots,
}
EXPECTED = {"introduce": "Hello, Ada!", "haiku": "old pond", "roots": "file:///work"}


def _backend(name: str, **extra: Any) -> dict[str, Any]:
    return {"command": PYTHON, "args": [str(FIXTURES / "sdk_stdio.py"), "--name", name], **extra}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with sdk_http_backend("--json-response", name="mh") as url:
        yield from _gateway(tmp_path_factory, url)


def _gateway(tmp_path_factory: pytest.TempPathFactory, json_http: str) -> Iterator[Gateway]:
    config = {
        "servers": {
            "m": _backend("m"),  # modern (detected): asks with input_required results
            # the same over Streamable HTTP, each answer one JSON body: a legacy client's
            # translation reads the result as it arrives (what is modern-only set aside)
            "mh": {"url": json_http, "type": "streamable-http"},
            # legacy: asks with real requests, in each client's own session
            "l": _backend("l", era="legacy", timeout=3, isolation="per_session"),
            "ls": _backend("ls", era="legacy", isolation="shared"),  # one session for everyone
        }
    }
    gw = start_gateway(config, tmp_path_factory.mktemp("asks"))
    try:
        gw.wait_backend("m")
        gw.wait_backend("mh")
        gw.wait_backend("l")
        gw.wait_backend("ls")
        yield gw
    finally:
        gw.stop()


def _transport(gateway: Gateway, face: str) -> Any:
    if face == "http":
        return streamable_http_client(gateway.url)
    if face == "sse":
        return sse_client(f"{gateway.base}/sse")
    return StdioServerParameters(
        command=str(BIN / "switchyard"),
        args=["stdio", "--config", str(gateway.config_path), "--log-level", "warning"],
    )


@pytest.mark.parametrize("face", ["http", "sse", "stdio"])
async def test_legacy_clients_answer_both_kinds_of_backend(gateway: Gateway, face: str) -> None:
    async with Client(_transport(gateway, face), mode="legacy", **CALLBACKS) as client:  # type: ignore[arg-type]
        # real requests relayed; input_required turned into requests
        for backend in ("l", "m", "mh"):
            for tool, expected in EXPECTED.items():
                result = await asyncio.wait_for(client.call_tool(f"{backend}_{tool}", {}), 15)
                assert not result.is_error, (backend, tool, result.content)
                assert result.content[0].text == expected  # type: ignore[union-attr]


async def test_modern_clients_answer_both_kinds_of_backend(gateway: Gateway) -> None:
    async with Client(gateway.url, **CALLBACKS) as client:  # type: ignore[arg-type]
        assert client.protocol_version == "2026-07-28"
        for backend in ("m", "mh", "l"):  # input_required passed through; legacy requests parked
            for tool, expected in EXPECTED.items():
                result = await asyncio.wait_for(client.call_tool(f"{backend}_{tool}", {}), 15)
                assert not result.is_error, (backend, tool, result.content)
                assert result.content[0].text == expected  # type: ignore[union-attr]


async def test_parked_call_state_is_signed_and_bound(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as http:
        client = RawClient(gateway.url, http, era="modern")
        caps = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
        first = await client.result(
            "tools/call", {"name": "l_introduce", "arguments": {}, "_meta": caps}
        )
        assert first["resultType"] == "input_required"
        ((key, request),) = first["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        state = first["requestState"]
        answer = {key: {"action": "accept", "content": {"name": "Grace"}}}
        forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
        for bad in (forged, "sy1.nothing.0.AAAA"):
            resp = await client.request(
                "tools/call",
                {
                    "name": "l_introduce",
                    "arguments": {},
                    "inputResponses": answer,
                    "requestState": bad,
                    "_meta": caps,
                },
                request_id=2,
            )
            assert resp.json["error"]["code"] == -32602
        done = await client.result(
            "tools/call",
            {
                "name": "l_introduce",
                "arguments": {},
                "inputResponses": answer,
                "requestState": state,
                "_meta": caps,
            },
            request_id=3,
        )
        assert done["content"][0]["text"] == "Hello, Grace!"
        # A state is good for one retry only.
        again = await client.request(
            "tools/call",
            {
                "name": "l_introduce",
                "arguments": {},
                "inputResponses": answer,
                "requestState": state,
                "_meta": caps,
            },
            request_id=4,
        )
        assert again.json["error"]["code"] == -32602


@pytest.mark.parametrize(
    ("backend", "refusal"),
    [
        # Its own isolated session declared only this client's (empty) capabilities: the
        # backend itself refuses to ask.
        ("l", "Client did not declare the form elicitation capability"),
        # A shared session cannot prove which client a stdio backend's request is for: the
        # gateway refuses it rather than ask whichever client happens to be calling.
        ("ls", "no single client to route this request to"),
    ],
)
async def test_a_client_without_the_capability_gets_an_error_not_a_hang(
    gateway: Gateway, backend: str, refusal: str
) -> None:
    async with Client(streamable_http_client(gateway.url), mode="legacy") as client:
        t0 = time.monotonic()
        with pytest.raises(MCPError) as info:
            await asyncio.wait_for(client.call_tool(f"{backend}_introduce", {}), 10)
        assert refusal in info.value.error.message
        assert time.monotonic() - t0 < 3


async def test_a_client_that_never_answers_does_not_break_the_next(gateway: Gateway) -> None:
    never = asyncio.Event()

    async def silent(ctx: Any, params: Any) -> ElicitResult:
        await never.wait()
        raise AssertionError("unreachable")

    async def first() -> MCPError | None:
        async with Client(
            streamable_http_client(gateway.url), mode="legacy", elicitation_callback=silent
        ) as client:
            try:
                await client.call_tool("l_introduce", {})
            except MCPError as exc:
                return exc
        return None

    t0 = time.monotonic()
    error = await asyncio.wait_for(first(), 20)
    assert error is not None  # bounded by the backend's 3 s timeout
    assert time.monotonic() - t0 < 10
    async with Client(streamable_http_client(gateway.url), mode="legacy", **CALLBACKS) as client:  # type: ignore[arg-type]
        result = await asyncio.wait_for(client.call_tool("l_introduce", {}), 10)
        assert result.content[0].text == "Hello, Ada!"  # type: ignore[union-attr]
