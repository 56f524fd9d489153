"""A POST's SSE stream never makes a backend's reader wait on the client's socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchyard.downstream.streamable_http import STREAM_QUEUE_BYTES, PostReply
from switchyard.sessions import Session
from switchyard.wire.frame import Raw

pytestmark = pytest.mark.anyio


async def test_a_stalled_client_drops_notifications_and_refuses_requests_without_blocking() -> None:
    stalled = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await stalled.wait()  # the transport is paused: the client stopped reading

    session = Session("s1", "streamable-http", client_capabilities=Raw(b'{"roots":{}}'))
    out = PostReply(send, session)
    params = json.dumps({"progressToken": 1, "progress": 1, "message": "x" * 4096}).encode()
    async with asyncio.timeout(2):  # every call returns at once, however many
        for _ in range(2 * STREAM_QUEUE_BYTES // 4096):
            await out.notify("notifications/progress", params)
        reply = await out.ask("roots/list", None, timeout=30)
    assert out.dropped > 0
    assert reply.error is not None
    error = json.loads(reply.error)
    assert error["code"] == -31009 and error["data"] == {"source": "gateway"}
    # Once the client reads again, what was queued and then the answer arrive, in order.
    stalled.set()
    async with asyncio.timeout(2):
        await out.finish(b'{"jsonrpc":"2.0","id":1,"result":{}}')
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies[-1]["more_body"] is False
    assert bodies[-1]["body"].endswith(b'"result":{}}\n\n')
    assert len(bodies) == 1 + 2 * STREAM_QUEUE_BYTES // 4096 - out.dropped
