"""A request that fails inside the gateway still gets exactly one answer, with its id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from switchyard.downstream.http import HttpApp, HttpSettings
from switchyard.downstream.inbound import settle
from switchyard.gateway import Gateway, GatewaySettings, Plan
from switchyard.wire.frame import Reply

pytestmark = pytest.mark.anyio

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def _boom(exc: BaseException) -> Reply:
    raise exc


async def test_a_shape_error_is_invalid_params_and_a_bug_is_a_gateway_error() -> None:
    shape = await settle("tools/call", _boom(msgspec.ValidationError("Expected `object`")))
    assert shape.error is not None and json.loads(shape.error)["code"] == -32602
    bug = await settle("tools/call", _boom(RuntimeError("bug")))
    assert bug.error is not None
    assert json.loads(bug.error) == {
        "code": -31006,
        "message": "Internal gateway error",
        "data": {"source": "gateway"},
    }
    with pytest.raises(asyncio.CancelledError):
        await settle("tools/call", _boom(asyncio.CancelledError()))


async def test_an_unexpected_failure_on_mcp_is_answered_with_the_requests_id() -> None:
    app = HttpApp(Gateway(Plan(GatewaySettings(), ())), HttpSettings(port=8080))

    async def broken(*_: Any) -> Reply:
        raise KeyError("a bug")

    app.gateway.dispatcher.request = broken  # type: ignore[method-assign]
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 77, "method": "tools/list", "params": {"_meta": MODERN_META}}
    ).encode()
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", b"2026-07-28"),
        (b"mcp-method", b"tools/list"),
    ]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent[0]["status"] == 200
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert answer["id"] == 77
    assert answer["error"]["code"] == -31006
    assert answer["error"]["data"] == {"source": "gateway"}
