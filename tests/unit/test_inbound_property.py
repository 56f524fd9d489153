"""Any bytes POSTed to /mcp get a JSON-RPC answer with a deliberate status: never a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.downstream.http import HttpApp, HttpSettings
from switchyard.gateway import Gateway, GatewaySettings, Plan

EXPECTED_STATUSES = {200, 202, 400, 404, 413}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "id": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans(), st.floats()),
        "method": st.one_of(
            st.sampled_from(["initialize", "ping", "tools/list", "tools/call", "server/discover"]),
            st.text(max_size=12),
        ),
        "params": json_values,
        "result": json_values,
    },
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(st.binary(max_size=300), envelopes, envelopes.map(lambda b: b[: len(b) // 2]))
versions = st.sampled_from([None, "2025-11-25", "2026-07-28", "1999-01-01"])


async def _post(app: HttpApp, body: bytes, version: str | None) -> tuple[int, bytes]:
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
    ]
    if version is not None:
        headers.append((b"mcp-protocol-version", version.encode()))
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


@settings(max_examples=300, deadline=None)
@given(body=bodies, version=versions)
def test_any_body_gets_a_deliberate_answer(body: bytes, version: str | None) -> None:
    app = HttpApp(Gateway(Plan(GatewaySettings(), ())), HttpSettings(port=8080))
    status, answer = asyncio.run(_post(app, body, version))
    assert status in EXPECTED_STATUSES
    if status == 202:
        return
    message = json.loads(answer)
    assert message["jsonrpc"] == "2.0"
    assert ("result" in message) != ("error" in message)
    if "error" in message:
        assert isinstance(message["error"]["code"], int) and message["error"]["message"]
