"""Shedding and the per-client quota reach `/messages` requests as JSON-RPC answers by id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchyard.downstream.admission import ClientQuota
from switchyard.downstream.http import HttpApp, HttpSettings
from switchyard.gateway import Gateway, GatewaySettings, Plan

pytestmark = pytest.mark.anyio

HOST = (b"host", b"127.0.0.1:8080")


def test_a_detached_lease_is_released_once_by_its_new_holder() -> None:
    quota = ClientQuota(1)
    lease = quota.take("s:a")
    assert lease is not None and quota.take("s:a") is None
    assert quota.take("s:b") is not None  # another client is unaffected
    release = lease.detach()
    release()
    release()
    assert quota.counts.get("s:a") == 0
    assert quota.take("s:a") is not None


async def test_a_messages_request_while_shedding_is_answered_on_the_stream() -> None:
    app = HttpApp(Gateway(Plan(GatewaySettings(), ())), HttpSettings(port=8080))
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    gone = asyncio.Event()

    async def stream_receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def stream_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.put_nowait(message["body"])

    get = {"type": "http", "method": "GET", "path": "/sse", "headers": [HOST]}
    stream = asyncio.create_task(app(get, stream_receive, stream_send))
    try:
        first = await asyncio.wait_for(chunks.get(), 5)
        endpoint = first.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
        path, _, query = endpoint.partition("?")
        app.memory.overloaded = True
        body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}).encode()
        post = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": query.encode(),
            "headers": [HOST, (b"content-type", b"application/json")],
        }
        sent: list[dict[str, Any]] = []

        async def post_receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def post_send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app(post, post_receive, post_send), 5)
        assert sent[0]["status"] == 202
        event = await asyncio.wait_for(chunks.get(), 5)
        answer = json.loads(event.split(b"data: ", 1)[1])
        assert answer["id"] == 9
        assert answer["error"]["code"] == -31008
        assert answer["error"]["data"] == {"source": "gateway", "retryAfter": 1}
    finally:
        gone.set()
        await asyncio.wait_for(stream, 5)
