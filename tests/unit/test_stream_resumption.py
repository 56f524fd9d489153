"""The GET stream honours a backend's SSE `retry:` and resumes from the last event id, as the
conformance suite's `sse-retry` scenario expects of a client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from switchyard.protocol.versions import Era
from switchyard.upstream.connection import ServerFacts
from switchyard.upstream.http import HttpSettings, StreamableHttpConnection

pytestmark = pytest.mark.anyio

RETRY_MS = 400


class Server:
    def __init__(self) -> None:
        self.gets: list[tuple[float, str | None]] = []
        self.second = asyncio.Event()
        self.url = ""

    async def get(self, request: web.Request) -> web.StreamResponse:
        self.gets.append((time.monotonic(), request.headers.get("Last-Event-ID")))
        if len(self.gets) >= 2:
            self.second.set()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = len(self.gets)
        await resp.write(f"id: event-{n}\nretry: {RETRY_MS}\ndata: \n\n".encode())
        await resp.write_eof()  # end the stream: the client must come back
        return resp


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/mcp", srv.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/mcp"
    try:
        yield srv
    finally:
        await runner.cleanup()


async def test_get_stream_reconnects_after_retry_with_last_event_id(server: Server) -> None:
    conn = StreamableHttpConnection("web", HttpSettings(url=server.url), lambda m, p: None)
    conn.facts = ServerFacts(era=Era.LEGACY, version="2025-11-25")
    task = asyncio.create_task(conn._listen())
    try:
        async with asyncio.timeout(5):
            await server.second.wait()
    finally:
        task.cancel()
        await conn.aclose()
    (first_at, first_id), (second_at, second_id) = server.gets[:2]
    assert first_id is None
    assert second_id == "event-1"
    assert second_at - first_at >= RETRY_MS / 1000
    assert second_at - first_at < 2 * RETRY_MS / 1000 + 0.5
